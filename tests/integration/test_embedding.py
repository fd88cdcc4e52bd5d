"""Embedding the server in an asyncio program, and shutting it down."""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections.abc import Callable, Iterable

import httpx
import zmq
import zmq.asyncio

import zmqhttp
from rawhttp import Environ, Reader, StartResponse, connect, simple_app, wait_for
from zmqhttp.testing import ServerThread

Serve = Callable[..., ServerThread]


def test_start_stop_alongside_zmq_asyncio_socket() -> None:
    async def main() -> None:
        ctx = zmq.asyncio.Context()
        server = zmqhttp.Server(simple_app(b"embedded"), bind=["tcp://127.0.0.1:0"],
                                context=ctx, access_log=False)
        rep = ctx.socket(zmq.REP)
        port = rep.bind_to_random_port("tcp://127.0.0.1")
        req = ctx.socket(zmq.REQ)
        req.connect(f"tcp://127.0.0.1:{port}")

        async def echo() -> None:
            for _ in range(10):
                await rep.send(b"re:" + await rep.recv())

        await server.start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        echo_task = asyncio.create_task(echo())
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                for i in range(10):
                    resp, _ = await asyncio.gather(client.get(url), req.send(b"%d" % i))
                    assert resp.content == b"embedded"
                    assert await asyncio.wait_for(req.recv(), 5) == b"re:%d" % i
            await asyncio.wait_for(echo_task, 5)
        finally:
            await asyncio.wait_for(server.stop(), 10)
            for sock in (rep, req):
                sock.close(linger=0)
        # The shared context is the program's: still usable after the server stopped.
        assert not ctx.closed
        ctx.term()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_async_with_server() -> None:
    async def main() -> bytes:
        async with zmqhttp.Server(simple_app(b"ctx"), bind=["127.0.0.1:0"],
                                  access_log=False) as server:
            assert server.endpoints[0].startswith("tcp://127.0.0.1:")
            port = server.server_address[1]
            async with httpx.AsyncClient(timeout=5) as client:
                body = (await client.get(f"http://127.0.0.1:{port}/")).content
        assert server.connection_count == 0
        return body

    assert asyncio.run(asyncio.wait_for(main(), 30)) == b"ctx"


def test_graceful_stop_finishes_in_flight_and_closes_idle() -> None:
    entered = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/slow":
            entered.set()
            time.sleep(0.7)
        start_response("200 OK", [("Content-Length", "4")])
        return [b"done"]

    server = ServerThread(app).start()
    idle = connect(server.port)
    idle_reader = Reader(idle)
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle_reader.response().body == b"done"
    busy = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    busy.request("GET", "/slow")
    assert entered.wait(3)
    stopper = threading.Thread(target=server.stop, kwargs={"timeout": 5})
    started = time.monotonic()
    stopper.start()
    assert idle_reader.at_eof(timeout=2)  # idle keep-alive connection closed at once
    resp = busy.getresponse()
    assert (resp.status, resp.read()) == (200, b"done")
    assert resp.getheader("Connection") == "close"
    busy.close()
    stopper.join(10)
    assert not stopper.is_alive()
    assert time.monotonic() - started < 3
    idle.close()


def test_stop_timeout_forces_stuck_connections_closed() -> None:
    server = ServerThread(simple_app()).start()
    stuck = connect(server.port)
    stuck.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
    assert wait_for(lambda: server.server.connection_count == 1)
    started = time.monotonic()
    server.stop(timeout=0.5)
    assert time.monotonic() - started < 3
    assert Reader(stuck).at_eof(timeout=2)
    stuck.close()
