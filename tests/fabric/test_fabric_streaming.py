"""Streaming through the fabric: SSE, chunked responses and bodies, 100-continue, big
transfers and disconnects, with a real gateway (FabricAdapter) and a real Worker.

Each test starts a gateway on a background thread and one worker on its own loop
and thread, both on 127.0.0.1 with random ports; clients are raw sockets (so the
test sees the bytes on the wire) with a timeout on every read. The app and the
test meet through :class:`threading.Event` objects, each waited on with a
timeout, so that "event 1 reached the client before the app sent event 2" is a
fact checked in order, not a timing guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, Literal, Protocol

import pytest

from zmqhttp.config import Config
from zmqhttp.fabric.dispatcher import FabricAdapter
from zmqhttp.testing import ServerThread, WorkerThread

Interface = Literal["wsgi", "asgi"]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
MIB = 1024 * 1024
#: Seconds any single wait in these tests may take (a hang fails, not stalls).
WAIT = 10.0


class Fabric(Protocol):
    def __call__(self, app: Any, interface: Interface, **gateway: Any) -> int: ...


@pytest.fixture
def fabric() -> Iterator[Fabric]:
    """``fabric(app, interface, **gateway_settings)`` starts a gateway and one worker;
    returns the HTTP port."""
    cleanup: list[Callable[[], None]] = []

    def start(app: Any, interface: Interface, **settings: Any) -> int:
        gateway = ServerThread(None, adapter=FabricAdapter, fabric=["tcp://127.0.0.1:*"],
                               timeout_graceful_shutdown=3, **settings).start()
        cleanup.append(lambda: gateway.stop(timeout=5))
        adapter = gateway.adapter
        assert isinstance(adapter, FabricAdapter)
        config = Config(threads=4, interface=interface, lifespan="off", access_log=False)
        worker = WorkerThread(app, adapter.endpoints[0], config, startup_timeout=WAIT).start()
        cleanup.append(worker.stop)
        deadline = time.monotonic() + WAIT
        while not gateway.call(lambda: adapter.ready):  # read on the gateway's loop
            assert time.monotonic() < deadline, "the worker did not attach"
            time.sleep(0.02)
        return gateway.port

    yield start
    for step in reversed(cleanup):
        with contextlib.suppress(Exception):  # best effort; the test result stands
            step()


# -- a small HTTP/1.1 client on a raw socket ----------------------------------------------


class Client:
    """Reads one response incrementally: head, then body by Content-Length or chunks."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(256 * 1024)
        if not data:
            raise ConnectionError(f"connection closed; unread: {self.buffer[:200]!r}")
        self.buffer += data

    def _take_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(marker)
        return line

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def head(self) -> tuple[int, dict[bytes, bytes]]:
        """Status and header fields (names lower-cased) of the next response head."""
        lines = self._take_until(b"\r\n\r\n").split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        return status, fields

    def chunk(self) -> bytes:
        """The next chunk's data (``b""`` for the last chunk, trailers skipped)."""
        size = int(self._take_until(b"\r\n").split(b";")[0], 16)
        if size == 0:
            while self._take_until(b"\r\n"):
                pass  # trailer fields, up to the empty line
            return b""
        data = self._take(size)
        assert self._take(2) == b"\r\n"
        return data

    def chunks(self) -> Iterator[bytes]:
        while data := self.chunk():
            yield data

    def body(self, length: int) -> bytes:
        return self._take(length)


def chunked(pieces: Iterable[bytes], trailers: bytes = b"") -> Iterator[bytes]:
    """Encode ``pieces`` as chunks, then the last chunk with ``trailers`` (field lines)."""
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n" + trailers + b"\r\n"


