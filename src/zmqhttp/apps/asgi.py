"""ASGI 3 (and ASGI 2) HTTP on the event loop.

Strategy: each request runs the app as one task on the server's loop; no
threads, no hand-off. ``receive()`` reads the request body straight from the
cycle's :class:`~zmqhttp.server.body.RequestBody` (woken by its listener when
bytes arrive) and sends ``100 Continue`` on the first call. ``send()`` holds the
response head until the first body message, so a response given whole gets a
Content-Length instead of chunked coding, and awaits the cycle's output waiter
while the client is slower than the app (backpressure, never unbounded memory).
Once the client is gone, ``send()`` raises an :class:`OSError`
(:class:`~zmqhttp.server.body.ClientDisconnected`, ASGI spec 2.4) and ``receive()``
returns ``http.disconnect``. App misuse is logged and answered with a 500 or a
closed connection, never a hang.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from urllib.parse import unquote_to_bytes

from zmqhttp.apps.asgi_ws import WebSocketExchange, websocket_scope
from zmqhttp.apps.lifespan import Lifespan
from zmqhttp.config import Config
from zmqhttp.errors import LocalProtocolError
from zmqhttp.http.events import Headers
from zmqhttp.server.body import ClientDisconnected
from zmqhttp.server.cycle import RequestCycle

__all__ = ["ASGIAdapter", "asgi2_to_asgi3", "build_scope"]

log = logging.getLogger("zmqhttp.error")

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]

# Most body bytes one http.request message carries.
_RECEIVE_CHUNK = 256 * 1024
_ERROR_BODY = b"Internal Server Error\n"
_DISCONNECT: Message = {"type": "http.disconnect"}
_NO_HEADERS: Headers = []  # until http.response.start; replaced, never extended
_NO_FACTORY = object()
_PERCENT = ord("%")
_Task = asyncio.Task
_METHODS = {m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH",
                                    b"OPTIONS")}


def asgi2_to_asgi3(app: Any) -> ASGIApp:
    """Wrap an ASGI 2 (double-callable) application as ASGI 3."""

    async def asgi3(scope: Scope, receive: Any, send: Any) -> None:
        instance = app(scope)
        await instance(receive, send)

    return asgi3


def build_scope(cycle: RequestCycle, state: dict[str, Any]) -> Scope:
    """The ASGI ``http`` scope for ``cycle`` (ASGI spec 2.4)."""
    request = cycle.request
    raw_path = request.path
    # ``_PERCENT in`` (an int) is a memchr; ``b"%" in`` costs six times more.
    path = (unquote_to_bytes(raw_path) if _PERCENT in raw_path else raw_path).decode(
        "utf-8", "replace")
    root_path = cycle.root_path
    if root_path and not (path == root_path or path.startswith(root_path + "/")):
        # A proxy that strips the prefix: the app still sees its full path.
        path = root_path + path
        raw_path = root_path.encode("utf-8") + raw_path
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": request.http_version,
        "method": _METHODS.get(request.method) or request.method.decode("ascii"),
        "scheme": cycle.scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": request.query,
        "root_path": root_path,
        "headers": request.headers,
        "client": cycle.client,
        "server": cycle.server,
        "state": {**state},
    }


class _Phase(enum.Enum):
    #: Waiting for http.response.start.
    START = "START"
    #: Start received; the head waits for the first body message.
    HEAD = "HEAD"
    #: Head sent; body messages stream.
    BODY = "BODY"
    #: The response is complete.
    DONE = "DONE"


# Module constants: reading a member off the Enum class costs several times a
# global load, and the exchange checks its phase a dozen times a request.
_START = _Phase.START
_HEAD = _Phase.HEAD
_BODY = _Phase.BODY
_DONE = _Phase.DONE


class _Exchange:
    """One request/response between the server and the app."""

    __slots__ = ("_body_done", "_headers", "_status", "_wakeup", "cycle", "phase", "scope")

    def __init__(self, cycle: RequestCycle, scope: Scope) -> None:
        self.cycle = cycle
        self.scope = scope
        self.phase = _START
        self._status = 200
        self._headers: Headers = _NO_HEADERS
        self._body_done = False
        # Created, and hooked to the body as its listener, when receive() first
        # has to wait: most apps never do.
        self._wakeup: asyncio.Event | None = None

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    @property
    def gone(self) -> bool:
        """The client left, or the server ended the exchange (a timeout, a framing error)."""
        cycle = self.cycle
        return cycle.disconnected or (cycle.finished and self.phase is not _DONE)

    async def run(self, app: ASGIApp,
                  running: dict[_Exchange, asyncio.Task[None]] | None = None) -> None:
        """Run ``app`` for this exchange; then leave ``running`` (the adapter's table)."""
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            self._fail()
            raise
        except Exception as exc:
            if not self.gone:
                request = self.cycle.request
                log.error("Exception in ASGI application for %s %s",
                          request.method.decode("latin-1"), request.target.decode("latin-1"),
                          exc_info=exc)
            self._fail()
        else:
            if self.phase is not _DONE and not self.gone:
                log.error("ASGI callable returned without completing the response")
                self._fail()
        finally:
            if self._wakeup is not None:
                self.cycle.body.listener = None
            if running is not None:
                # Instead of a done callback: one call_soon and Handle less a request.
                running.pop(self, None)
            cycle = self.cycle
            if cycle.on_app_done is not None:  # a host waits for it (the fabric)
                cycle.app_done()

    def _fail(self) -> None:
        """500 if nothing was sent yet, else close: the response cannot be trusted."""
        cycle = self.cycle
        if self.gone:
            self.phase = _DONE
        elif self.phase is _START or self.phase is _HEAD:
            headers: Headers = [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", b"%d" % len(_ERROR_BODY))]
            self.phase = _DONE
            cycle.respond(500, headers, _ERROR_BODY)
        elif self.phase is _BODY:
            self.phase = _DONE
            cycle.abort()

    # -- receive -----------------------------------------------------------------

    async def receive(self) -> Message:
        cycle = self.cycle
        while True:
            # After the response, even an unread body is over (ASGI spec 2.4).
            # (``gone``, inlined: this runs once or more a request.)
            phase = self.phase
            if phase is _DONE or cycle.disconnected or cycle.finished:
                return _DISCONNECT
            if not self._body_done:
                body = cycle.body
                try:
                    data = body.read_nowait(_RECEIVE_CHUNK)  # the first call may send 100
                except Exception:
                    return _DISCONNECT  # client gone or body timed out
                if data is not None:
                    more = bool(data) and not body.exhausted
                    if not more:
                        self._body_done = True
                    return {"type": "http.request", "body": data, "more_body": more}
            wakeup = self._wakeup
            if wakeup is None:
                wakeup = self._wakeup = asyncio.Event()
                # Body bytes, their end and a disconnect all arrive on the loop,
                # never between the read above and this.
                cycle.body.listener = self._wake
            else:
                wakeup.clear()
            await wakeup.wait()

    # -- send --------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        cycle = self.cycle
        phase = self.phase
        # ``gone``, inlined: this runs twice or more a request.
        if cycle.disconnected or (cycle.finished and phase is not _DONE):
            # ASGI spec 2.4: an OSError, so that a streaming app stops producing
            # (Starlette's StreamingResponse relies on it instead of receive()).
            raise ClientDisconnected("client disconnected")
        kind = message.get("type")
        if kind == "http.response.body" and (phase is _HEAD or phase is _BODY):
            self._body(message)
            waiter = cycle.output_waiter()
            if waiter is not None:
                await waiter
        elif kind == "http.response.start" and phase is _START:
            self._start(message)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in state {phase.name}")

    def _start(self, message: Message) -> None:
        status = message.get("status")
        if type(status) is not int and not isinstance(status, int):
            raise LocalProtocolError(f"invalid ASGI status {status!r}")
        try:
            self._headers = [(bytes(name), bytes(value)) for name, value in
                             message.get("headers", ())]
        except (TypeError, ValueError):
            raise LocalProtocolError("ASGI headers must be pairs of bytes") from None
        self._status = status
        self.phase = _HEAD

    def _body(self, message: Message) -> None:
        data = message.get("body", b"")
        if type(data) is not bytes:
            data = bytes(data)
        more = message.get("more_body", False)
        cycle = self.cycle
        if self.phase is _HEAD:
            if not more:
                self.phase = _DONE
                cycle.respond(self._status, self._with_length(data), data)
                if self._wakeup is not None:
                    self._wakeup.set()
                return
            self.phase = _BODY
            cycle.start_response(self._status, self._headers)
        if data:
            cycle.send_data(data)
        if not more:
            self.phase = _DONE
            cycle.end_response()
            if self._wakeup is not None:
                self._wakeup.set()

    def _with_length(self, body: bytes) -> Headers:
        headers = self._headers  # our own copy (_start): extended in place
        status = self._status
        if status == 204 or status == 304 or (
                not body and self.cycle.request.method == b"HEAD"):
            return headers
        for name, _ in headers:
            lower = name.lower()
            if lower == b"content-length" or lower == b"transfer-encoding":
                return headers
        headers.append((b"content-length", b"%d" % len(body)))
        return headers


class ASGIAdapter:
    """Runs an ASGI application: one task per request, lifespan around the server's life.

    Args:
        app: an ASGI 3 callable (wrap ASGI 2 apps with :func:`asgi2_to_asgi3`).
        config: the server's settings (``lifespan`` is read here).
    """

    def __init__(self, app: ASGIApp, config: Config) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._lifespan = Lifespan(app, config.lifespan, self.state)
        self._tasks: set[asyncio.Task[None]] = set()  # WebSocket sessions
        self._running: dict[_Exchange, asyncio.Task[None]] = {}  # HTTP requests
        # The loop requests run on, found at the first request (asking for the
        # running loop costs a getpid() system call each time on 3.11).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._plain_tasks = False

    def _first_request(self) -> asyncio.AbstractEventLoop:
        loop = self._loop = asyncio.get_running_loop()
        # asyncio's own loop without a task factory (set one before the server
        # starts): BaseEventLoop.create_task would only add two Python calls.
        self._plain_tasks = getattr(loop, "_task_factory", _NO_FACTORY) is None
        return loop

    def handle(self, cycle: RequestCycle) -> None:
        exchange = _Exchange(cycle, build_scope(cycle, self.state))
        # The exchange leaves self._running itself when it ends (see run).
        running = self._running
        loop = self._loop
        if loop is None:
            loop = self._first_request()
        coro = exchange.run(self.app, running)
        if self._plain_tasks:
            task: asyncio.Task[None] = _Task(coro, loop=loop)
        else:  # another loop (uvloop), or a task factory (eager tasks)
            task = loop.create_task(coro)
        if not task.done():  # an eager task factory may have run it to the end
            running[exchange] = task

    def handle_websocket(self, cycle: RequestCycle) -> None:
        """A checked WebSocket handshake: run the app with a ``websocket`` scope."""
        scope = websocket_scope(build_scope(cycle, self.state), cycle)
        self._spawn(WebSocketExchange(cycle, scope).run(self.app))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def startup(self) -> None:
        await self._lifespan.startup()

    async def shutdown(self) -> None:
        await self._lifespan.shutdown()

    def close(self) -> None:
        for task in [*self._tasks, *self._running.values()]:
            task.cancel()
        self._lifespan.close()
