"""WebSocket end to end: real clients (wsproto, websockets) against a real server.

Every read has a timeout; the server runs on 127.0.0.1:random in a thread and
the ASGI apps record what they saw so the test thread can check it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets.sync.client as ws_sync
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsproto.events import Request, TextMessage

from rawhttp import Environ, Reader, StartResponse, connect, wait_for
from wsclient import HandshakeRejected, WSClient, frame, handshake_bytes
from zmqhttp.testing import ServerThread

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Serve = Callable[..., ServerThread]

OPCODE_TEXT, OPCODE_BINARY, OPCODE_CLOSE = 0x1, 0x2, 0x8


@pytest.fixture
def serve_ws(serve: Serve) -> Serve:
    """``serve`` for ASGI apps that answer only ``websocket`` (and ``http``) scopes."""

    def start(app: Any, **settings: Any) -> ServerThread:
        settings.setdefault("lifespan", "off")
        # Clients here wait for the server to close TCP after the closing
        # handshake, and the server lingers for them (see test_server_closes_tcp_*).
        settings.setdefault("timeout_linger", 0.3)
        return serve(app, **settings)

    return start


@dataclass
class Record:
    """What an app saw, filled on the server's loop and read by the test thread."""

    scopes: list[Scope] = field(default_factory=list)
    received: list[Message] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    sent: int = 0

    def disconnect(self, timeout: float = 5.0) -> Message:
        assert self.done.wait(timeout), f"the app never finished; saw {self.received[-3:]!r}"
        last = self.received[-1]
        assert last["type"] == "websocket.disconnect", last
        return last


