"""Many keep-alive requests: zero errors, and server memory flat after warm-up."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from loadkit import FULL, running

#: CI: 50,000 requests; ZMQHTTP_LOAD_FULL=1: 1,000,000.
TOTAL = 1_000_000 if FULL else 50_000
CONNECTIONS = 4
PIPELINE = 32  # requests written at once per connection (RFC 9112 §9.3.2)
#: RSS may rise this much after warm-up (pymalloc arenas, the allocator's
#: noise). A leak of 100 bytes per request would pass it within the CI run's
#: 40,000 measured requests, and fail the full run's 800,000.
FLAT_BOUND = 4 * 2**20
REQUEST = b"GET /keepalive HTTP/1.1\r\nHost: load\r\nUser-Agent: loadtest\r\n\r\n"
STATUS_LINE = b"HTTP/1.1 200 OK\r\n"


class Client(threading.Thread):
    """One keep-alive connection sending pipelined batches until ``share`` are answered."""

    def __init__(self, port: int, share: int, deadline: float) -> None:
        super().__init__(daemon=True)
        self.port, self.share, self.deadline = port, share, deadline
        self.answered = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                self._drive(sock)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _drive(self, sock: socket.socket) -> None:
        size = self._first_response_size(sock)
        self.answered = 1
        buf = b""
        while self.answered < self.share:
            assert time.monotonic() < self.deadline, "out of time"
            batch = min(PIPELINE, self.share - self.answered)
            sock.sendall(REQUEST * batch)
            want = size * batch
            while len(buf) < want:
                data = sock.recv(max(65536, want - len(buf)))
                assert data, f"closed after {self.answered} responses"
                buf += data
            block, buf = buf[:want], buf[want:]
            # Every response has the same length (fixed-width Date), so counting
            # status lines at the right offsets checks each one.
            assert block.count(STATUS_LINE) == batch, block[:300]
            assert all(block[i * size : i * size + len(STATUS_LINE)] == STATUS_LINE
                       for i in range(0, batch, 8))
            self.answered += batch

    @staticmethod
    def _first_response_size(sock: socket.socket) -> int:
        sock.sendall(REQUEST)
        buf = b""
        while not buf.endswith(b"\r\n\r\nok"):
            data = sock.recv(4096)
            assert data, "closed before the first response"
            buf += data
        assert buf.startswith(STATUS_LINE), buf
        return len(buf)


@pytest.mark.timeout(900 if FULL else 60)
def test_keep_alive_load_has_no_errors_and_flat_memory(tmp_path: Path) -> None:
    with running(tmp_path) as server:
        deadline = time.monotonic() + (800 if FULL else 45)
        clients = [Client(server.port, TOTAL // CONNECTIONS, deadline)
                   for _ in range(CONNECTIONS)]
        samples: list[tuple[int, int]] = []  # (requests answered, server RSS)
        started = time.monotonic()
        for client in clients:
            client.start()
        while any(c.is_alive() for c in clients) and time.monotonic() < deadline:
            samples.append((sum(c.answered for c in clients), server.rss()))
            time.sleep(0.1)
        for client in clients:
            client.join(5)
        took = time.monotonic() - started
        errors = [c.error for c in clients if c.error is not None]
        assert errors == []
        answered = sum(c.answered for c in clients)
        assert answered == TOTAL
        warm = [rss for done, rss in samples if done >= TOTAL // 5]
        assert len(warm) >= 3, samples
        growth = max(warm) - warm[0]
        print(f"\n{answered} requests on {CONNECTIONS} connections in {took:.1f} s "
              f"({answered / took:.0f}/s); server RSS {warm[0] / 2**20:.1f} MiB after warm-up, "
              f"peak {max(warm) / 2**20:.1f} MiB, growth {growth / 2**10:.0f} KiB")
        assert growth < FLAT_BOUND, f"RSS grew {growth / 2**20:.1f} MiB after warm-up"
