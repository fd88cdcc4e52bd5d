"""``--metrics-bind`` on a real gateway: real workers, real HTTP, /metrics parsed back."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from zmqhttp.config import Config
from zmqhttp.fabric.dispatcher import FabricAdapter
from zmqhttp.testing import ServerThread, WorkerThread

#: Set at teardown: frees application threads of a frozen worker.
_RELEASE = threading.Event()
#: The first /hang-once request hangs (until released); later ones answer.
_HUNG: list[bool] = []


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/hang-once" and not _HUNG:
        _HUNG.append(True)
        _RELEASE.wait(30)
    if path == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no\n"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\n"]


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)\Z")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> Samples:
    """The text format back into samples; every sample's family has HELP and TYPE."""
    assert text.endswith("\n")
    typed: set[str] = set()
    samples: Samples = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#"):
            continue
        found = _SAMPLE.match(line)
        assert found is not None, line
        name, labels, value = found.groups()
        family = re.sub(r"_(bucket|sum|count)\Z", "", name)
        assert name in typed or family in typed, f"{name} has no TYPE line"
        pairs = frozenset(_LABEL.findall(labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples[(metric, frozenset(labels.items()))]


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (found, labels) in samples if found == name]


def get(port: int, path: str, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def scrape(gateway: ServerThread) -> Samples:
    status, body, headers = get(metrics_port(gateway), "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(body.decode())


def metrics_port(gateway: ServerThread) -> int:
    exporter = gateway.server.exporter
    assert exporter is not None
    return exporter.port


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


Fabric = Callable[..., tuple[ServerThread, list[WorkerThread]]]


@pytest.fixture
def fabric() -> Iterator[Fabric]:
    cleanup: list[Callable[[], None]] = []

    def start(workers: int, **settings: Any) -> tuple[ServerThread, list[WorkerThread]]:
        gateway = ServerThread(None, adapter=FabricAdapter, fabric=["tcp://127.0.0.1:*"],
                               metrics_bind=["tcp://127.0.0.1:0"], timeout_graceful_shutdown=3,
                               **settings).start()
        cleanup.append(lambda: gateway.stop(timeout=5))
        started = [add_worker(gateway) for _ in range(workers)]
        if workers:
            # On the metrics port: /readyz there is not a request the gateway counts.
            wait_for(lambda: get(metrics_port(gateway), "/readyz")[0] == 200, "a worker")
        return gateway, started

    def add_worker(gateway: ServerThread) -> WorkerThread:
        assert isinstance(gateway.adapter, FabricAdapter)
        # The protocol's heartbeat interval: a shorter one makes an idle worker
        # give up on the gateway (which beats every second) and reconnect,
        # and every reconnection counts as a loss here.
        worker = WorkerThread(app, gateway.adapter.endpoints[0],
                              Config(threads=4, access_log=False)).start()
        cleanup.append(worker.stop)
        return worker

    start.add_worker = add_worker  # type: ignore[attr-defined]
    yield start
    _RELEASE.set()
    for step in reversed(cleanup):
        with contextlib.suppress(Exception):  # best effort; the test result stands
            step()
    _RELEASE.clear()
    _HUNG.clear()


def test_requests_by_status_latency_and_worker_gauges(fabric: Fabric) -> None:
    gateway, _ = fabric(1)
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    for path in ["/"] * 5 + ["/missing"] * 2:
        conn.request("GET", path)
        conn.getresponse().read()
    conn.close()
    samples = scrape(gateway)
    assert value(samples, "zmqhttp_requests_total", code="200") == 5
    assert value(samples, "zmqhttp_requests_total", code="404") == 2
    assert value(samples, "zmqhttp_request_duration_seconds_count") == 7
    assert value(samples, "zmqhttp_request_duration_seconds_bucket", le="+Inf") == 7
    assert 0 < value(samples, "zmqhttp_request_duration_seconds_sum") < 7 * 10
    assert value(samples, "zmqhttp_gateway_workers") == 1
    assert value(samples, "zmqhttp_gateway_worker_attachments_total") == 1
    assert value(samples, "zmqhttp_gateway_queue_length") == 0
    assert value(samples, "zmqhttp_gateway_requests_in_flight") == 0
    assert value(samples, "zmqhttp_gateway_worker_losses_total") == 0
    assert value(samples, "zmqhttp_gateway_retries_total") == 0
    assert value(samples, "zmqhttp_gateway_send_full_total") == 0
    assert value(samples, "zmqhttp_http_send_full_total") == 0
    (labels,) = series(samples, "zmqhttp_gateway_worker_credit")
    assert re.fullmatch(r"[0-9a-f]+", labels["worker"])
    assert labels["name"].endswith(f":{os.getpid()}")
    assert value(samples, "zmqhttp_gateway_worker_capacity", **labels) == 4
    assert 0 <= value(samples, "zmqhttp_gateway_worker_credit", **labels) <= 4
    assert value(samples, "zmqhttp_gateway_worker_requests_in_flight", **labels) == 0
    assert 0 <= value(samples, "zmqhttp_gateway_worker_heartbeat_age_seconds", **labels) < 3
    # Scrapes are not requests of the gateway: counts stay put.
    assert value(scrape(gateway), "zmqhttp_request_duration_seconds_count") == 7


def test_queue_length_and_a_503_from_a_full_queue(fabric: Fabric) -> None:
    gateway, _ = fabric(0, queue_limit=1, queue_timeout=20)
    assert get(metrics_port(gateway), "/readyz")[0] == 503  # no worker yet
    results: list[int] = []
    waiting = threading.Thread(target=lambda: results.append(get(gateway.port, "/")[0]))
    waiting.start()
    wait_for(lambda: value(scrape(gateway), "zmqhttp_gateway_queue_length") == 1,
             "the request to queue")
    assert get(gateway.port, "/")[0] == 503  # the queue is full
    samples = scrape(gateway)
    assert value(samples, "zmqhttp_requests_total", code="503") == 1
    assert value(samples, "zmqhttp_requests_in_progress") == 1  # the queued one
    assert value(samples, "zmqhttp_gateway_workers") == 0
    assert series(samples, "zmqhttp_gateway_worker_credit") == []
    fabric.add_worker(gateway)  # type: ignore[attr-defined]
    waiting.join(10)
    assert results == [200]
    samples = scrape(gateway)
    assert value(samples, "zmqhttp_gateway_queue_length") == 0
    assert value(samples, "zmqhttp_requests_total", code="200") == 1
    assert value(samples, "zmqhttp_requests_total", code="503") == 1
    assert value(samples, "zmqhttp_request_duration_seconds_count") == 2
    assert get(metrics_port(gateway), "/readyz")[0] == 200


def test_a_lost_worker_and_the_retry_are_counted(fabric: Fabric) -> None:
    gateway, workers = fabric(2)
    results: list[int] = []
    client = threading.Thread(target=lambda: results.append(get(gateway.port, "/hang-once")[0]))
    client.start()
    wait_for(lambda: any(w.worker.in_flight for w in workers), "the request at a worker")
    next(w for w in workers if w.worker.in_flight).freeze()
    client.join(15)  # lost after the heartbeat liveness (3 s), then retried: 200
    assert results == [200]
    samples = scrape(gateway)
    assert value(samples, "zmqhttp_gateway_worker_losses_total") == 1
    assert value(samples, "zmqhttp_gateway_retries_total") == 1
    assert value(samples, "zmqhttp_gateway_workers") == 1
    assert len(series(samples, "zmqhttp_gateway_worker_heartbeat_age_seconds")) == 1
    assert value(samples, "zmqhttp_requests_total", code="200") == 1


def test_the_metrics_port_serves_only_metrics_and_health(fabric: Fabric) -> None:
    gateway, _ = fabric(1)
    port = metrics_port(gateway)
    assert get(port, "/healthz")[:2] == (200, b"ok\n")
    assert get(port, "/readyz")[:2] == (200, b"ready\n")
    status, body, headers = get(port, "/metrics", "HEAD")
    assert (status, body) == (200, b"")
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    for path in ("/", "/metrics/", "/metricsx", "/favicon.ico", "/hello"):
        assert get(port, path)[0] == 404, path
    for method in ("POST", "PUT", "DELETE"):
        status, _, headers = get(port, "/metrics", method)
        assert status == 405
        assert headers["allow"] == "GET, HEAD"
    # None of that reached the workers or the gateway's request counts.
    assert series(scrape(gateway), "zmqhttp_requests_total") == []


def test_cli_gateway_with_local_workers_serves_metrics(tmp_path: Path) -> None:
    from test_cli import Proc, free_port
    from test_cli_workers import stop_all

    (tmp_path / "metricsapp.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'hi']\n")
    port, metrics = free_port(), free_port()
    proc = Proc(["gateway", "metricsapp:app", "--app-dir", str(tmp_path), "--workers", "1",
                 "--bind", f"127.0.0.1:{port}", "--no-access-log"], tmp_path,
                env={"ZMQHTTP_METRICS_BIND": f"127.0.0.1:{metrics}"})
    try:
        proc.wait_for_line(rf"Serving metrics on tcp://127.0.0.1:{metrics}", timeout=15)
        proc.wait_for_line(rf"Listening on tcp://127.0.0.1:{port}", timeout=15)
        wait_for(lambda: get(metrics, "/readyz")[0] == 200, "a local worker", timeout=20)
        for _ in range(3):
            assert get(port, "/")[:2] == (200, b"hi")
        status, body, _ = get(metrics, "/metrics")
        assert status == 200
        samples = parse(body.decode())
        assert value(samples, "zmqhttp_requests_total", code="200") == 3
        assert value(samples, "zmqhttp_gateway_workers") == 1
        assert get(port, "/metrics")[0] == 200  # the public port: the app's, not ours
    finally:
        stop_all(proc)
