"""HTTP events exchanged between the sans-IO connection and the layers above.

Strategy: slotted dataclasses (hypercorn's and h11's vocabulary), frozen
except the two built on every request (below). The
connection turns bytes into :class:`Request`, :class:`Data` and
:class:`EndOfMessage`, and turns :class:`InformationalResponse`,
:class:`Response`, :class:`Data` and :class:`EndOfMessage` into bytes.
Header names in a :class:`Request` are lower-cased; values are raw bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Event",
    "Headers",
    "InformationalResponse",
    "Request",
    "Response",
    "Sentinel",
]

Headers = list[tuple[bytes, bytes]]


class Sentinel(enum.Enum):
    #: More bytes from the peer are needed before another event can be produced.
    NEED_DATA = "NEED_DATA"
    #: A request is complete and its response is not; nothing more is parsed
    #: until the response ends (pipelined requests wait, RFC 9112 §9.3.2).
    PAUSED = "PAUSED"


NEED_DATA = Sentinel.NEED_DATA
PAUSED = Sentinel.PAUSED


# Request and Data are built for every request and body piece. A frozen
# dataclass sets each field through object.__setattr__ (24,000 CPU instructions
# for a Request on CPython 3.11; and in the compiled build, setup.py, it stays
# the interpreted dataclass __init__, 0.5 us). With an __init__ of its own a
# slotted class is built in well under a tenth of that, compiled or not. They
# are not frozen, then: nothing in zmqhttp changes an event after building it,
# and applications should not either.
@dataclass(slots=True, init=False)
class Request:
    """A request head, after framing and Host checks passed.

    Attributes:
        method: the method token, e.g. ``b"GET"``.
        target: the request-target exactly as received.
        path: the path of the target, still percent-encoded (``b"*"`` for
            asterisk-form).
        query: the query without ``?``, possibly empty.
        headers: (lower-cased name, value) pairs in the order received.
        http_version: ``"1.0"`` or ``"1.1"``.
        host: the authority the request is for: from an absolute-form target
            if there was one (RFC 9112 §3.2.2), else the Host field.
        content_length: the declared body length, ``None`` if chunked.
        chunked: the body uses the chunked transfer coding.
        expect_continue: the client sent ``Expect: 100-continue`` and is HTTP/1.1.
        keep_alive: the client allows the connection to persist (RFC 9112 §9.3).
        upgrade: ``b"websocket"`` when the request asks to switch to WebSocket
            (Upgrade and Connection: upgrade); the server may accept it with a
            101 or answer it as plain HTTP.
    """

    method: bytes
    target: bytes
    path: bytes
    query: bytes
    headers: Headers
    http_version: str
    host: bytes
    content_length: int | None = 0
    chunked: bool = False
    expect_continue: bool = False
    keep_alive: bool = True
    upgrade: bytes | None = None

    def __init__(self, method: bytes, target: bytes, path: bytes, query: bytes,
                 headers: Headers, http_version: str, host: bytes,
                 content_length: int | None = 0, chunked: bool = False,
                 expect_continue: bool = False, keep_alive: bool = True,
                 upgrade: bytes | None = None) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.headers = headers
        self.http_version = http_version
        self.host = host
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.keep_alive = keep_alive
        self.upgrade = upgrade


@dataclass(slots=True, init=False)
class Data:
    """A piece of a message body (request or response). Built often: see Request."""

    data: bytes

    def __init__(self, data: bytes) -> None:
        self.data = data


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """The end of a message body; request trailers are passed along, if any."""

    trailers: Headers = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class InformationalResponse:
    """A 1xx response (we send only ``100 Continue``)."""

    status: int = 100
    headers: Headers = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Response:
    """A final response head. Header names keep the application's case."""

    status: int
    headers: Headers = field(default_factory=list)
    reason: bytes = b""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side; no more events follow."""


Event = Request | Data | EndOfMessage | InformationalResponse | Response | ConnectionClosed
