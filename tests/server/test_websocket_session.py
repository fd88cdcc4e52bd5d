"""WebSocketSession without a server: a fake writer and listener, a wsproto client peer.

Frames come from a real wsproto client ``Connection`` (or are written by hand
for the malformed cases) and are fed whole, one byte at a time, and in two
pieces at every position; what the session writes is parsed back by the client.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)

from wsclient import frame
from zmqhttp.server.websocket import WebSocketSession
from zmqhttp.testing import splits


@dataclass
class Listener:
    messages: list[str | bytes] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)
    #: What the app has not read yet (the ASGI adapter's inbox length).
    unread: int = 0

    def on_message(self, data: str | bytes) -> None:
        self.messages.append(data)
        self.unread += 1

    def on_close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    def pending(self) -> tuple[int, int]:
        return self.unread, 0


@dataclass
class Harness:
    """A session wired to fakes, and the wsproto client on the other end."""

    max_size: int = 1024
    max_queue: int = 8
    trailing: bytes = b""
    listener: Listener = field(default_factory=Listener)
    written: list[bytes] = field(default_factory=list)
    transport_closes: int = 0
    #: The last close_transport call's flag: True once TCP may close at once.
    handshake_done: bool = False
    client: Connection = field(default_factory=lambda: Connection(ConnectionType.CLIENT))

    def __post_init__(self) -> None:
        self.session = WebSocketSession(
            self.written.append, self._close_transport, self.listener,
            max_size=self.max_size, max_queue=self.max_queue, trailing=self.trailing,
        )

    def _close_transport(self, handshake_done: bool) -> None:
        self.transport_closes += 1
        self.handshake_done = handshake_done

    def client_bytes(self, *events: Event) -> bytes:
        return b"".join(self.client.send(event) for event in events)

    def feed(self, data: bytes, pieces: list[bytes] | None = None) -> None:
        for piece in pieces if pieces is not None else [data]:
            self.session.receive_data(piece)

    def replies(self) -> list[Event]:
        """What the session wrote, as the client reads it."""
        self.client.receive_data(b"".join(self.written))
        self.written.clear()
        return list(self.client.events())


def _split_ids(data: bytes) -> list[list[bytes]]:
    """Whole, byte by byte, and a handful of two-piece cuts (all of them is slow)."""
    cuts = list(splits(data))
    return cuts[:2] + cuts[2 :: max(1, len(cuts) // 8)]


# -- messages --------------------------------------------------------------------------


def test_text_and_binary_messages_in_any_split() -> None:
    peer = Harness()
    data = peer.client_bytes(TextMessage(data="héllo"), BytesMessage(data=b"\x00\x01"))
    for pieces in _split_ids(data):
        h = Harness()
        h.feed(data, pieces)
        assert h.listener.messages == ["héllo", b"\x00\x01"]
        assert h.written == []
        assert h.listener.closes == []


def test_fragments_are_joined_into_one_message() -> None:
    h = Harness()
    h.feed(h.client_bytes(
        TextMessage(data="a", message_finished=False),
        TextMessage(data="bc", message_finished=False),
        Ping(payload=b"mid"),  # control frames may come between fragments
        TextMessage(data="d✓", message_finished=True),
        BytesMessage(data=b"1", message_finished=False),
        BytesMessage(data=b"2", message_finished=True),
    ))
    assert h.listener.messages == ["abcd✓", b"12"]
    assert [type(e) for e in h.replies()] == [Pong]


def test_multibyte_character_split_across_fragments() -> None:
    h = Harness()
    euro = "€".encode()
    h.feed(frame(0x1, euro[:1], fin=False) + frame(0x0, euro[1:]))
    assert h.listener.messages == ["€"]


def test_trailing_bytes_are_handled_at_construction() -> None:
    peer = Harness()
    h = Harness(trailing=peer.client_bytes(TextMessage(data="early")))
    assert h.listener.messages == ["early"]


# -- control frames ----------------------------------------------------------------


def test_ping_is_answered_with_its_payload() -> None:
    h = Harness()
    h.feed(h.client_bytes(Ping(payload=b"abc")))
    replies = h.replies()
    assert len(replies) == 1
    assert isinstance(replies[0], Pong) and replies[0].payload == b"abc"


def test_keepalive_ping_and_pong() -> None:
    h = Harness()
    h.session.ping()
    assert h.session.awaiting_pong
    (ping,) = h.replies()
    assert isinstance(ping, Ping)
    h.feed(h.client.send(ping.response()))
    assert not h.session.awaiting_pong


def test_no_ping_after_close() -> None:
    h = Harness()
    h.session.close(1000)
    h.written.clear()
    h.session.ping()
    assert h.written == []
    assert not h.session.awaiting_pong


# -- limits --------------------------------------------------------------------------


def test_message_at_the_limit_passes_and_one_byte_more_closes_1009() -> None:
    h = Harness(max_size=10)
    h.feed(h.client_bytes(BytesMessage(data=b"x" * 10)))
    assert h.listener.messages == [b"x" * 10]
    h.feed(h.client_bytes(BytesMessage(data=b"x" * 11)))
    assert h.listener.messages == [b"x" * 10]
    assert h.listener.closes == [(1009, "message too big")]
    assert h.transport_closes == 1
    (close,) = h.replies()
    assert isinstance(close, CloseConnection) and close.code == 1009


def test_size_bound_counts_fragments_and_resets_per_message() -> None:
    h = Harness(max_size=10)
    for _ in range(3):  # three whole 10-byte messages in 5-byte fragments
        h.feed(h.client_bytes(BytesMessage(data=b"12345", message_finished=False),
                              BytesMessage(data=b"67890", message_finished=True)))
    assert len(h.listener.messages) == 3
    h.feed(h.client_bytes(*[BytesMessage(data=b"1234", message_finished=False)] * 3))
    assert h.listener.closes[0][0] == 1009


def test_text_size_is_counted_in_utf8_bytes() -> None:
    h = Harness(max_size=10)
    h.feed(h.client_bytes(TextMessage(data="€€€")))  # 3 characters, 9 bytes
    assert h.listener.messages == ["€€€"]
    h.feed(h.client_bytes(TextMessage(data="€€€€")))  # 4 characters, 12 bytes
    assert h.listener.closes == [(1009, "message too big")]


def test_unread_messages_bound_closes_1008() -> None:
    h = Harness(max_queue=3)
    h.feed(h.client_bytes(*[TextMessage(data=str(i)) for i in range(3)]))
    assert h.listener.closes == []
    h.listener.unread = 1  # the app read two
    h.feed(h.client_bytes(*[TextMessage(data=str(i)) for i in range(3, 6)]))
    assert h.listener.messages == ["0", "1", "2", "3", "4"]
    assert h.listener.closes == [(1008, "too many unread messages")]
    (close,) = h.replies()
    assert isinstance(close, CloseConnection) and close.code == 1008


# -- protocol errors -------------------------------------------------------------------


@pytest.mark.parametrize(("data", "code"), [
    pytest.param(frame(0x1, b"unmasked", mask=False), 1002, id="unmasked"),
    pytest.param(frame(0x3, b""), 1002, id="reserved-opcode"),
    pytest.param(frame(0x1, b"x", rsv=2), 1002, id="rsv2"),
    pytest.param(frame(0x0, b"x"), 1002, id="orphan-continuation"),
    pytest.param(frame(0x1, b"a", fin=False) + frame(0x1, b"b"), 1002, id="text-in-text"),
    pytest.param(frame(0x9, b"x", fin=False), 1002, id="fragmented-ping"),
    pytest.param(frame(0x1, b"\xc3\x28"), 1007, id="invalid-utf8"),
    pytest.param(frame(0x1, b"\xed\xa0\x80"), 1007, id="utf8-surrogate"),
    pytest.param(frame(0x8, b"\x03\xe8\xff"), 1007, id="close-reason-not-utf8"),
])
def test_protocol_errors_close_with_their_code(data: bytes, code: int) -> None:
    for pieces in _split_ids(data):
        h = Harness()
        h.feed(data, pieces)
        assert [c for c, _ in h.listener.closes] == [code], pieces
        assert h.transport_closes == 1
        replies = h.replies()
        assert [type(e) for e in replies] == [CloseConnection]
        assert isinstance(replies[0], CloseConnection) and replies[0].code == code


def test_nothing_is_read_after_a_protocol_error() -> None:
    h = Harness()
    h.feed(frame(0x3, b"") + h.client_bytes(TextMessage(data="after")))
    assert h.listener.messages == []
    h.feed(frame(0x1, b"later"))
    assert h.listener.messages == []
    assert len(h.listener.closes) == 1


# -- closing ---------------------------------------------------------------------------


def test_peer_close_is_answered_and_reported() -> None:
    h = Harness()
    h.feed(h.client_bytes(CloseConnection(code=4001, reason="bye ✓")))
    assert h.listener.closes == [(4001, "bye ✓")]
    assert h.transport_closes == 1
    (reply,) = h.replies()
    assert isinstance(reply, CloseConnection) and reply.code == 4001
    assert h.session.closed


def test_peer_close_without_code() -> None:
    h = Harness()
    h.feed(frame(0x8, b""))
    assert h.listener.closes == [(1005, "")]  # RFC 6455 §7.1.5: no status received
    (reply,) = h.replies()
    assert isinstance(reply, CloseConnection)


def test_app_close_sends_a_close_frame_and_no_disconnect() -> None:
    h = Harness()
    h.session.close(4000, "app done")
    (close,) = h.replies()
    assert isinstance(close, CloseConnection) and (close.code, close.reason) == (4000, "app done")
    assert h.listener.closes == []  # the app knows: it closed
    assert h.transport_closes == 1
    h.session.send_message("late")
    h.session.close(1000)
    h.feed(h.client.send(close.response()))
    assert h.written == []
    assert h.listener.closes == []
    # The reply completes the closing handshake: TCP may close at once now.
    assert h.transport_closes == 2 and h.handshake_done


def test_connection_lost_is_1006_and_writes_nothing() -> None:
    h = Harness()
    h.session.receive_data(None)
    assert h.listener.closes == [(1006, "")]
    assert h.written == []
    assert h.transport_closes == 1
    h.session.receive_data(None)
    assert h.listener.closes == [(1006, "")]


def test_shutdown_sends_1012_and_tells_the_app() -> None:
    h = Harness()
    h.session.shutdown()
    h.session.shutdown()
    assert h.listener.closes == [(1012, "server shutting down")]
    (close,) = h.replies()
    assert isinstance(close, CloseConnection) and close.code == 1012
    assert h.transport_closes == 1


def test_send_message_text_and_bytes() -> None:
    h = Harness()
    h.session.send_message("hi ✓")
    h.session.send_message(b"\x00")
    events = h.replies()
    assert [(type(e), getattr(e, "data", None)) for e in events] == [
        (TextMessage, "hi ✓"), (BytesMessage, b"\x00")]
