"""One request served for the gateway: the worker's stand-in for a client connection.

Strategy: :class:`~zmqhttp.server.cycle.RequestCycle` delegates every response
action to its connection. In a worker that connection is a
:class:`RemoteConnection`, one per request, which turns those actions into fabric
messages (``docs/protocol.md`` section 7): ``ResponseHead``, ``ResponseBody``
split to honour the gateway's response credit (unsent bytes stay queued and are
reported to the cycle's flow control, so the app waits), ``ResponseEnd``,
``Continue``; and it returns ``BodyCredit`` as the app consumes the request
body. It never touches the socket: it hands messages to its
:class:`RequestOwner` (the worker), and all of it runs on the event loop.

A gateway of revision 1 or later takes a whole response as one ``Response``
message. So the head is *held* until the end of the loop turn in which it was
given (:meth:`RequestOwner.hold`): if the body and the end arrive in the same
turn (WSGI's and ASGI's whole responses always do; a short generator often
does) and the body fits the initial response window, one ``Response`` goes out
instead of ``ResponseHead``, ``ResponseBody`` and ``ResponseEnd``; otherwise
the held head goes out then, followed by the body, streamed as before.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from zmqhttp.errors import FabricProtocolError
from zmqhttp.fabric.protocol import (
    BodyCredit,
    Continue,
    Message,
    RequestHead,
    Response,
    ResponseBody,
    ResponseEnd,
    ResponseHead,
)
from zmqhttp.http.events import Headers, Request
from zmqhttp.server.body import ClientDisconnected, NoBody, RequestBody
from zmqhttp.server.cycle import CycleHost

if TYPE_CHECKING:
    from zmqhttp.server.cycle import RequestCycle
    from zmqhttp.server.websocket import WebSocketListener

__all__ = ["RemoteConnection", "RequestOwner", "WindowedBody", "request_from_head"]

log = logging.getLogger("zmqhttp.error")

#: Largest ResponseBody frame: big responses go out in pieces of this size.
MAX_BODY_FRAME = 256 * 1024
_ERROR_BODY = b"Internal Server Error\n"
_ERROR_HEADERS: Headers = [(b"Content-Type", b"text/plain; charset=utf-8"),
                           (b"Content-Length", b"%d" % len(_ERROR_BODY))]


class RequestOwner(Protocol):
    """What a :class:`RemoteConnection` needs from the worker."""

    def send(self, message: Message) -> None:
        """Queue ``message`` for the gateway (loop only, never blocks)."""
        ...

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None: ...

    def request_done(self, conn: RemoteConnection) -> None:
        """The response is over and the app has returned: the slot is free."""
        ...

    def hold(self, conn: RemoteConnection) -> None:
        """Call ``conn.release()`` at the end of this loop turn, before sending."""
        ...


class WindowedBody(RequestBody):
    """A request body that reports every byte the app takes (for ``BodyCredit``).

    ``on_consumed(n)`` runs in the reading thread, under the body's lock: it
    must only hand the count to the loop.
    """

    def __init__(self, memory_limit: int, on_first_read: Callable[[], None] | None,
                 on_consumed: Callable[[int], None]) -> None:
        super().__init__(memory_limit, on_first_read)
        self._on_consumed = on_consumed

    def _take(self, size: int) -> bytes:
        data = super()._take(size)
        if data:
            self._on_consumed(len(data))
        return data


def request_from_head(head: RequestHead) -> Request:
    """The HTTP layer's :class:`Request` for a fabric ``RequestHead``.

    Framing comes from the head (``l``), never from the header list (section 5).
    """
    host = b""
    for name, value in head.headers:
        if name == b"host":
            host = value
            break
    return Request(
        method=head.method, target=head.target, path=head.path, query=head.query,
        headers=head.headers, http_version=head.http_version, host=host,
        content_length=head.content_length, chunked=head.content_length is None,
        expect_continue=head.expect_continue and head.content_length != 0,
    )


def is_websocket_upgrade(head: RequestHead) -> bool:
    return any(name == b"upgrade" and b"websocket" in value.lower()
               for name, value in head.headers)


class RemoteConnection(CycleHost):
    """The connection side of one fabric request (loop only, except :attr:`closed`).

    The :class:`CycleHost` a worker's :class:`RequestCycle` answers through:
    response calls become protocol messages to the gateway.

    Args:
        owner: the worker, which sends the messages.
        head: the request.
        body_window: ``Ready.w``: the gateway may have this many body bytes
            in flight beyond what we credited.
        generation: the worker's link generation the request arrived on.
    """

    def __init__(self, owner: RequestOwner, head: RequestHead, body_window: int,
                 generation: int) -> None:
        self._owner = owner
        self.id = head.id
        self.head = head
        self.generation = generation
        self.cycle: RequestCycle | None = None
        #: The cycle is over for the app: cancelled, the gateway lost, or aborted.
        self.closed = False
        #: No more messages go out for this request (ResponseEnd sent, or closed).
        self.finished = False
        self.app_done = False
        self.head_sent = False
        self._continue_sent = False
        self._end_pending = False
        #: The gateway takes a whole response as one Response (revision 1).
        self._whole_ok = head.revision >= 1
        #: (status, headers, reason) given but not sent yet: see release().
        self._held: tuple[int, Headers, bytes] | None = None
        self._credit = head.response_window
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._body_window = max(1, body_window)
        self._consumed = 0
        self._credited = 0

    # -- body ------------------------------------------------------------------

    def make_body(self, memory_limit: int) -> RequestBody:
        head = self.head
        if head.content_length == 0:
            return NoBody()
        on_first_read = self._continue_requested if head.expect_continue else None
        return WindowedBody(max(memory_limit, self._body_window), on_first_read,
                            self._consumed_threadsafe)

    def _continue_requested(self) -> None:  # any thread, first body read
        self._owner.call_soon_threadsafe(self._send_continue_now)

    def _send_continue_now(self) -> None:
        if self.cycle is not None:
            self.send_continue(self.cycle)

    def _consumed_threadsafe(self, size: int) -> None:  # any thread, under the body lock
        self._owner.call_soon_threadsafe(self._body_consumed, size)

    def _body_consumed(self, size: int) -> None:
        self._consumed += size
        cycle = self.cycle
        if self.finished or cycle is None or cycle.body.complete:
            return
        grant = self._consumed - self._credited
        if grant >= max(1, self._body_window // 2):
            self._credited = self._consumed
            self._owner.send(BodyCredit(self.id, grant))

    def body_received(self, data: bytes) -> None:
        cycle = self.cycle
        if cycle is None or self.finished or not data or cycle.body.complete:
            return
        if isinstance(cycle.body, NoBody):
            log.warning("fabric: body bytes for request %d, which has none; dropped", self.id)
            return
        cycle.body.feed(data)

    def body_ended(self) -> None:
        cycle = self.cycle
        if cycle is not None and not self.finished:
            cycle.body.feed_eof()

    # -- gateway events ----------------------------------------------------------

    def add_credit(self, size: int) -> None:
        if self.finished:
            return
        self._credit += size
        self._pump()

    def cancel(self, reason: str) -> None:
        """Cancel from the gateway, or the gateway lost: the app sees a disconnect."""
        if self.closed:
            return
        self.closed = True
        self.finished = True
        self._pending.clear()
        self._pending_bytes = 0
        cycle = self.cycle
        if cycle is not None:
            cycle.finished = True
            cycle.body.fail(ClientDisconnected(reason))
            cycle.close_flow()
        self._maybe_done()

    def app_finished(self) -> None:
        if self.app_done:
            return
        self.app_done = True
        cycle = self.cycle
        if cycle is not None and not self.finished and not self._end_pending:
            log.error("fabric: the app returned without completing the response to %r",
                      cycle.request.target)
            self.abort_cycle(cycle)
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.finished and self.app_done:
            self._owner.request_done(self)

    # -- RequestCycle's connection interface (loop side) ---------------------------

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        self._owner.call_soon_threadsafe(callback, *args)

    def start_response(self, cycle: RequestCycle, status: int, headers: Headers,
                       reason: bytes = b"") -> None:
        if self.finished or self.head_sent:
            if self.head_sent and not self.finished:
                log.error("fabric: a second response head for %r", cycle.request.target)
            return
        if not 200 <= status <= 999:
            log.error("fabric: application error on %r: invalid final status %r",
                      cycle.request.target, status)
            self._send_error(cycle)
            return
        if self._whole_ok:
            # The body and the end may follow in this turn: one Response then.
            self._held = (status, list(headers), reason)
            self._owner.hold(self)
        elif not self._send_head(cycle, status, list(headers), reason):
            return
        self.head_sent = True
        cycle.status = status
        cycle.response_headers = headers

    def _send_head(self, cycle: RequestCycle, status: int, headers: Headers,
                   reason: bytes) -> bool:
        """Send ResponseHead; False if it could not be (a 500 went instead)."""
        try:
            self._owner.send(ResponseHead(self.id, status, headers, reason))
        except FabricProtocolError as exc:  # a head too large for the fabric
            log.error("fabric: cannot send the response head for %r: %s",
                      cycle.request.target, exc)
            self._send_error(cycle)
            return False
        return True

    def release(self) -> None:
        """End of the turn: send the held head, as one Response if the response is whole."""
        held, self._held = self._held, None
        cycle = self.cycle
        if held is None or self.finished or cycle is None:
            return
        status, headers, reason = held
        size = self._pending_bytes
        if self._end_pending and size <= self._credit and size <= MAX_BODY_FRAME:
            # Whole and within the initial window (nothing was sent yet, so
            # _credit is RequestHead.w): no credit is involved (section 7.2).
            body = self._pending.popleft() if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            try:
                self._owner.send(Response(self.id, status, headers, reason, body))
            except FabricProtocolError as exc:
                log.error("fabric: cannot send the response to %r: %s",
                          cycle.request.target, exc)
                self._send_error(cycle)
                return
            self._ended()
            return
        if self._send_head(cycle, status, headers, reason):
            self._pump()

    def _send_error(self, cycle: RequestCycle) -> None:
        self._held = None
        self._pending.clear()
        self._pending_bytes = 0
        self.head_sent = True
        cycle.status = 500
        cycle.response_headers = _ERROR_HEADERS
        cycle.bytes_sent = len(_ERROR_BODY)
        # The body fits any sane window.
        if self._whole_ok:
            self._owner.send(Response(self.id, 500, list(_ERROR_HEADERS), b"", _ERROR_BODY))
            self._ended()
            return
        self._owner.send(ResponseHead(self.id, 500, list(_ERROR_HEADERS), b""))
        self._owner.send(ResponseBody(self.id, _ERROR_BODY))
        self._send_end(aborted=False)

    def send_data(self, cycle: RequestCycle, data: bytes, reserved: int = 0) -> None:
        if self.finished or not self.head_sent or self._end_pending:
            cycle.flow_update(reserved, 0)
            return
        if data:
            self._pending.append(bytes(data))
            self._pending_bytes += len(data)
            cycle.bytes_sent += len(data)
        self._pump()
        cycle.flow_update(reserved, self._pending_bytes)

    def end_response(self, cycle: RequestCycle) -> None:
        if self.finished or not self.head_sent or self._end_pending:
            return
        self._end_pending = True
        self._pump()

    def respond(self, cycle: RequestCycle, status: int, headers: Headers, body: bytes,
                reserved: int = 0) -> None:
        self.start_response(cycle, status, headers)
        if self.head_sent and not self.finished:
            self.send_data(cycle, body, reserved)
            self.end_response(cycle)
        else:
            cycle.flow_update(reserved, 0)

    def send_continue(self, cycle: RequestCycle) -> None:
        if (self.finished or self.head_sent or self._continue_sent
                or not self.head.expect_continue or cycle.body.complete):
            return
        self._continue_sent = True
        self._owner.send(Continue(self.id))

    def abort_cycle(self, cycle: RequestCycle) -> None:
        if self.finished:
            return
        if not self.head_sent:
            self._send_error(cycle)
        else:
            self._pending.clear()
            self._pending_bytes = 0
            held, self._held = self._held, None
            # A held head still goes out first: the client sees a response
            # that started and broke off, as it would without the holding.
            if held is None or self._send_head(cycle, *held):
                self._send_end(aborted=True)
        self.closed = True

    # WebSocket is not carried over the fabric (revision 0): upgrades get a 501
    # before an app sees them, so these are never reached.

    def accept_websocket(self, cycle: RequestCycle, subprotocol: str | None,
                         headers: Headers, listener: WebSocketListener) -> None:
        self.abort_cycle(cycle)

    def websocket_send(self, cycle: RequestCycle, data: str | bytes) -> None:
        pass

    def websocket_close(self, cycle: RequestCycle, code: int, reason: str) -> None:
        pass

    # -- output ------------------------------------------------------------------

    def _pump(self) -> None:
        """Send queued body bytes within the credit; then the end if it is due."""
        if self._held is not None:
            # The head waits for the end of the turn (release()); so does the body.
            cycle = self.cycle
            if cycle is not None:
                cycle.flow_update(0, self._pending_bytes)
            return
        pending = self._pending
        while pending and self._credit > 0:
            chunk = pending.popleft()
            size = min(len(chunk), self._credit, MAX_BODY_FRAME)
            if size < len(chunk):
                pending.appendleft(chunk[size:])
                chunk = chunk[:size]
            self._credit -= size
            self._pending_bytes -= size
            self._owner.send(ResponseBody(self.id, chunk))
        cycle = self.cycle
        if cycle is not None:
            cycle.flow_update(0, self._pending_bytes)
        if self._end_pending and not pending:
            self._send_end(aborted=False)

    def _send_end(self, aborted: bool) -> None:
        if self.finished:
            return
        self._owner.send(ResponseEnd(self.id, [], aborted))
        self._ended()

    def _ended(self) -> None:
        """Nothing more goes out for this request (its last message was queued)."""
        self.finished = True
        cycle = self.cycle
        if cycle is not None:
            cycle.finished = True
            cycle.close_flow()
            if not cycle.body.complete:
                cycle.body.fail(ClientDisconnected("response already complete"))
        self._maybe_done()
