"""One measurement: start a server, check its answers, warm it up, load it with wrk
while sampling its memory, stop it. Failures come back as data, never as a hang."""

from __future__ import annotations

import dataclasses
import http.client
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

from procs import RssSampler, free_port, start_group, stop_group, tree_rss_kib, wait_listening
from scenarios import Scenario
from servers import BENCH_DIR, Server
from wrk import run_wrk

from apps import BODY, DOWNLOAD_SIZE

__all__ = ["Outcome", "Run", "ServerProcess", "Settings", "check", "measure", "run_one"]

START_TIMEOUT = 30.0
SETTLE = 0.5  # seconds before an RSS reading, for the server to finish its work


@dataclass(frozen=True, slots=True)
class Settings:
    duration: int = 5
    warmup: int = 1
    #: CPU for the server and for wrk (taskset -c); None: no pinning.
    server_core: str | None = "0"
    wrk_core: str | None = "1"
    #: Interpreter that runs the servers (has zmqhttp and the peers installed).
    python: str = sys.executable
    log_dir: str | None = None


@dataclass(frozen=True, slots=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    transfer_bps: float
    peak_rss_kib: int
    #: Scenario (f): idle connections that got their response, still open at the end,
    #: and the server's RSS growth per idle connection.
    idle_ok: int | None = None
    idle_open_end: int | None = None
    idle_kib_per_conn: float | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    run: Run | None = None
    failure: str | None = None


def _pinned(argv: list[str], core: str | None) -> list[str]:
    return ["taskset", "-c", core, *argv] if core else argv


class ServerProcess:
    """A server in its own process group on a free port; stopped on exit."""

    def __init__(self, server: Server, settings: Settings, log_name: str | None = None) -> None:
        self.server, self.settings = server, settings
        self.port = free_port()
        self._log_path = (os.path.join(settings.log_dir, log_name)
                          if settings.log_dir and log_name else None)
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        if self._log_path:
            self._log = open(self._log_path, "wb")
        argv = _pinned(self.server.argv(self.settings.python, self.port), self.settings.server_core)
        self.proc = start_group(argv, cwd=BENCH_DIR, log=self._log)
        try:
            wait_listening(self.port, START_TIMEOUT, self.proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_group(self.proc)
        if self._log is not None:
            self._log.close()


def _request(port: int, method: str, path: str, body: bytes | None = None) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: status {response.status}")
    return data


def check(port: int, scenario: Scenario) -> None:
    """One request of the scenario's kind; raises if the answer is wrong."""
    if scenario.path == "/echo":
        ok = _request(port, "POST", "/echo", b"e" * 1024) == b"e" * 1024
    elif scenario.path == "/upload":
        ok = _request(port, "POST", "/upload", b"u" * 100_000) == b"100000"
    elif scenario.path == "/download":
        ok = len(_request(port, "GET", "/download")) == DOWNLOAD_SIZE
    else:
        ok = _request(port, "GET", "/") == BODY
    if not ok:
        raise RuntimeError(f"wrong answer on {scenario.path}")


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"idle opener said nothing in {timeout:.0f} s")
    return proc.stdout.readline().strip()


class IdleHold:
    """Scenario (f): ``idle_conns.py`` holding idle connections to the server."""

    def __init__(self, port: int, count: int, settings: Settings) -> None:
        argv = [sys.executable, os.path.join(BENCH_DIR, "idle_conns.py"), str(port), str(count),
                "--hold", str(settings.duration + 120)]
        self.proc: subprocess.Popen[Any] = subprocess.Popen(
            _pinned(argv, settings.wrk_core), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, start_new_session=True)
        self.ok = self.opened = 0
        self.open_end: int | None = None

    def wait_ready(self, timeout: float = 90.0) -> None:
        words = _read_line(self.proc, timeout).split()
        if len(words) != 3 or words[0] != "ready":
            raise RuntimeError(f"idle opener failed: {words!r}")
        self.ok, self.opened = int(words[1]), int(words[2])

    def release(self) -> None:
        """Let the opener count what is still open, then stop it."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            words = _read_line(self.proc, 15).split()
            if len(words) == 2 and words[0] == "open":
                self.open_end = int(words[1])
        except (OSError, TimeoutError):
            pass
        finally:
            stop_group(self.proc)


def _wrk_run(server: ServerProcess, scenario: Scenario, settings: Settings) -> Run:
    with RssSampler(server.pid) as rss:
        result = run_wrk(server.port, scenario, settings.duration, settings.wrk_core)
    return Run(result.rps, result.p50_ms, result.p99_ms, result.errors, result.requests,
               result.transfer_bps, rss.peak_kib)


def _idle_run(server: ServerProcess, scenario: Scenario, settings: Settings) -> Run:
    time.sleep(SETTLE)
    before = tree_rss_kib(server.pid)
    hold = IdleHold(server.port, scenario.idle, settings)
    try:
        hold.wait_ready()
        time.sleep(SETTLE)
        per_conn = (tree_rss_kib(server.pid) - before) / max(hold.ok, 1)
        run = _wrk_run(server, scenario, settings)
    finally:
        hold.release()
    return dataclasses.replace(run, idle_ok=hold.ok, idle_open_end=hold.open_end,
                               idle_kib_per_conn=per_conn)


def measure(server: ServerProcess, scenario: Scenario, settings: Settings) -> Run:
    """Check, warm up (without idle connections), then the measured run."""
    check(server.port, scenario)
    if settings.warmup > 0:
        run_wrk(server.port, scenario, settings.warmup, settings.wrk_core)
    if scenario.idle:
        return _idle_run(server, scenario, settings)
    return _wrk_run(server, scenario, settings)


def run_one(server: Server, scenario: Scenario, settings: Settings, tag: str = "") -> Outcome:
    """A fresh server process for one measurement; any failure becomes ``Outcome.failure``."""
    log_name = f"{server.name}-{scenario.key}{tag}.log"
    try:
        with ServerProcess(server, settings, log_name) as proc:
            return Outcome(run=measure(proc, scenario, settings))
    except Exception as exc:  # report it as failed and go on
        return Outcome(failure=f"{type(exc).__name__}: {exc}"[:300])
