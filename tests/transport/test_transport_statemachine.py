"""A hypothesis state machine against a real server on a real ZMQ_STREAM socket.

Strategy: each example starts a :class:`ServerThread` on 127.0.0.1 and drives
raw TCP clients through random interleavings of: connecting; sending requests
whole, pipelined, or cut at a random byte and finished later; asking for a
large response and not reading it (a slow reader with a small receive
buffer, against a small ``SNDHWM``); reading; half-closing; disconnecting
(FIN or RST) at any of those points, with responses unread or requests half
sent. Every request names its client and sequence number; the application
echoes them with the body's length and CRC, so a response in the wrong order,
or one meant for another connection, cannot pass.

Invariants: the server never crashes (its loop keeps answering, no internal
error is logged); every complete request on a live connection gets exactly
its response, in order (checked when the client reads, and for all of them
at the end); the server forgets disconnected clients (its connection table
shrinks back to the number of live clients, and to zero at the end); and a
client never notices what the others do. Half-close is a known ZMQ_STREAM
limit (``docs/server-behaviour.md``): a half-closed client may get no
response, but nobody else may notice.
"""

from __future__ import annotations

import logging
import socket
import struct
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from rawhttp import Reader, StartResponse, wait_for
from zmqhttp.testing import ServerThread

SOCKET_TIMEOUT = 5.0
MAX_CLIENTS = 4
BIG_SIZES = [256 * 1024, 1024 * 1024]
PATTERN = bytes(range(256)) * 256  # 64 KiB


def big_body(size: int) -> bytes:
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Echo who asked (path, body length and CRC), or send a large body."""
    body = environ["wsgi.input"].read()
    query = parse_qs(environ["QUERY_STRING"])
    if "big" in query:
        size = int(query["big"][0])
        start_response("200 OK", [("Content-Length", str(size))])
        data = big_body(size)
        return (data[i : i + 65536] for i in range(0, size, 65536))
    reply = expected_echo(environ["REQUEST_METHOD"], environ["PATH_INFO"], body)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(reply)))])
    return [reply]


def expected_echo(method: str, path: str, body: bytes) -> bytes:
    return f"{method} {path} {len(body)} {zlib.crc32(body)}".encode()


@dataclass
class Client:
    cid: int
    sock: socket.socket
    reader: Reader
    #: Expected response bodies, in request order.
    expected: deque[bytes] = field(default_factory=deque)
    #: The unsent tail of a request cut in two.
    partial: bytes | None = None
    sent: int = 0

    def request(self, kind: str, size: int) -> bytes:
        """The bytes of this client's next request; its expected answer is queued."""
        self.sent += 1
        path = f"/c{self.cid}/r{self.sent}"
        if kind == "big":
            self.expected.append(big_body(size))
            return f"GET {path}?big={size} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        body = bytes((self.cid * 31 + self.sent + i) % 251 for i in range(size))
        if kind == "get":
            self.expected.append(expected_echo("GET", path, b""))
            return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        self.expected.append(expected_echo("POST", path, body))
        if kind == "chunked":
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7])
                              for i in range(0, len(body), 7))
            head = f"POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            return head.encode() + chunks + b"0\r\n\r\n"
        head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n"
        return head.encode() + body

    def read_expected(self, count: int) -> None:
        self.sock.settimeout(SOCKET_TIMEOUT)
        for _ in range(count):
            want = self.expected.popleft()
            response = self.reader.response()
            assert response.status == 200, (self.cid, response.status, response.body[:200])
            assert response.body == want, (self.cid, response.body[:80], want[:80])


