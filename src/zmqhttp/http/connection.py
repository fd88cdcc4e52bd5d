"""The server side of one HTTP/1.1 connection, sans-IO.

Strategy (h11's three verbs): :meth:`ServerConnection.receive_data` takes bytes
(``b""`` when the peer is gone), :meth:`~ServerConnection.next_event` hands out
request events, :meth:`~ServerConnection.send` turns response events into bytes.
Nothing here does I/O, reads a clock or knows about ZeroMQ.

Two state machines, one per direction, move in request/response *cycles*:

* the request side goes IDLE -> BODY -> DONE, and DRAIN when the response ended
  before the request body did (we read and discard it, RFC 9110 §10.1.1);
* the response side goes IDLE -> BODY -> DONE.

When both sides are done the cycle restarts if the connection persists
(RFC 9112 §9.3), else the request side becomes MUST_CLOSE. While a response is
in progress, :meth:`next_event` returns ``PAUSED``: pipelined requests are held
(bounded by :attr:`Limits.max_pipeline_bytes`) and answered in order.
"""

from __future__ import annotations

import contextlib
import enum
from collections import deque
from collections.abc import Callable
from typing import Final

from zmqhttp.errors import LocalProtocolError, ProtocolError
from zmqhttp.http.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Headers,
    InformationalResponse,
    Request,
    Response,
    Sentinel,
)
from zmqhttp.http.fields import connection_tokens
from zmqhttp.http.limits import Limits
from zmqhttp.http.reader import ParseError, QueueItem, RequestReader
from zmqhttp.http.writer import (
    BodyWriter,
    ChunkedWriter,
    CloseDelimitedWriter,
    LengthWriter,
    NoBodyWriter,
    field_line,
    reason_phrase,
    render_head,
    status_line,
)

