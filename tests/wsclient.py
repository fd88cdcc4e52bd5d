"""A small blocking WebSocket client on wsproto, for integration tests.

It speaks through a real socket with a timeout on every read, keeps the frames
it was given apart (:meth:`WSClient.next_event`) or joins them into messages
(:meth:`WSClient.receive`), and can write hand-made frames (:func:`frame`) for
the cases no well-behaved client would produce.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Iterable

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from rawhttp import connect

__all__ = ["HandshakeRejected", "WSClient", "frame", "handshake_bytes"]

Headers = list[tuple[bytes, bytes]]


class HandshakeRejected(Exception):
    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        super().__init__(f"handshake rejected with {status}")
        self.status = status
        self.headers = headers
        self.body = body


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
          rsv: int = 0) -> bytes:
    """One raw frame (RFC 6455 §5.2), masked like a client's unless told otherwise."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def handshake_bytes(path: str = "/", key: str = "dGhlIHNhbXBsZSBub25jZQ==",
                    extra: str = "", method: str = "GET", version: str = "13") -> bytes:
    """A handshake written by hand (for the invalid ones wsproto will not write)."""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: {version}\r\n{extra}\r\n"
    ).encode()


class WSClient:
    """A WebSocket client over one blocking socket.

    Args:
        port: the server's loopback port.
        timeout: seconds for every read (each raises ``TimeoutError`` past it).
        auto_pong: answer the server's pings (turn off to play a dead peer).
    """

    def __init__(self, port: int, *, timeout: float = 5.0, auto_pong: bool = True) -> None:
        self.sock = connect(port, timeout=timeout)
        self.timeout = timeout
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.auto_pong = auto_pong
        #: Payloads of the pings and pongs the server sent.
        self.pings: list[bytes] = []
        self.pongs: list[bytes] = []
        self.accept: AcceptConnection | None = None
        self._events: deque[Event] = deque()

    @classmethod
    def open(cls, port: int, path: str = "/", *, subprotocols: Iterable[str] = (),
             extra_headers: Headers | None = None, timeout: float = 5.0,
             auto_pong: bool = True) -> WSClient:
        """Connect and complete the handshake, or raise :class:`HandshakeRejected`."""
        client = cls(port, timeout=timeout, auto_pong=auto_pong)
        try:
            client.handshake(path, subprotocols=subprotocols, extra_headers=extra_headers)
        except BaseException:
            client.sock.close()
            raise
        return client

    def handshake(self, path: str = "/", *, subprotocols: Iterable[str] = (),
                  extra_headers: Headers | None = None) -> AcceptConnection:
        request = Request(host="127.0.0.1", target=path, subprotocols=list(subprotocols),
                          extra_headers=extra_headers or [])
        self.sock.sendall(self.ws.send(request))
        return self.read_handshake_reply()

    def read_handshake_reply(self) -> AcceptConnection:
        event = self.next_event()
        if isinstance(event, AcceptConnection):
            self.accept = event
            return event
        assert isinstance(event, RejectConnection), event
        body = b""
        while event.has_body:
            data = self.next_event()
            assert isinstance(data, RejectData), data
            body += data.data
            if data.body_finished:
                break
        raise HandshakeRejected(event.status_code, list(event.headers), body)

    # -- reading -------------------------------------------------------------------

    def next_event(self, timeout: float | None = None) -> Event:
        """The next wsproto event; ``EOFError`` if the server closed TCP first."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        while not self._events:
            self._events.extend(self.ws.events())
            if self._events:
                break
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("server closed the connection")
            self.ws.receive_data(data)
        return self._events.popleft()

    def receive(self, timeout: float | None = None) -> str | bytes | CloseConnection:
        """The next whole message (pings answered on the way), or the server's close."""
        parts: list[str | bytes] = []
        while True:
            event = self.next_event(timeout)
            if isinstance(event, Ping):
                self.pings.append(bytes(event.payload))
                if self.auto_pong:
                    self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, Pong):
                self.pongs.append(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                return event
            elif isinstance(event, Message):
                parts.append(event.data)
                if event.message_finished:
                    if isinstance(event, TextMessage):
                        return "".join(p for p in parts if isinstance(p, str))
                    return b"".join(p for p in parts if isinstance(p, bytes))
            else:
                raise AssertionError(f"unexpected event {event!r}")

    def expect_close(self, timeout: float | None = None) -> CloseConnection:
        """Read until the server's close frame, answer it, and return it."""
        while True:
            event = self.receive(timeout)
            if isinstance(event, CloseConnection):
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    self.sock.sendall(self.ws.send(event.response()))
                return event

    def wait_eof(self, timeout: float = 5.0) -> bool:
        """Discard input until the server closes TCP; False if it did not in time."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    # -- writing -------------------------------------------------------------------

    def send(self, data: str | bytes, *, final: bool = True) -> None:
        """A message, or one fragment of it when ``final`` is False."""
        event: TextMessage | BytesMessage
        if isinstance(data, str):
            event = TextMessage(data=data, message_finished=final)
        else:
            event = BytesMessage(data=data, message_finished=final)
        self.sock.sendall(self.ws.send(event))

    def echo(self, data: str | bytes) -> str | bytes | CloseConnection:
        self.send(data)
        return self.receive()

    def ping(self, payload: bytes = b"") -> None:
        self.sock.sendall(self.ws.send(Ping(payload=payload)))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self, code: int = 1000, reason: str = "") -> CloseConnection:
        """Start the closing handshake and return the server's answering close."""
        self.sock.sendall(self.ws.send(CloseConnection(code=code, reason=reason)))
        while True:
            event = self.receive()
            if isinstance(event, CloseConnection):
                return event

    def drop(self) -> None:
        """Close TCP without a closing handshake."""
        self.sock.close()

    def __enter__(self) -> WSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