class ErrorLog(logging.Handler):
    """Collects the server's error records: an internal error means a crash."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


kinds = st.sampled_from(["get", "post", "chunked"])
sizes = st.integers(0, 3000)
requests = st.lists(st.tuples(kinds, sizes), min_size=1, max_size=3)


class TransportMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.errors = ErrorLog()
        logging.getLogger("zmqhttp").addHandler(self.errors)
        # A small SNDHWM so a slow reader fills its pipe; no timeout fires mid-test.
        self.server = ServerThread(app, sndhwm=4, threads=8, timeout_keep_alive=60,
                                   timeout_request_header=60, timeout_request_body=60).start()
        self.clients: list[Client] = []
        self.next_cid = 0

    # -- helpers -----------------------------------------------------------------

    def table(self) -> int:
        count: int = self.server.call(lambda: self.server.server.connection_count)
        return count

    def table_settles(self) -> None:
        """The connection table comes back to the live clients."""
        live = len(self.clients)
        assert wait_for(lambda: self.table() == live, timeout=SOCKET_TIMEOUT), (
            f"server holds {self.table()} connections, {live} clients are live")

    def pick(self, index: int) -> Client:
        return self.clients[index % len(self.clients)]

    def drop(self, client: Client) -> None:
        self.clients.remove(client)
        client.sock.close()
        self.table_settles()

    # -- rules ---------------------------------------------------------------------

    @initialize()
    def first_client(self) -> None:
        self.connect(small_buffer=False)

    @precondition(lambda self: len(self.clients) < MAX_CLIENTS)
    @rule(small_buffer=st.booleans())
    def connect(self, small_buffer: bool) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if small_buffer:  # before connect, so the window stays small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(SOCKET_TIMEOUT)
        sock.connect(("127.0.0.1", self.server.port))
        self.next_cid += 1
        self.clients.append(Client(self.next_cid, sock, Reader(sock)))
        self.table_settles()

    @precondition(lambda self: any(c.partial is None for c in self.clients))
    @rule(index=st.integers(0, 99), batch=requests)
    def send_pipelined(self, index: int, batch: list[tuple[str, int]]) -> None:
        client = self.pick(index)
        if client.partial is not None:
            client = next(c for c in self.clients if c.partial is None)
        client.sock.sendall(b"".join(client.request(kind, size) for kind, size in batch))

    @precondition(lambda self: any(c.partial is None for c in self.clients))
    @rule(index=st.integers(0, 99), kind=kinds, size=sizes, cut=st.floats(0.0, 1.0))
    def send_partial(self, index: int, kind: str, size: int, cut: float) -> None:
        client = next(c for c in self.clients[index % len(self.clients):] + self.clients
                      if c.partial is None)
        data = client.request(kind, size)
        at = max(1, min(len(data) - 1, int(len(data) * cut)))
        client.sock.sendall(data[:at])
        client.partial = data[at:]

    @precondition(lambda self: any(c.partial is not None for c in self.clients))
    @rule(index=st.integers(0, 99))
    def finish_partial(self, index: int) -> None:
        pending = [c for c in self.clients if c.partial is not None]
        client = pending[index % len(pending)]
        assert client.partial is not None
        client.sock.sendall(client.partial)
        client.partial = None

    @precondition(lambda self: any(c.partial is None for c in self.clients))
    @rule(index=st.integers(0, 99), size=st.sampled_from(BIG_SIZES))
    def request_big_and_stall(self, index: int, size: int) -> None:
        """A slow reader: the server writes a large body nobody reads yet."""
        client = next(c for c in self.clients[index % len(self.clients):] + self.clients
                      if c.partial is None)
        client.sock.sendall(client.request("big", size))

    @precondition(lambda self: len(self.clients) > 0)
    @rule(index=st.integers(0, 99))
    def read_responses(self, index: int) -> None:
        client = self.pick(index)
        # A request still half sent is not answered yet: read the ones before it.
        client.read_expected(len(client.expected) - (client.partial is not None))

    @precondition(lambda self: len(self.clients) > 0)
    @rule(index=st.integers(0, 99), reset=st.booleans())
    def disconnect(self, index: int, reset: bool) -> None:
        client = self.pick(index)
        if reset:  # RST instead of FIN, unread data or not
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.drop(client)

    @precondition(lambda self: len(self.clients) > 0)
    @rule(index=st.integers(0, 99))
    def half_close(self, index: int) -> None:
        """shutdown(SHUT_WR): libzmq tears the connection down (a ZMQ_STREAM limit)."""
        client = self.pick(index)
        client.sock.shutdown(socket.SHUT_WR)
        live = len(self.clients) - 1
        # The server forgets it even while the client keeps its socket open.
        assert wait_for(lambda: self.table() == live, timeout=SOCKET_TIMEOUT), self.table()
        self.drop(client)

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def server_alive(self) -> None:
        assert not self.server.server.closed
        self.table()  # the loop answers (ServerThread.call times out otherwise)
        assert not self.errors.records, [r.getMessage() for r in self.errors.records]

    def teardown(self) -> None:
        try:
            for client in list(self.clients):
                if client.partial is not None:
                    client.sock.sendall(client.partial)
                    client.partial = None
                client.read_expected(len(client.expected))
            for client in list(self.clients):
                self.drop(client)
            assert not self.errors.records, [r.getMessage() for r in self.errors.records]
        finally:
            for client in self.clients:
                client.sock.close()
            logging.getLogger("zmqhttp").removeHandler(self.errors)
            self.server.stop(timeout=5)


def test_transport_state_machine() -> None:
    run_state_machine_as_test(
        TransportMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=20,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
