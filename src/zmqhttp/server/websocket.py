"""A WebSocket connection after the 101, on the event loop (RFC 6455, via wsproto).

Strategy: wsproto's frame-level ``Connection`` (no HTTP: the handshake was ours)
turns bytes into events and messages into bytes. This class adds what wsproto
leaves to servers: reassembly of fragmented messages with a size bound (1009),
answers to pings, our own keep-alive pings with a pong deadline, the closing
handshake, and a bound on messages the app has not read yet (we cannot stop
reading one ZMQ_STREAM peer, so a client that floods an app that does not
read is closed with 1008 instead of growing memory).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    TextMessage,
)

__all__ = ["WebSocketListener", "WebSocketSession"]

log = logging.getLogger("zmqhttp.error")

CLOSE_ABNORMAL = 1006
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


class WebSocketListener(Protocol):
    """The application side of a session (the ASGI adapter)."""

    def on_message(self, data: str | bytes) -> None:
        """A whole message arrived."""

    def on_close(self, code: int, reason: str) -> None:
        """The session ended (closing handshake, error, or lost connection)."""

    def pending(self) -> tuple[int, int]:
        """Messages, and their bytes, delivered but not yet taken by the app."""
        ...


class WebSocketSession:
    """Frames in and out for one upgraded connection.

    Args:
        write: queues bytes for the peer.
        close_transport: called when the session is over: with True once the
            closing handshake is complete (close TCP now, RFC 6455 §7.1.1), with
            False while the peer's close is awaited (lingering close).
        listener: receives messages and the end of the session.
        max_size: largest message in bytes; larger ones close with 1009.
        max_queue: most unread messages before closing with 1008; their bytes
            are bounded by ``max_size`` too.
        trailing: bytes received after the handshake.
    """

    def __init__(self, write: Callable[[bytes], None], close_transport: Callable[[bool], None],
                 listener: WebSocketListener, *, max_size: int, max_queue: int,
                 trailing: bytes = b"") -> None:
        self._ws = WSConnection(ConnectionType.SERVER)
        self._write = write
        self._close_transport = close_transport
        self._listener = listener
        self._max_size = max_size
        self._max_queue = max_queue
        self._parts: list[str | bytes] = []
        self._size = 0
        #: No more messages to or from the app.
        self.closed = False
        #: The closing handshake is over (or TCP is gone): nothing more to read.
        self._transport_done = False
        self.awaiting_pong = False
        if trailing:
            self.receive_data(trailing)

    # -- from the peer -------------------------------------------------------------

    def receive_data(self, data: bytes | None) -> None:
        """Bytes from the peer; ``None`` when the TCP connection is gone."""
        if self._transport_done:
            return
        if data is None:
            self._finish(CLOSE_ABNORMAL, "", handshake_done=True)
            return
        self._ws.receive_data(data)
        for event in self._ws.events():
            self._handle(event)
            if self._transport_done:
                return

    def _handle(self, event: Event) -> None:
        if isinstance(event, Message):
            self._message(event)
        elif isinstance(event, Ping):
            self._send(event.response())
        elif isinstance(event, Pong):
            self.awaiting_pong = False
        elif isinstance(event, CloseConnection):
            code, reason = int(event.code), event.reason or ""
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                self._send(event.response())  # the peer closed; we answer
                self._finish(code, reason, handshake_done=True)
            elif self._ws.state is ConnectionState.CLOSED:
                self._finish(code, reason, handshake_done=True)  # the reply to our close
            else:  # a protocol error wsproto reports as a close (1002, 1007)
                self._close_with(code, reason)

    def _message(self, event: Message) -> None:  # type: ignore[type-arg]
        if self.closed:
            return  # we are closing: the app reads no more
        data = event.data
        # ws_max_size is in bytes: a text chunk counts its UTF-8 length, not
        # its characters (up to 4 bytes each).
        self._size += len(data) if isinstance(data, bytes) else len(data.encode("utf-8"))
        if self._size > self._max_size:
            self._close_with(CLOSE_TOO_BIG, "message too big")
            return
        self._parts.append(data)
        if not event.message_finished:
            return
        parts, self._parts, self._size = self._parts, [], 0
        message: str | bytes
        if isinstance(event, TextMessage):
            message = "".join(p for p in parts if isinstance(p, str))
        else:
            assert isinstance(event, BytesMessage)
            message = b"".join(p for p in parts if isinstance(p, bytes))
        count, size = self._listener.pending()
        if count >= self._max_queue or size + len(message) > self._max_size:
            self._close_with(CLOSE_POLICY, "too many unread messages")
            return
        self._listener.on_message(message)

    # -- from the app ----------------------------------------------------------------

    def send_message(self, data: str | bytes) -> None:
        if self.closed or self._ws.state is not ConnectionState.OPEN:
            return
        event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        self._send(event)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; the app hears no disconnect for its own close."""
        if self.closed:
            return
        self.closed = True
        if self._ws.state is ConnectionState.OPEN:
            self._send(CloseConnection(code=code, reason=reason))
        # Until the peer's reply arrives the transport lingers (bounded).
        self._close_transport(False)

    def shutdown(self) -> None:
        """The server is stopping: close with 1012 and tell the app."""
        if not self.closed:
            self._close_with(1012, "server shutting down")

    def ping(self) -> None:
        """A keep-alive ping; the server closes if no pong comes in time."""
        if not self.closed and self._ws.state is ConnectionState.OPEN:
            self.awaiting_pong = True
            self._send(Ping(payload=b"zmqhttp"))

    # -- internals -------------------------------------------------------------------

    def _send(self, event: Event) -> None:
        self._write(self._ws.send(event))

    def _close_with(self, code: int, reason: str) -> None:
        if self._ws.state is ConnectionState.OPEN:
            self._send(CloseConnection(code=code, reason=reason))
        self._finish(code, reason, handshake_done=False)

    def _finish(self, code: int, reason: str, *, handshake_done: bool) -> None:
        """Tell the app (once); ``handshake_done``: the TCP close may follow at once."""
        if not self.closed:
            self.closed = True
            self._listener.on_close(code, reason)
        if handshake_done:
            self._transport_done = True
        self._close_transport(handshake_done)
