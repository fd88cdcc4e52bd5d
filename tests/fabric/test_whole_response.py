# The fixtures imported from test_dispatcher are test parameters here.
# ruff: noqa: F811
"""Revision 1: a whole response as one ``Response`` message, its slot riding along.

The worker half runs a real :class:`~zmqhttp.fabric.worker.Worker` against the
hand-played gateway of ``test_worker``; the gateway half runs the real
dispatcher against the hand-played worker of ``test_dispatcher``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import zmq
from test_dispatcher import FakeWorker, Gateway, ctx, gateway, raw_connect  # noqa: F401
from test_worker import FakeGateway, WorkerThread, hello_app, ready

from zmqhttp.fabric.protocol import (
    REVISION,
    Cancel,
    CancelReason,
    Credit,
    RequestHead,
    Response,
    ResponseBody,
    ResponseCredit,
    ResponseEnd,
    ResponseHead,
)

# --- the worker ----------------------------------------------------------------------


@pytest.fixture
def fake_gateway(ctx: zmq.Context[Any]) -> Iterator[FakeGateway]:
    gw = FakeGateway(ctx)
    yield gw
    gw.close()


@pytest.fixture
def run_worker(ctx: zmq.Context[Any], fake_gateway: FakeGateway
               ) -> Iterator[Callable[..., WorkerThread]]:
    started: list[WorkerThread] = []

    def start(app: Any, **kwargs: Any) -> WorkerThread:
        thread = WorkerThread(app, fake_gateway.endpoint, context=ctx, **kwargs).start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


def slots_after(gw: FakeGateway, response: Response) -> int:
    """Slots returned: the Response's own, plus a Credit if the app was late."""
    if response.credit:
        return response.credit
    return int(gw.recv_type(Credit).slots)


def test_wsgi_whole_response_is_one_message(fake_gateway: FakeGateway,
                                            run_worker: Any) -> None:
    run_worker(hello_app)
    ready(fake_gateway)
    request_id = fake_gateway.request(revision=1)
    response = fake_gateway.recv_type(Response)
    assert (response.id, response.status, response.data) == (request_id, 200, b"hello /")
    assert slots_after(fake_gateway, response) == 1
    fake_gateway.no_message(0.2)  # no ResponseHead, ResponseBody, ResponseEnd or Credit


async def asgi_hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hi"})


def test_asgi_whole_response_carries_its_slot(fake_gateway: FakeGateway,
                                              run_worker: Any) -> None:
    run_worker(asgi_hello)
    ready(fake_gateway)
    for _ in range(3):
        request_id = fake_gateway.request(revision=1)
        response = fake_gateway.recv_type(Response)
        assert (response.id, response.data) == (request_id, b"hi")
        # The app returned in the turn of its last send: the slot rides along.
        assert response.credit == 1
        assert (b"content-length", b"2") in response.headers
    fake_gateway.no_message(0.2)


def test_revision_0_gateway_gets_the_streaming_messages(fake_gateway: FakeGateway,
                                                        run_worker: Any) -> None:
    run_worker(hello_app)
    ready(fake_gateway)
    request_id = fake_gateway.request()  # no V key: a revision-0 gateway
    head, body, end = fake_gateway.response(request_id)
    assert (head.status, body, end.aborted) == (200, b"hello /", False)
    assert fake_gateway.recv_type(Credit).slots == 1


def test_response_larger_than_the_window_streams(fake_gateway: FakeGateway,
                                                 run_worker: Any) -> None:
    def big(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "3000")])
        return [b"x" * 3000]

    run_worker(big)
    ready(fake_gateway)
    request_id = fake_gateway.request(window=1024, revision=1)
    assert fake_gateway.recv_type(ResponseHead).id == request_id
    assert len(fake_gateway.recv_type(ResponseBody).data) == 1024
    fake_gateway.send(ResponseCredit(request_id, 4096))
    head_less = b"x" * 1024
    message = fake_gateway.recv()
    while isinstance(message, ResponseBody):
        head_less += message.data
        message = fake_gateway.recv()
    assert isinstance(message, ResponseEnd) and not message.aborted
    assert head_less == b"x" * 3000


def test_streaming_asgi_response_keeps_streaming(fake_gateway: FakeGateway,
                                                 run_worker: Any) -> None:
    async def ticks(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"two"})

    run_worker(ticks)
    ready(fake_gateway)
    request_id = fake_gateway.request(revision=1)
    head, body, end = fake_gateway.response(request_id)
    assert (head.status, body, end.aborted) == (200, b"onetwo", False)


def test_app_error_is_a_whole_500(fake_gateway: FakeGateway, run_worker: Any) -> None:
    def broken(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raise RuntimeError("boom")

    run_worker(broken)
    ready(fake_gateway)
    fake_gateway.request(revision=1)
    response = fake_gateway.recv_type(Response)
    assert response.status == 500
    assert slots_after(fake_gateway, response) == 1


def test_failure_after_a_held_head_still_aborts(fake_gateway: FakeGateway,
                                                run_worker: Any) -> None:
    def half(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [])
        yield b"partial"
        raise RuntimeError("boom")

    run_worker(half)
    ready(fake_gateway)
    request_id = fake_gateway.request(revision=1)
    head = fake_gateway.recv_type(ResponseHead)
    assert (head.id, head.status) == (request_id, 200)
    message = fake_gateway.recv()
    while isinstance(message, ResponseBody):
        message = fake_gateway.recv()
    assert isinstance(message, ResponseEnd) and message.aborted


# --- the gateway -----------------------------------------------------------------------


def test_gateway_announces_its_revision(gateway: Callable[..., Gateway],
                                        ctx: zmq.Context[Any]) -> None:
    gw = gateway()
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=1)
    gw.wait_ready()
    future = gw.submit("/")
    head = worker.expect(RequestHead)
    assert head.revision == REVISION >= 1
    worker.send(Response(head.id, 200, [(b"Content-Length", b"2")], b"", b"ok", 1))
    assert future.result(10)[::2] == (200, b"ok")
    worker.close()


