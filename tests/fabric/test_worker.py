"""The fabric worker, driven by a test playing the gateway on a real ROUTER socket.

The worker runs on its own event loop in a thread; the test binds a ROUTER on
127.0.0.1:random and speaks the protocol with ``encode``/``decode``. Every wait
is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import zmq

from zmqhttp.config import Config
from zmqhttp.fabric import (
    REVISION,
    SIGNATURE,
    BodyCredit,
    Cancel,
    CancelReason,
    Continue,
    Credit,
    Goodbye,
    Heartbeat,
    Message,
    Ready,
    RequestBody,
    RequestEnd,
    RequestHead,
    ResponseBody,
    ResponseCredit,
    ResponseEnd,
    ResponseHead,
    Side,
    decode,
    encode,
)
from zmqhttp.fabric.worker import Worker

TIMEOUT = 5.0
# Shortened for the tests: liveness is 3 intervals (0.6 s).
HEARTBEAT = 0.2


class FakeGateway:
    """A ROUTER socket bound on loopback, speaking the fabric protocol."""

    def __init__(self, context: zmq.Context[Any], port: int | None = None) -> None:
        self.sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if port is None:
            self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        else:
            self.sock.bind(f"tcp://127.0.0.1:{port}")
            self.port = port
        self.identity = b""
        self._next_id = 1

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def recv(self, timeout: float = TIMEOUT, skip_heartbeats: bool = True) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(int(left * 1000)):
                raise AssertionError("no message from the worker in time")
            identity, *frames = self.sock.recv_multipart()
            message = decode(frames, sender=Side.WORKER)
            if isinstance(message, Ready):
                self.identity = identity
            if skip_heartbeats and isinstance(message, Heartbeat):
                continue
            return message

    def recv_type(self, kind: type, timeout: float = TIMEOUT) -> Any:
        message = self.recv(timeout)
        assert isinstance(message, kind), message
        return message

    def no_message(self, within: float) -> None:
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            if self.sock.poll(int(left * 1000)):
                _identity, *frames = self.sock.recv_multipart()
                message = decode(frames, sender=Side.WORKER)
                assert isinstance(message, Heartbeat), message

    def send(self, message: Message) -> None:
        self.sock.send_multipart([self.identity, *encode(message)])

    def send_raw(self, frames: list[bytes]) -> None:
        self.sock.send_multipart([self.identity, *frames])

    def request(self, method: bytes = b"GET", target: bytes = b"/", *,
                headers: list[tuple[bytes, bytes]] | None = None,
                length: int | None = 0, expect: bool = False,
                window: int = 1 << 20, revision: int = 0) -> int:
        request_id = self._next_id
        self._next_id += 1
        path, _, query = target.partition(b"?")
        fields = [(b"host", b"test"), *(headers or [])]
        self.send(RequestHead(
            id=request_id, method=method, target=target, path=path, query=query,
            headers=fields, http_version="1.1", scheme="http", client=("10.0.0.2", 0),
            server=("127.0.0.1", 8000), root_path="", content_length=length,
            expect_continue=expect, response_window=window, revision=revision))
        return request_id

    def response(self, request_id: int) -> tuple[ResponseHead, bytes, ResponseEnd]:
        """Head, body and end of a response (credit left to the window)."""
        head = self.recv_type(ResponseHead)
        assert head.id == request_id
        body = b""
        while True:
            message = self.recv()
            if isinstance(message, ResponseBody):
                assert message.id == request_id
                body += message.data
            else:
                assert isinstance(message, ResponseEnd), message
                assert message.id == request_id
                return head, body, message

    def close(self) -> None:
        self.sock.close(linger=0)


class WorkerThread:
    """A Worker on its own event loop in a daemon thread."""

    def __init__(self, app: Any, endpoint: str, **kwargs: Any) -> None:
        config = kwargs.pop("config", Config(threads=4, access_log=False))
        kwargs.setdefault("heartbeat_interval", HEARTBEAT)
        self.loop = asyncio.new_event_loop()
        self.worker = Worker(app, config, endpoint, **kwargs)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> WorkerThread:
        self._thread.start()
        self.call(self.worker.start())
        return self

    def call(self, coro: Any, timeout: float = TIMEOUT) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.worker.stop(timeout=2.0), timeout=TIMEOUT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(TIMEOUT)
            if not self._thread.is_alive():
                self.loop.close()


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def gateway(context: zmq.Context[Any]) -> Iterator[FakeGateway]:
    gw = FakeGateway(context)
    yield gw
    gw.close()


@pytest.fixture
def run_worker(context: zmq.Context[Any], gateway: FakeGateway
               ) -> Iterator[Callable[..., WorkerThread]]:
    started: list[WorkerThread] = []

    def start(app: Any, **kwargs: Any) -> WorkerThread:
        kwargs.setdefault("context", context)
        thread = WorkerThread(app, gateway.endpoint, **kwargs).start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


# -- apps ------------------------------------------------------------------------------


def hello_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello ", environ["PATH_INFO"].encode()]


def echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]


def make_streaming_app(chunks: int, size: int) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        for _ in range(chunks):
            yield b"x" * size
    return app


async def asgi_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"x-path", scope["path"].encode())]})
    await send({"type": "http.response.body", "body": b"asgi:" + body})


def ready(gateway: FakeGateway) -> Ready:
    message: Ready = gateway.recv_type(Ready)
    return message


# -- tests -----------------------------------------------------------------------------


def test_ready_announces_capacity(gateway: FakeGateway, run_worker: Any) -> None:
    run_worker(hello_app, capacity=7, body_window=4096, app_name="tests:hello")
    message = ready(gateway)
    assert message.capacity == 7
    assert message.body_window == 4096
    assert message.revision == REVISION
    assert message.app == "tests:hello"
    assert message.pid > 0


def test_wsgi_get(gateway: FakeGateway, run_worker: Any) -> None:
    run_worker(hello_app, capacity=2)
    ready(gateway)
    request_id = gateway.request(b"GET", b"/world")
    head, body, end = gateway.response(request_id)
    assert head.status == 200
    assert (b"Content-Type", b"text/plain") in head.headers
    assert body == b"hello /world"
    assert end.aborted is False
    assert gateway.recv_type(Credit).slots == 1


def test_wsgi_post_echo(gateway: FakeGateway, run_worker: Any) -> None:
    run_worker(echo_app)
    ready(gateway)
    request_id = gateway.request(b"POST", b"/echo", length=11,
                                 headers=[(b"content-length", b"11")])
    gateway.send(RequestBody(request_id, b"hello "))
    gateway.send(RequestBody(request_id, b"world"))
    gateway.send(RequestEnd(request_id, []))
    head, body, _end = gateway.response(request_id)
    assert head.status == 200
    assert body == b"hello world"
    assert gateway.recv_type(Credit).slots == 1


def test_chunked_body_and_body_credit(gateway: FakeGateway, run_worker: Any) -> None:
    run_worker(echo_app, body_window=1000)
    assert ready(gateway).body_window == 1000
    request_id = gateway.request(b"POST", b"/", length=None,
                                 headers=[(b"transfer-encoding", b"chunked")])
    sent = 0
    credited = 0
    for _ in range(10):  # 3000 bytes through a 1000-byte window
        while sent + 300 > 1000 + credited:
            credit = gateway.recv_type(BodyCredit)
            assert credit.id == request_id
            credited += credit.size
        gateway.send(RequestBody(request_id, b"b" * 300))
        sent += 300
    gateway.send(RequestEnd(request_id, []))
    head = gateway.recv()
    while isinstance(head, BodyCredit):
        head = gateway.recv()
    assert isinstance(head, ResponseHead)
    body = b""
    while True:
        message = gateway.recv()
        if isinstance(message, ResponseEnd):
            break
        if isinstance(message, ResponseBody):
            body += message.data
    assert body == b"b" * 3000
    assert credited > 0


def test_asgi_echo(gateway: FakeGateway, run_worker: Any) -> None:
    run_worker(asgi_echo, config=Config(lifespan="off", access_log=False))
    ready(gateway)
    request_id = gateway.request(b"PUT", b"/a%20b", length=4,
                                 headers=[(b"content-length", b"4")])
    gateway.send(RequestBody(request_id, b"ping"))
    gateway.send(RequestEnd(request_id, []))
    head, body, end = gateway.response(request_id)
    assert head.status == 201
    assert (b"x-path", b"/a b") in head.headers
    assert body == b"asgi:ping"
    assert not end.aborted
    assert gateway.recv_type(Credit).slots == 1


def test_expect_continue_only_when_app_reads(gateway: FakeGateway, run_worker: Any) -> None:
    release = threading.Event()

    def slow_reader(environ: dict[str, Any], start_response: Callable[..., Any]
                    ) -> Iterable[bytes]:
        release.wait(TIMEOUT)
        body = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [body]

    run_worker(slow_reader)
    ready(gateway)
    request_id = gateway.request(b"POST", b"/", length=3, expect=True,
                                 headers=[(b"content-length", b"3"),
                                          (b"expect", b"100-continue")])
    gateway.no_message(0.3)  # the app has not read: no Continue yet
    release.set()
    assert gateway.recv_type(Continue).id == request_id
    gateway.send(RequestBody(request_id, b"abc"))
    gateway.send(RequestEnd(request_id, []))
    _head, body, _end = gateway.response(request_id)
    assert body == b"abc"


def test_expect_continue_not_sent_when_app_answers_first(
        gateway: FakeGateway, run_worker: Any) -> None:
    def refuse(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("401 Unauthorized", [])
        return [b"no"]

    run_worker(refuse)
    ready(gateway)
    request_id = gateway.request(b"POST", b"/", length=3, expect=True)
    head, body, _end = gateway.response(request_id)  # no Continue before the head
    assert head.status == 401
    assert body == b"no"
    assert gateway.recv_type(Credit).slots == 1


def test_response_credit_paces_streaming(gateway: FakeGateway, run_worker: Any) -> None:
    run_worker(make_streaming_app(chunks=40, size=10_000))
    ready(gateway)
    request_id = gateway.request(b"GET", b"/big", window=25_000)
    assert gateway.recv_type(ResponseHead).id == request_id
    received = 0
    while received < 25_000:
        received += len(gateway.recv_type(ResponseBody).data)
    assert received == 25_000
    gateway.no_message(0.3)  # stopped at the window
    total = received
    ended = False
    while not ended:
        gateway.send(ResponseCredit(request_id, 100_000))
        while True:
            try:
                message = gateway.recv(timeout=0.5)
            except AssertionError:
                break
            if isinstance(message, ResponseEnd):
                ended = True
                break
            assert isinstance(message, ResponseBody)
            total += len(message.data)
    assert total == 400_000
    assert gateway.recv_type(Credit).slots == 1


def test_cancel_disconnects_streaming_asgi_app(gateway: FakeGateway, run_worker: Any) -> None:
    seen: list[str] = []
    finished = threading.Event()

    async def streamer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def watch() -> None:
            while True:  # the (empty) request body first, then the disconnect
                message = await receive()
                seen.append(message["type"])
                if message["type"] == "http.disconnect":
                    return

        watcher = asyncio.ensure_future(watch())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while not watcher.done():
                await send({"type": "http.response.body", "body": b"tick", "more_body": True})
                await asyncio.sleep(0.02)
        except OSError:
            seen.append("send failed")
        finally:
            await asyncio.wait_for(watcher, TIMEOUT)
            finished.set()

    run_worker(streamer, config=Config(lifespan="off", access_log=False))
    ready(gateway)
    request_id = gateway.request(b"GET", b"/stream")
    assert gateway.recv_type(ResponseHead).id == request_id
    assert gateway.recv_type(ResponseBody).data == b"tick"
    gateway.send(Cancel(request_id, CancelReason.CLIENT_GONE))
    assert finished.wait(TIMEOUT)
    assert "http.disconnect" in seen
    # Nothing more for the request, except what crossed the Cancel; the slot comes back.
    while True:
        message = gateway.recv()
        if isinstance(message, Credit):
            assert message.slots == 1
            break
        assert isinstance(message, ResponseBody)


def test_cancel_makes_wsgi_writes_fail(gateway: FakeGateway, run_worker: Any) -> None:
    failed = threading.Event()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [])
        try:
            for _ in range(500):
                yield b"y" * 1000
                time.sleep(0.01)
        except GeneratorExit:
            failed.set()
            raise

    run_worker(app)
    ready(gateway)
    request_id = gateway.request(b"GET", b"/")
    gateway.recv_type(ResponseHead)
    gateway.send(Cancel(request_id, CancelReason.TIMEOUT))
    assert failed.wait(TIMEOUT)
    while True:
        message = gateway.recv()
        if isinstance(message, Credit):
            break
        assert isinstance(message, ResponseBody)


def test_heartbeats_arrive(gateway: FakeGateway, run_worker: Any) -> None:
    run_worker(hello_app)
    ready(gateway)
    beats = 0
    deadline = time.monotonic() + TIMEOUT
    while beats < 3 and time.monotonic() < deadline:
        gateway.send(Heartbeat())  # keep the worker from thinking us lost
        if isinstance(gateway.recv(timeout=1.0, skip_heartbeats=False), Heartbeat):
            beats += 1
    assert beats == 3


def test_reconnects_to_new_gateway_when_silent(
        context: zmq.Context[Any], gateway: FakeGateway, run_worker: Any) -> None:
    worker = run_worker(hello_app, capacity=3)
    ready(gateway)
    first_identity = gateway.identity
    port = gateway.port
    gateway.close()  # silent from now on
    time.sleep(0.2)
    second = FakeGateway(context, port)
    try:
        message = second.recv_type(Ready, timeout=TIMEOUT)
        assert message.capacity == 3
        assert second.identity != first_identity
        assert worker.worker.connections >= 2
        request_id = second.request(b"GET", b"/again")
        _head, body, _end = second.response(request_id)
        assert body == b"hello /again"
    finally:
        second.close()


def test_goodbye_from_gateway_starts_over(gateway: FakeGateway, run_worker: Any) -> None:
    run_worker(hello_app, capacity=2)
    ready(gateway)
    first = gateway.identity
    gateway.send(Goodbye())
    assert gateway.recv_type(Ready).capacity == 2
    assert gateway.identity != first


def test_malformed_messages_are_dropped(gateway: FakeGateway, run_worker: Any,
                                        caplog: pytest.LogCaptureFixture) -> None:
    run_worker(hello_app)
    ready(gateway)
    with caplog.at_level(logging.WARNING, logger="zmqhttp.error"):
        gateway.send_raw([b"garbage"])
        gateway.send_raw([SIGNATURE, b"\xc1"])
        gateway.send_raw(encode(Credit(1)))  # a worker's message, from the gateway
        gateway.send(ResponseCredit(999, 10))  # unknown id: dropped silently
        request_id = gateway.request(b"GET", b"/still")
        _head, body, _end = gateway.response(request_id)
    assert body == b"hello /still"
    assert any("malformed" in record.getMessage() for record in caplog.records)


def test_websocket_upgrade_gets_501(gateway: FakeGateway, run_worker: Any) -> None:
    run_worker(hello_app)
    ready(gateway)
    request_id = gateway.request(b"GET", b"/ws", headers=[
        (b"connection", b"Upgrade"), (b"upgrade", b"websocket"),
        (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"sec-websocket-version", b"13")])
    head, _body, _end = gateway.response(request_id)
    assert head.status == 501
    assert gateway.recv_type(Credit).slots == 1


def test_app_error_gives_500(gateway: FakeGateway, run_worker: Any) -> None:
    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raise RuntimeError("boom")

    run_worker(broken)
    ready(gateway)
    request_id = gateway.request()
    head, _body, end = gateway.response(request_id)
    assert head.status == 500
    assert not end.aborted
    assert gateway.recv_type(Credit).slots == 1


def test_graceful_stop_says_goodbye_after_in_flight(
        gateway: FakeGateway, context: zmq.Context[Any]) -> None:
    release = threading.Event()

    def slow(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        release.wait(TIMEOUT)
        start_response("200 OK", [])
        return [b"done"]

    thread = WorkerThread(slow, gateway.endpoint, context=context).start()
    try:
        ready(gateway)
        request_id = gateway.request()
        time.sleep(0.1)
        stopping = asyncio.run_coroutine_threadsafe(thread.worker.stop(timeout=TIMEOUT),
                                                    thread.loop)
        assert isinstance(gateway.recv(), Goodbye)
        release.set()
        _head, body, _end = gateway.response(request_id)
        assert body == b"done"
        stopping.result(TIMEOUT)
    finally:
        release.set()
        thread.stop()


def test_cli_worker_command(gateway: FakeGateway, tmp_path: Any) -> None:
    import signal
    import subprocess
    import sys

    (tmp_path / "fabric_cli_app.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'from the cli']\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "zmqhttp", "worker", "fabric_cli_app:app",
         "--connect", gateway.endpoint, "--app-dir", str(tmp_path),
         "--threads", "2", "--capacity", "5", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        message = gateway.recv_type(Ready, timeout=15.0)
        assert message.capacity == 5
        assert message.app == "fabric_cli_app:app"
        request_id = gateway.request(b"GET", b"/")
        _head, body, _end = gateway.response(request_id)
        assert body == b"from the cli"
        process.send_signal(signal.SIGTERM)
        while not isinstance(gateway.recv(), Goodbye):
            pass
        assert process.wait(TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)
