"""A tiny HTTP/1.1 client over a raw socket, for byte-exact integration tests.

It parses exactly what the server sent (status, fields, Content-Length,
chunked or close-delimited bodies) and keeps unread bytes between responses, so
pipelined responses can be read one after the other.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

__all__ = ["Environ", "RawResponse", "Reader", "StartResponse", "WSGIApp", "connect",
           "simple_app", "wait_for"]


def connect(port: int, host: str = "127.0.0.1", timeout: float = 5.0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect((host, port))
    return sock


@dataclass
class RawResponse:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    complete: bool = True
    trailers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ",".join(values) if values else None


class Reader:
    """Reads responses from ``sock``, keeping leftovers between calls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def read_until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            if not self._fill():
                raise EOFError(f"EOF before {sep!r}; have {self.buf[:200]!r}")
        head, _, self.buf = self.buf.partition(sep)
        return head + sep

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"EOF after {len(self.buf)} of {n} bytes")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_to_eof(self) -> bytes:
        while self._fill():
            pass
        data, self.buf = self.buf, b""
        return data

    def response(self, method: str = "GET") -> RawResponse:
        """The next final response (1xx responses are skipped)."""
        while True:
            resp = self.head()
            if resp.status >= 200:
                break
        self.body(resp, method)
        return resp

    def head(self) -> RawResponse:
        raw = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = raw.split("\r\n")
        version, status, reason = [*lines[0].split(" ", 2), ""][:3]
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name, value.strip()))
        return RawResponse(int(status), reason, version, headers)

    def body(self, resp: RawResponse, method: str = "GET") -> None:
        if method == "HEAD" or resp.status in (204, 304):
            return
        length = resp.header("content-length")
        if resp.header("transfer-encoding") == "chunked":
            self._chunked(resp)
        elif length is not None:
            resp.body = self.read_exact(int(length))
        else:
            resp.body = self.read_to_eof()

    def _chunked(self, resp: RawResponse) -> None:
        parts = []
        try:
            while True:
                size = int(self.read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    break
                parts.append(self.read_exact(size))
                self.read_exact(2)
            while True:
                line = self.read_until(b"\r\n")
                if line == b"\r\n":
                    break
                name, _, value = line.decode("latin-1").partition(":")
                resp.trailers.append((name, value.strip()))
        except (EOFError, ConnectionResetError):
            resp.complete = False
        resp.body = b"".join(parts)

    def at_eof(self, timeout: float = 3.0) -> bool:
        """True if the server closes the connection within ``timeout`` (no more data)."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        if data:
            self.buf += data
            return False
        return True


def wait_for(predicate: Callable[[], object], timeout: float = 5.0,
             interval: float = 0.01) -> bool:
    """Poll ``predicate()`` until true or ``timeout``; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def simple_app(body: bytes = b"Hello, world!\n") -> WSGIApp:
    """A WSGI app that answers ``body`` with a Content-Length."""

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return app