def pattern(size: int, seed: int) -> Iterator[bytes]:
    """``size`` deterministic, non-repeating-looking bytes in pieces of 1 MiB at most."""
    block = hashlib.sha256(b"%d" % seed).digest() * (MIB // 32)
    index = 0
    while size > 0:
        piece = (b"%016x" % index + block)[: min(MIB, size)]
        size -= len(piece)
        index += 1
        yield piece


# -- SSE (ASGI) -----------------------------------------------------------------------------


def test_sse_events_reach_the_client_one_by_one(fabric: Fabric) -> None:
    client_saw_first = threading.Event()
    second_sent_early: list[bool] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"),
                                (b"cache-control", b"no-cache")]})
        await send({"type": "http.response.body", "body": b"id: 1\ndata: first\n\n",
                    "more_body": True})
        # Event 2 only once the client has event 1 (or after WAIT, recorded as a failure).
        ok = await asyncio.get_running_loop().run_in_executor(
            None, client_saw_first.wait, WAIT)
        second_sent_early.append(not ok)
        await send({"type": "http.response.body", "body": b"id: 2\ndata: second\n\n",
                    "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    port = fabric(app, "asgi")
    client = Client(port)
    try:
        client.sock.sendall(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        status, fields = client.head()
        assert status == 200
        assert fields[b"content-type"] == b"text/event-stream"
        assert fields[b"transfer-encoding"] == b"chunked"
        assert b"content-length" not in fields
        assert client.chunk() == b"id: 1\ndata: first\n\n"
        client_saw_first.set()
        assert client.chunk() == b"id: 2\ndata: second\n\n"
        assert client.chunk() == b""
    finally:
        client_saw_first.set()  # never leave the app waiting
        client.close()
    assert second_sent_early == [False]


def test_sse_client_disconnect_reaches_the_asgi_app(fabric: Fabric) -> None:
    disconnected = threading.Event()
    send_failed = threading.Event()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        watcher = asyncio.create_task(watch())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        try:
            for n in range(int(WAIT / 0.01)):  # bounded: about WAIT seconds of events
                await send({"type": "http.response.body", "body": b"data: %d\n\n" % n,
                            "more_body": True})
                await asyncio.sleep(0.01)
        except OSError:
            send_failed.set()
        await asyncio.wait_for(watcher, WAIT)

    port = fabric(app, "asgi")
    client = Client(port)
    client.sock.sendall(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
    assert client.head()[0] == 200
    assert client.chunk() == b"data: 0\n\n"
    assert client.chunk() == b"data: 1\n\n"
    client.close()
    assert disconnected.wait(WAIT), "receive() never returned http.disconnect"
    assert send_failed.wait(WAIT), "send() kept accepting events for a gone client"


# -- WSGI streaming responses -------------------------------------------------------------


def test_wsgi_generator_without_length_is_chunked_and_incremental(fabric: Fabric) -> None:
    client_saw_first = threading.Event()
    second_made_early: list[bool] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] != "/stream":
            return [b"again\n"]

        def parts() -> Iterator[bytes]:
            yield b"first part\n"
            second_made_early.append(not client_saw_first.wait(WAIT))
            yield b"second part\n"
            yield b"x" * 100_000

        return parts()

    port = fabric(app, "wsgi")
    client = Client(port)
    try:
        client.sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        status, fields = client.head()
        assert status == 200
        assert fields[b"transfer-encoding"] == b"chunked"
        assert b"content-length" not in fields
        assert client.chunk() == b"first part\n"
        client_saw_first.set()
        assert b"".join(client.chunks()) == b"second part\n" + b"x" * 100_000
        # The connection stays usable after a chunked response.
        client.sock.sendall(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n")
        status, fields = client.head()
        assert (status, client.body(int(fields[b"content-length"]))) == (200, b"again\n")
    finally:
        client_saw_first.set()
        client.close()
    assert second_made_early == [False]


def test_wsgi_client_disconnect_stops_the_generator(fabric: Fabric) -> None:
    closed = threading.Event()
    produced: list[int] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])

        def parts() -> Iterator[bytes]:
            try:
                for n in range(10_000):  # bounded: 640 MiB if nothing stopped it
                    produced.append(n)
                    yield b"%063d\n" % n * 1024
            finally:
                closed.set()  # GeneratorExit from close(), or the end

        return parts()

    port = fabric(app, "wsgi")
    client = Client(port)
    client.sock.sendall(b"GET /forever HTTP/1.1\r\nHost: t\r\n\r\n")
    assert client.head()[0] == 200
    assert client.chunk()
    client.close()
    assert closed.wait(WAIT), "the generator was not closed after the client left"
    assert len(produced) < 10_000


# -- request bodies --------------------------------------------------------------------------


def _hashing_app(first_read: threading.Event, reads: list[int]) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        digest = hashlib.sha256()
        stream = environ["wsgi.input"]
        while piece := stream.read(64 * 1024):
            first_read.set()
            reads.append(len(piece))
            digest.update(piece)
        body = digest.hexdigest().encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return app


def test_chunked_request_body_streams_to_the_app_while_it_arrives(fabric: Fabric) -> None:
    first_read = threading.Event()
    reads: list[int] = []
    port = fabric(_hashing_app(first_read, reads), "wsgi")
    # 4 MiB in 1000+ pieces of varied sizes.
    pieces = [bytes([n % 251]) * (1 + (n * 7919) % 8000) for n in range(1040)]
    expected = hashlib.sha256(b"".join(pieces)).hexdigest().encode()
    encoded = list(chunked(pieces))
    half = len(encoded) // 2
    client = Client(port)
    try:
        client.sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n")
        client.sock.sendall(b"".join(encoded[:half]))
        # The app reads before the body is complete: the rest is not even sent yet.
        assert first_read.wait(WAIT), "the app saw no body byte before the body ended"
        for chunk in encoded[half:]:
            client.sock.sendall(chunk)
        status, fields = client.head()
        assert status == 200
        assert client.body(int(fields[b"content-length"])) == expected
    finally:
        client.close()
    assert sum(reads) == sum(len(p) for p in pieces)
    assert len(reads) > 1


def test_chunked_request_with_trailer_fields_arrives_intact(fabric: Fabric) -> None:
    port = fabric(_hashing_app(threading.Event(), []), "wsgi")
    pieces = [b"abc" * 1000, b"defg" * 5000, b"h" * 70_000]
    expected = hashlib.sha256(b"".join(pieces)).hexdigest().encode()
    client = Client(port)
    try:
        for _ in range(2):  # and the connection stays usable after it
            client.sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\n"
                                b"Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n")
            client.sock.sendall(b"".join(chunked(pieces, b"X-Checksum: 1234\r\n")))
            status, fields = client.head()
            assert status == 200
            assert client.body(int(fields[b"content-length"])) == expected
    finally:
        client.close()


def test_a_slow_upload_is_not_a_worker_timeout(fabric: Fabric) -> None:
    # request_timeout bounds the worker's silence, not the upload: the body
    # still arriving after request_timeout is no reason for a 504.
    first_read = threading.Event()
    port = fabric(_hashing_app(first_read, []), "wsgi", request_timeout=0.5)
    pieces = [bytes([n]) * 1000 for n in range(15)]
    expected = hashlib.sha256(b"".join(pieces)).hexdigest().encode()
    client = Client(port)
    try:
        client.sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\n"
                            b"Content-Length: %d\r\n\r\n" % sum(map(len, pieces)))
        for piece in pieces:  # 15 x 0.1 s: three times the request timeout
            client.sock.sendall(piece)
            time.sleep(0.1)
        status, fields = client.head()
        assert status == 200
        assert client.body(int(fields[b"content-length"])) == expected
    finally:
        client.close()


