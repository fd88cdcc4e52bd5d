"""Helpers for the load tests: a server subprocess, its memory, many raw connections.

Strategy: the server runs as ``python -m zmqhttp serve`` in its own process so
its resident memory can be read from ``/proc`` without the test's own clients
in it. Clients are raw sockets driven by one ``selectors`` loop, so thousands
of connections cost one thread. Every wait has a deadline; every process is
stopped by its PID.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import resource
import selectors
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from test_cli import Proc, free_port
from test_cli_workers import children

__all__ = [
    "FULL",
    "LOAD_APP",
    "Conn",
    "ServerProc",
    "fetch",
    "percentile",
    "raise_nofile",
    "roundtrip_all",
    "rss",
    "start_server",
]

#: ZMQHTTP_LOAD_FULL=1 runs the full sizes (10,000 connections, 1,000,000 requests, ...).
FULL = os.environ.get("ZMQHTTP_LOAD_FULL", "") not in ("", "0")

LOAD_APP = '''
import os, threading, time

_lock = threading.Lock()
produced = [0]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = environ.get("QUERY_STRING", "")
    if path == "/slow":
        time.sleep(float(query or "0.5"))
    if path == "/big":
        total = int(query or str(50 * 1024 * 1024))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(total))])

        def stream():
            block = b"x" * 65536
            left = total
            while left > 0:
                piece = block[:min(left, len(block))]
                left -= len(piece)
                with _lock:
                    produced[0] += len(piece)
                yield piece
        return stream()
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def parts():
            for i in range(5):
                time.sleep(0.1)
                yield b"part %d\\n" % i
        return parts()
    if path == "/echo":
        body = environ["wsgi.input"].read()
        out = str(len(body)).encode()
    elif path == "/produced":
        out = str(produced[0]).encode()
    elif path == "/pid":
        out = str(os.getpid()).encode()
    else:
        out = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(out)))])
    return [out]
'''


def raise_nofile(wanted: int) -> int:
    """Lift this process's soft RLIMIT_NOFILE towards ``wanted``; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


class ServerProc:
    """A ``zmqhttp serve`` (or ``gateway``) subprocess on a random loopback port."""

    def __init__(self, proc: Proc, port: int) -> None:
        self.proc = proc
        self.port = port

    @property
    def pid(self) -> int:
        return self.proc.popen.pid

    def rss(self) -> int:
        """Memory of the server: its own RSS plus that of any worker processes."""
        return rss(self.pid) + sum(rss(kid) for kid in children(self.pid))

    def terminate(self, timeout: float = 15) -> int | None:
        """SIGTERM by PID and wait; SIGKILL (also the workers) if it does not exit."""
        kids = children(self.pid)
        if self.proc.popen.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except Exception:
            self.kill(kids)
            return None

    def kill(self, kids: list[int] | None = None) -> None:
        kids = children(self.pid) if kids is None else kids
        self.proc.stop()
        for kid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(kid, signal.SIGKILL)


def start_server(cwd: Path, *flags: str, command: str = "serve", app: str = "loadapp:app",
                 timeout: float = 20) -> ServerProc:
    """Write the load app into ``cwd`` and start a server on it; returns once it listens."""
    (cwd / "loadapp.py").write_text(LOAD_APP)
    port = free_port()
    args = [command, app, "--bind", f"127.0.0.1:{port}", "--no-access-log", *flags]
    if command == "gateway":
        args += ["--app-dir", str(cwd)]
    server = ServerProc(Proc(args, cwd), port)
    try:
        server.proc.wait_for_line(rf"Listening on tcp://127.0.0.1:{port}", timeout=timeout)
    except AssertionError:
        server.kill()
        raise
    return server


@contextlib.contextmanager
def running(cwd: Path, *flags: str, command: str = "serve", app: str = "loadapp:app"
            ) -> Iterator[ServerProc]:
    """``start_server`` as a context manager that always stops the process by PID."""
    server = start_server(cwd, *flags, command=command, app=app)
    try:
        yield server
    finally:
        kids = children(server.pid)
        if server.proc.popen.poll() is None:
            server.terminate(timeout=10)
        server.kill(kids)


def fetch(port: int, path: str = "/", timeout: float = 10,
          conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    """One GET; on a given keep-alive ``conn`` if any, else a fresh connection."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[index]


_CL = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


class Conn:
    """One raw client connection with an incremental response parser."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.responses: list[tuple[int, bytes]] = []
        self.eof = False

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[: end + 4]
            found = _CL.search(head)
            length = int(found.group(1)) if found else 0
            if len(self.buf) < end + 4 + length:
                return
            status = int(head[9:12])
            self.responses.append((status, self.buf[end + 4 : end + 4 + length]))
            self.buf = self.buf[end + 4 + length :]


def open_conns(port: int, count: int, timeout: float = 60) -> list[Conn]:
    """``count`` connected sockets (blocking connects, each with a 5 s timeout)."""
    deadline = time.monotonic() + timeout
    conns: list[Conn] = []
    for _ in range(count):
        assert time.monotonic() < deadline, f"only {len(conns)} of {count} connected in time"
        sock = socket.socket()
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        conns.append(Conn(sock))
    return conns


def roundtrip_all(conns: list[Conn], request: bytes, timeout: float = 60) -> list[Conn]:
    """Send ``request`` on every connection and read one response on each.

    Returns the connections that did not get a response in ``timeout``
    (closed ones included).
    """
    want = {id(c): len(c.responses) + 1 for c in conns}
    for conn in conns:
        try:
            conn.sock.send(request)  # a small request always fits the send buffer
        except OSError:
            conn.eof = True
    pending = {c.sock.fileno(): c for c in conns if not c.eof}
    with selectors.DefaultSelector() as sel:
        for fd, conn in pending.items():
            sel.register(fd, selectors.EVENT_READ, conn)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                conn = key.data
                try:
                    data = conn.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    conn.feed(data)
                else:
                    conn.eof = True
                if conn.eof or len(conn.responses) >= want[id(conn)]:
                    sel.unregister(key.fd)
                    pending.pop(key.fd, None)
    return [c for c in conns if c.eof or len(c.responses) < want[id(c)]]


def close_all(conns: list[Conn]) -> None:
    for conn in conns:
        conn.sock.close()
