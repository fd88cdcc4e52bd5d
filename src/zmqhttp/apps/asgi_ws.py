"""ASGI ``websocket`` scope: the app's side of a WebSocket handshake and session.

Strategy: the server checked the handshake already (bad ones never get here).
``receive()`` yields ``websocket.connect`` first; the app answers with
``websocket.accept`` (a 101 goes out, subprotocol and headers as given),
``websocket.close`` (403), or a denial response through the
``websocket.http.response`` extension. After accept, messages arrive through
:class:`~zmqhttp.server.websocket.WebSocketListener` callbacks into a bounded
deque; ``send()`` awaits the cycle's output waiter, so a slow client slows the
app instead of filling memory. Once the connection is closed, by either side,
``websocket.send`` raises :class:`~zmqhttp.server.body.ClientDisconnected` (an
``OSError``, ASGI spec 2.4) and a second ``websocket.close`` does nothing.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from typing import Any

from zmqhttp.errors import LocalProtocolError
from zmqhttp.http.events import Headers
from zmqhttp.http.websocket import subprotocols
from zmqhttp.server.body import ClientDisconnected
from zmqhttp.server.cycle import RequestCycle

__all__ = ["WebSocketExchange", "websocket_scope"]

log = logging.getLogger("zmqhttp.error")

Message = dict[str, Any]


def websocket_scope(http_scope: dict[str, Any], cycle: RequestCycle) -> dict[str, Any]:
    """The ``websocket`` scope, derived from the ``http`` scope of the handshake."""
    scope = dict(http_scope)
    scope["type"] = "websocket"
    scope["scheme"] = "wss" if cycle.scheme == "https" else "ws"
    scope["subprotocols"] = subprotocols(cycle.request)
    scope["extensions"] = {"websocket.http.response": {}}
    scope.pop("method", None)
    return scope


class _Phase(enum.Enum):
    #: Handshake received; the app has not answered.
    CONNECTING = "CONNECTING"
    #: 101 sent; messages flow.
    CONNECTED = "CONNECTED"
    #: A denial response is being sent over HTTP.
    RESPONSE = "RESPONSE"
    #: Closed, by either side.
    CLOSED = "CLOSED"


class WebSocketExchange:
    """One ASGI websocket connection (also its own WebSocketListener)."""

    def __init__(self, cycle: RequestCycle, scope: dict[str, Any]) -> None:
        self.cycle = cycle
        self.scope = scope
        self.phase = _Phase.CONNECTING
        self._inbox: deque[Message] = deque()
        self._inbox_bytes = 0
        self._wakeup = asyncio.Event()
        self._connect_sent = False
        self._close_code: int | None = None
        cycle.body.listener = self._on_http_gone

    # -- WebSocketListener ---------------------------------------------------------

    def on_message(self, data: str | bytes) -> None:
        key = "text" if isinstance(data, str) else "bytes"
        self._inbox.append({"type": "websocket.receive", key: data})
        self._inbox_bytes += len(data)
        self._wakeup.set()

    def on_close(self, code: int, reason: str) -> None:
        self._close_code = code
        self._inbox.append({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.phase = _Phase.CLOSED
        self._wakeup.set()

    def pending(self) -> tuple[int, int]:
        return len(self._inbox), self._inbox_bytes

    def _on_http_gone(self) -> None:
        # Before the 101 the only news from the connection is that it is gone.
        if self.phase is not _Phase.CONNECTED and self.cycle.disconnected:
            self._close_code = 1006
            self._wakeup.set()

    # -- the app ---------------------------------------------------------------------

    async def run(self, app: Any) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            self._abort()
            raise
        except Exception as exc:
            if not self.cycle.disconnected:
                log.error("Exception in ASGI application (websocket %s)",
                          self.cycle.request.target.decode("latin-1"), exc_info=exc)
            self._abort()
        else:
            if self.phase is _Phase.CONNECTING:
                self._deny(403)  # returned without accepting
            elif self.phase is _Phase.CONNECTED:
                self.cycle.websocket_close(1000, "")
        finally:
            self.cycle.body.listener = None

    def _abort(self) -> None:
        if self.phase is _Phase.CONNECTING and not self.cycle.disconnected:
            self._deny(500)
        elif self.phase is _Phase.CONNECTED:
            self.cycle.websocket_close(1011, "internal error")
        elif self.phase is _Phase.RESPONSE:
            self.cycle.abort()
        self.phase = _Phase.CLOSED

    def _deny(self, status: int) -> None:
        self.phase = _Phase.CLOSED
        body = b"%d\n" % status
        self.cycle.respond(status, [(b"content-type", b"text/plain"),
                                    (b"content-length", b"%d" % len(body))], body)

    async def receive(self) -> Message:
        if not self._connect_sent:
            self._connect_sent = True
            return {"type": "websocket.connect"}
        while True:
            if self._inbox:
                message = self._inbox.popleft()
                self._inbox_bytes -= len(message.get("text") or message.get("bytes") or b"")
                return message
            if self.phase is not _Phase.CONNECTED and (
                self._close_code is not None or self.cycle.disconnected
            ):
                return {"type": "websocket.disconnect", "code": self._close_code or 1006,
                        "reason": ""}
            self._wakeup.clear()
            await self._wakeup.wait()

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        phase = self.phase
        if phase is _Phase.CONNECTING:
            self._send_connecting(kind, message)
        elif phase is _Phase.CONNECTED and kind == "websocket.send":
            self._send_data(message)
            waiter = self.cycle.output_waiter()
            if waiter is not None:
                await waiter
        elif phase is _Phase.CONNECTED and kind == "websocket.close":
            self.phase = _Phase.CLOSED
            self._close_code = int(message.get("code", 1000))
            self.cycle.websocket_close(int(message.get("code", 1000)),
                                       str(message.get("reason") or ""))
        elif phase is _Phase.RESPONSE and kind == "websocket.http.response.body":
            self._response_body(message)
        elif phase is _Phase.CLOSED and kind == "websocket.send":
            # ASGI spec 2.4: an OSError, so that a producer that never calls
            # receive() stops; dropping the message would let its loop spin
            # on the event loop without ever yielding.
            raise ClientDisconnected("websocket closed")
        elif phase is _Phase.CLOSED or self.cycle.disconnected:
            return  # closing twice, or a late message after a denial: nothing to do
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in state {phase.name}")

    def _send_connecting(self, kind: Any, message: Message) -> None:
        if kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.close":
            self._deny(403)
        elif kind == "websocket.http.response.start":
            self.phase = _Phase.RESPONSE
            self.cycle.start_response(int(message["status"]), _headers(message.get("headers", ())))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} before accept")

    def _accept(self, message: Message) -> None:
        try:
            headers = _headers(message.get("headers", ()))
        except LocalProtocolError:
            self._deny(500)  # nothing went out yet: the client gets a 500
            raise
        self.phase = _Phase.CONNECTED
        self.cycle.accept_websocket(message.get("subprotocol"), headers, self)
        if self.cycle.status != 101:
            # No 101 went out: the client left while the app decided, or the
            # server answered 500 for fields it could not send. Either way the
            # app must hear the end, or it would wait in receive() forever.
            self.phase = _Phase.CLOSED
            self._close_code = 1006
            self._wakeup.set()

    def _send_data(self, message: Message) -> None:
        text = message.get("text")
        data = message.get("bytes")
        if text is not None:
            self.cycle.websocket_send(str(text))
        elif data is not None:
            self.cycle.websocket_send(bytes(data))
        else:
            raise RuntimeError("websocket.send needs 'text' or 'bytes'")

    def _response_body(self, message: Message) -> None:
        body = bytes(message.get("body", b""))
        if body:
            self.cycle.send_data(body)
        if not message.get("more_body", False):
            self.phase = _Phase.CLOSED
            self.cycle.end_response()


def _headers(pairs: Any) -> Headers:
    try:
        return [(bytes(name), bytes(value)) for name, value in pairs]
    except (TypeError, ValueError):
        raise LocalProtocolError("ASGI headers must be pairs of bytes") from None