def echo_app(record: Record, *, subprotocol: str | None = None,
             headers: Iterable[tuple[bytes, bytes]] = ()) -> ASGIApp:
    """Accepts, then echoes every message until the disconnect."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await plain_http(send)
            return
        record.scopes.append(scope)
        try:
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept", "subprotocol": subprotocol,
                        "headers": list(headers)})
            while True:
                message = await receive()
                record.received.append(message)
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await send({"type": "websocket.send", "text": message["text"]})
                else:
                    await send({"type": "websocket.send", "bytes": message["bytes"]})
        finally:
            record.done.set()

    return app


async def plain_http(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"plain"})


# -- messages ------------------------------------------------------------------------


def test_echo_text_and_binary(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record))
    with WSClient.open(server.port, "/chat?room=1") as client:
        assert client.echo("hello") == "hello"
        assert client.echo(b"\x00\xff binary") == b"\x00\xff binary"
        assert client.echo("") == ""
        assert client.echo("héllo wörld ✓ 🎉") == "héllo wörld ✓ 🎉"
        big = bytes(range(256)) * 1024  # 256 KiB: 64-bit length form
        assert client.echo(big) == big
        assert client.close().code == 1000
    assert record.disconnect()["code"] == 1000
    scope = record.scopes[0]
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "ws"
    assert (scope["path"], scope["query_string"]) == ("/chat", b"room=1")
    assert "method" not in scope
    assert scope["subprotocols"] == []
    assert "websocket.http.response" in scope["extensions"]
    assert [m.get("text", m.get("bytes")) for m in record.received[:-1]] == [
        "hello", b"\x00\xff binary", "", "héllo wörld ✓ 🎉", big]


def test_echo_through_the_websockets_library(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record))
    url = f"ws://127.0.0.1:{server.port}/"
    with ws_sync.connect(url, open_timeout=5, close_timeout=5, ping_interval=None) as ws:
        for i in range(50):
            ws.send(f"message {i}")
            assert ws.recv(timeout=5) == f"message {i}"
        ws.send(b"\x01" * 100_000)
        assert ws.recv(timeout=5) == b"\x01" * 100_000
        ws.ping(b"x").wait(5)  # the server answers pings
    assert record.disconnect()["code"] == 1000


def test_many_messages_in_one_write_are_all_delivered(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record), ws_max_queue=64)
    with WSClient.open(server.port) as client:
        burst = b"".join(client.ws.send(TextMessage(data=f"m{i}")) for i in range(40))
        client.send_raw(burst)
        assert [client.receive() for _ in range(40)] == [f"m{i}" for i in range(40)]


# -- handshake options ---------------------------------------------------------------


def test_subprotocol_negotiated(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record, subprotocol="chat.v2"))
    with WSClient.open(server.port, subprotocols=["chat.v1", "chat.v2"]) as client:
        assert client.accept is not None
        assert client.accept.subprotocol == "chat.v2"
        assert client.echo("hi") == "hi"
    assert record.scopes[0]["subprotocols"] == ["chat.v1", "chat.v2"]

    url = f"ws://127.0.0.1:{server.port}/"
    with ws_sync.connect(url, subprotocols=["chat.v2"], open_timeout=5,  # type: ignore[list-item]
                         ping_interval=None) as ws:
        assert ws.subprotocol == "chat.v2"


def test_accept_headers_reach_the_client(serve_ws: Serve) -> None:
    record = Record()
    extra = [(b"x-session", b"abc123"), (b"set-cookie", b"k=v"),
             (b"sec-websocket-accept", b"forged")]  # reserved: must not replace ours
    server = serve_ws(echo_app(record, headers=extra))
    sock = connect(server.port)
    try:
        sock.sendall(handshake_bytes())
        head = Reader(sock).head()
    finally:
        sock.close()
    assert head.status == 101
    assert head.header("x-session") == "abc123"
    assert head.header("set-cookie") == "k=v"
    # RFC 6455 §1.3: the accept token of the sample nonce.
    assert head.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert head.header("upgrade") == "websocket"
    assert head.header("sec-websocket-protocol") is None


def test_bytes_sent_before_the_101_are_delivered(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record))
    client = WSClient(server.port)
    with client:
        handshake = client.ws.send(Request(host="127.0.0.1", target="/"))
        early = frame(OPCODE_TEXT, b"early") + frame(OPCODE_BINARY, b"\x01\x02")
        client.send_raw(handshake + early)  # one write: head and frames together
        client.read_handshake_reply()
        assert client.receive() == "early"
        assert client.receive() == b"\x01\x02"


def test_fragmented_message_is_reassembled(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record))
    with WSClient.open(server.port) as client:
        for part in ("frag", "ment", "ed ✓"):
            client.send(part, final=False)
        client.send("", final=True)
        client.ping(b"between messages")
        for chunk in (b"\x01", b"\x02\x03", b"\x04"):
            client.send(chunk, final=chunk == b"\x04")
        assert client.receive() == "fragmented ✓"
        assert client.receive() == b"\x01\x02\x03\x04"
        assert client.pongs == [b"between messages"]
    texts = [m.get("text", m.get("bytes")) for m in record.received[:2]]
    assert texts == ["fragmented ✓", b"\x01\x02\x03\x04"]  # one message each, not four


def test_control_frame_between_fragments_is_answered(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record))
    with WSClient.open(server.port) as client:
        client.send_raw(frame(OPCODE_TEXT, b"one ", fin=False))
        client.send_raw(frame(0x9, b"mid-message ping"))  # RFC 6455 §5.4: allowed
        client.send_raw(frame(0x0, b"two", fin=True))
        assert client.receive() == "one two"
        assert client.pongs == [b"mid-message ping"]


def test_client_ping_is_answered_with_pong(serve_ws: Serve) -> None:
    server = serve_ws(echo_app(Record()))
    with WSClient.open(server.port) as client:
        client.ping(b"are you there")
        client.ping(b"")
        assert client.echo("after") == "after"
        assert client.pongs == [b"are you there", b""]


# -- keep-alive pings ----------------------------------------------------------------


def test_keepalive_pings_answered_keep_the_connection(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record), ws_ping_interval=0.2, ws_ping_timeout=0.5)
    with WSClient.open(server.port) as client:
        deadline = time.monotonic() + 1.6  # several ping periods and pong deadlines
        while time.monotonic() < deadline:
            assert client.echo("still here") == "still here"
            time.sleep(0.05)
        assert len(client.pings) >= 2
        assert client.echo("last") == "last"
        assert not record.done.is_set()
        assert client.close().code == 1000
    assert record.disconnect()["code"] == 1000


def test_keepalive_through_the_websockets_library(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record), ws_ping_interval=0.2, ws_ping_timeout=0.5)
    url = f"ws://127.0.0.1:{server.port}/"
    with ws_sync.connect(url, open_timeout=5, ping_interval=None) as ws:  # pongs in background
        time.sleep(1.5)
        ws.send("alive")
        assert ws.recv(timeout=5) == "alive"
    assert not any(m.get("code") == 1006 for m in record.received)


def test_peer_that_never_pongs_is_dropped(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record), ws_ping_interval=0.2, ws_ping_timeout=0.3)
    with WSClient.open(server.port, auto_pong=False) as client:
        started = time.monotonic()
        assert client.echo("hi") == "hi"
        assert wait_for(lambda: server.server.connection_count == 0, timeout=5)
        elapsed = time.monotonic() - started
        assert 0.4 < elapsed < 2.5, elapsed
        with pytest.raises(EOFError):  # dropped without a close frame: the peer is gone
            client.receive(timeout=2)
        assert client.pings  # it was asked
    assert record.disconnect()["code"] == 1006


# -- limits and protocol errors ------------------------------------------------------


def test_message_over_max_size_closes_1009_and_spares_others(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record), ws_max_size=1024)
    with WSClient.open(server.port) as bystander, WSClient.open(server.port) as client:
        assert client.echo(b"x" * 1024) == b"x" * 1024  # exactly the limit is fine
        client.send(b"x" * 1025)
        close = client.expect_close()
        assert close.code == 1009
        assert client.wait_eof()
        assert bystander.echo("unaffected") == "unaffected"
        assert bystander.echo(b"y" * 1024) == b"y" * 1024


def test_fragments_adding_up_over_max_size_close_1009(serve_ws: Serve) -> None:
    server = serve_ws(echo_app(Record()), ws_max_size=1000)
    with WSClient.open(server.port) as client:
        for _ in range(3):
            client.send(b"z" * 400, final=False)  # no single frame is too big
        assert client.expect_close().code == 1009


def test_text_size_is_counted_in_bytes(serve_ws: Serve) -> None:
    server = serve_ws(echo_app(Record()), ws_max_size=1000)
    with WSClient.open(server.port) as client:
        client.send("€" * 400)  # 400 characters, 1200 bytes
        assert client.expect_close().code == 1009


@pytest.mark.parametrize("bad_frame", [
    pytest.param(frame(OPCODE_TEXT, b"unmasked", mask=False), id="unmasked"),
    pytest.param(frame(0x3, b"reserved opcode"), id="reserved-opcode"),
    pytest.param(frame(OPCODE_TEXT, b"rsv1", rsv=4), id="rsv-bit-without-extension"),
    pytest.param(frame(0x9, b"p" * 126), id="control-frame-too-long"),
    pytest.param(frame(0x0, b"orphan continuation"), id="continuation-without-start"),
])
def test_malformed_frame_closes_1002(serve_ws: Serve, bad_frame: bytes) -> None:
    record = Record()
    server = serve_ws(echo_app(record))
    with WSClient.open(server.port) as client:
        assert client.echo("ok") == "ok"
        client.send_raw(bad_frame)
        assert client.expect_close().code == 1002
        assert client.wait_eof()
    assert record.disconnect()["code"] == 1002


def test_invalid_utf8_text_closes_1007(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record))
    with WSClient.open(server.port) as client:
        client.send_raw(frame(OPCODE_TEXT, b"ok \xff\xfe"))
        assert client.expect_close().code == 1007
    assert record.disconnect()["code"] == 1007


def test_too_many_unread_messages_close_1008(serve_ws: Serve) -> None:
    record = Record()
    gate = threading.Event()

    async def slow_reader(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while not gate.is_set():
            await asyncio.sleep(0.01)
        while True:
            message = await receive()
            record.received.append(message)
            if message["type"] == "websocket.disconnect":
                record.done.set()
                return

    server = serve_ws(slow_reader, ws_max_queue=4)
    with WSClient.open(server.port) as client:
        for i in range(10):
            client.send(f"unread {i}")
        assert client.expect_close().code == 1008
        gate.set()
    assert record.disconnect()["code"] == 1008
    assert len(record.received) <= 5  # at most the bound, then the disconnect


# -- closing -------------------------------------------------------------------------


def test_client_close_reaches_the_app(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record))
    with WSClient.open(server.port) as client:
        assert client.echo("bye soon") == "bye soon"
        reply = client.close(4001, "going away now")
        assert reply.code == 4001  # the server echoes the code (RFC 6455 §5.5.1)
        assert client.wait_eof(timeout=2)
    assert record.disconnect() == {"type": "websocket.disconnect", "code": 4001,
                                   "reason": "going away now"}


def test_app_close_reaches_the_client(serve_ws: Serve) -> None:
    record = Record()

    async def closer(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "closing after " + message["text"]})
        await send({"type": "websocket.close", "code": 4000, "reason": "custom reason ✓"})
        await send({"type": "websocket.close"})  # a second close does nothing
        with pytest.raises(OSError):
            await send({"type": "websocket.send", "text": "too late"})
        record.received.append(await receive())
        record.done.set()

    server = serve_ws(closer)
    with WSClient.open(server.port) as client:
        assert client.echo("one") == "closing after one"
        close = client.expect_close()
        assert (close.code, close.reason) == (4000, "custom reason ✓")
        assert client.wait_eof(timeout=2)
    assert record.disconnect()["code"] == 4000


def test_app_close_through_the_websockets_library(serve_ws: Serve) -> None:
    async def closer(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4000, "reason": "done"})

    server = serve_ws(closer)
    url = f"ws://127.0.0.1:{server.port}/"
    with ws_sync.connect(url, open_timeout=5, close_timeout=2, ping_interval=None) as ws:
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None
        assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "done")


def test_app_returning_closes_1000(serve_ws: Serve) -> None:
    async def quits(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    server = serve_ws(quits)
    with WSClient.open(server.port) as client:
        assert client.expect_close().code == 1000


def test_app_exception_closes_1011(serve_ws: Serve, caplog: pytest.LogCaptureFixture) -> None:
    async def fails(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        raise RuntimeError("boom")

    server = serve_ws(fails)
    with WSClient.open(server.port) as client:
        client.send("trigger")
        assert client.expect_close().code == 1011
    assert any("boom" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_client_tcp_drop_is_1006_for_the_app(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record))
    client = WSClient.open(server.port)
    assert client.echo("hi") == "hi"
    client.drop()
    assert record.disconnect()["code"] == 1006
    assert wait_for(lambda: server.server.connection_count == 0)


def test_client_reset_is_1006_for_the_app(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record))
    client = WSClient.open(server.port)
    assert client.echo("hi") == "hi"
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
    client.drop()  # SO_LINGER 0: an RST, not a FIN
    assert record.disconnect()["code"] == 1006


def test_server_closes_tcp_promptly_after_the_closing_handshake(serve_ws: Serve) -> None:
    server = serve_ws(echo_app(Record()), timeout_linger=3.0)
    with WSClient.open(server.port) as client:
        client.close(1000)
        started = time.monotonic()
        assert client.wait_eof(timeout=2)  # the client waits for the server's FIN
        assert time.monotonic() - started < 1.0


def test_graceful_stop_sends_1012(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(echo_app(record), timeout_linger=3.0)
    clients = [WSClient.open(server.port) for _ in range(3)]
    try:
        for client in clients:
            assert client.echo("before stop") == "before stop"
        stopper = threading.Thread(target=server.stop, args=(10.0,))
        started = time.monotonic()
        stopper.start()
        for client in clients:
            assert client.expect_close().code == 1012  # and each answers the close
            client.drop()
        stopper.join(10)
        assert not stopper.is_alive()
        assert time.monotonic() - started < 5  # not the full graceful timeout
    finally:
        for client in clients:
            client.drop()
    assert record.disconnect()["code"] == 1012


# -- denial and invalid handshakes ---------------------------------------------------


def test_close_before_accept_is_403(serve_ws: Serve) -> None:
    async def refuses(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.close", "code": 1000})

    server = serve_ws(refuses)
    with pytest.raises(HandshakeRejected) as info:
        WSClient.open(server.port)
    assert info.value.status == 403
    url = f"ws://127.0.0.1:{server.port}/"
    with pytest.raises(InvalidStatus) as status:
        ws_sync.connect(url, open_timeout=5)
    assert status.value.response.status_code == 403


def test_return_before_accept_is_403(serve_ws: Serve) -> None:
    async def ignores(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    server = serve_ws(ignores)
    with pytest.raises(HandshakeRejected) as info:
        WSClient.open(server.port)
    assert info.value.status == 403


def test_denial_response_extension(serve_ws: Serve) -> None:
    async def denies(scope: Scope, receive: Receive, send: Send) -> None:
        assert "websocket.http.response" in scope["extensions"]
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"www-authenticate", b"Bearer"),
                                (b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"who ",
                    "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"are you?"})

    server = serve_ws(denies)
    with pytest.raises(HandshakeRejected) as info:
        WSClient.open(server.port)
    assert info.value.status == 401
    assert (b"www-authenticate", b"Bearer") in info.value.headers
    assert info.value.body == b"who are you?"


def test_exception_before_accept_is_500(serve_ws: Serve) -> None:
    async def crashes(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise RuntimeError("before accept")

    server = serve_ws(crashes)
    with pytest.raises(HandshakeRejected) as info:
        WSClient.open(server.port)
    assert info.value.status == 500


def _raw_response(port: int, data: bytes) -> Any:
    sock = connect(port)
    try:
        sock.sendall(data)
        return Reader(sock).response()
    finally:
        sock.close()


@pytest.mark.parametrize(("request_bytes", "status"), [
    pytest.param(handshake_bytes(version="8"), 426, id="version-8"),
    pytest.param(handshake_bytes(version="13, 8"), 426, id="two-versions"),
    pytest.param(handshake_bytes().replace(b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                                           b""), 400, id="no-key"),
    pytest.param(handshake_bytes(key="c2hvcnQ="), 400, id="key-not-16-bytes"),
    pytest.param(handshake_bytes(key="not base64!!!!!!!!!!!!=="), 400, id="key-not-base64"),
    pytest.param(handshake_bytes(method="POST", extra="Content-Length: 0\r\n"), 400, id="post"),
    pytest.param(handshake_bytes(method="POST"), 400, id="post-no-length"),
])
def test_invalid_handshake_never_reaches_the_app(serve_ws: Serve, request_bytes: bytes,
                                                 status: int) -> None:
    record = Record()
    server = serve_ws(echo_app(record))
    response = _raw_response(server.port, request_bytes)
    assert response.status == status
    if status == 426:
        assert response.header("sec-websocket-version") == "13"
    assert record.scopes == []
    assert not record.done.is_set()


def test_wsgi_app_answers_an_upgrade_as_plain_http(serve: Serve) -> None:
    seen: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(f"{environ['PATH_INFO']} {environ.get('HTTP_UPGRADE')}")
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serve(app)
    sock = connect(server.port)
    try:
        # The handshake and a pipelined request in one write: the bytes after the
        # head were held for a possible switch, then parsed as HTTP.
        sock.sendall(handshake_bytes("/ws") + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        first = reader.response()
        assert (first.status, first.body) == (200, b"ok")
        second = reader.response()
        assert (second.status, second.body) == (200, b"ok")
        sock.sendall(b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.response().status == 200
    finally:
        sock.close()
    assert seen == ["/ws websocket", "/next None", "/third None"]


# -- backpressure --------------------------------------------------------------------


def _flooder(record: Record, size: int, count: int) -> ASGIApp:
    """Sends ``count`` binary messages of ``size`` bytes as fast as send() lets it."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        filler = b"." * (size - 4)
        try:
            for i in range(count):
                await send({"type": "websocket.send", "bytes": i.to_bytes(4, "big") + filler})
                record.sent += 1
        except OSError:
            pass  # the client left (ASGI 2.4)
        record.received.append(await receive())
        record.done.set()

    return app


