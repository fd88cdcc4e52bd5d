"""ASGI 3 (and 2) HTTP through a real server: scope, receive, send, backpressure, misuse."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from rawhttp import Reader, connect, wait_for
from zmqhttp.apps import ASGIAdapter, WSGIAdapter, detect_interface, make_adapter
from zmqhttp.apps.loader import AppLoadError
from zmqhttp.config import Config
from zmqhttp.testing import ServerThread

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Serve = Callable[..., ServerThread]


@pytest.fixture
def serve_asgi(serve: Serve) -> Serve:
    """``serve`` with lifespan off unless asked for: these apps answer only ``http``."""

    def start(app: Any, **settings: Any) -> ServerThread:
        settings.setdefault("lifespan", "off")
        return serve(app, **settings)

    return start


async def respond(send: Send, status: int = 200, body: bytes = b"",
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> tuple[bytes, list[tuple[int, bool]]]:
    """The whole request body and the (size, more_body) of each message."""
    parts: list[bytes] = []
    shapes: list[tuple[int, bool]] = []
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        parts.append(message["body"])
        shapes.append((len(message["body"]), message["more_body"]))
        if not message["more_body"]:
            return b"".join(parts), shapes


def raw(port: int, data: bytes, method: str = "GET") -> Any:
    sock = connect(port)
    try:
        sock.sendall(data)
        return Reader(sock).response(method)
    finally:
        sock.close()


# -- scope ----------------------------------------------------------------------------------


def scope_app(seen: list[Scope]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            scope["state"]["db"] = "connection"
            await send({"type": "lifespan.startup.complete"})
            assert (await receive())["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append({**scope, "entry_state": dict(scope["state"])})
        await read_body(receive)
        scope["state"]["leak"] = True  # must not reach the next request
        await respond(send, 200, b"ok")

    return app


def test_scope_keys(serve_asgi: Serve) -> None:
    seen: list[Scope] = []
    server = serve_asgi(scope_app(seen), root_path="/app", lifespan="auto")
    resp = raw(server.port,
               b"POST /app/caf%C3%A9/a%2Fb?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\n"
               b"Content-Type: text/plain\r\nContent-Length: 3\r\n"
               b"X-Multi: one\r\nx-multi: two\r\nACCEPT: */*\r\n\r\nabc")
    assert (resp.status, resp.body) == (200, b"ok")
    scope = seen[0]
    assert scope["type"] == "http"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["asgi"]["spec_version"] in ("2.3", "2.4")
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "POST"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/app/café/a/b"
    assert scope["raw_path"] == b"/app/caf%C3%A9/a%2Fb"
    assert scope["query_string"] == b"x=1&y=%20"
    assert scope["root_path"] == "/app"
    assert list(scope["headers"]) == [
        (b"host", b"example.com:8080"),
        (b"content-type", b"text/plain"),
        (b"content-length", b"3"),
        (b"x-multi", b"one"),
        (b"x-multi", b"two"),
        (b"accept", b"*/*"),
    ]
    assert all(isinstance(n, bytes) and isinstance(v, bytes) for n, v in scope["headers"])
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == ("127.0.0.1", server.port)
    assert scope["entry_state"] == {"db": "connection"}
    raw(server.port, b"GET /app/next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert seen[1]["entry_state"] == {"db": "connection"}  # a fresh copy per request
    assert seen[1]["state"] is not seen[0]["state"]
    assert "leak" not in server.server.adapter.state  # type: ignore[attr-defined]


def test_scope_root_path_stripped_by_proxy_and_http10(serve_asgi: Serve) -> None:
    seen: list[Scope] = []
    server = serve_asgi(scope_app(seen), root_path="/app", url_scheme="https")
    raw(server.port, b"GET /items/1?q HTTP/1.0\r\n\r\n")  # a proxy already stripped /app
    raw(server.port, b"GET /app HTTP/1.1\r\nHost: h\r\n\r\n")
    raw(server.port, b"GET /application HTTP/1.1\r\nHost: h\r\n\r\n")
    first, second, third = seen
    assert (first["root_path"], first["path"], first["raw_path"]) == (
        "/app", "/app/items/1", b"/app/items/1")
    assert first["query_string"] == b"q"
    assert first["http_version"] == "1.0"
    assert first["scheme"] == "https"
    assert first["headers"] == []
    assert first["entry_state"] == {}  # lifespan off: nothing in the state
    assert (second["path"], second["raw_path"]) == ("/app", b"/app")
    # /application is not under /app: the prefix is added, not matched by string.
    assert third["path"] == "/app/application"


# -- receive --------------------------------------------------------------------------------


def test_receive_streams_chunked_upload(serve_asgi: Serve) -> None:
    shapes: list[tuple[int, bool]] = []
    first = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        parts = []
        while True:
            message = await receive()
            shapes.append((len(message["body"]), message["more_body"]))
            first.set()
            parts.append(message["body"])
            if not message["more_body"]:
                break
        await respond(send, 200, hashlib.sha256(b"".join(parts)).hexdigest().encode())

    server = serve_asgi(app)
    sock = connect(server.port)
    sock.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n")
    assert first.wait(5)  # the app saw the first piece before the rest was sent
    assert shapes == [(5, True)]
    sock.sendall(b"6\r\n world\r\n")
    assert wait_for(lambda: len(shapes) >= 2)
    sock.sendall(b"0\r\n\r\n")
    resp = Reader(sock).response()
    sock.close()
    assert resp.status == 200
    assert resp.body == hashlib.sha256(b"hello world").hexdigest().encode()
    assert shapes[:2] == [(5, True), (6, True)]
    assert shapes[-1] == (0, False)
    assert sum(size for size, _ in shapes) == 11


def test_receive_large_content_length_upload(serve_asgi: Serve) -> None:
    shapes: list[tuple[int, bool]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body, seen = await read_body(receive)
        shapes.extend(seen)
        await respond(send, 200, hashlib.sha256(body).hexdigest().encode())

    server = serve_asgi(app)
    data = bytes(range(256)) * (12 * 1024)  # 3 MiB: beyond body_buffer, so it spills too
    resp = httpx.post(server.url, content=data, timeout=10)
    assert resp.status_code == 200
    assert resp.content == hashlib.sha256(data).hexdigest().encode()
    assert len(shapes) >= 12  # at most 256 KiB per message
    assert all(more for _, more in shapes[:-1]) and not shapes[-1][1]
    assert all(size <= 256 * 1024 for size, _ in shapes)
    assert sum(size for size, _ in shapes) == len(data)


def test_request_without_body_is_one_empty_message(serve_asgi: Serve) -> None:
    messages: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        messages.append(await receive())
        await respond(send, 200, b"ok")

    server = serve_asgi(app)
    assert httpx.get(server.url, timeout=5).content == b"ok"
    assert messages == [{"type": "http.request", "body": b"", "more_body": False}]


def test_100_continue_sent_on_first_receive(serve_asgi: Serve) -> None:
    go = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await asyncio.to_thread(go.wait, 5)
        body, _ = await read_body(receive)
        await respond(send, 200, b"got " + body)

    server = serve_asgi(app)
    sock = connect(server.port)
    sock.sendall(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 5\r\n\r\n")
    sock.settimeout(0.4)
    with pytest.raises(TimeoutError):
        sock.recv(100)  # no 100 before the app asks for the body
    sock.settimeout(5)
    go.set()
    reader = Reader(sock)
    interim = reader.head()
    assert (interim.version, interim.status) == ("HTTP/1.1", 100)
    assert reader.buf == b""
    sock.sendall(b"hello")
    resp = reader.response()
    assert (resp.status, resp.body) == (200, b"got hello")
    sock.close()


def test_no_100_continue_when_app_answers_without_reading(serve_asgi: Serve) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 413, b"too big for me")

    server = serve_asgi(app, timeout_linger=0.5)
    sock = connect(server.port)
    sock.sendall(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 100000\r\n\r\n")
    reader = Reader(sock)
    resp = reader.head()  # the final response comes first: no 100 at all
    assert resp.status == 413
    reader.body(resp)
    assert resp.body == b"too big for me"
    assert reader.at_eof(timeout=4)  # the unread body cannot be skipped: closed
    sock.close()


# -- http.disconnect ------------------------------------------------------------------------


def test_disconnect_after_response_complete(serve_asgi: Serve) -> None:
    after: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"done")
        after.append(await asyncio.wait_for(receive(), 5))

    server = serve_asgi(app)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/").content == b"done"
        assert wait_for(lambda: after)
        assert client.get("/").content == b"done"  # the connection stayed usable
    assert wait_for(lambda: len(after) == 2)
    assert after == [{"type": "http.disconnect"}] * 2


def test_disconnect_mid_request_body(serve_asgi: Serve) -> None:
    messages: list[Message] = []
    errors: list[BaseException] = []
    ended = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] == "http.disconnect":
                    break
            # The client is gone: an OSError says so (ASGI spec 2.4).
            await respond(send, 200, b"nobody listens")
        except BaseException as exc:
            errors.append(exc)
        finally:
            ended.set()

    server = serve_asgi(app)
    sock = connect(server.port)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    assert wait_for(lambda: messages)
    sock.close()
    assert ended.wait(5)
    assert messages[0] == {"type": "http.request", "body": b"0123456789", "more_body": True}
    assert messages[-1] == {"type": "http.disconnect"}
    assert len(errors) == 1 and isinstance(errors[0], OSError), errors
    assert wait_for(lambda: server.server.connection_count == 0)


def test_disconnect_mid_streaming_response(
    serve_asgi: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    watched: list[Message] = []
    errors: list[BaseException] = []
    ended = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def watch() -> None:
            await read_body(receive)
            watched.append(await receive())

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            while True:  # endless: only the disconnect stops it
                await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                await asyncio.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)
            await asyncio.wait_for(watcher, 5)
            raise
        finally:
            ended.set()

    server = serve_asgi(app)
    with caplog.at_level(logging.ERROR, logger="zmqhttp.error"):
        sock = connect(server.port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        head = reader.head()
        assert head.status == 200 and head.header("transfer-encoding") == "chunked"
        reader.read_until(b"tick\n")
        sock.close()
        assert ended.wait(5)
        assert wait_for(lambda: server.server.connection_count == 0)
    assert len(errors) == 1 and isinstance(errors[0], OSError), errors
    assert watched == [{"type": "http.disconnect"}]
    assert error_messages(caplog) == []  # a client leaving is not an application error


def test_receive_wakes_when_server_aborts_the_response(serve_asgi: Serve) -> None:
    watched: list[Message] = []
    errors: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        async def watch() -> None:
            while not watched or watched[-1]["type"] != "http.disconnect":
                watched.append(await receive())

        watcher = asyncio.get_running_loop().create_task(watch())
        await asyncio.sleep(0.05)  # the watcher waits in receive() before the abort
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"3")]})
        await send({"type": "http.response.body", "body": b"too long", "more_body": True})
        await asyncio.wait_for(watcher, 5)
        try:
            await send({"type": "http.response.body", "body": b""})
        except OSError as exc:
            errors.append(exc)

    server = serve_asgi(app)
    sock = connect(server.port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = Reader(sock)
    assert reader.head().status == 200
    assert reader.at_eof(timeout=3)
    sock.close()
    assert wait_for(lambda: watched and errors)
    assert watched == [{"type": "http.request", "body": b"", "more_body": False},
                       {"type": "http.disconnect"}]


# -- backpressure ---------------------------------------------------------------------------


def test_backpressure_blocks_send_for_a_client_that_does_not_read(serve_asgi: Serve) -> None:
    chunk = b"x" * (64 * 1024)
    total = 48 * 1024 * 1024
    produced = [0]
    done = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % total)]})
        while produced[0] < total:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            produced[0] += len(chunk)
        await send({"type": "http.response.body", "body": b""})
        done.set()

    high_water = 128 * 1024
    server = serve_asgi(app, output_high_water=high_water, sndhwm=4)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

    def settled() -> bool:
        before = produced[0]
        time.sleep(0.3)
        return produced[0] == before and before > 0

    assert wait_for(settled, timeout=10)
    stalled = produced[0]
    # high water + libzmq's pipe (sndhwm x 64 KiB) + kernel buffers: far below the total.
    assert stalled < 8 * 1024 * 1024, stalled
    assert not done.is_set()

    def queued() -> int:
        conns = list(server.server._conns.values())
        return sum(c._out_bytes for c in conns)

    assert server.call(queued) <= high_water + len(chunk) + 1024  # our queue stays bounded
    time.sleep(0.3)
    assert produced[0] == stalled  # still waiting, not spinning ahead
    received = 0
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(65536)
    received = len(head.partition(b"\r\n\r\n")[2])
    while received < total:
        data = sock.recv(1 << 20)
        assert data
        received += len(data)
    assert received == total
    assert done.wait(5)
    sock.close()


# -- framing of responses -------------------------------------------------------------------


def framing_app() -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == "/whole":
            await respond(send, 200, b"whole body", [(b"content-type", b"text/plain")])
        elif path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"part1-", "more_body": True})
            await send({"type": "http.response.body", "body": b"part2"})
        elif path == "/own-length":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"Content-Length", b"10")]})
            await send({"type": "http.response.body", "body": b"01234", "more_body": True})
            await send({"type": "http.response.body", "body": b"56789"})
        elif path == "/empty":
            await respond(send, 200)
        elif path == "/204":
            await respond(send, 204)
        elif path == "/304":
            await respond(send, 304, b"", [(b"etag", b'"v1"')])

    return app


def test_whole_response_gets_content_length(serve_asgi: Serve) -> None:
    server = serve_asgi(framing_app())
    sock = connect(server.port)
    reader = Reader(sock)
    sock.sendall(b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = reader.response()
    assert (resp.status, resp.body) == (200, b"whole body")
    assert resp.header("content-length") == "10"
    assert resp.header("transfer-encoding") is None
    assert resp.header("content-type") == "text/plain"
    sock.sendall(b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = reader.response()
    assert (resp.header("content-length"), resp.body) == ("0", b"")
    for path, status in (("/204", 204), ("/304", 304)):
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        resp = reader.response()
        assert resp.status == status
        assert resp.header("content-length") is None
        assert resp.header("transfer-encoding") is None
    sock.sendall(b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")  # still in sync after 204/304
    assert reader.response().body == b"whole body"
    sock.close()


def test_streamed_response_is_chunked(serve_asgi: Serve) -> None:
    server = serve_asgi(framing_app())
    sock = connect(server.port)
    reader = Reader(sock)
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = reader.response()
    assert resp.header("transfer-encoding") == "chunked"
    assert resp.header("content-length") is None
    assert (resp.body, resp.complete) == (b"part1-part2", True)
    sock.sendall(b"GET /own-length HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = reader.response()
    assert resp.header("content-length") == "10"
    assert resp.header("transfer-encoding") is None
    assert resp.body == b"0123456789"
    sock.sendall(b"GET /stream HTTP/1.0\r\n\r\n")  # HTTP/1.0: no chunked, close-delimited
    resp = reader.response()
    assert resp.header("transfer-encoding") is None
    assert resp.body == b"part1-part2"
    sock.close()


def test_head_gets_no_body(serve_asgi: Serve) -> None:
    server = serve_asgi(framing_app())
    sock = connect(server.port)
    reader = Reader(sock)
    sock.sendall(b"HEAD /whole HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = reader.response("HEAD")
    assert (resp.status, resp.header("content-length")) == (200, "10")
    sock.sendall(b"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = reader.response("HEAD")
    assert resp.status == 200 and resp.header("content-length") is None
    sock.sendall(b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n")
    # No body bytes went out for either HEAD: the next response parses cleanly.
    resp = reader.response()
    assert (resp.status, resp.body) == (200, b"whole body")
    assert reader.buf == b""
    sock.close()


# -- application misuse ---------------------------------------------------------------------


def error_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Error records of ``zmqhttp.error``, with their tracebacks."""
    formatter = logging.Formatter()
    return [formatter.format(r) for r in caplog.records
            if r.name == "zmqhttp.error" and r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/body-first", "http.response.body"),
        ("/start-twice", "http.response.start"),
        ("/no-response", "without completing"),
        ("/start-only", "without completing"),
        ("/raise", "Exception in ASGI application"),
        ("/bad-status", "status"),
        ("/bad-headers", "headers"),
        ("/unknown", "http.response.bogus"),
    ],
)
def test_misuse_before_the_response_is_500(
    serve_asgi: Serve, caplog: pytest.LogCaptureFixture, path: str, logged: str
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": []}
        if path == "/body-first":
            await send({"type": "http.response.body", "body": b"x"})
        elif path == "/start-twice":
            await send(start)
            await send(start)
        elif path == "/start-only":
            await send(start)
        elif path == "/raise":
            raise ValueError("boom")
        elif path == "/bad-status":
            await send({"type": "http.response.start", "status": "200"})
        elif path == "/bad-headers":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [("x-str", "not bytes")]})
        elif path == "/unknown":
            await send({"type": "http.response.bogus"})

    server = serve_asgi(app)
    with caplog.at_level(logging.ERROR, logger="zmqhttp.error"):
        sock = connect(server.port)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        reader = Reader(sock)
        resp = reader.response()
        assert resp.status == 500
        assert resp.body == b"Internal Server Error\n"
        assert resp.header("content-length") == str(len(resp.body))
        assert wait_for(lambda: error_messages(caplog))
        sock.close()
    assert any(logged in m for m in error_messages(caplog)), error_messages(caplog)


