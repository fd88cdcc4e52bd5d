"""``serve --metrics-bind``: a plain server's requests by status, latency and live gauges."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import zmq

from zmqhttp.testing import ServerThread

_RELEASE = threading.Event()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/wait":
        _RELEASE.wait(10)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hi"]


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def metrics(server: ServerThread) -> dict[str, float]:
    exporter = server.server.exporter
    assert exporter is not None
    status, text = get(exporter.port, "/metrics")
    assert status == 200
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_server_counts_responses_latency_and_requests_in_progress() -> None:
    with ServerThread(app, metrics_bind=["127.0.0.1:0"]) as server:
        assert get(server.port, "/")[0] == 200
        # A head that cannot be parsed never becomes a request: like the access
        # log, the metrics do not count its 400 (docs/deployment.md says so).
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400 ")
        waiting = threading.Thread(target=get, args=(server.port, "/wait"))
        waiting.start()
        try:
            samples: dict[str, float] = {}
            for _ in range(100):
                samples = metrics(server)
                if samples["zmqhttp_requests_in_progress"] == 1:
                    break
            assert samples["zmqhttp_requests_in_progress"] == 1
            assert samples["zmqhttp_connections"] >= 1
        finally:
            _RELEASE.set()
            waiting.join(10)
        samples = metrics(server)
        assert samples['zmqhttp_requests_total{code="200"}'] == 2
        assert 'zmqhttp_requests_total{code="400"}' not in samples
        assert samples["zmqhttp_request_duration_seconds_count"] == 2
        assert samples["zmqhttp_requests_in_progress"] == 0
        assert "zmqhttp_gateway_workers" not in samples  # only the gateway has those
        exporter = server.server.exporter
        assert exporter is not None
        assert get(exporter.port, "/readyz") == (200, "ready\n")


def test_serve_refuses_metrics_with_several_processes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zmqhttp", "serve", "nowhere:app", "--workers", "2",
         "--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: --metrics-bind")


def test_a_bad_metrics_address_is_one_error_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zmqhttp", "gateway", "--fabric", "tcp://127.0.0.1:0",
         "--bind", "127.0.0.1:0", "--metrics-bind", "ipc:///tmp/x"],
        capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("Error: only tcp://")


def test_a_taken_metrics_port_fails_the_start_and_frees_the_main_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ServerThread(app, metrics_bind=[f"127.0.0.1:{port}"])
        with pytest.raises(zmq.ZMQError):
            server.start()
        assert server.server.closed
        main = int(server.server.endpoints[0].rsplit(":", 1)[1])
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", main))  # the main listener was closed too
