"""One client connection on the event loop: bytes in, events to the app, bytes out.

Strategy: glue between the transport (routing id, frames), the sans-IO
:class:`~zmqhttp.http.ServerConnection` and the application adapter. It owns the
connection's output queue (bounded by the app's :class:`FlowControl`), its one
deadline (header, body, keep-alive or linger; the server sweeps them) and the
lingering close after ``Connection: close`` (the client closes first, so libzmq
never drops the tail of our response).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zmqhttp.errors import (
    LocalProtocolError,
    ProtocolError,
    RequestTimeout,
    ServiceUnavailable,
)
from zmqhttp.http.connection import ResponseState, ServerConnection
from zmqhttp.http.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Headers,
    InformationalResponse,
    Request,
    Response,
)
from zmqhttp.http.websocket import accept_headers, check_handshake
from zmqhttp.server.body import ClientDisconnected, NoBody, RequestBody
from zmqhttp.server.cycle import CycleHost, RequestCycle
from zmqhttp.server.websocket import WebSocketListener, WebSocketSession
from zmqhttp.transport.stream import SendResult

if TYPE_CHECKING:
    # Only the server owns connections. Typed as the concrete class (not a
    # Protocol) so that the compiled build (setup.py) calls it natively.
    from zmqhttp.server.server import Server

__all__ = ["Connection", "Deadline"]

log = logging.getLogger("zmqhttp.error")

# Frames queued together are joined into one ZeroMQ message up to this size:
# fewer messages through the pipe, and SNDHWM x this bounds libzmq's share.
_JOIN_LIMIT = 64 * 1024
# When we close without waiting for the client (a close-delimited body, a
# small final response to a request read whole, the end of a WebSocket), give
# libzmq this long to hand the tail to the kernel first (libzmq#4763).
_CLOSE_PROMPTLY_DELAY = 0.05
# A final response up to this size is closed promptly (RFC 9112 §9.6: the
# server initiates the close); past it, the client may still be reading what
# libzmq holds, so we linger until it closes (or timeout_linger).
_PROMPT_CLOSE_MAX = 64 * 1024


class Deadline(enum.Enum):
    #: Waiting for a request head (slowloris bound).
    HEADER = "header"
    #: Waiting for more of a request body.
    BODY = "body"
    #: Idle between requests.
    KEEP_ALIVE = "keep-alive"
    #: Response sent with Connection: close; waiting for the client to close.
    LINGER = "linger"
    #: WebSocket: time to send a keep-alive ping.
    PING = "ping"
    #: WebSocket: a ping went out; the pong must come before this.
    PONG = "pong"

    # Members are singletons compared by identity. Enum's own __hash__ is
    # Python code (the name's hash), and the timeout table is read twice a
    # request: hash by identity instead.
    __hash__ = object.__hash__


class Connection(CycleHost):
    """The server's state for one routing id."""

    # Slots: thousands of idle keep-alive connections each cost one of these.
    __slots__ = (
        "_close_promptly",
        "_out",
        "_out_bytes",
        "_ping_sent",
        "closed",
        "cycle",
        "deadline",
        "deadline_kind",
        "http",
        "lingering",
        "owner",
        "peer",
        "rid",
        "ws",
    )

    def __init__(self, owner: Server, rid: bytes, peer: str) -> None:
        self.owner = owner
        self.rid = rid
        self.peer = peer
        config = owner.config
        self.http = ServerConnection(
            owner.limits,
            date=owner.date if config.date_header else (lambda: b""),
            server_header=config.server_header.encode("latin-1"),
        )
        # A list, not a deque (a deque's first block alone is 600 bytes);
        # flush() takes pieces from its front in slices.
        self._out: list[bytes | memoryview] = []
        self._out_bytes = 0
        self.cycle: RequestCycle | None = None
        #: Set once a WebSocket handshake was accepted; HTTP is over then.
        self.ws: WebSocketSession | None = None
        self._ping_sent = 0.0
        self.closed = False
        self.lingering = False
        self._close_promptly = False
        self.deadline: float | None = None
        self.deadline_kind = Deadline.HEADER
        self._set_deadline(Deadline.HEADER)

    # -- transport events ---------------------------------------------------------

    def data_received(self, data: bytes | list[bytes]) -> None:
        """The peer's bytes from one drain: one piece, or several (never joined:
        the HTTP layer joins them in small groups, see ServerConnection)."""
        if self.ws is not None:
            self.ws.receive_data(data if isinstance(data, bytes) else b"".join(data))
            return
        if self.deadline_kind is Deadline.KEEP_ALIVE:
            self._set_deadline(Deadline.HEADER)  # a new request begins
        if isinstance(data, bytes):
            self.http.receive_data(data)
        else:
            receive = self.http.receive_data
            for piece in data:
                receive(piece)
        if not self.lingering:
            self._process()

    def connection_lost(self) -> None:
        """The peer closed (or libzmq dropped it); free everything."""
        if self.ws is not None:
            self.ws.receive_data(None)
        self.http.receive_data(b"")
        self._teardown(ClientDisconnected("client disconnected"))

    # -- request side -------------------------------------------------------------

    def _process(self) -> None:
        next_event = self.http.next_event
        while True:
            try:
                event = next_event()
            except ProtocolError as error:
                self._protocol_error(error)
                return
            kind = type(event)
            if kind is Request:
                assert isinstance(event, Request)
                self._start_cycle(event)
            elif kind is EndOfMessage:
                cycle = self.cycle
                if cycle is not None:
                    cycle.body.feed_eof()
                if self.deadline_kind is Deadline.BODY:
                    self.deadline = None  # the body is complete: no body timeout
            elif kind is Data:
                assert isinstance(event, Data) and self.cycle is not None
                self.cycle.body.feed(event.data)
                # Also when the client did not wait for 100 (RFC 9110 §10.1.1).
                self._set_deadline(Deadline.BODY)
            elif event is NEED_DATA:
                if self.http.must_close:
                    self._close_when_flushed()
                return
            elif event is PAUSED:
                return
            elif kind is ConnectionClosed:
                self._teardown(ClientDisconnected("client disconnected"))
                return

    def _start_cycle(self, request: Request) -> None:
        owner = self.owner
        config = owner.config
        has_body = request.chunked or bool(request.content_length)
        if has_body:
            on_first_read = self._continue_requested if request.expect_continue else None
            body: RequestBody = RequestBody(config.body_buffer, on_first_read)
        else:
            body = NoBody()
        clock = owner.clock
        cycle = RequestCycle(
            self,
            request,
            body,
            config.output_high_water,
            client=(self.peer, 0),
            server=owner.server_address,
            scheme=config.url_scheme,
            root_path=config.root_path,
            started=clock.wall(),
            started_mono=clock.monotonic(),
        )
        self.cycle = cycle
        if has_body and not request.expect_continue:
            self._set_deadline(Deadline.BODY)
        else:
            self.deadline = None  # the app has the request; it sets the pace
        if request.upgrade is not None and hasattr(owner.adapter, "handle_websocket"):
            try:
                cycle.websocket_key = check_handshake(request)
            except ProtocolError as error:
                self._protocol_error(error)  # never reaches the app (RFC 6455 §4.2.1)
                return
            owner.adapter.handle_websocket(cycle)
            return
        owner.adapter.handle(cycle)

    def _continue_requested(self) -> None:
        """The app first reads a body the client holds back for 100 (any thread)."""
        cycle = self.cycle
        if cycle is not None:
            self.call_soon_threadsafe(self.send_continue, cycle)

    def _protocol_error(self, error: ProtocolError) -> None:
        if error.status >= 500 or error.status == 408:
            log.info("%s: %s", self.peer, error)
        else:
            log.debug("bad request from %s: %s", self.peer, error)
        cycle = self.cycle
        if cycle is not None:
            cycle.body.fail(error)
        if self.http.response_state is ResponseState.IDLE and (
            cycle is None or not cycle.response_started
        ):
            self._queue(self.http.send_error(error))
            if cycle is not None:
                cycle.status = error.status
                self._finish_cycle(cycle)
            self._close_when_flushed()
        else:
            self.abort()

    # -- response side (loop only; called through RequestCycle) --------------------

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        self.owner.call_soon_threadsafe(callback, *args)

    def start_response(self, cycle: RequestCycle, status: int, headers: Headers,
                       reason: bytes = b"") -> None:
        if cycle is not self.cycle or self.closed:
            return  # the client is gone; drop quietly (the app sees disconnected)
        try:
            data = self.http.send(Response(status, headers, reason))
        except LocalProtocolError as error:
            self._app_error(cycle, error)
            return
        cycle.status = status
        cycle.response_headers = headers
        self._queue(data)

    def send_data(self, cycle: RequestCycle, data: bytes, reserved: int = 0) -> None:
        if cycle is not self.cycle or self.closed:
            cycle.flow_update(reserved, 0)
            return
        try:
            framed = self.http.send(Data(data))
        except LocalProtocolError as error:
            self._app_error(cycle, error)
            return
        cycle.bytes_sent += len(data)
        self._queue(framed, reserved)

    def end_response(self, cycle: RequestCycle) -> None:
        if cycle is not self.cycle or self.closed:
            return
        try:
            tail = self.http.send(EndOfMessage())
        except LocalProtocolError as error:
            self._app_error(cycle, error)
            return
        self._queue(tail)
        self._response_ended(cycle)

    def _response_ended(self, cycle: RequestCycle) -> None:
        http = self.http
        # Prompt when the body ends with our close, or when the request was
        # read whole (no unread input: no RST) and the response is small.
        self._close_promptly = http.close_delimited or (
            cycle.body.complete and cycle.bytes_sent <= _PROMPT_CLOSE_MAX
        )
        self._finish_cycle(cycle)
        if http.must_close:
            self._close_when_flushed()
        else:
            self._set_deadline(Deadline.KEEP_ALIVE)
            self._process()  # pipelined requests waiting behind this one

    def respond(self, cycle: RequestCycle, status: int, headers: Headers, body: bytes,
                reserved: int = 0) -> None:
        if cycle is not self.cycle or self.closed:
            cycle.flow_update(reserved, 0)
            return
        try:
            # Head, body and end framed in one call: most responses are whole.
            data = self.http.respond(status, headers, body)
        except LocalProtocolError:
            # Nothing changed: event by event gives the usual error handling
            # (a 500 for a bad head; head, body, then close for a bad length).
            self._respond_stepwise(cycle, status, headers, body, reserved)
            return
        cycle.status = status
        cycle.response_headers = headers
        cycle.bytes_sent += len(body)
        self._queue(data, reserved)
        self._response_ended(cycle)

    def _respond_stepwise(self, cycle: RequestCycle, status: int, headers: Headers,
                          body: bytes, reserved: int) -> None:
        self.start_response(cycle, status, headers)
        if cycle.response_started:
            self.send_data(cycle, body, reserved)
            self.end_response(cycle)
        else:
            cycle.flow_update(reserved, 0)

    def send_continue(self, cycle: RequestCycle) -> None:
        if cycle is not self.cycle or self.closed:
            return
        data = self.http.send(InformationalResponse(100))
        if data:
            self._queue(data)
            if not cycle.body.complete:
                self._set_deadline(Deadline.BODY)

    def abort_cycle(self, cycle: RequestCycle) -> None:
        if cycle is self.cycle:
            self.abort()

    def _app_error(self, cycle: RequestCycle, error: LocalProtocolError) -> None:
        log.error("application error on %s %r: %s", cycle.request.method.decode(),
                  cycle.request.target, error)
        if self.http.response_state is ResponseState.IDLE:
            # Nothing went out yet (render_head raises before any state
            # changes): the client gets a 500, as for an exception.
            self._queue(self.http.send_error(error))
            cycle.status = error.status
            self._finish_cycle(cycle)
            self._close_when_flushed()
        else:
            self.abort()

    def _finish_cycle(self, cycle: RequestCycle) -> None:
        cycle.finished = True
        cycle.close_flow()
        if not cycle.body.complete:
            cycle.body.fail(ClientDisconnected("response already complete"))
        self.cycle = None
        self.owner.log_access(cycle)

    # -- output -----------------------------------------------------------------

    def _queue(self, data: bytes, reserved: int = 0) -> None:
        if data:
            self._out.append(data)
            self._out_bytes += len(data)
            self.owner.schedule_flush(self)
        if self.cycle is not None:
            self.cycle.flow_update(reserved, self._out_bytes)

    def flush(self) -> None:
        """Hand queued output to libzmq until done or its pipe is full."""
        out = self._out
        transport = self.owner.transport
        rid = self.rid
        while out and not self.closed:
            data = out[0]
            size = len(data)
            if size > _JOIN_LIMIT:
                # SNDHWM counts messages: frames of at most _JOIN_LIMIT keep
                # libzmq's share of a stuck connection at SNDHWM x 64 KiB.
                view = memoryview(data)
                out[0:1] = [view[:_JOIN_LIMIT], view[_JOIN_LIMIT:]]
                continue
            # Join the leading pieces that fit in one message.
            taken = 1
            count = len(out)
            while taken < count and size + len(out[taken]) <= _JOIN_LIMIT:
                size += len(out[taken])
                taken += 1
            if taken > 1:
                data = b"".join(out[:taken])
            result = transport.send(rid, data)
            if result is SendResult.FULL:
                out[:taken] = [data]  # joined once, not again on the retry
                self.owner.retry_later(self)
                break
            del out[:taken]
            self._out_bytes -= size
            if result is SendResult.GONE:
                self._teardown(ClientDisconnected("client disconnected"))
                return
        if self.cycle is not None:
            self.cycle.flow_update(0, self._out_bytes)
        if not out and self.lingering and self.deadline_kind is not Deadline.LINGER:
            self._set_deadline(Deadline.LINGER)

    @property
    def has_output(self) -> bool:
        return bool(self._out)

    # -- closing ----------------------------------------------------------------

    def _close_when_flushed(self) -> None:
        """Lingering close: stop reading requests; close after the client does."""
        if self.lingering or self.closed:
            return
        self.lingering = True
        self.deadline = None
        if not self._out:
            self._set_deadline(Deadline.LINGER)

    def abort(self) -> None:
        """The response cannot be completed: end the cycle, send what is queued, close.

        The output already queued (the head, body pieces) still goes out, so the
        client sees a truncated response rather than nothing; the close then
        follows the short close-delimited delay, not a full linger.
        """
        if self.closed:
            return
        cycle, self.cycle = self.cycle, None
        if cycle is not None:
            cycle.finished = True
            cycle.body.fail(ClientDisconnected("response aborted"))
            cycle.close_flow()
            if cycle.response_started:
                self.owner.log_access(cycle)
        if not self._out:
            self.close()
            return
        self._close_promptly = True
        self._close_when_flushed()

    def close(self) -> None:
        """Close the TCP connection now and forget it."""
        if self.closed:
            return
        self.owner.transport.close_peer(self.rid)
        self._teardown(ClientDisconnected("connection closed by server"))

    def _teardown(self, reason: ClientDisconnected) -> None:
        if self.closed:
            return
        if self.ws is not None:
            self.ws.receive_data(None)  # the app hears 1006 (if it was not told yet)
        self.closed = True
        self._out.clear()
        self._out_bytes = 0
        self.http.close()  # frees the parser now, not at the next garbage collection
        cycle = self.cycle
        if cycle is not None:
            cycle.body.fail(reason)
            cycle.close_flow()
            self.cycle = None
            if cycle.response_started:
                self.owner.log_access(cycle)
        self.owner.forget(self)

    def reject_busy(self) -> None:
        """Answer 503 at once (connection cap, RFC 9110 §15.6.4) and close."""
        self._queue(self.http.send_error(ServiceUnavailable("too many connections")))
        self._close_when_flushed()

    def shutdown(self) -> None:
        """Graceful shutdown: no new requests; idle connections close now."""
        # Idle is judged first: refusing keep-alive makes the connection MUST_CLOSE.
        idle = self.cycle is None and self.http.idle and not self._out
        self.http.allow_keep_alive(False)
        if self.ws is not None:
            self.ws.shutdown()  # 1012 to both ends; the client then closes
        elif idle:
            self.close()

    # -- deadlines ----------------------------------------------------------------

    def _set_deadline(self, kind: Deadline) -> None:
        if kind is Deadline.LINGER and self._close_promptly:
            timeout = _CLOSE_PROMPTLY_DELAY
        else:
            timeout = self.owner.timeouts[kind]
        self.deadline_kind = kind
        self.deadline = self.owner.clock.monotonic() + timeout

    def deadline_passed(self) -> None:
        """Called by the server's sweep when :attr:`deadline` is in the past."""
        kind = self.deadline_kind
        self.deadline = None
        if self.ws is not None and kind in (Deadline.PING, Deadline.PONG):
            self._websocket_deadline(kind)
        elif kind is Deadline.HEADER and not self.http.idle:
            self._protocol_error(RequestTimeout("request head not received in time"))
        elif kind is Deadline.BODY and self.cycle is not None:
            self._protocol_error(RequestTimeout("request body not received in time"))
        else:
            self.close()  # idle, keep-alive, draining or lingering: just close

    # -- WebSocket (after a 101) ----------------------------------------------------

    def accept_websocket(self, cycle: RequestCycle, subprotocol: str | None,
                         headers: Headers, listener: WebSocketListener) -> None:
        """Send the 101 and hand the connection to a :class:`WebSocketSession`."""
        if cycle is not self.cycle or self.closed or self.ws is not None:
            return
        config = self.owner.config
        fields = accept_headers(cycle.websocket_key, subprotocol, headers)
        try:
            self._queue(self.http.send(InformationalResponse(101, fields)))
        except LocalProtocolError as error:
            self._app_error(cycle, error)
            return
        cycle.status = 101
        cycle.response_headers = fields
        self.ws = WebSocketSession(
            self._queue, self._websocket_closed, listener,
            max_size=config.ws_max_size, max_queue=config.ws_max_queue,
            trailing=self.http.trailing_data(),
        )
        if config.ws_ping_interval > 0 and not self.closed:
            self._set_deadline(Deadline.PING)
        elif not self.closed:
            self.deadline = None

    def websocket_send(self, cycle: RequestCycle, data: str | bytes) -> None:
        if cycle is self.cycle and self.ws is not None:
            self.ws.send_message(data)

    def websocket_close(self, cycle: RequestCycle, code: int, reason: str) -> None:
        if cycle is self.cycle and self.ws is not None:
            self.ws.close(code, reason)

    def _websocket_closed(self, handshake_done: bool) -> None:
        cycle = self.cycle
        if cycle is not None:
            self._finish_cycle(cycle)
        if handshake_done:
            # RFC 6455 §7.1.1: the server closes TCP first, once the closing
            # handshake is over; only the short delay that lets libzmq hand the
            # last frame to the kernel.
            self._close_promptly = True
            if self.lingering and self.deadline_kind is Deadline.LINGER:
                self._set_deadline(Deadline.LINGER)
                return
        self._close_when_flushed()

    def _websocket_deadline(self, kind: Deadline) -> None:
        ws = self.ws
        assert ws is not None
        if kind is Deadline.PING:
            ws.ping()
            self._ping_sent = self.owner.clock.monotonic()
            self._set_deadline(Deadline.PONG)
        elif ws.awaiting_pong:
            ws.receive_data(None)  # no pong in time: the peer is gone (1006)
            self.close()
        else:
            # The pong came: the next ping is due one interval after the last.
            self.deadline_kind = Deadline.PING
            self.deadline = self._ping_sent + self.owner.config.ws_ping_interval

