"""Request reader: httptools (llhttp) underneath, events and limits on top.

Strategy: llhttp owns the byte grammar (request line, fields, chunked coding,
bare CR/LF, obs-fold, duplicate Content-Length, CL with TE: all rejected by it
in its strict default mode). Its callbacks only append to our own small
buffers; when a head completes we apply the rules RFC 9110/9112 leave to the
server (version, Host, transfer codings, limits) and queue a :class:`Request`.

llhttp parses everything it is given, so several pipelined requests in one
frame become several queued events; the connection above decides when they
are handed out. An error is queued *after* the events that preceded it, so
requests received intact before a malformed one are still answered in order.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

import httptools

from zmqhttp.errors import (
    BadRequest,
    ContentTooLarge,
    HeaderFieldsTooLarge,
    NotImplementedByServer,
    ProtocolError,
    URITooLong,
    VersionNotSupported,
)
from zmqhttp.http.events import Data, EndOfMessage, Headers, Request
from zmqhttp.http.fields import (
    connection_tokens,
    parse_transfer_coding,
    split_target,
    valid_host,
)
from zmqhttp.http.limits import Limits

__all__ = ["ParseError", "RequestReader"]

# Largest slice handed to llhttp at once. httptools buffers a field line until
# it ends and we can only measure between slices, so it may hold up to
# Limits.max_head plus one slice for a field that never ends.
_FEED_SLICE: Final = 64 * 1024
_FIELD_OVERHEAD: Final = 4  # ": " and CRLF of a field line
# Fields the server's own rules read; on_header sets them aside as they come.
_FRAMING_NAMES: Final = frozenset(
    {b"host", b"transfer-encoding", b"content-length", b"connection", b"expect", b"upgrade"}
)
_NONE: Final[list[bytes]] = []
_NONE_HEADERS: Final[Headers] = []  # shared and never appended to
_NO_SPECIAL: Final[dict[bytes, list[bytes]]] = {}  # likewise
_END: Final = EndOfMessage()


class ParseError:
    """A queued protocol error: raised when the reader's consumer reaches it."""

    __slots__ = ("error",)

    def __init__(self, error: ProtocolError) -> None:
        self.error = error


QueueItem = Request | Data | EndOfMessage | ParseError