__all__ = ["RequestState", "ResponseState", "ServerConnection"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Held input is parsed in groups of about this many bytes (see _feed_pending).
_FEED_GROUP: Final = 64 * 1024
# Fields the server owns; an application's values are dropped (PEP 3333 forbids
# hop-by-hop fields from WSGI apps; we frame the body ourselves).
_FRAMING_FIELDS = frozenset({b"transfer-encoding", b"content-length"})
_CHUNKED_LINE = b"Transfer-Encoding: chunked\r\n"
_CLOSE_LINE = b"Connection: close\r\n"
_KEEP_ALIVE_LINE = b"Connection: keep-alive\r\n"
# The writers without state are shared.
_NO_BODY = NoBodyWriter()
_CHUNKED = ChunkedWriter()

# What the server does with a response field, by the (name, value) pair the
# application gave: apps send the same few fields on every response, so each
# is checked, classified and rendered once (bounded like writer.field_line).
_PLAIN, _DATE, _SERVER, _LENGTH, _DROP, _CLOSE = range(6)
_FIELD_KINDS: dict[tuple[bytes, bytes], tuple[int, bytes, int]] = {}
_FIELD_KINDS_MAX = 4096
_FIELD_CACHED_MAX = 200


def _classify_field(name: bytes, value: bytes) -> tuple[int, bytes, int]:
    """(kind, rendered line, Content-Length) of one application field.

    Raises:
        LocalProtocolError: an invalid field, or an invalid Content-Length.
    """
    lower = name.lower()
    if lower in _FRAMING_FIELDS:
        # We frame the body ourselves; the application's length is checked.
        if lower == b"transfer-encoding":
            return _DROP, b"", 0
        stripped = value.strip()
        if not stripped.isdigit():
            raise LocalProtocolError("invalid Content-Length from the application")
        return _LENGTH, b"", int(stripped)
    if lower == b"connection":
        return (_CLOSE if b"close" in connection_tokens([value]) else _DROP), b"", 0
    kind = _DATE if lower == b"date" else _SERVER if lower == b"server" else _PLAIN
    return kind, field_line(name, value), 0


# The Date line changes once a second: the last one is kept, as one tuple so
# that servers on other threads always read a matching pair.
_last_date: list[tuple[bytes, bytes]] = [(b"", b"")]


def _date_line(date: bytes) -> bytes:
    last = _last_date[0]
    if last[0] is not date:
        last = _last_date[0] = (date, field_line(b"Date", date))
    return last[1]


class RequestState(enum.Enum):
    #: Between requests, or reading a request head.
    IDLE = "IDLE"
    #: The head was handed out; body events follow.
    BODY = "BODY"
    #: The whole request was read; waiting for the response to finish.
    DONE = "DONE"
    #: The response finished first; remaining body bytes are read and dropped.
    DRAIN = "DRAIN"
    #: No further request will be read; close once the output is flushed.
    MUST_CLOSE = "MUST_CLOSE"
    #: The peer closed, or an error ended the connection.
    CLOSED = "CLOSED"
    #: A 101 went out: the connection speaks another protocol (WebSocket).
    SWITCHED = "SWITCHED"


class ResponseState(enum.Enum):
    #: No response head sent yet for the current request.
    IDLE = "IDLE"
    #: Head sent; body events may follow.
    BODY = "BODY"
    #: The response is complete.
    DONE = "DONE"


def _no_date() -> bytes:
    return b""


class ServerConnection:
    """One HTTP/1.1 connection from the server's side.

    Args:
        limits: bounds enforced on what the peer sends.
        date: returns the current IMF-fixdate for the ``Date`` field
            (RFC 9110 §6.6.1), or ``b""`` to send none.
        server_header: value of the ``Server`` field, or ``b""`` for none.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        date: Callable[[], bytes] = _no_date,
        server_header: bytes = b"zmqhttp",
    ) -> None:
        self.limits = limits or Limits()
        self._date = date
        self._server_header = server_header
        self._queue: deque[QueueItem] = deque()
        self._reader = RequestReader(self.limits, self._queue)
        # Bytes received and not parsed yet; parsed all at once (a list, not a
        # deque: an idle connection keeps this, and an empty deque is 600 bytes).
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._overflow = False
        self._eof = False
        #: The server may veto persistence (shutdown, errors) with allow_keep_alive.
        self._allow_keep_alive = True
        self.request_state = RequestState.IDLE
        self.response_state = ResponseState.IDLE
        self.request: Request | None = None
        self._writer: BodyWriter = NoBodyWriter()
        self._start_cycle()

    # -- state queries ---------------------------------------------------------

    @property
    def keep_alive(self) -> bool:
        """Whether the current cycle is to end with the connection kept open."""
        return self._keep_alive

    @property
    def must_close(self) -> bool:
        """True when no more requests will be read: close once output is sent."""
        return self.request_state in (RequestState.MUST_CLOSE, RequestState.CLOSED)

    @property
    def idle(self) -> bool:
        """True between requests with no partial request buffered."""
        return (
            self.request_state is RequestState.IDLE
            and not self._queue
            and not self._pending
            and not self._reader.in_message
        )

    @property
    def they_are_waiting_for_100_continue(self) -> bool:
        """The client sent ``Expect: 100-continue`` and still waits (RFC 9110 §10.1.1)."""
        return (
            self.request is not None
            and self.request.expect_continue
            and self.request_state is RequestState.BODY
            and self.response_state is ResponseState.IDLE
            and not self._sent_continue
            and not self._body_seen
        )

    def close(self) -> None:
        """The connection is gone: drop held input, and the parser with it.

        Afterwards nothing more is parsed; :meth:`next_event` says
        :class:`ConnectionClosed`.
        """
        self._eof = True
        self.request_state = RequestState.CLOSED
        self._pending.clear()
        self._pending_bytes = 0
        self._queue.clear()
        self._reader.close()

    def allow_keep_alive(self, allowed: bool) -> None:
        """Let the server refuse persistence, e.g. while shutting down."""
        self._allow_keep_alive = allowed
        if not allowed and self.request_state is RequestState.IDLE and self.idle:
            self.request_state = RequestState.MUST_CLOSE

    # -- receiving ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Take bytes from the peer; ``b""`` means the peer is gone."""
        if not data:
            self._eof = True
            return
        state = self.request_state
        if state is RequestState.MUST_CLOSE or state is RequestState.CLOSED or self._overflow:
            return  # lingering close, or no more requests taken: read and drop
        if (
            state is RequestState.DONE
            and self._pending_bytes + len(data) > self.limits.max_pipeline_bytes
        ):
            # Stop taking requests (see Limits); the complete ones held are
            # answered, the last of them with Connection: close.
            self._overflow = True
            return
        self._pending.append(data)
        self._pending_bytes += len(data)

    def next_event(self) -> Event | Sentinel:
        """The next request event, ``NEED_DATA`` or ``PAUSED``.

        Raises:
            ProtocolError: the request is malformed or over a limit; answer it
                with :meth:`send_error` (if no response started) and close.
        """
        while True:
            state = self.request_state
            if state is RequestState.DONE:
                return PAUSED
            if state is RequestState.MUST_CLOSE or state is RequestState.CLOSED:
                return ConnectionClosed() if self._eof else NEED_DATA
            if self._overflow and state is RequestState.IDLE and not self._complete_held():
                # Nothing complete is left and the rest was dropped: the next
                # request could never end, so none is handed out.
                self.request_state = RequestState.MUST_CLOSE
                continue
            if self._queue:
                event = self._take(self._queue.popleft())
                if event is not None:
                    return event
                continue
            if self._pending:
                self._feed_pending()
                continue
            if self._eof:
                self.request_state = RequestState.CLOSED
                return ConnectionClosed()
            if self._overflow:
                self.request_state = RequestState.MUST_CLOSE
            return NEED_DATA

    def _complete_held(self) -> int:
        """Parse every held byte; count the messages that ended (or failed) in the queue."""
        if self._pending:
            self._feed_pending()
        return sum(isinstance(item, EndOfMessage | ParseError) for item in self._queue)

    def _feed_pending(self) -> None:
        """Parse every held byte, joined in groups of about ``_FEED_GROUP``.

        A body arrives in pieces of at most 8 KiB (libzmq's reads): joining a
        few keeps the parser calls few, and never joining more keeps every
        buffer small. One join of a whole drain's worth (megabytes of an
        upload) cost more in page faults than all the copying.
        """
        pending = self._pending
        if len(pending) == 1:
            self._reader.feed(pending[0])
        else:
            group: list[bytes] = []
            size = 0
            for piece in pending:
                group.append(piece)
                size += len(piece)
                if size >= _FEED_GROUP:
                    self._reader.feed(group[0] if len(group) == 1 else b"".join(group))
                    group.clear()
                    size = 0
            if group:
                self._reader.feed(group[0] if len(group) == 1 else b"".join(group))
        pending.clear()
        self._pending_bytes = 0

    def _take(self, item: QueueItem) -> Event | None:
        """Apply one queued item to the state; None if it is consumed silently."""
        # The event classes are final (never subclassed): type() is exact.
        if type(item) is Data:
            self._body_seen = True
            return None if self.request_state is RequestState.DRAIN else item
        if type(item) is Request:
            self.request = item
            self.request_state = RequestState.BODY
            return item
        if type(item) is EndOfMessage:
            if self.request_state is RequestState.DRAIN:
                self._finish_cycle()
                return None
            self.request_state = RequestState.DONE
            if self.response_state is ResponseState.DONE:
                self._finish_cycle()
            return item
        assert type(item) is ParseError
        self.request_state = RequestState.CLOSED
        raise item.error

    # -- sending -----------------------------------------------------------------

    def send(self, event: Event) -> bytes:
        """Serialise a response event for the current request.

        Raises:
            LocalProtocolError: the event does not fit the state (a second
                head, a body longer than its Content-Length, ...).
        """
        if isinstance(event, Data):
            if self.response_state is not ResponseState.BODY:
                raise LocalProtocolError("response body without a head")
            return self._writer.write(event.data)
        if isinstance(event, EndOfMessage):
            return self._end_response()
        if isinstance(event, Response):
            return self._start_response(event)
        if isinstance(event, InformationalResponse):
            return self._send_continue(event)
        raise LocalProtocolError(f"cannot send {type(event).__name__}")

    def send_error(self, error: ProtocolError | LocalProtocolError) -> bytes:
        """A complete plain-text error response; the connection then closes."""
        self._allow_keep_alive = False
        status = error.status
        body = b"%d %s\n" % (status, reason_phrase(status))
        headers: Headers = [
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"Content-Length", b"%d" % len(body)),
        ]
        if status == 503:
            headers.append((b"Retry-After", b"1"))
        headers.extend(getattr(error, "headers", ()))
        head = self._start_response(Response(status, headers))
        return head + self.send(Data(body)) + self._end_response()

    def _send_continue(self, event: InformationalResponse) -> bytes:
        if event.status == 101:
            return self._switch_protocols(event)
        if event.status != 100:
            raise LocalProtocolError(f"cannot send informational status {event.status}")
        if not self.they_are_waiting_for_100_continue:
            return b""  # never to 1.0 clients (RFC 9110 §10.1.1), never twice
        self._sent_continue = True
        return _CONTINUE

    def _switch_protocols(self, event: InformationalResponse) -> bytes:
        """101 for a complete upgrade request (RFC 9110 §15.2.2); HTTP ends here."""
        request = self.request
        if (
            request is None
            or request.upgrade is None
            or self.request_state is not RequestState.DONE
            or self.response_state is not ResponseState.IDLE
        ):
            raise LocalProtocolError("101 is only for a complete upgrade request")
        head = render_head(101, b"Switching Protocols", event.headers)
        self.request_state = RequestState.SWITCHED
        self.response_state = ResponseState.DONE
        return head

    def trailing_data(self) -> bytes:
        """After a 101: the bytes received after the handshake, for the new protocol."""
        if self.request_state is not RequestState.SWITCHED:
            raise LocalProtocolError("the protocol was not switched")
        data = self._reader.take_held() + b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        return data

    def _start_response(self, event: Response) -> bytes:
        head, writer, keep_alive = self._prepare_head(event.status, event.headers, event.reason)
        self._commit_head(writer, keep_alive)
        return head

    def respond(self, status: int, headers: Headers, body: bytes, reason: bytes = b"") -> bytes:
        """A whole response at once: ``send`` of its head, ``body`` and end, joined.

        Raises:
            LocalProtocolError: before any state changes (an invalid head, or a
                body that does not match its Content-Length); the caller may
                still answer with :meth:`send_error` or event by event.
        """
        head, writer, keep_alive = self._prepare_head(status, headers, reason)
        if type(writer) is LengthWriter and writer.remaining != len(body):
            raise LocalProtocolError("response body does not match its Content-Length")
        self._commit_head(writer, keep_alive)
        framed = writer.write(body)
        tail = self._end_response()
        return head + framed + tail if tail else head + framed

    def _prepare_head(self, status: int, given: Headers,
                      reason: bytes) -> tuple[bytes, BodyWriter, bool]:
        """The head of a final response and its body writer; changes no state.

        Raises:
            LocalProtocolError: the state or the head is invalid.
        """
        if self.response_state is not ResponseState.IDLE:
            raise LocalProtocolError("response already started")
        if status < 200:
            raise LocalProtocolError("send informational responses as InformationalResponse")
        parts = [status_line(status, reason)]
        lines, length, app_close = self._app_fields(given, parts)
        if status == 204:
            length = None
        request = self.request
        keep_alive = self._decide_keep_alive(request, app_close)
        no_body = (request is not None and request.method == b"HEAD") or status in (204, 304)
        writer: BodyWriter
        if no_body:
            writer = _NO_BODY
            if length is not None and status != 204:
                lines.append(b"Content-Length: %d\r\n" % length)
            elif status not in (204, 304) and request is not None and (
                request.http_version == "1.1"
            ):
                # HEAD gets the fields GET would (RFC 9110 §9.3.2): GET of a
                # body of unknown length would be chunked.
                lines.append(_CHUNKED_LINE)
        elif length is not None:
            writer = LengthWriter(length)
            lines.append(b"Content-Length: %d\r\n" % length)
        elif request is not None and request.http_version == "1.1":
            writer = _CHUNKED
            lines.append(_CHUNKED_LINE)
        else:
            writer = CloseDelimitedWriter()  # RFC 9112 §6.3 rule 8
            keep_alive = False
        if not keep_alive:
            lines.append(_CLOSE_LINE)
        elif request is not None and request.http_version == "1.0":
            lines.append(_KEEP_ALIVE_LINE)
        parts += lines
        parts.append(b"\r\n")
        return b"".join(parts), writer, keep_alive

    def _commit_head(self, writer: BodyWriter, keep_alive: bool) -> None:
        self._keep_alive = keep_alive
        self._writer = writer
        self.close_delimited = type(writer) is CloseDelimitedWriter
        self.response_state = ResponseState.BODY

    def _app_fields(self, given: Headers,
                    parts: list[bytes]) -> tuple[list[bytes], int | None, bool]:
        """Render the application's fields, pulling out framing and Connection.

        ``Server`` and ``Date`` lines go to ``parts`` (after the status line)
        unless the application gave its own; the rest is returned in order.
        """
        lines: list[bytes] = []
        length: int | None = None
        app_close = has_date = has_server = False
        cache = _FIELD_KINDS
        for pair in given:
            try:
                known = cache.get(pair)
            except TypeError:  # unhashable (a bytearray): classified, not cached
                known = None
            if known is None:
                known = _classify_field(*pair)
                if len(cache) < _FIELD_KINDS_MAX and len(pair[1]) <= _FIELD_CACHED_MAX:
                    with contextlib.suppress(TypeError):
                        cache[pair] = known
            kind, line, size = known
            if kind == _PLAIN:
                lines.append(line)
            elif kind == _LENGTH:
                if length is not None and length != size:
                    raise LocalProtocolError("conflicting Content-Length from the application")
                length = size
            elif kind == _CLOSE:
                app_close = True
            elif kind == _DATE:
                has_date = True
                lines.append(line)
            elif kind == _SERVER:
                has_server = True
                lines.append(line)
        if not has_server and self._server_header:
            parts.append(field_line(b"Server", self._server_header))
        if not has_date and (date := self._date()):
            parts.append(_date_line(date))
        return lines, length, app_close

    def _decide_keep_alive(self, request: Request | None, app_close: bool) -> bool:
        if request is None or app_close or not self._allow_keep_alive:
            return False
        if not request.keep_alive:
            return False
        if self._overflow:
            # Keep the connection only if a later complete request is held.
            own = 0 if self.request_state is RequestState.DONE else 1
            if self._complete_held() <= own:
                return False
        if self.request_state is RequestState.BODY:
            # The response starts before the request body was read. A client
            # still waiting for 100 will not send it: close (RFC 9110 §10.1.1).
            if request.expect_continue and not self._sent_continue:
                return False
            if request.chunked or (request.content_length or 0) > self.limits.max_drain:
                return False
        return self.request_state is not RequestState.CLOSED

    def _end_response(self) -> bytes:
        if self.response_state is not ResponseState.BODY:
            raise LocalProtocolError("response ended without a head")
        tail = self._writer.end()
        self.response_state = ResponseState.DONE
        if self.request_state is RequestState.DONE or self.request is None:
            self._finish_cycle()
        elif self.request_state is RequestState.BODY:
            if self._keep_alive:
                self.request_state = RequestState.DRAIN
            else:
                self.request_state = RequestState.MUST_CLOSE
        return tail

    def _finish_cycle(self) -> None:
        if not self._keep_alive or not self._allow_keep_alive:
            self.request_state = RequestState.MUST_CLOSE
            return
        self._start_cycle()

    def _start_cycle(self) -> None:
        self._reader.resume()  # an upgrade answered as plain HTTP: parse what followed
        self.request = None
        self.request_state = RequestState.IDLE
        self.response_state = ResponseState.IDLE
        self._keep_alive = True
        self._sent_continue = False
        self._body_seen = False
        self._writer = NoBodyWriter()
        #: The current response body ends only when the connection closes.
        self.close_delimited = False
