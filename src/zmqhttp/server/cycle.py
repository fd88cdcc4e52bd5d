"""One request/response exchange, as an application adapter sees it.

Strategy: the adapter (WSGI threads, later ASGI tasks and the fabric) gets a
:class:`RequestCycle` per request. Its response methods must run on the event
loop; threads reach them through :meth:`RequestCycle.call_soon_threadsafe`.
Reading the body is thread-safe (:class:`RequestBody`), and writing is paced
by :class:`FlowControl`, so no adapter ever touches the socket.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from zmqhttp.http.events import Headers, Request
from zmqhttp.server.body import RequestBody
from zmqhttp.server.flow import FlowControl

if TYPE_CHECKING:
    from zmqhttp.server.websocket import WebSocketListener

__all__ = ["AppAdapter", "CycleHost", "RequestCycle"]

# Guards the lazy creation of a cycle's FlowControl (rare, short).
_FLOW_LOCK = threading.Lock()
# Until a response starts; replaced, never appended to.
_NO_HEADERS: Headers = []


class AppAdapter(Protocol):
    """What the server needs from an application runner."""

    def handle(self, cycle: RequestCycle) -> None:
        """Start serving ``cycle``; called on the event loop, must not block.

        Once the application has returned (or failed) for this request the
        adapter calls ``cycle.app_done()``, from whatever thread ran it, so a
        host (the fabric worker) can free the request's slot.
        """
        ...

    async def startup(self) -> None:
        """Before the server listens (ASGI lifespan startup); raising aborts start."""
        ...

    async def shutdown(self) -> None:
        """After the last connection closed (ASGI lifespan shutdown)."""
        ...

    def close(self) -> None:
        """Release threads and resources after the server stopped."""
        ...


class CycleHost:
    """Where a cycle's response goes: a client connection, or a fabric request.

    :class:`~zmqhttp.server.connection.Connection` (a ZMQ_STREAM peer) and
    :class:`~zmqhttp.fabric.remote.RemoteConnection` (a request from the
    gateway) implement every method; a :class:`RequestCycle` calls them with
    itself as the first argument. A base class rather than a Protocol: the
    compiled build (setup.py) then calls the implementations natively.
    All are loop-only except :meth:`call_soon_threadsafe` and reading
    :attr:`closed`.
    """

    __slots__ = ()

    #: The client is gone, or the server ended the exchange.
    closed: bool

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        raise NotImplementedError

    def start_response(self, cycle: RequestCycle, status: int, headers: Headers,
                       reason: bytes = b"") -> None:
        raise NotImplementedError

    def send_data(self, cycle: RequestCycle, data: bytes, reserved: int = 0) -> None:
        raise NotImplementedError

    def end_response(self, cycle: RequestCycle) -> None:
        raise NotImplementedError

    def respond(self, cycle: RequestCycle, status: int, headers: Headers, body: bytes,
                reserved: int = 0) -> None:
        raise NotImplementedError

    def send_continue(self, cycle: RequestCycle) -> None:
        raise NotImplementedError

    def abort_cycle(self, cycle: RequestCycle) -> None:
        raise NotImplementedError

    def accept_websocket(self, cycle: RequestCycle, subprotocol: str | None,
                         headers: Headers, listener: WebSocketListener) -> None:
        raise NotImplementedError

    def websocket_send(self, cycle: RequestCycle, data: str | bytes) -> None:
        raise NotImplementedError

    def websocket_close(self, cycle: RequestCycle, code: int, reason: str) -> None:
        raise NotImplementedError


class RequestCycle:
    """A request being answered. Response methods are loop-only.

    Attributes:
        request: the request head.
        body: the request body stream (thread-safe reads).
        flow: pacing for response bytes (thread-safe waits).
        client: ``(address, port)`` of the peer; port is 0 (ZMQ_STREAM
            reports only the address).
        server: ``(host, port)`` the server is bound to.
        started: wall-clock time the request head arrived.
    """

    __slots__ = (
        "_conn",
        "_flow",
        "_flow_closed",
        "_high_water",
        "_queued",
        "_waiters",
        "body",
        "bytes_sent",
        "client",
        "finished",
        "on_app_done",
        "request",
        "response_headers",
        "root_path",
        "scheme",
        "server",
        "started",
        "started_mono",
        "status",
        "websocket_key",
    )

    # Declared here, not only by __init__: modules in an import cycle with
    # this one (the access log) may be checked first (mypyc builds).
    request: Request
    body: RequestBody
    client: tuple[str, int]
    server: tuple[str, int]
    scheme: str
    root_path: str
    started: float
    started_mono: float
    status: int | None
    response_headers: Headers
    bytes_sent: int
    websocket_key: bytes
    finished: bool
    on_app_done: Callable[[], None] | None

    def __init__(
        self,
        conn: CycleHost,
        request: Request,
        body: RequestBody,
        high_water: int,
        *,
        client: tuple[str, int],
        server: tuple[str, int],
        scheme: str,
        root_path: str,
        started: float,
        started_mono: float,
    ) -> None:
        self._conn = conn
        self.request = request
        self.body = body
        # Created on first use: most responses are handed over whole and
        # never need pacing, and a Condition per request shows in profiles.
        self._flow: FlowControl | None = None
        self._flow_closed = False
        self._high_water = high_water
        self._queued = 0
        self._waiters: list[asyncio.Future[None]] | None = None  # async producers, if any
        #: The Sec-WebSocket-Key of a checked WebSocket handshake.
        self.websocket_key = b""
        self.client = client
        self.server = server
        self.scheme = scheme
        self.root_path = root_path
        self.started = started
        self.started_mono = started_mono
        self.status: int | None = None
        self.response_headers: Headers = _NO_HEADERS
        self.bytes_sent = 0
        #: Called once by :meth:`app_done`; set by hosts that must know when
        #: the application returned (any thread may call it).
        self.on_app_done: Callable[[], None] | None = None
        self.finished = False

    @property
    def flow(self) -> FlowControl:
        """Pacing for streamed response bytes (thread-safe)."""
        flow = self._flow
        if flow is None:
            with _FLOW_LOCK:  # one FlowControl even if two threads get here
                if self._flow is None:
                    self._flow = FlowControl(self._high_water, self._high_water // 4)
                    # After publishing it (close_flow reads _flow after setting
                    # _flow_closed): one of the two sides sees the other.
                    if self._flow_closed:
                        self._flow.close()
                flow = self._flow
        return flow

    def flow_update(self, arrived: int, queued: int) -> None:
        """Loop side: account bytes taken from the producer (if it streams at all)."""
        self._queued = queued
        if self._flow is not None:
            self._flow.update(arrived, queued)
        if self._waiters and queued <= self._high_water >> 2:
            self._wake_waiters()

    def output_waiter(self) -> asyncio.Future[None] | None:
        """Loop side, for async producers: a future to await while output is over
        the high-water mark (resolved below the low-water mark or on close), or
        None when there is room."""
        if self._flow_closed or self._queued <= self._high_water:
            return None
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        return waiter

    def _wake_waiters(self) -> None:
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def close_flow(self) -> None:
        """Loop side: wake and stop every producer for good."""
        # No lock (this runs once per request): the flag is set before _flow
        # is read, and the property publishes _flow before reading the flag,
        # so under the GIL's sequential consistency at least one side closes it.
        self._flow_closed = True
        flow = self._flow
        if flow is not None:
            flow.close()
        if self._waiters:
            self._wake_waiters()

    @property
    def response_started(self) -> bool:
        return self.status is not None

    @property
    def disconnected(self) -> bool:
        """True once the client is gone or the connection was closed."""
        return self._conn.closed

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the event loop, from any thread."""
        self._conn.call_soon_threadsafe(callback, *args)

    def app_done(self) -> None:
        """The application has returned for this request (adapters call it, any thread)."""
        callback, self.on_app_done = self.on_app_done, None
        if callback is not None:
            callback()

    # -- loop side -------------------------------------------------------------

    def start_response(self, status: int, headers: Headers, reason: bytes = b"") -> None:
        self._conn.start_response(self, status, headers, reason)

    def send_data(self, data: bytes, reserved: int = 0) -> None:
        """Send body bytes; ``reserved`` is what the producer counted in :attr:`flow`."""
        self._conn.send_data(self, data, reserved)

    def end_response(self) -> None:
        self._conn.end_response(self)

    def respond(self, status: int, headers: Headers, body: bytes, reserved: int = 0) -> None:
        """A whole response at once: head, body and end in one write."""
        self._conn.respond(self, status, headers, body, reserved)

    def send_continue(self) -> None:
        """Send ``100 Continue`` if the client waits for it; else nothing."""
        self._conn.send_continue(self)

    def abort(self) -> None:
        """The response cannot be completed: close the connection."""
        self._conn.abort_cycle(self)

    # -- WebSocket (loop side) -----------------------------------------------------

    def accept_websocket(self, subprotocol: str | None, headers: Headers,
                         listener: WebSocketListener) -> None:
        """Answer the handshake with 101; frames then go to ``listener``."""
        self._conn.accept_websocket(self, subprotocol, headers, listener)

    def websocket_send(self, data: str | bytes) -> None:
        self._conn.websocket_send(self, data)

    def websocket_close(self, code: int = 1000, reason: str = "") -> None:
        self._conn.websocket_close(self, code, reason)