class RequestReader:
    """Turns request bytes into a queue of events, enforcing :class:`Limits`.

    Args:
        limits: the bounds to enforce.
        queue: where events (and at most one :class:`ParseError`) go.
    """

    def __init__(self, limits: Limits, queue: deque[QueueItem]) -> None:
        self._limits = limits
        self._queue = queue
        self._parser: Any = httptools.HttpRequestParser(self)
        # llhttp's strict mode knows only 0.9, 1.x and 2.0 and calls any other
        # well-formed DIGIT.DIGIT version a syntax error (400). Letting it
        # through puts the decision here (RFC 9110 §2.5): 1.x as 1.1, the rest 505.
        # The version's grammar is still llhttp's (one digit each side).
        self._parser.set_dangerous_leniencies(lenient_version=True)
        self._broken = False
        self._in_head = False
        #: In a head or trailer section, whose field lines httptools buffers.
        self._section_open = False
        #: The section began in the slice being parsed.
        self._section_new = False
        #: Bytes of the open section counted so far (a lower bound).
        self._section_raw = 0
        self._holding = False
        self._upgrade_pending = False
        self._held: list[bytes | memoryview] = []
        self._held_bytes = 0
        self._reset_message()

    def close(self) -> None:
        """Parse nothing more and let go of the parser.

        The parser holds this reader (its callbacks): a reference cycle that
        only the garbage collector would free, and with thousands of short
        connections a second it kept the collector busy.
        """
        self._broken = True
        self._holding = False
        self._held.clear()
        self._parser = None

    @property
    def broken(self) -> bool:
        """True once an error was queued: no further bytes are parsed."""
        return self._broken

    @property
    def in_message(self) -> bool:
        """True between the first byte of a request and its end."""
        return self._in_message

    def feed(self, data: bytes) -> None:
        """Parse ``data``; events and errors are appended to the queue."""
        if self._holding:
            self._hold(data)
            return
        if len(data) <= _FEED_SLICE:
            self._feed_slice(data)
            return
        view = memoryview(data)  # slices without copies (httptools takes buffers)
        for start in range(0, len(data), _FEED_SLICE):
            if self._broken:
                return
            self._feed_slice(view[start : start + _FEED_SLICE])

    def _feed_slice(self, data: bytes | memoryview) -> None:
        size = len(data)
        self._section_new = False
        if self._manual_body:
            data = self._consume_manual_body(data)
        while data and not self._broken:
            try:
                self._parser.feed_data(data)
                data = b""
            except httptools.HttpParserUpgrade as upgrade:
                rest = data[upgrade.args[0] :]
                if self._upgrade_pending:
                    # A WebSocket handshake: whatever follows belongs to the
                    # new protocol if the server switches, else it is HTTP.
                    self._holding = True
                    self._hold(rest)
                    return
                # Otherwise we do not switch protocols (RFC 9110 §7.8 lets a
                # server ignore Upgrade); llhttp stopped at the end of the head.
                data = self._consume_manual_body(rest)
            except httptools.HttpParserError as exc:
                self._fail(self._error_from(exc))
                return
        if self._section_open and not self._broken:
            self._count_section(size)

    def _hold(self, data: bytes | memoryview) -> None:
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes > self._limits.max_pipeline_bytes:
            self._holding = False
            self._held.clear()
            self._fail(BadRequest("too much data after an upgrade request"))

    @property
    def holding(self) -> bool:
        """True while bytes after a WebSocket handshake wait for the server's decision."""
        return self._holding

    def take_held(self) -> bytes:
        """The protocol was switched: hand over the bytes after the handshake."""
        data = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        self._broken = True  # nothing more is HTTP on this connection
        return data

    def resume(self) -> None:
        """The upgrade was refused: parse the held bytes as HTTP."""
        if not self._holding:
            return
        self._holding = False
        self._upgrade_pending = False
        held = b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        if held:
            self.feed(held)

    def _count_section(self, size: int) -> None:
        # httptools holds a field line until it ends: a field that never ends
        # must become 431, not memory. The count never exceeds the bytes really
        # received, so a split never rejects what a whole feed accepts: in the
        # slice where the section began only its completed fields are counted.
        if self._section_new:
            self._section_raw = self._head_size
        else:
            self._section_raw += size
        if self._section_raw > self._limits.max_head:
            self._fail(HeaderFieldsTooLarge("request head too large"))

    def _open_section(self) -> None:
        self._section_open = True
        self._section_new = True
        self._section_raw = 0

    def _fail(self, error: ProtocolError) -> None:
        self._broken = True
        self._queue.append(ParseError(error))

    def _error_from(self, exc: Exception) -> ProtocolError:
        cause = exc.__context__
        if isinstance(cause, ProtocolError):
            return cause
        if isinstance(exc, httptools.HttpParserInvalidMethodError):
            return BadRequest("invalid or unknown method")
        return BadRequest(f"malformed request: {exc}")

    def _reset_message(self) -> None:
        self._in_message = False
        self._url = b""  # almost always one piece: concatenation beats a join
        self._headers: Headers = []
        self._trailers: Headers = _NONE_HEADERS  # replaced by a list on the first trailer
        self._special: dict[bytes, list[bytes]] = {}
        self._field_count = 0
        self._head_size = 0
        self._body_received = 0
        self._manual_body = 0

    def _consume_manual_body(self, data: bytes | memoryview) -> bytes | memoryview:
        """Body bytes of a request whose Upgrade we ignored (llhttp skipped it)."""
        if not self._manual_body:
            return data
        take = data[: self._manual_body]
        self._manual_body -= len(take)
        if take:
            self._queue.append(Data(bytes(take)))
        if not self._manual_body:
            self._in_message = False
            self._queue.append(EndOfMessage())
        return data[len(take) :]

    # -- httptools callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        self._reset_message()
        self._in_message = True
        self._in_head = True
        self._open_section()

    def on_url(self, piece: bytes) -> None:
        self._url += piece
        self._head_size += len(piece)  # the request line is part of the head
        if len(self._url) > self._limits.max_request_line:
            raise URITooLong("request-target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        limits = self._limits
        size = len(name) + len(value) + _FIELD_OVERHEAD
        if size > limits.max_field_size:
            raise HeaderFieldsTooLarge("header field too large")
        self._head_size += size
        if self._head_size > limits.max_head:
            raise HeaderFieldsTooLarge("request head too large")
        self._field_count += 1
        if self._field_count > limits.max_fields:
            raise HeaderFieldsTooLarge("too many header fields")
        name = name.lower()
        if value and value[-1] in (0x20, 0x09):  # ints: no bytes needle (see fields.py)
            # RFC 9110 §5.5: OWS around a value is not part of it; llhttp drops
            # only the leading OWS.
            value = value.rstrip(b" \t")
        if not self._in_head:
            if self._trailers is _NONE_HEADERS:
                self._trailers = []
            self._trailers.append((name, value))
            return
        self._headers.append((name, value))
        if name in _FRAMING_NAMES:  # gathered once here instead of scanned per rule
            self._special.setdefault(name, []).append(value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._section_open = False
        self._queue.append(self._build_request())

    def on_chunk_header(self) -> None:
        # Trailers may follow (the last chunk); a data chunk closes it in on_body.
        self._open_section()

    def on_chunk_complete(self) -> None:
        self._section_open = False

    def on_body(self, body: bytes) -> None:
        self._section_open = False
        self._body_received += len(body)
        if self._body_received > self._limits.max_body:
            raise ContentTooLarge("request body too large")
        self._queue.append(Data(body))

    def on_message_complete(self) -> None:
        self._section_open = False
        if self._manual_body:
            return  # llhttp ends an Upgrade request at its head; we read the body
        # The common case shares one immutable event.
        self._queue.append(EndOfMessage(self._trailers) if self._trailers else _END)
        self._in_message = False
        # An idle keep-alive connection should not hold the last request's
        # fields (the Request has them); on_message_begin makes new ones.
        self._headers = _NONE_HEADERS
        self._special = _NO_SPECIAL

    # -- the server's rules for a request head -------------------------------

    def _build_request(self) -> Request:
        parser = self._parser
        version: str = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            version = _supported_version(version)
        method: bytes = parser.get_method()
        if method == b"CONNECT":
            raise NotImplementedByServer("CONNECT is not supported")
        headers = self._headers
        special = self._special
        target = self._url
        host, path, query = self._resolve_target(
            method, target, special.get(b"host", _NONE), version
        )
        content_length, chunked = self._framing(special, version)
        upgrade = None
        # llhttp upgrades only with an Upgrade field (CONNECT was refused above).
        if b"upgrade" in special and parser.should_upgrade():
            upgrade = self._upgrade_token(special.get(b"upgrade", _NONE))
            if chunked or content_length:
                if chunked:
                    raise NotImplementedByServer("chunked body with Upgrade not supported")
                self._manual_body = content_length or 0
        self._upgrade_pending = upgrade is not None and not self._manual_body
        connection = special.get(b"connection")
        if connection:
            tokens = connection_tokens(connection)
            keep_alive = b"close" not in tokens and (version == "1.1" or b"keep-alive" in tokens)
        else:
            keep_alive = version == "1.1"
        expects = special.get(b"expect")
        expect = False
        if expects and version == "1.1":
            expect = any(v.strip(b" \t").lower() == b"100-continue" for v in expects)
        has_body = chunked or bool(content_length)
        return Request(method, target, path, query, headers, version, host,
                       content_length, chunked, expect and has_body, keep_alive, upgrade)

    @staticmethod
    def _upgrade_token(values: list[bytes]) -> bytes | None:
        """``b"websocket"`` if the client asks for it (RFC 6455 §4.1), else None."""
        for value in values:
            for token in value.split(b","):
                if token.strip(b" \t").lower().split(b"/")[0] == b"websocket":
                    return b"websocket"
        return None

    def _resolve_target(
        self, method: bytes, target: bytes, hosts: list[bytes], version: str
    ) -> tuple[bytes, bytes, bytes]:
        """Return (host, path, query) per RFC 9112 §3.2 and §3.2.2."""
        if len(hosts) > 1:
            raise BadRequest("more than one Host field")
        if not hosts and version == "1.1":
            raise BadRequest("missing Host field")
        host = hosts[0].strip(b" \t") if hosts else b""
        if not valid_host(host):
            raise BadRequest("invalid Host field")
        if target.startswith(b"/"):
            path, query = split_target(target)
            return host, path, query
        if target == b"*":
            if method != b"OPTIONS":
                raise BadRequest("asterisk-form is only for OPTIONS")
            return host, b"*", b""
        return self._absolute_form(target)

    def _absolute_form(self, target: bytes) -> tuple[bytes, bytes, bytes]:
        # RFC 9112 §3.2.2: the authority of an absolute-form target replaces Host.
        try:
            # Any: httptools' stubs say port, path and query are never None, and
            # the compiled build (setup.py) would enforce that at run time.
            url: Any = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            raise BadRequest("invalid request-target") from None
        if url.schema not in (b"http", b"https") or not url.host:
            raise BadRequest("invalid absolute-form request-target")
        name: bytes = url.host
        port: int | None = url.port
        host = b"[" + name + b"]" if b":" in name else name
        if port is not None:
            host += b":%d" % port
        path: bytes | None = url.path
        query: bytes | None = url.query
        return host, path or b"/", query or b""

    def _framing(self, special: dict[bytes, list[bytes]], version: str) -> tuple[int | None, bool]:
        """Return (content_length, chunked) per RFC 9112 §6."""
        codings = special.get(b"transfer-encoding")
        if codings:
            if version == "1.0":
                # RFC 9112 §6.1: framing of a 1.0 message with TE is faulty.
                raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
            parse_transfer_coding(codings)
            return None, True
        lengths = special.get(b"content-length")
        if not lengths:
            return 0, False
        length = int(lengths[0])  # llhttp allowed one field of digits only
        if length > self._limits.max_body:
            raise ContentTooLarge("declared request body too large")
        return length, False


def _supported_version(version: str) -> str:
    """A version other than 1.0/1.1: a later 1.x is handled as 1.1, others refused.

    RFC 9110 §2.5: a recipient SHOULD process a higher minor version as the
    highest minor version it conforms to; a different major version gets 505.

    Raises:
        VersionNotSupported: HTTP/0.x or HTTP/2.0 and above over HTTP/1 framing.
    """
    if version.startswith("1."):
        return "1.1"
    raise VersionNotSupported(f"HTTP/{version} not supported")
