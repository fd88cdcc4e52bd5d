"""Clients that stop reading a 50 MiB response cost the server a bounded amount of memory."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from loadkit import fetch, running

BIG = 50 * 2**20
READERS = 3
#: The configured per-connection bound with the defaults: --output-high-water
#: (256 KiB) queued in the server plus --sndhwm (64) messages of at most 64 KiB
#: inside libzmq. Kernel socket buffers are not in the server's RSS.
PER_CONNECTION = 256 * 2**10 + 64 * 64 * 2**10
#: Allowance for the interpreter and allocator (message copies in flight,
#: fragmentation), independent of the number of readers.
SLACK = 8 * 2**20


def stalled_reader(port: int) -> tuple[socket.socket, int]:
    """Ask for 50 MiB, read the first 64 KiB, then stop reading.

    Returns the socket and the number of body bytes read.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /big?%d HTTP/1.1\r\nHost: slow\r\n\r\n" % BIG)
    got = b""
    while len(got) < 65536:
        data = sock.recv(65536)
        assert data
        got += data
    head, sep, body = got.partition(b"\r\n\r\n")
    assert sep and head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: %d" % BIG in head
    return sock, len(body)


def produced(port: int) -> int:
    status, body = fetch(port, "/produced", timeout=5)
    assert status == 200
    return int(body)


def wait_steady(port: int, timeout: float = 10) -> int:
    """Wait until the app stops producing (it is blocked by flow control)."""
    last = -1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = produced(port)
        if now == last:
            return now
        last = now
        time.sleep(0.5)
    raise AssertionError(f"still producing after {timeout} s: {last} bytes")


@pytest.mark.timeout(60)
def test_stalled_readers_of_a_large_response_are_bounded(tmp_path: Path) -> None:
    with running(tmp_path) as server:
        for _ in range(20):  # warm the interpreter and allocator
            fetch(server.port, "/")
        before = server.rss()
        readers = [stalled_reader(server.port) for _ in range(READERS)]
        socks = [sock for sock, _ in readers]
        try:
            held = wait_steady(server.port)
            time.sleep(1)
            grown = server.rss() - before
            bound = READERS * PER_CONNECTION + SLACK
            print(f"\n{READERS} stalled readers of {BIG >> 20} MiB: app produced "
                  f"{held / 2**20:.1f} MiB in all, server RSS +{grown / 2**20:.1f} MiB "
                  f"(bound {bound / 2**20:.1f} MiB)")
            assert held < READERS * 16 * 2**20, "the app was not held back"
            assert grown < bound
            # Others are served meanwhile.
            for _ in range(20):
                started = time.monotonic()
                assert fetch(server.port, "/") == (200, b"ok")
                assert time.monotonic() - started < 0.5
            # A stalled reader that resumes gets the whole response, intact.
            sock, got = readers[0]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                data = sock.recv(1 << 20)
                if not data:
                    break
                assert data.count(b"x") == len(data)
                got += len(data)
                if got >= BIG:
                    break
            assert got == BIG, f"resumed reader got {got} of {BIG} bytes"
        finally:
            for sock in socks:
                sock.close()
        # The abandoned responses are dropped: memory stays bounded.
        time.sleep(1)
        assert server.rss() - before < READERS * PER_CONNECTION + SLACK
        assert fetch(server.port, "/") == (200, b"ok")
