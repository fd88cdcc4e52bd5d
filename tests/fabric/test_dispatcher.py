"""The gateway's dispatcher against a worker played by the test on a real DEALER socket."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import zmq

from zmqhttp.fabric.dispatcher import FabricAdapter
from zmqhttp.fabric.protocol import (
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
from zmqhttp.server.server import Server
from zmqhttp.testing import ServerThread

Response = tuple[int, dict[str, str], bytes]


class FakeWorker:
    """A worker played by hand: a DEALER socket speaking the fabric protocol."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str) -> None:
        self.sock: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        #: Heartbeat the gateway while waiting (a silent worker is lost).
        self.alive = True
        #: Ids answered whole: a Cancel for one of them crossed our ResponseEnd.
        self.answered: set[int] = set()
        self._last_sent = time.monotonic()

    def send(self, message: Message) -> None:
        self.sock.send_multipart(encode(message))
        self._last_sent = time.monotonic()

    def ready(self, capacity: int = 1, body_window: int = 65536) -> None:
        self.send(Ready(name="test", pid=1, capacity=capacity, revision=0, app="t:app",
                        body_window=body_window))

    def _heartbeat(self) -> None:
        if self.alive and time.monotonic() - self._last_sent > 0.5:
            self.send(Heartbeat())

    def recv(self, timeout: float = 5.0) -> Message | None:
        """The next message that is not a Heartbeat, or None after ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            self._heartbeat()
            left = end - time.monotonic()
            if left <= 0:
                return None
            if self.sock.poll(min(left, 0.2) * 1000):
                message = decode(self.sock.recv_multipart(), Side.GATEWAY)
                if isinstance(message, Cancel) and message.id in self.answered:
                    continue  # the client had it all and left before our ResponseEnd
                if not isinstance(message, Heartbeat):
                    return message

    def expect(self, kind: type, timeout: float = 5.0) -> Any:
        message = self.recv(timeout)
        assert isinstance(message, kind), f"expected {kind.__name__}, got {message!r}"
        return message

    def respond(self, request_id: int, body: bytes, status: int = 200) -> None:
        self.send(ResponseHead(request_id, status, [(b"Content-Length", b"%d" % len(body))]))
        if body:
            self.send(ResponseBody(request_id, body))
        self.send(ResponseEnd(request_id, [], False))
        self.answered.add(request_id)

    def close(self) -> None:
        self.sock.close(linger=0)


class Gateway:
    def __init__(self, thread: ServerThread, adapter: FabricAdapter) -> None:
        self.thread = thread
        self.adapter = adapter
        self.endpoint = adapter.endpoints[0]
        self.pool = ThreadPoolExecutor(8)

    def fetch(self, path: str, method: str = "GET", body: bytes | None = None,
              headers: dict[str, str] | None = None, timeout: float = 10.0) -> Response:
        conn = http.client.HTTPConnection(self.thread.host, self.thread.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def submit(self, path: str, method: str = "GET", body: bytes | None = None,
               timeout: float = 10.0) -> Future[Response]:
        return self.pool.submit(self.fetch, path, method, body, None, timeout)

    def wait_ready(self, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.fetch("/readyz")[0] == 200:
                return
            time.sleep(0.02)
        raise AssertionError("gateway never became ready")


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def gateway() -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(**settings: Any) -> Gateway:
        settings.setdefault("fabric", ["tcp://127.0.0.1:*"])
        thread = ServerThread(None, **settings)
        adapter = FabricAdapter(thread.server.config)
        thread.server = Server(None, thread.server.config, adapter=adapter)
        thread.start()
        gw = Gateway(thread, adapter)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.thread.stop(timeout=5)
        gw.pool.shutdown(wait=False, cancel_futures=True)


def raw_connect(gw: Gateway) -> socket.socket:
    sock = socket.create_connection((gw.thread.host, gw.thread.port), timeout=5)
    return sock


def test_dispatcher_no_worker_readyz_and_queue_timeout(gateway: Callable[..., Gateway]) -> None:
    gw = gateway(queue_timeout=0.5)
    assert gw.fetch("/healthz")[0] == 200
    assert gw.fetch("/readyz")[0] == 503
    started = time.monotonic()
    status, headers, _ = gw.fetch("/anything")
    waited = time.monotonic() - started
    assert status == 503
    assert "retry-after" in headers
    assert 0.4 <= waited < 3.0


def test_dispatcher_get_reaches_worker_and_response_relayed(
        gateway: Callable[..., Gateway], ctx: zmq.Context[Any]) -> None:
    gw = gateway()
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=1)
    gw.wait_ready()
    future = gw.submit("/hello?x=1")
    head = worker.expect(RequestHead)
    assert (head.method, head.path, head.query, head.target) == (
        b"GET", b"/hello", b"x=1", b"/hello?x=1")
    assert head.content_length == 0 and not head.expect_continue
    assert head.response_window > 0
    assert (b"host", f"{gw.thread.host}:{gw.thread.port}".encode()) in head.headers
    worker.send(ResponseHead(head.id, 201, [(b"Content-Type", b"text/plain"),
                                           (b"X-Worker", b"fake")]))
    worker.send(ResponseBody(head.id, b"hello "))
    worker.send(ResponseBody(head.id, b"world"))
    worker.send(ResponseEnd(head.id, [], False))
    status, headers, body = future.result(10)
    assert (status, body, headers["x-worker"]) == (201, b"hello world", "fake")
    worker.send(Credit(1))
    worker.close()


def test_dispatcher_never_exceeds_credit(gateway: Callable[..., Gateway],
                                         ctx: zmq.Context[Any]) -> None:
    gw = gateway()
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=1)
    gw.wait_ready()
    first = gw.submit("/one")
    head1 = worker.expect(RequestHead)
    second = gw.submit("/two")
    assert worker.recv(0.5) is None  # queued: no credit left
    worker.respond(head1.id, b"1")
    assert first.result(10)[2] == b"1"
    assert worker.recv(0.3) is None  # still no credit until the slot comes back
    worker.send(Credit(1))
    head2 = worker.expect(RequestHead)
    assert head2.path == b"/two" and head2.id != head1.id
    worker.respond(head2.id, b"2")
    assert second.result(10)[2] == b"2"
    worker.close()


def test_dispatcher_post_body_streamed_within_window(gateway: Callable[..., Gateway],
                                                     ctx: zmq.Context[Any]) -> None:
    gw = gateway()
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=1, body_window=4)
    gw.wait_ready()
    future = gw.submit("/upload", "POST", b"0123456789")
    head = worker.expect(RequestHead)
    assert head.method == b"POST" and head.content_length == 10
    received = b""
    while len(received) < 4:
        piece = worker.expect(RequestBody)
        received += piece.data
    assert received == b"0123"
    assert worker.recv(0.3) is None  # window closed
    worker.send(BodyCredit(head.id, 6))
    while len(received) < 10:
        received += worker.expect(RequestBody).data
    assert received == b"0123456789"
    worker.expect(RequestEnd)
    worker.respond(head.id, b"got 10")
    assert future.result(10)[:1] == (200,)
    worker.close()


def test_dispatcher_expect_continue_waits_for_worker(gateway: Callable[..., Gateway],
                                                     ctx: zmq.Context[Any]) -> None:
    gw = gateway()
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=1)
    gw.wait_ready()
    client = raw_connect(gw)
    client.sendall(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                   b"Expect: 100-continue\r\n\r\n")
    head = worker.expect(RequestHead)
    assert head.expect_continue
    client.settimeout(0.4)
    with pytest.raises(TimeoutError):
        client.recv(100)  # no 100 Continue before the worker asks
    assert worker.recv(0.2) is None  # and no body
    worker.send(Continue(head.id))
    client.settimeout(5)
    assert client.recv(100).startswith(b"HTTP/1.1 100 Continue")
    client.sendall(b"hello")
    assert worker.expect(RequestBody).data == b"hello"
    worker.expect(RequestEnd)
    worker.respond(head.id, b"ok")
    data = b""
    while not data.endswith(b"ok"):
        chunk = client.recv(1000)
        assert chunk
        data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    client.close()
    worker.close()


def test_dispatcher_silent_worker_becomes_502(gateway: Callable[..., Gateway],
                                              ctx: zmq.Context[Any]) -> None:
    gw = gateway()
    silent = FakeWorker(ctx, gw.endpoint)
    silent.ready(capacity=1)
    gw.wait_ready()
    lost = gw.submit("/slow", "POST", b"")  # not idempotent: never retried
    silent.expect(RequestHead)
    silent.alive = False
    started = time.monotonic()
    healthy = FakeWorker(ctx, gw.endpoint)
    healthy.ready(capacity=1)
    served = 0
    while not lost.done() and time.monotonic() - started < 8:
        future = gw.submit("/fast")
        head = healthy.expect(RequestHead)
        healthy.respond(head.id, b"fast")
        assert future.result(10)[2] == b"fast"
        healthy.send(Credit(1))
        served += 1
    assert lost.result(1)[0] == 502
    assert time.monotonic() - started < 5.0
    assert served >= 2
    assert gw.fetch("/readyz")[0] == 200
    silent.close()
    healthy.close()


def test_dispatcher_idempotent_request_retried_on_another_worker(
        gateway: Callable[..., Gateway], ctx: zmq.Context[Any]) -> None:
    gw = gateway()
    silent = FakeWorker(ctx, gw.endpoint)
    silent.ready(capacity=1)
    gw.wait_ready()
    future = gw.submit("/again")
    first = silent.expect(RequestHead)
    silent.alive = False
    healthy = FakeWorker(ctx, gw.endpoint)
    healthy.ready(capacity=1)
    head = healthy.expect(RequestHead, timeout=6)
    assert head.path == b"/again" and head.id != first.id
    healthy.respond(head.id, b"retried")
    assert future.result(10)[:1] == (200,)
    assert future.result()[2] == b"retried"
    silent.close()
    healthy.close()


def test_dispatcher_request_timeout_504_and_cancel(gateway: Callable[..., Gateway],
                                                   ctx: zmq.Context[Any]) -> None:
    gw = gateway(request_timeout=0.5)
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=1)
    gw.wait_ready()
    future = gw.submit("/never")
    head = worker.expect(RequestHead)
    assert future.result(5)[0] == 504
    cancel = worker.expect(Cancel)
    assert (cancel.id, cancel.reason) == (head.id, CancelReason.TIMEOUT)
    worker.close()


def test_dispatcher_client_disconnect_cancels(gateway: Callable[..., Gateway],
                                              ctx: zmq.Context[Any]) -> None:
    gw = gateway()
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=1)
    gw.wait_ready()
    client = raw_connect(gw)
    client.sendall(b"GET /wait HTTP/1.1\r\nHost: a\r\n\r\n")
    head = worker.expect(RequestHead)
    client.close()
    cancel = worker.expect(Cancel)
    assert (cancel.id, cancel.reason) == (head.id, CancelReason.CLIENT_GONE)
    worker.close()


def test_dispatcher_malformed_and_unknown_peers(gateway: Callable[..., Gateway],
                                                ctx: zmq.Context[Any]) -> None:
    gw = gateway()
    worker = FakeWorker(ctx, gw.endpoint)
    worker.sock.send_multipart([b"garbage"])
    worker.sock.send_multipart([b"ZHF\x02", b"\x80"])
    worker.sock.send_multipart([b"ZHF\x01", b"not msgpack \xc1"])
    worker.ready(capacity=1)
    gw.wait_ready()
    worker.sock.send_multipart([b"ZHF\x01", b"\x81\xa1t\x18"])  # ResponseHead without keys
    future = gw.submit("/ok")
    head = worker.expect(RequestHead)
    worker.respond(head.id, b"fine")
    assert future.result(10)[2] == b"fine"
    # A peer that never sent Ready is told Goodbye.
    stranger = FakeWorker(ctx, gw.endpoint)
    stranger.send(Heartbeat())
    stranger.expect(Goodbye)
    stranger.close()
    worker.close()


def test_dispatcher_worker_goodbye_drains(gateway: Callable[..., Gateway],
                                          ctx: zmq.Context[Any]) -> None:
    gw = gateway(queue_timeout=0.5)
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=2)
    gw.wait_ready()
    future = gw.submit("/last")
    head = worker.expect(RequestHead)
    worker.send(Goodbye())
    time.sleep(0.1)
    assert gw.fetch("/readyz")[0] == 503
    assert gw.fetch("/new")[0] == 503  # no new requests for a leaving worker
    worker.respond(head.id, b"finished")
    assert future.result(10)[2] == b"finished"
    worker.close()


def test_dispatcher_response_credit_and_heartbeats(gateway: Callable[..., Gateway],
                                                   ctx: zmq.Context[Any]) -> None:
    gw = gateway(output_high_water=4096)
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=1)
    gw.wait_ready()
    future = gw.submit("/big")
    head = worker.expect(RequestHead)
    assert head.response_window == 4096
    worker.send(ResponseHead(head.id, 200, [(b"Content-Length", b"8192")]))
    worker.send(ResponseBody(head.id, b"a" * 4096))  # the whole window
    credit = worker.expect(ResponseCredit)
    assert credit.id == head.id and 0 < credit.size <= 4096
    worker.send(ResponseBody(head.id, b"b" * 4096))
    worker.send(ResponseEnd(head.id, [], False))
    worker.answered.add(head.id)
    status, _, body = future.result(10)
    assert (status, len(body)) == (200, 8192)
    # An idle link carries the gateway's heartbeat about once a second.
    worker.alive = True
    deadline = time.monotonic() + 3
    seen = False
    while time.monotonic() < deadline and not seen:
        if worker.sock.poll(200):
            seen = isinstance(decode(worker.sock.recv_multipart(), Side.GATEWAY), Heartbeat)
    assert seen
    worker.close()


def test_dispatcher_gateway_cli_help() -> None:
    from click.testing import CliRunner

    from zmqhttp.cli import main

    result = CliRunner().invoke(main, ["gateway", "--help"])
    assert result.exit_code == 0
    for flag in ("--bind", "--fabric", "--queue-limit", "--queue-timeout", "--request-timeout"):
        assert flag in result.output


def test_dispatcher_graceful_stop_answers_workerless_queue_at_once(
        gateway: Callable[..., Gateway]) -> None:
    gw = gateway(queue_timeout=30, timeout_graceful_shutdown=20)
    queued = gw.submit("/waiting")
    time.sleep(0.3)  # the request is in the gateway's queue: no worker attached
    assert not queued.done()
    started = time.monotonic()
    gw.thread.stop(timeout=20)
    status, headers, _ = queued.result(5)
    assert status == 503 and "retry-after" in headers
    # Neither the 30 s queue deadline nor the 20 s graceful deadline held the stop.
    assert time.monotonic() - started < 5
