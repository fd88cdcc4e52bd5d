"""Open COUNT keep-alive connections, send one GET on each, then hold them idle.

    python bench/idle_conns.py PORT COUNT [--hold SECONDS]

Prints ``ready OK OPENED`` once every response has arrived (or the open deadline
passed), then holds the connections until a line or EOF arrives on stdin (or
``--hold`` seconds pass), and prints ``open N``: how many the server still kept
open. Bounded in count and time: at most COUNT sockets, every wait has a deadline.
"""

from __future__ import annotations

import argparse
import select
import selectors
import socket
import sys
import time

from procs import raise_nofile

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def open_all(port: int, count: int, deadline: float) -> list[socket.socket]:
    """Connect and send one request each; stops early at the deadline."""
    socks: list[socket.socket] = []
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(REQUEST)
        except OSError:
            continue
        sock.setblocking(False)
        socks.append(sock)
    return socks


def await_responses(socks: list[socket.socket], deadline: float) -> int:
    """How many sockets got a response head (``HTTP/1.1 2xx``) before the deadline."""
    received: dict[socket.socket, bytes] = {s: b"" for s in socks}
    ok = 0
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        while sel.get_map() and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                sock = _as_socket(key.fileobj)
                data = _recv(sock)
                if data is None:
                    continue
                received[sock] += data
                if not data or b"\r\n\r\n" in received[sock]:
                    sel.unregister(sock)
                    ok += received[sock].startswith(b"HTTP/1.1 2")
    return ok


def _as_socket(obj: object) -> socket.socket:
    assert isinstance(obj, socket.socket)
    return obj


def _recv(sock: socket.socket) -> bytes | None:
    """Data, ``b""`` at EOF or reset, None on a spurious wake-up."""
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def still_open(socks: list[socket.socket]) -> int:
    """Sockets the server has not closed (no EOF, no reset, nothing pending)."""
    n = 0
    for sock in socks:
        try:
            n += sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            n += 1
        except OSError:
            pass
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--open-timeout", type=float, default=60.0)
    parser.add_argument("--hold", type=float, default=600.0, help="most seconds to hold")
    args = parser.parse_args()
    raise_nofile(args.count + 256)
    deadline = time.monotonic() + args.open_timeout
    socks = open_all(args.port, args.count, deadline)
    ok = await_responses(socks, deadline)
    print(f"ready {ok} {len(socks)}", flush=True)
    select.select([sys.stdin], [], [], args.hold)
    print(f"open {still_open(socks)}", flush=True)
    for sock in socks:
        sock.close()


if __name__ == "__main__":
    main()
