"""``zmqhttp gateway MODULE:ATTR --workers N`` as real processes: local fabric workers."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_cli import Proc, free_port
from test_cli_workers import PID_APP, children, stop_all, wait_for_count


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "pidapp.py").write_text(PID_APP)
    return tmp_path


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        stop_all(proc)


def gateway(procs: list[Proc], cwd: Path, workers: int = 2) -> tuple[Proc, int]:
    port = free_port()
    proc = Proc(["gateway", "pidapp:app", "--app-dir", str(cwd), "--workers", str(workers),
                 "--bind", f"127.0.0.1:{port}", "--no-access-log"], cwd)
    procs.append(proc)
    return proc, port


def get(port: int, path: str = "/", timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_until_serving(proc: Proc, port: int, workers: int, timeout: float = 15) -> set[int]:
    """Wait until ``workers`` worker PIDs answer requests; returns them."""
    wait_for_count(proc, r"worker \d+ ready", workers, timeout=timeout)
    deadline = time.monotonic() + timeout
    seen: set[int] = set()
    while time.monotonic() < deadline:
        status, body = get(port)
        if status == 200:
            seen.add(int(body))
            if len(seen & set(children(proc.popen.pid))) >= workers:
                return seen
        time.sleep(0.02)
    raise AssertionError(f"only {seen} answered: {proc.stderr!r}")


def ipc_dir(proc: Proc) -> Path:
    line = proc.wait_for_line(r"Fabric listening on ipc://")
    found = re.search(r"ipc://(\S+)", line)
    assert found is not None
    return Path(found.group(1)).parent


def test_gateway_runs_local_workers(procs: list[Proc], app_dir: Path) -> None:
    proc, port = gateway(procs, app_dir)
    proc.wait_for_line(rf"Listening on tcp://127.0.0.1:{port}")
    private = ipc_dir(proc)
    assert private.is_dir()
    wait_until_serving(proc, port, 2)
    assert get(port, "/readyz")[0] == 200
    workers = set(children(proc.popen.pid))
    assert len(workers) == 2
    counts: Counter[int] = Counter()
    for _ in range(40):
        status, body = get(port)
        assert status == 200
        counts[int(body)] += 1
    assert set(counts) == workers, counts  # both workers answer

    # kill -9 one worker: it is replaced, and requests keep succeeding.
    victim = min(workers)
    statuses: list[int] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            try:
                statuses.append(get(port)[0])
            except (OSError, http.client.HTTPException) as exc:
                failures.append(exc)
            time.sleep(0.005)

    client = threading.Thread(target=load, daemon=True)
    client.start()
    try:
        time.sleep(0.2)
        os.kill(victim, signal.SIGKILL)
        proc.wait_for_line(rf"worker {victim} died.*killed by SIGKILL")
        wait_for_count(proc, r"worker \d+ ready", 3, timeout=15)
    finally:
        done.set()
        client.join(20)
    assert failures == []
    assert statuses.count(502) <= 1, Counter(statuses)
    assert set(statuses) <= {200, 502}, Counter(statuses)

    after = set(children(proc.popen.pid))
    assert victim not in after and len(after) == 2
    answered = wait_until_serving(proc, port, 2)
    assert after <= answered
    for _ in range(20):  # none fail after the replacement
        status, body = get(port)
        assert status == 200 and int(body) in after

    os.kill(proc.popen.pid, signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert not private.exists()
    assert all("Traceback" not in line for line in proc.stderr), proc.stderr


def test_gateway_sighup_rolls_and_signals_scale(procs: list[Proc], app_dir: Path) -> None:
    proc, port = gateway(procs, app_dir)
    before = wait_until_serving(proc, port, 2)
    statuses: list[int] = []
    done = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            statuses.append(get(port)[0])
            time.sleep(0.005)

    client = threading.Thread(target=load, daemon=True)
    client.start()
    try:
        os.kill(proc.popen.pid, signal.SIGHUP)
        proc.wait_for_line(r"rolling restart done", timeout=15)
        wait_for_count(proc, r"worker \d+ stopped", 2, timeout=15)
    finally:
        done.set()
        client.join(20)
    assert statuses and set(statuses) == {200}, Counter(statuses)
    after = set(children(proc.popen.pid))
    assert len(after) == 2 and after.isdisjoint(before)

    os.kill(proc.popen.pid, signal.SIGTTIN)
    wait_until_serving(proc, port, 3)
    os.kill(proc.popen.pid, signal.SIGTTOU)
    wait_for_count(proc, r"worker \d+ stopped", 3, timeout=15)
    assert len(children(proc.popen.pid)) == 2
    assert get(port)[0] == 200

    os.kill(proc.popen.pid, signal.SIGTERM)
    assert proc.wait(timeout=20) == 0


def test_gateway_bad_app_is_one_line_error(app_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zmqhttp", "gateway", "nosuchmodule:app", "--workers", "2",
         "--bind", f"127.0.0.1:{free_port()}"],
        cwd=app_dir, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "Error" in line]
    assert errors == ["Error: could not import module 'nosuchmodule'"], result.stderr
    assert "Traceback" not in result.stderr