def test_gateway_relays_a_whole_response_and_takes_its_slot(
        gateway: Callable[..., Gateway], ctx: zmq.Context[Any]) -> None:
    gw = gateway()
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=1)
    gw.wait_ready()
    for path in ("/one", "/two", "/three"):
        future = gw.submit(path)
        head = worker.expect(RequestHead)  # the slot came back with the Response
        assert head.path == path.encode()
        worker.send(Response(head.id, 201, [(b"X-Worker", b"fake")], b"", path.encode(), 1))
        status, headers, body = future.result(10)
        assert (status, headers["x-worker"], body) == (201, "fake", path.encode())
    worker.close()


def test_gateway_response_without_credit_keeps_the_slot(
        gateway: Callable[..., Gateway], ctx: zmq.Context[Any]) -> None:
    gw = gateway()
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=1)
    gw.wait_ready()
    first = gw.submit("/one")
    head1 = worker.expect(RequestHead)
    worker.send(Response(head1.id, 200, [(b"Content-Length", b"1")], b"", b"1", 0))
    assert first.result(10)[2] == b"1"
    second = gw.submit("/two")
    assert worker.recv(0.3) is None  # the app has not returned: no slot yet
    worker.send(Credit(1))
    head2 = worker.expect(RequestHead)
    worker.send(Response(head2.id, 200, [(b"Content-Length", b"1")], b"", b"2", 1))
    assert second.result(10)[2] == b"2"
    worker.close()


def test_gateway_credit_of_a_response_for_an_unknown_id_counts(
        gateway: Callable[..., Gateway], ctx: zmq.Context[Any]) -> None:
    gw = gateway()
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=0)
    future = gw.submit("/queued")
    assert worker.recv(0.3) is None
    # Say the request it answers was cancelled meanwhile: the slot still returns.
    worker.send(Response(999, 200, [], b"", b"", 1))
    head = worker.expect(RequestHead)
    worker.send(Response(head.id, 200, [(b"Content-Length", b"1")], b"", b"q", 1))
    assert future.result(10)[2] == b"q"
    worker.close()


def test_gateway_keeps_a_custom_reason_and_drops_a_head_body(
        gateway: Callable[..., Gateway], ctx: zmq.Context[Any]) -> None:
    gw = gateway()
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=2)
    gw.wait_ready()
    client = raw_connect(gw)
    client.sendall(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    head = worker.expect(RequestHead)
    worker.send(Response(head.id, 299, [(b"Content-Length", b"3")], b"Fine", b"abc", 1))
    data = b""
    while not data.endswith(b"abc"):
        data += client.recv(4096)
    assert data.startswith(b"HTTP/1.1 299 Fine\r\n")
    client.sendall(b"HEAD /b HTTP/1.1\r\nHost: a\r\n\r\n")
    head = worker.expect(RequestHead)
    worker.send(Response(head.id, 200, [(b"Content-Length", b"3")], b"", b"abc", 1))
    data = b""
    while b"\r\n\r\n" not in data:
        data += client.recv(4096)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\n")
    assert b"content-length: 3" in data.lower()
    client.close()
    worker.close()


def test_gateway_rejects_a_response_over_the_window(
        gateway: Callable[..., Gateway], ctx: zmq.Context[Any]) -> None:
    gw = gateway(output_high_water=1024)
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=1)
    gw.wait_ready()
    future = gw.submit("/big")
    head = worker.expect(RequestHead)
    assert head.response_window == 1024
    worker.send(Response(head.id, 200, [], b"", b"x" * 1025, 1))
    assert worker.expect(Cancel).reason is CancelReason.PROTOCOL_ERROR
    assert future.result(10)[0] == 502
    worker.close()


def test_gateway_rejects_a_response_after_its_head(
        gateway: Callable[..., Gateway], ctx: zmq.Context[Any]) -> None:
    gw = gateway()
    worker = FakeWorker(ctx, gw.endpoint)
    worker.ready(capacity=1)
    gw.wait_ready()
    client = raw_connect(gw)
    client.sendall(b"GET /twice HTTP/1.1\r\nHost: a\r\n\r\n")
    head = worker.expect(RequestHead)
    worker.send(ResponseHead(head.id, 200, [(b"Content-Length", b"10")]))
    worker.send(Response(head.id, 200, [], b"", b"again", 1))
    assert worker.expect(Cancel).reason is CancelReason.PROTOCOL_ERROR
    client.settimeout(5)
    data = b""
    while chunk := client.recv(4096):  # the head went out: the connection closes
        data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    client.close()
    worker.close()
