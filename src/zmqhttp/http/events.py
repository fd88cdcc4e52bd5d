"""HTTP events exchanged between the sans-IO connection and the layers above.

Strategy: frozen, slotted dataclasses (hypercorn's and h11's vocabulary). The
connection turns bytes into :class:`Request`, :class:`Data` and
:class:`EndOfMessage`, and turns :class:`InformationalResponse`,
:class:`Response`, :class:`Data` and :class:`EndOfMessage` into bytes.
Header names in a :class:`Request` are lower-cased; values are raw bytes.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Final

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


@dataclass(frozen=True, slots=True)
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


# A frozen dataclass sets each field through object.__setattr__: building a
# Request that way took 24,000 CPU instructions (callgrind, CPython 3.11), a
# tenth of the server's whole cost per request. Interpreted, the reader instead
# fills a plain slotted twin with the same fields and turns it into a Request by
# __class__ assignment, which CPython allows between identical slot layouts:
# the result is an ordinary frozen Request (type() is Request, setting a field
# raises), built in about 5,000 instructions. Compiled (setup.py), Request is a
# native class that mypyc builds directly, and the twin is not needed.
_COMPILED: Final = not __file__.endswith(".py")
_RequestFields: Any = None if _COMPILED else dataclasses.make_dataclass(
    "_RequestFields", [(f.name, f.type) for f in dataclasses.fields(Request)], slots=True
)


def request_event(method: bytes, target: bytes, path: bytes, query: bytes, headers: Headers,
                  http_version: str, host: bytes, content_length: int | None, chunked: bool,
                  expect_continue: bool, keep_alive: bool, upgrade: bytes | None) -> Request:
    """``Request(...)`` with every field given, positionally, at a fraction of the cost."""
    if _COMPILED:
        return Request(method, target, path, query, headers, http_version, host,
                       content_length, chunked, expect_continue, keep_alive, upgrade)
    request = _RequestFields(method, target, path, query, headers, http_version, host,
                             content_length, chunked, expect_continue, keep_alive, upgrade)
    request.__class__ = Request
    return request  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of a message body (request or response)."""

    data: bytes


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
