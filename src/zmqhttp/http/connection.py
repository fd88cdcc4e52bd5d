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

import enum
from collections import deque
from collections.abc import Callable

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
    reason_phrase,
    render_head,
)

__all__ = ["RequestState", "ResponseState", "ServerConnection"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Fields the server owns; an application's values are dropped (PEP 3333 forbids
# hop-by-hop fields from WSGI apps; we frame the body ourselves).
_FRAMING_FIELDS = frozenset({b"transfer-encoding", b"content-length"})


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
        self._pending: deque[bytes] = deque()
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
        if self.must_close or self._overflow:
            return  # lingering close, or no more requests taken: read and drop
        if (
            self.request_state is RequestState.DONE
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
                data = self._pending.popleft()
                self._pending_bytes -= len(data)
                self._reader.feed(data)
                continue
            if self._eof:
                self.request_state = RequestState.CLOSED
                return ConnectionClosed()
            if self._overflow:
                self.request_state = RequestState.MUST_CLOSE
            return NEED_DATA

    def _complete_held(self) -> int:
        """Parse every held byte; count the messages that ended (or failed) in the queue."""
        while self._pending:
            data = self._pending.popleft()
            self._pending_bytes -= len(data)
            self._reader.feed(data)
        return sum(isinstance(item, EndOfMessage | ParseError) for item in self._queue)

    def _take(self, item: QueueItem) -> Event | None:
        """Apply one queued item to the state; None if it is consumed silently."""
        if isinstance(item, Data):
            self._body_seen = True
            return None if self.request_state is RequestState.DRAIN else item
        if isinstance(item, Request):
            self.request = item
            self.request_state = RequestState.BODY
            return item
        if isinstance(item, EndOfMessage):
            if self.request_state is RequestState.DRAIN:
                self._finish_cycle()
                return None
            self.request_state = RequestState.DONE
            if self.response_state is ResponseState.DONE:
                self._finish_cycle()
            return item
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
        if self.response_state is not ResponseState.IDLE:
            raise LocalProtocolError("response already started")
        request = self.request
        status = event.status
        if status < 200:
            raise LocalProtocolError("send informational responses as InformationalResponse")
        headers, length, app_close = self._app_headers(event.headers, status)
        keep_alive = self._decide_keep_alive(request, app_close)
        no_body = (request is not None and request.method == b"HEAD") or status in (204, 304)
        writer: BodyWriter
        if no_body:
            writer = NoBodyWriter()
            if length is not None and status != 204:
                headers.append((b"Content-Length", b"%d" % length))
            elif status not in (204, 304) and request is not None and (
                request.http_version == "1.1"
            ):
                # HEAD gets the fields GET would (RFC 9110 §9.3.2): GET of a
                # body of unknown length would be chunked.
                headers.append((b"Transfer-Encoding", b"chunked"))
        elif length is not None:
            writer = LengthWriter(length)
            headers.append((b"Content-Length", b"%d" % length))
        elif request is not None and request.http_version == "1.1":
            writer = ChunkedWriter()
            headers.append((b"Transfer-Encoding", b"chunked"))
        else:
            writer = CloseDelimitedWriter()  # RFC 9112 §6.3 rule 8
            keep_alive = False
        if not keep_alive:
            headers.append((b"Connection", b"close"))
        elif request is not None and request.http_version == "1.0":
            headers.append((b"Connection", b"keep-alive"))
        head = render_head(status, event.reason, headers)  # raises before any state changes
        self._keep_alive = keep_alive
        self._writer = writer
        self.close_delimited = isinstance(writer, CloseDelimitedWriter)
        self.response_state = ResponseState.BODY
        return head

    def _app_headers(self, given: Headers, status: int) -> tuple[Headers, int | None, bool]:
        """Copy the application's fields, pulling out framing and Connection."""
        headers: Headers = []
        length: int | None = None
        app_close = False
        has_date = has_server = False
        for name, value in given:
            lower = name.lower()
            if lower in _FRAMING_FIELDS:
                if lower == b"content-length":
                    length = self._parse_length(value, length)
                continue
            if lower == b"connection":
                app_close = app_close or b"close" in connection_tokens([value])
                continue
            has_date = has_date or lower == b"date"
            has_server = has_server or lower == b"server"
            headers.append((name, value))
        if not has_date and (date := self._date()):
            headers.insert(0, (b"Date", date))
        if not has_server and self._server_header:
            headers.insert(0, (b"Server", self._server_header))
        if status == 204:
            length = None
        return headers, length, app_close

    @staticmethod
    def _parse_length(value: bytes, previous: int | None) -> int:
        stripped = value.strip()
        if not stripped.isdigit():
            raise LocalProtocolError("invalid Content-Length from the application")
        length = int(stripped)
        if previous is not None and previous != length:
            raise LocalProtocolError("conflicting Content-Length from the application")
        return length

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
