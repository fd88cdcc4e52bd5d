"""Helpers for the fault tests: server processes and a threaded HTTP load that records outcomes.

Strategy: every request the load makes is recorded (when it started and
ended, its status or the error), so a test can ask afterwards which requests
failed and whether they were in flight at the moment of the fault. Processes
are started as ``python -m zmqhttp ...`` and stopped by PID.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from test_cli import Proc, free_port
from test_cli_workers import children

__all__ = ["FAULT_APP", "Load", "Outcome", "kill_tree", "managed", "start"]

FAULT_APP = '''
import os, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        time.sleep(float(environ["QUERY_STRING"] or "0.5"))
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def parts():
            for i in range(5):
                time.sleep(0.1)
                yield b"part %d\\n" % i
        return parts()
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

#: What ``/stream`` sends, whole.
STREAM_BODY = b"".join(b"part %d\n" % i for i in range(5))


def start(cwd: Path, args: list[str], listen_port: int | None = None,
          timeout: float = 20) -> Proc:
    """Write the app, start ``python -m zmqhttp ARGS``; wait for its Listening line if asked."""
    (cwd / "faultapp.py").write_text(FAULT_APP)
    proc = Proc(args, cwd)
    if listen_port is not None:
        try:
            proc.wait_for_line(rf"Listening on tcp://127.0.0.1:{listen_port}", timeout=timeout)
        except AssertionError:
            kill_tree(proc)
            raise
    return proc


def kill_tree(proc: Proc) -> None:
    """SIGKILL the process and its worker processes, by PID."""
    kids = children(proc.popen.pid)
    proc.stop()
    for kid in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(kid, signal.SIGKILL)


@contextlib.contextmanager
def managed() -> Iterator[list[Proc]]:
    """A list to put started processes in; all are killed by PID at the end."""
    procs: list[Proc] = []
    try:
        yield procs
    finally:
        for proc in procs:
            kill_tree(proc)


@dataclass
class Outcome:
    path: str
    started: float
    ended: float
    status: int | None = None
    body: bytes = b""
    error: str | None = None
    #: The request was retried once on a fresh connection after the server
    #: closed a kept-alive one without answering (RFC 9112 §9.3.1: clients
    #: retry such idempotent requests).
    retried: bool = False
    #: The response ended its connection.
    closed: bool = False


@dataclass
class Load:
    """``clients`` threads sending GETs until stopped (bounded in time and count).

    Args:
        port: the server's port.
        paths: cycled through by each client; ``"POST /path"`` posts a small body.
        clients: concurrent connections.
        keep_alive: reuse connections (else a fresh one per request).
        pause: seconds between a client's requests.
    """

    port: int
    paths: tuple[str, ...] = ("/",)
    clients: int = 4
    keep_alive: bool = True
    pause: float = 0.002
    max_seconds: float = 60
    max_requests: int = 200_000
    timeout: float = 15
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        deadline = time.monotonic() + self.max_seconds
        for i in range(self.clients):
            thread = threading.Thread(target=self._client, args=(i, deadline), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        assert not any(t.is_alive() for t in self._threads), "a load client hung"
        return self.outcomes

    def _client(self, index: int, deadline: float) -> None:
        conn: http.client.HTTPConnection | None = None
        reused = False
        n = index
        while (not self._stop.is_set() and time.monotonic() < deadline
               and len(self.outcomes) < self.max_requests):
            path = self.paths[n % len(self.paths)]
            n += 1
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                reused = False
            outcome = Outcome(path, time.monotonic(), 0.0)
            try:
                self._request(conn, outcome)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError
                    ) as exc:
                conn.close()
                conn = None
                if reused:  # a stale kept-alive connection: retry once, fresh
                    outcome.retried = True
                    conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                      timeout=self.timeout)
                    try:
                        self._request(conn, outcome)
                    except (OSError, http.client.HTTPException) as again:
                        outcome.error = f"{type(again).__name__}: {again}"
                        conn.close()
                        conn = None
                else:
                    outcome.error = f"{type(exc).__name__}: {exc}"
            except (OSError, http.client.HTTPException) as exc:
                outcome.error = f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = None
            outcome.ended = time.monotonic()
            self.outcomes.append(outcome)
            if conn is not None and (outcome.closed or not self.keep_alive):
                conn.close()
                conn = None
            reused = conn is not None
            time.sleep(self.pause)
        if conn is not None:
            conn.close()

    @staticmethod
    def _request(conn: http.client.HTTPConnection, outcome: Outcome) -> None:
        method, _, path = outcome.path.rpartition(" ")
        if method == "POST":
            conn.request("POST", path, body=b"payload")
        else:
            conn.request("GET", path)
        resp = conn.getresponse()
        outcome.body = resp.read()
        outcome.status = resp.status
        if resp.will_close:
            conn.close()
            outcome.closed = True


def summary(outcomes: list[Outcome]) -> str:
    statuses = Counter(o.status if o.error is None else o.error.split(":")[0] for o in outcomes)
    retried = sum(o.retried for o in outcomes)
    return f"{len(outcomes)} requests: {dict(statuses)}, {retried} retried"


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)