def _settled(record: Record, timeout: float = 5.0) -> int:
    """The app's send count once it stops moving (send() is blocked)."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        time.sleep(0.15)
        if record.sent == last:
            return last
        last = record.sent
    raise AssertionError(f"send() never blocked; {record.sent} messages sent")


def test_send_blocks_while_the_client_does_not_read(serve_ws: Serve) -> None:
    size, count = 64 * 1024, 400  # 25 MiB offered
    record = Record()
    server = serve_ws(_flooder(record, size, count))
    with WSClient.open(server.port) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        blocked_at = _settled(record)
        # sndhwm (64) x 64 KiB inside libzmq, the high-water mark, and the
        # kernel's socket buffers: a few MiB, not the 25 MiB offered.
        assert blocked_at * size < 12 * 1024 * 1024, blocked_at
        for i in range(count):  # reading lets the app go on, in order and whole
            message = client.receive(timeout=10)
            assert isinstance(message, bytes)
            assert (int.from_bytes(message[:4], "big"), len(message)) == (i, size)
        assert record.sent == count
        assert client.close().code == 1000
    assert record.disconnect()["code"] == 1000


def test_send_of_large_messages_blocks_within_a_few_mib(serve_ws: Serve) -> None:
    size, count = 1024 * 1024, 100
    record = Record()
    server = serve_ws(_flooder(record, size, count))
    with WSClient.open(server.port) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        blocked_at = _settled(record)
        client.drop()
    assert blocked_at * size < 12 * 1024 * 1024, blocked_at


def test_client_gone_while_send_is_blocked_ends_the_app(serve_ws: Serve) -> None:
    record = Record()
    server = serve_ws(_flooder(record, 64 * 1024, 10_000))
    client = WSClient.open(server.port)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    _settled(record)
    client.drop()
    assert record.disconnect()["code"] == 1006  # the blocked send() woke up
    assert wait_for(lambda: server.server.connection_count == 0)


def test_send_after_the_client_left_raises_oserror(serve_ws: Serve) -> None:
    # ASGI 2.4: a producer that never calls receive() must still learn that the
    # client is gone, or its send() loop would spin on the server's event loop.
    record = Record()
    errors: list[BaseException] = []

    async def ticker(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/echo":
            await echo_app(Record())(scope, receive, send)
            return
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "text": "tick"})
                record.sent += 1
        except OSError as exc:
            errors.append(exc)
            await send({"type": "websocket.close"})  # closing twice is harmless
        finally:
            record.done.set()

    server = serve_ws(ticker)
    client = WSClient.open(server.port)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    assert client.receive() == "tick"
    client.drop()
    assert record.done.wait(5)
    assert errors and isinstance(errors[0], OSError)
    with WSClient.open(server.port, "/echo") as other:  # the loop is free
        assert other.echo("alive") == "alive"


def test_accept_after_the_client_left_reports_a_disconnect(serve_ws: Serve) -> None:
    record = Record()
    gate = threading.Event()

    async def slow_auth(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        while not gate.is_set():  # e.g. a slow authentication lookup
            await asyncio.sleep(0.01)
        await send({"type": "websocket.accept"})
        record.received.append(await receive())
        record.done.set()

    server = serve_ws(slow_auth)
    sock = connect(server.port)
    sock.sendall(handshake_bytes())
    sock.close()
    assert wait_for(lambda: server.server.connection_count == 0)
    gate.set()
    assert record.disconnect()["code"] == 1006


def test_accept_with_invalid_headers_is_500_and_ends_the_app(serve_ws: Serve) -> None:
    record = Record()
    errors: list[BaseException] = []

    async def bad_headers(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await send({"type": "websocket.accept",
                        "headers": [(b"x-bad", b"line\r\nInjected: yes")]})
            record.received.append(await receive())
        except Exception as exc:
            errors.append(exc)
        record.done.set()

    server = serve_ws(bad_headers)
    response = _raw_response(server.port, handshake_bytes())
    assert response.status == 500
    assert response.header("injected") is None
    assert record.disconnect()["code"] == 1006  # the app is not left waiting
    assert errors == []


def test_accept_with_str_headers_is_500(serve_ws: Serve) -> None:
    async def str_headers(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept", "headers": [("x-str", "not bytes")]})

    server = serve_ws(str_headers)
    sock = connect(server.port)
    try:
        sock.sendall(handshake_bytes())
        assert Reader(sock).response().status == 500
    finally:
        sock.close()


# -- a framework on top --------------------------------------------------------------


def test_starlette_websocket_route(serve_ws: Serve) -> None:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    codes: list[int] = []
    done = threading.Event()

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="json")
        try:
            while True:
                data = await websocket.receive_json()
                await websocket.send_json({"got": data, "sub": websocket.scope["subprotocols"]})
        except WebSocketDisconnect as exc:
            codes.append(exc.code)
        finally:
            done.set()

    server = serve_ws(Starlette(routes=[WebSocketRoute("/ws", endpoint)]))
    url = f"ws://127.0.0.1:{server.port}/ws"
    with ws_sync.connect(url, subprotocols=["json"], open_timeout=5,  # type: ignore[list-item]
                         ping_interval=None) as ws:
        ws.send('{"n": 1}')
        assert ws.recv(timeout=5) == '{"got":{"n":1},"sub":["json"]}'
        ws.close(4100, "client done")
    assert done.wait(5)
    assert codes == [4100]