def test_a_worker_that_stops_taking_the_body_still_times_out(fabric: Fabric) -> None:
    release = threading.Event()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        release.wait(WAIT)  # reads nothing: the body window stays closed
        start_response("200 OK", [("Content-Length", "0")])
        return []

    port = fabric(app, "wsgi", request_timeout=0.5)
    client = Client(port)
    try:
        client.sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                            % MIB)
        client.sock.sendall(b"y" * MIB)  # more than the worker's body window
        assert client.head()[0] == 504  # WorkerTimeout, within the socket's timeout
    finally:
        release.set()
        client.close()


def test_client_disconnect_mid_upload_fails_the_apps_read(fabric: Fabric) -> None:
    failed: list[BaseException] = []
    done = threading.Event()
    got_some = threading.Event()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            while environ["wsgi.input"].read(64 * 1024):
                got_some.set()
        except OSError as exc:
            failed.append(exc)
            raise
        finally:
            done.set()
        start_response("200 OK", [("Content-Length", "0")])
        return []

    port = fabric(app, "wsgi")
    client = Client(port)
    client.sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                        % (8 * MIB))
    client.sock.sendall(b"z" * MIB)
    assert got_some.wait(WAIT)
    client.close()
    assert done.wait(WAIT), "the app's read never returned after the client left"
    assert len(failed) == 1


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_final_response_before_100_continue_skips_the_body(fabric: Fabric,
                                                           interface: Interface) -> None:
    def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("413 Content Too Large", [("Content-Length", "8")])
        return [b"too big\n"]

    async def asgi_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-length", b"8")]})
        await send({"type": "http.response.body", "body": b"too big\n"})

    port = fabric(wsgi_app if interface == "wsgi" else asgi_app, interface)
    client = Client(port)
    try:
        client.sock.sendall(b"PUT /file HTTP/1.1\r\nHost: t\r\nContent-Length: 50000000\r\n"
                            b"Expect: 100-continue\r\n\r\n")
        status, fields = client.head()  # never a 100 first: the app did not read
        assert status == 413
        assert client.body(int(fields[b"content-length"])) == b"too big\n"
    finally:
        client.close()


# -- big transfers ----------------------------------------------------------------------------


def test_64_mib_upload_and_download_are_intact(fabric: Fabric) -> None:
    size = 64 * MIB

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            digest = hashlib.sha256()
            total = 0
            more = True
            while more:
                message = await receive()
                assert message["type"] == "http.request"
                digest.update(message["body"])
                total += len(message["body"])
                more = message["more_body"]
            body = b"%d %s" % (total, digest.hexdigest().encode())
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"%d" % size)]})
        for piece in pattern(size, 2):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    port = fabric(app, "asgi")
    deadline = time.monotonic() + 50  # a hang fails here, within the test timeout
    upload_digest = hashlib.sha256()
    client = Client(port)
    try:
        client.sock.sendall(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size)
        for piece in pattern(size, 1):
            upload_digest.update(piece)
            client.sock.sendall(piece)
            assert time.monotonic() < deadline
        status, fields = client.head()
        assert status == 200
        answer = client.body(int(fields[b"content-length"]))
        assert answer == b"%d %s" % (size, upload_digest.hexdigest().encode())

        client.sock.sendall(b"GET /down HTTP/1.1\r\nHost: t\r\n\r\n")
        status, fields = client.head()
        assert (status, int(fields[b"content-length"])) == (200, size)
        download_digest = hashlib.sha256()
        left = size
        while left:
            piece = client.body(min(left, MIB))
            download_digest.update(piece)
            left -= len(piece)
            assert time.monotonic() < deadline
    finally:
        client.close()
    expected = hashlib.sha256()
    for piece in pattern(size, 2):
        expected.update(piece)
    assert download_digest.hexdigest() == expected.hexdigest()
