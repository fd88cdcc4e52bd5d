"""Clients vanishing at every byte of a request, and mid-response, harm nobody else.

Each cut is made twice: with an orderly close (FIN) and with a reset (RST,
``SO_LINGER`` 0). Throughout, a second connection that stays open keeps getting
correct answers; at the end the server's connection table is back to that one
connection and every response generator the app started has been closed.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterable, Iterator

import pytest

from rawhttp import Environ, Reader, StartResponse, connect, wait_for
from zmqhttp.testing import ServerThread

BIG = 256 * 1024
PIECE = 16 * 1024


class App:
    """Echoes body lengths; streams ``BIG`` bytes on ``/big``; counts open generators."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = 0
        self.closed = 0

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/big":
            start_response("200 OK", [("Content-Length", str(BIG))])
            return self.stream()
        body = b""
        if path == "/echo":
            body = str(len(environ["wsgi.input"].read())).encode()
        else:
            body = b"alive " + path.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    def stream(self) -> Iterator[bytes]:
        with self.lock:
            self.started += 1
        try:
            for _ in range(BIG // PIECE):
                yield b"y" * PIECE
        finally:
            with self.lock:
                self.closed += 1


def close(sock: socket.socket, reset: bool) -> None:
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class Witness:
    """The long-lived connection that must keep working."""

    def __init__(self, port: int) -> None:
        self.sock = connect(port, timeout=5)
        self.reader = Reader(self.sock)
        self.count = 0

    def check(self) -> None:
        self.count += 1
        path = f"/witness/{self.count}"
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        resp = self.reader.response()
        assert (resp.status, resp.body) == (200, f"alive {path}".encode())


REQUESTS = {
    "content-length": (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 32\r\n\r\n"
                       + b"b" * 32),
    "chunked": (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"10\r\n" + b"c" * 16 + b"\r\n6;ext=1\r\n" + b"d" * 6 + b"\r\n0\r\nT: 1\r\n\r\n"),
    "pipelined": (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 2
                  + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"),
}


@pytest.fixture
def server_and_app() -> Iterator[tuple[ServerThread, App]]:
    app = App()
    # Keep-alive long enough for the witness; linger short so cut-off
    # connections the server closes itself go quickly.
    with ServerThread(app, timeout_keep_alive=60, timeout_linger=0.3) as server:
        yield server, app


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_disconnect_at_every_request_offset(server_and_app: tuple[ServerThread, App],
                                            kind: str) -> None:
    server, _ = server_and_app
    request = REQUESTS[kind]
    witness = Witness(server.port)
    witness.check()
    for cut in range(len(request) + 1):
        for reset in (False, True):
            sock = connect(server.port, timeout=5)
            if cut:
                sock.sendall(request[:cut])
            close(sock, reset)
        if cut % 8 == 0:
            witness.check()
    witness.check()
    # Full requests still work on fresh connections after all that.
    sock = connect(server.port, timeout=5)
    sock.sendall(request)
    reader = Reader(sock)
    assert reader.response().status == 200
    sock.close()
    assert wait_for(lambda: server.server.connection_count == 1, timeout=10), \
        server.server.connection_count
    witness.check()


def response_offsets(total: int, head: int) -> list[int]:
    cuts = {0, 1, 2, 10, 100, head - 1, head, head + 1, total - 1, total}
    step = 1
    while step < total:
        cuts.add(step)
        step *= 3
    return sorted(c for c in cuts if 0 <= c <= total)


@pytest.mark.timeout(60)
def test_disconnect_at_many_response_offsets(server_and_app: tuple[ServerThread, App]
                                            ) -> None:
    server, app = server_and_app
    witness = Witness(server.port)
    probe = connect(server.port, timeout=5)
    probe.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = Reader(probe)
    resp = reader.response()
    assert len(resp.body) == BIG
    probe.close()
    head = len(b"HTTP/1.1 200 OK\r\n") + sum(len(k) + len(v) + 4 for k, v in resp.headers) + 2
    total = head + BIG
    for cut in response_offsets(total, head):
        for reset in (False, True):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            sock.settimeout(5)
            sock.connect(("127.0.0.1", server.port))
            # Two pipelined requests: the second must never be answered into a
            # dead connection's successor.
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
            got = 0
            while got < cut:
                data = sock.recv(min(65536, cut - got))
                assert data, f"EOF after {got} of {cut} bytes"
                got += len(data)
            close(sock, reset)
        witness.check()
    assert wait_for(lambda: server.server.connection_count == 1, timeout=10), \
        server.server.connection_count
    # Every stream the app started was closed (no thread stays blocked on a
    # dead connection's flow control).
    assert wait_for(lambda: app.closed == app.started, timeout=10), (app.started, app.closed)
    witness.check()
