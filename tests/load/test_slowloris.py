"""Slowloris: many connections dripping a request head one byte a second.

What it proves: each slow connection is ended by the header timeout (a 408,
or a close), never kept past it; and ordinary clients served meanwhile keep
their latency. The bound on the latter: p99 during the attack under
``max(200 ms, 5 x p99 without it)``.
"""

from __future__ import annotations

import http.client
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from loadkit import FULL, percentile, raise_nofile, running

#: CI: 200 slow connections for 4 s; ZMQHTTP_LOAD_FULL=1: 1,000 for 20 s.
SLOW = 1_000 if FULL else 200
ATTACK = 20.0 if FULL else 4.0
HEADER_TIMEOUT = 2.0
#: Deadlines are checked every 0.25 s; the drip loop and a loaded 2-core
#: machine add the rest.
CLOSE_SLACK = 1.5
SLOW_HEAD = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 200


@dataclass
class Slow:
    sock: socket.socket
    #: When the TCP handshake completed (the server's header timer starts then).
    opened: float | None = None
    sent: int = 0
    closed: float | None = None
    answer: bytes = b""
    connect_error: int = 0


@dataclass
class Attacker:
    """Keeps ``SLOW`` dripping connections open (replacing the closed ones) until ``stop``.

    Connects are non-blocking, so a connect waiting on a SYN retransmit never
    delays noticing that another connection was cut off.
    """

    port: int
    conns: list[Slow] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def open_one(self, sel: selectors.BaseSelector) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        slow = Slow(sock)
        self.conns.append(slow)
        sel.register(sock, selectors.EVENT_WRITE, slow)

    def drip(self, slow: Slow) -> None:
        try:
            slow.sock.send(SLOW_HEAD[slow.sent : slow.sent + 1])
            slow.sent += 1
        except OSError:
            pass  # closed under us; the read side records it

    def run(self, hard_deadline: float) -> None:
        try:
            self._run(hard_deadline)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _run(self, hard_deadline: float) -> None:
        with selectors.DefaultSelector() as sel:
            next_drip = time.monotonic() + 1.0
            while time.monotonic() < hard_deadline:
                live = [c for c in self.conns if c.closed is None]
                if self.stop.is_set() and not live:
                    return
                connecting = sum(c.opened is None for c in live)
                if not self.stop.is_set():  # a real attacker reconnects
                    for _ in range(min(SLOW - len(live), 50 - connecting)):
                        self.open_one(sel)
                for key, _ in sel.select(timeout=0.05):
                    self._event(sel, key.data)
                if time.monotonic() >= next_drip:
                    next_drip += 1.0
                    for slow in self.conns:
                        if slow.closed is None and slow.opened is not None:
                            self.drip(slow)

    def _event(self, sel: selectors.BaseSelector, slow: Slow) -> None:
        if slow.opened is None:
            slow.connect_error = slow.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if slow.connect_error:
                self._close(sel, slow)
                return
            slow.opened = time.monotonic()
            sel.modify(slow.sock, selectors.EVENT_READ, slow)
            self.drip(slow)
            return
        try:
            data = slow.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        slow.answer += data
        if not data or slow.answer.startswith(b"HTTP/1.1 408"):
            self._close(sel, slow)

    @staticmethod
    def _close(sel: selectors.BaseSelector, slow: Slow) -> None:
        slow.closed = time.monotonic()
        sel.unregister(slow.sock)
        slow.sock.close()


def latencies(port: int, seconds: float, limit: int = 10_000) -> list[float]:
    """Sequential GETs, each on a fresh connection, for ``seconds``."""
    out: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(out) < limit:
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"ok")
        finally:
            conn.close()
        out.append(time.monotonic() - started)
        time.sleep(0.005)
    return out


@pytest.mark.timeout(120 if FULL else 40)
def test_slowloris_is_cut_off_and_others_keep_their_latency(tmp_path: Path) -> None:
    raise_nofile(2 * SLOW + 512)
    with running(tmp_path, "--timeout-request-header", str(HEADER_TIMEOUT),
                 "--timeout-linger", "1") as server:
        latencies(server.port, 0.3)  # warm-up
        baseline = latencies(server.port, 1.5)
        attacker = Attacker(server.port)
        thread = threading.Thread(target=attacker.run,
                                  args=(time.monotonic() + ATTACK + 15,), daemon=True)
        thread.start()
        try:
            time.sleep(0.5)
            during = latencies(server.port, ATTACK - 0.5)
        finally:
            attacker.stop.set()
            thread.join(HEADER_TIMEOUT + 15)
        assert attacker.error is None, attacker.error
        assert not thread.is_alive()

    base99, during99 = percentile(baseline, 99), percentile(during, 99)
    conns = attacker.conns
    assert [c.connect_error for c in conns if c.connect_error] == []
    lifetimes = [c.closed - c.opened for c in conns
                 if c.closed is not None and c.opened is not None]
    got_408 = sum(c.answer.startswith(b"HTTP/1.1 408") for c in conns)
    print(f"\nnormal p99 {base99 * 1000:.1f} ms alone, {during99 * 1000:.1f} ms during "
          f"slowloris ({len(during)} requests); {len(conns)} slow connections, "
          f"{got_408} got 408, the rest a close; longest lived {max(lifetimes):.2f} s, "
          f"p99 {percentile(lifetimes, 99):.2f} s")
    assert len(conns) >= SLOW
    assert all(c.closed is not None for c in conns), "a slow connection outlived the test"
    assert max(lifetimes) < HEADER_TIMEOUT + CLOSE_SLACK
    assert min(lifetimes) > HEADER_TIMEOUT - 0.1
    assert len(during) >= 20
    assert during99 < max(0.2, 5 * base99)
