"""Gateway and worker together: real HTTP clients, a real FabricAdapter, real Workers."""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from zmqhttp.config import Config
from zmqhttp.fabric.dispatcher import FabricAdapter, _private_endpoint
from zmqhttp.testing import ServerThread, WorkerThread


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part %d\n" % i for i in range(5))
    if path == "/slow":
        time.sleep(30)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from a worker\n"]


@pytest.fixture
def fabric() -> Iterator[Callable[[int], tuple[ServerThread, list[WorkerThread]]]]:
    cleanup: list[Callable[[], None]] = []

    def start(workers: int) -> tuple[ServerThread, list[WorkerThread]]:
        gateway = ServerThread(None, adapter=FabricAdapter, fabric=["tcp://127.0.0.1:*"],
                               timeout_graceful_shutdown=3).start()
        cleanup.append(lambda: gateway.stop(timeout=5))
        assert isinstance(gateway.adapter, FabricAdapter)
        endpoint = gateway.adapter.endpoints[0]
        started = [WorkerThread(app, endpoint, Config(threads=4, access_log=False)).start()
                   for _ in range(workers)]
        for worker in started:
            cleanup.append(worker.stop)
        deadline = time.monotonic() + 10
        while status(gateway, "/readyz") != 200:
            assert time.monotonic() < deadline, "no worker became ready"
            time.sleep(0.05)
        return gateway, started

    yield start
    for step in reversed(cleanup):
        with contextlib.suppress(Exception):  # best effort; the test result stands
            step()


def status(gateway: ServerThread, path: str, method: str = "GET") -> int:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    conn.request(method, path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status


def test_requests_flow_through_gateway_and_workers(
    fabric: Callable[[int], tuple[ServerThread, list[WorkerThread]]],
) -> None:
    gateway, _ = fabric(2)
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    for _ in range(20):
        conn.request("GET", "/")
        response = conn.getresponse()
        assert (response.status, response.read()) == (200, b"hello from a worker\n")
    body = bytes(range(256)) * 4096  # 1 MiB, several body frames and credits
    conn.request("POST", "/echo", body=body)
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, body)
    conn.request("GET", "/stream")
    response = conn.getresponse()
    assert response.read() == b"".join(b"part %d\n" % i for i in range(5))
    conn.close()


def test_expect_continue_decided_by_the_worker_app(
    fabric: Callable[[int], tuple[ServerThread, list[WorkerThread]]],
) -> None:
    gateway, _ = fabric(1)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        data = b""
        while not data.endswith(b"hello"):
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_lost_worker_costs_only_its_requests(
    fabric: Callable[[int], tuple[ServerThread, list[WorkerThread]]],
) -> None:
    gateway, workers = fabric(2)
    results: list[int] = []

    def slow() -> None:
        # POST: not idempotent, so the gateway must not retry it elsewhere (a
        # GET would be retried on the healthy worker, which sleeps as well).
        results.append(status(gateway, "/slow", "POST"))

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)  # the slow request is on one of the workers now
    victim = next(w for w in workers if w.worker.in_flight)
    victim.freeze()
    thread.join(15)
    assert results == [502]
    assert all(status(gateway, "/") == 200 for _ in range(10))


@pytest.mark.parametrize(
    ("endpoint", "private"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://[::1]:5555", True),
        ("tcp://localhost:5555", True),
        ("ipc:///tmp/zmqhttp.sock", True),
        ("tcp://*:5555", False),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://10.0.0.5:5555", False),
        ("tcp://eth0:5555", False),
    ],
)
def test_only_private_fabric_endpoints_without_curve(endpoint: str, private: bool) -> None:
    assert _private_endpoint(endpoint) is private


def test_gateway_refuses_a_public_fabric_without_insecure() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zmqhttp", "gateway", "--bind", "127.0.0.1:0",
         "--fabric", "tcp://0.0.0.0:0"],
        capture_output=True, text=True, timeout=20,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: refusing to bind the fabric"), result.stderr
    assert "Traceback" not in result.stderr