def test_start_after_body_started_closes_connection(serve_asgi: Serve) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": []}
        await send(start)
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await send(start)

    server = serve_asgi(app)
    sock = connect(server.port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = Reader(sock)
    resp = reader.response()
    assert resp.status == 200
    assert (resp.body, resp.complete) == (b"partial", False)
    sock.close()


def test_send_after_response_finished_is_logged(
    serve_asgi: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"first")
        try:
            await send({"type": "http.response.body", "body": b"extra"})
        except RuntimeError as exc:
            raised.append(exc)
            raise

    server = serve_asgi(app)
    with caplog.at_level(logging.ERROR, logger="zmqhttp.error"):
        sock = connect(server.port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        first = reader.response()
        second = reader.response()
        assert wait_for(lambda: len(error_messages(caplog)) >= 2)
        sock.close()
    assert (first.status, first.body) == (200, b"first")
    assert (second.status, second.body) == (200, b"first")  # the connection was unharmed
    assert len(raised) == 2
    assert any("Exception in ASGI application" in m for m in error_messages(caplog))


def test_exception_after_response_started_closes_connection(
    serve_asgi: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first piece", "more_body": True})
        raise RuntimeError("mid-stream")

    server = serve_asgi(app)
    with caplog.at_level(logging.ERROR, logger="zmqhttp.error"):
        sock = connect(server.port)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        resp = reader.response()
        assert resp.status == 200
        assert resp.header("transfer-encoding") == "chunked"
        assert (resp.body, resp.complete) == (b"first piece", False)
        assert reader.at_eof(timeout=3)
        sock.close()
    assert any("mid-stream" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_body_longer_than_declared_length_closes(serve_asgi: Serve) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"12345", "more_body": True})
        await send({"type": "http.response.body", "body": b"67890"})

    server = serve_asgi(app)
    sock = connect(server.port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = Reader(sock)
    resp = reader.response()
    assert (resp.status, resp.body) == (200, b"12345")
    assert reader.at_eof(timeout=3)
    assert reader.buf == b""
    sock.close()


def test_slow_app_is_cancelled_on_forced_close() -> None:
    started = threading.Event()
    cancelled = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = ServerThread(app, lifespan="off").start()
    sock = connect(server.port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert started.wait(5)
    server.stop(timeout=0.5)
    assert cancelled.wait(5)
    sock.close()


# -- ASGI 2 and interface selection ---------------------------------------------------------


class ASGI2App:
    """An ASGI 2 (double-callable) application."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, receive: Receive, send: Send) -> None:
        body, _ = await read_body(receive)
        await respond(send, 200, b"asgi2 " + self.scope["path"].encode() + b" " + body)


class ASGI3Callable:
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, b"asgi3 instance")


async def asgi3_function(scope: Scope, receive: Receive, send: Send) -> None:
    await respond(send, 200, b"asgi3 function")


def wsgi_function(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "4")])
    return [b"wsgi"]


class WSGICallable:
    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return wsgi_function(environ, start_response)


def test_detect_interface() -> None:
    assert detect_interface(asgi3_function) == "asgi3"
    assert detect_interface(ASGI3Callable()) == "asgi3"
    assert detect_interface(ASGI2App) == "asgi2"
    assert detect_interface(wsgi_function) == "wsgi"
    assert detect_interface(WSGICallable()) == "wsgi"
    assert detect_interface(WSGICallable) == "wsgi"  # a class with a sync __call__


def test_make_adapter_by_interface() -> None:
    config = Config(lifespan="off")
    cases: list[tuple[Any, str, type]] = [
        (asgi3_function, "auto", ASGIAdapter),
        (ASGI2App, "auto", ASGIAdapter),
        (wsgi_function, "auto", WSGIAdapter),
        (asgi3_function, "asgi", ASGIAdapter),
        (ASGI2App, "asgi", ASGIAdapter),
        (ASGI3Callable(), "asgi3", ASGIAdapter),
        (ASGI2App, "asgi2", ASGIAdapter),
        (WSGICallable(), "wsgi", WSGIAdapter),
    ]
    for app, interface, kind in cases:
        adapter = make_adapter(app, config.replace(interface=interface))
        try:
            assert isinstance(adapter, kind), (app, interface)
        finally:
            adapter.close()
    with pytest.raises(AppLoadError):
        make_adapter(asgi3_function, config.replace(interface="asgi4"))


@pytest.mark.parametrize(
    ("app", "interface", "body"),
    [
        (ASGI2App, "auto", b"asgi2 /p data"),
        (ASGI2App, "asgi", b"asgi2 /p data"),
        (ASGI2App, "asgi2", b"asgi2 /p data"),
        (ASGI3Callable(), "auto", b"asgi3 instance"),
        (asgi3_function, "asgi3", b"asgi3 function"),
        (asgi3_function, "asgi", b"asgi3 function"),
        (wsgi_function, "wsgi", b"wsgi"),
    ],
)
def test_interfaces_served(serve_asgi: Serve, app: Any, interface: str, body: bytes) -> None:
    server = serve_asgi(app, interface=interface)
    resp = httpx.post(f"{server.url}/p", content=b"data", timeout=5)
    assert (resp.status_code, resp.content) == (200, body)
