"""Reproducer: a request sits unread in libzmq after the output-retry timer sends.

Found by tests/transport/test_transport_statemachine.py (a client pipelining
large responses it does not read yet; about one run in fifteen timed out).
The ZMQ FD is edge-triggered and *any* send processes libzmq's pending
commands, which consumes the edge. ``Server._on_readable`` and
``Server._flush_dirty`` re-check ``transport.has_input()`` after sending;
``Server._retry_timer`` (flush of connections stuck behind a full pipe) does
not. A request that arrives just before that timer's send is then not read
until some unrelated socket event: here that took 0.9 s to 10 s (the other
client's header timeout closed it, its request never answered).

Run: ``.venv/bin/python fuzz/crashes/transport-retry-edge-stall.py`` from the
repo root. Prints how long the other client waited; 0.00 s once fixed (the
fix: after ``_retry_blocked()`` in ``_retry_timer``, schedule ``_on_readable``
if ``transport.has_input()``).
"""

from __future__ import annotations

import select
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

from rawhttp import Reader, connect
from zmqhttp.testing import ServerThread


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    size = 8 << 20 if environ["PATH_INFO"] == "/big" else 2
    start_response("200 OK", [("Content-Length", str(size))])
    return (b"x" * 65536 for _ in range(size // 65536)) if size > 2 else [b"ok"]


def main() -> None:
    srv = ServerThread(app, sndhwm=4).start()
    server = srv.server
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(5)
    slow.connect(("127.0.0.1", srv.port))
    slow.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")  # and never read
    other = connect(srv.port)
    deadline = time.monotonic() + 5
    while not srv.call(lambda: bool(server._blocked)) and time.monotonic() < deadline:
        time.sleep(0.05)
    print("slow client's output stuck behind a full pipe:", srv.call(lambda: bool(server._blocked)))

    def retry_while_request_arrives() -> None:
        other.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        time.sleep(0.1)  # the loop is busy; libzmq queues the request and signals the FD
        fd = server.transport.fd
        print("  FD readable before the retry timer:", bool(select.select([fd], [], [], 0)[0]))
        server._retry_timer()  # flush() -> send() -> FULL, as the timer does
        print("  FD readable after it:", bool(select.select([fd], [], [], 0)[0]),
              "| has_input():", server.transport.has_input())

    srv.call(retry_while_request_arrives)
    other.settimeout(15)
    start = time.monotonic()
    try:
        status = Reader(other).response().status
        print(f"other client: {status} after {time.monotonic() - start:.2f} s")
    except (TimeoutError, EOFError) as exc:
        print(f"other client: no response ({exc!r}) after {time.monotonic() - start:.2f} s")
    slow.close()
    other.close()
    srv.stop(5)


if __name__ == "__main__":
    main()
