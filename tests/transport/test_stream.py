"""The ZMQ_STREAM wrapper on its own, against real TCP clients on loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest
import zmq

from zmqhttp.transport.stream import SendResult, StreamTransport, format_endpoint


class Recorder:
    """A StreamHandler that writes down what happened."""

    def __init__(self) -> None:
        self.made: list[tuple[bytes, str]] = []
        self.data: dict[bytes, bytes] = {}
        self.lost: list[bytes] = []

    def connection_made(self, rid: bytes, peer: str) -> None:
        self.made.append((rid, peer))
        self.data[rid] = b""

    def data_received(self, rid: bytes, data: bytes | list[bytes]) -> None:
        # One drain's messages come as a list (see StreamTransport.drain).
        self.data[rid] += data if isinstance(data, bytes) else b"".join(data)

    def connection_lost(self, rid: bytes) -> None:
        self.lost.append(rid)


@pytest.fixture
def transport() -> Iterator[StreamTransport]:
    ctx = zmq.Context()
    stream = StreamTransport(ctx, sndhwm=4, rcvhwm=64, send_timeout=5, ipv6=False)
    yield stream
    stream.close()
    ctx.term()


def pump(transport: StreamTransport, handler: Recorder, until: Callable[[], bool],
         timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            return False
        transport.drain(handler, 100)
        time.sleep(0.005)
    return True


def client(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(3)
    sock.connect(("127.0.0.1", port))
    return sock


def test_format_endpoint() -> None:
    assert format_endpoint("127.0.0.1", 80) == "tcp://127.0.0.1:80"
    assert format_endpoint("::1", 80) == "tcp://[::1]:80"
    assert format_endpoint("[::1]", 80) == "tcp://[::1]:80"


def test_connect_data_disconnect(transport: StreamTransport) -> None:
    host, port = transport.bind("127.0.0.1", 0)
    assert host == "127.0.0.1" and port > 0
    events = Recorder()
    sock = client(port)
    assert pump(transport, events, lambda: len(events.made) == 1)
    rid, peer = events.made[0]
    assert peer == "127.0.0.1"  # Peer-Address of the connect notification
    assert transport.peer_count == 1
    for piece in (b"hello ", b"world"):
        sock.sendall(piece)
    assert pump(transport, events, lambda: events.data[rid] == b"hello world")
    assert transport.send(rid, b"reply") is SendResult.SENT
    assert sock.recv(100) == b"reply"
    sock.close()
    assert pump(transport, events, lambda: events.lost == [rid])
    assert transport.peer_count == 0


def test_large_payload_arrives_in_pieces(transport: StreamTransport) -> None:
    _, port = transport.bind("127.0.0.1", 0)
    events = Recorder()
    sock = client(port)
    assert pump(transport, events, lambda: len(events.made) == 1)
    rid = events.made[0][0]
    payload = bytes(range(256)) * 1024
    sock.sendall(payload)
    assert pump(transport, events, lambda: len(events.data[rid]) == len(payload))
    assert events.data[rid] == payload
    sock.close()


def test_two_clients_have_distinct_ids(transport: StreamTransport) -> None:
    _, port = transport.bind("127.0.0.1", 0)
    events = Recorder()
    first, second = client(port), client(port)
    assert pump(transport, events, lambda: len(events.made) == 2)
    (rid_a, _), (rid_b, _) = events.made
    assert rid_a != rid_b
    first.close()
    assert pump(transport, events, lambda: len(events.lost) == 1)
    assert transport.send(rid_b, b"still here") is SendResult.SENT
    assert second.recv(100) == b"still here"
    second.close()


def test_send_full_when_client_does_not_read(transport: StreamTransport) -> None:
    _, port = transport.bind("127.0.0.1", 0)
    events = Recorder()
    sock = client(port, rcvbuf=4096)
    assert pump(transport, events, lambda: len(events.made) == 1)
    rid = events.made[0][0]
    frame = b"x" * 65536
    sent = 0
    result = SendResult.SENT
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        result = transport.send(rid, frame)
        if result is SendResult.FULL:
            break
        sent += 1
        time.sleep(0.001)
    assert result is SendResult.FULL
    # SNDHWM=4 messages plus what the kernel buffers: far from unbounded.
    assert 4 <= sent < 200
    # Reading frees the pipe: sends succeed again.
    sock.settimeout(0.5)
    received = 0
    while received < sent * len(frame) // 2:
        received += len(sock.recv(1 << 20))
    assert pump(transport, events, lambda: transport.send(rid, b"more") is SendResult.SENT)
    sock.close()


def test_send_gone_after_peer_left(transport: StreamTransport) -> None:
    _, port = transport.bind("127.0.0.1", 0)
    events = Recorder()
    sock = client(port)
    assert pump(transport, events, lambda: len(events.made) == 1)
    rid = events.made[0][0]
    sock.close()
    assert pump(transport, events, lambda: events.lost == [rid])
    assert transport.send(rid, b"anyone?") is SendResult.GONE
    assert transport.send(b"\x00never-seen", b"x") is SendResult.GONE


def test_close_peer(transport: StreamTransport) -> None:
    _, port = transport.bind("127.0.0.1", 0)
    events = Recorder()
    sock = client(port)
    other = client(port)
    assert pump(transport, events, lambda: len(events.made) == 2)
    rid = events.made[0][0]
    assert transport.send(rid, b"last words") is SendResult.SENT
    assert transport.close_peer(rid) is SendResult.SENT
    assert transport.peer_count == 1
    # libzmq finishes the close in the socket's own thread: it must be serviced
    # (the server's loop does so when the FD signals), so keep draining.
    sock.settimeout(0.05)
    received: list[bytes] = []

    def eof() -> bool:
        try:
            chunk = sock.recv(100)
        except TimeoutError:
            return False
        received.append(chunk)
        return chunk == b""

    assert pump(transport, events, eof)
    assert b"".join(received) == b"last words"  # then EOF
    # Closing ourselves produces no disconnect notification, and nothing new.
    time.sleep(0.1)
    transport.drain(events, 100)
    assert events.lost == [] and len(events.made) == 2
    sock.close()
    other.close()


def test_bind_in_use_raises(transport: StreamTransport) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(zmq.ZMQError) as info:
            transport.bind("127.0.0.1", taken.getsockname()[1])
    assert info.value.errno == zmq.EADDRINUSE


def test_ipv4_peer_on_dual_stack_socket() -> None:
    ctx = zmq.Context()
    stream = StreamTransport(ctx, sndhwm=4, rcvhwm=64, send_timeout=5, ipv6=True)
    try:
        try:
            _, port = stream.bind("*", 0)
        except zmq.ZMQError as exc:  # pragma: no cover - host without IPv6
            pytest.skip(f"no dual-stack bind here: {exc}")
        events = Recorder()
        sock = client(port)
        assert pump(stream, events, lambda: len(events.made) == 1)
        assert events.made[0][1] == "127.0.0.1"  # not ::ffff:127.0.0.1
        sock.close()
    finally:
        stream.close()
        ctx.term()
