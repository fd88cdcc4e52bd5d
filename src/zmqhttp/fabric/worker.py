"""The worker side of the fabric: a DEALER socket that serves the gateway's requests.

Strategy: one plain ``zmq.Socket`` (DEALER) on the asyncio loop through a
:class:`~zmqhttp.fabric.loopsocket.LoopSocket`. Its FD is edge-triggered: it
signals a change of ``ZMQ_EVENTS``, not readiness, so the reader drains with
``NOBLOCK`` until ``Again`` and every flush schedules one more drain (a send may
consume the edge). Sends are ``NOBLOCK`` only; a full pipe queues them here and
retries.

Each ``RequestHead`` becomes a real :class:`~zmqhttp.server.cycle.RequestCycle`
whose connection is a :class:`~zmqhttp.fabric.remote.RemoteConnection`, handed
to the same WSGI/ASGI adapters the HTTP server uses. Credits, heartbeats and
reconnection follow ``docs/protocol.md`` sections 6-9.

Output is sent at the end of the loop turn that produced it (one callback),
not message by message: by then a whole response has become one ``Response``
(see :mod:`zmqhttp.fabric.remote`), and the slots freed in the turn ride on
the last queued ``Response`` (its ``c``) instead of a ``Credit`` of their own.
Every message the gateway does not have to receive, decode and dispatch is
CPU it spends on HTTP instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import zmq

from zmqhttp.apps import make_adapter
from zmqhttp.config import Config
from zmqhttp.errors import FabricProtocolError
from zmqhttp.fabric.curve import ClientSecurity, client_security, secure_client
from zmqhttp.fabric.loopsocket import LoopSocket, recv_message, send_message
from zmqhttp.fabric.protocol import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    REVISION,
    Cancel,
    Credit,
    Goodbye,
    Heartbeat,
    Message,
    Ready,
    RequestBody,
    RequestEnd,
    RequestHead,
    Response,
    ResponseCredit,
    Side,
    decode,
    encode,
)
from zmqhttp.fabric.remote import RemoteConnection, is_websocket_upgrade, request_from_head
from zmqhttp.http.events import Headers
from zmqhttp.server.cycle import AppAdapter, RequestCycle
from zmqhttp.server.threads import LoopInbox

__all__ = ["DEFAULT_BODY_WINDOW", "Worker"]

log = logging.getLogger("zmqhttp.error")

#: Request body bytes the gateway may send per request before any BodyCredit.
DEFAULT_BODY_WINDOW = 256 * 1024
# Messages received per reader callback before other callbacks get a turn.
_RECV_BUDGET = 256
# Seconds between retries of sends that found the pipe full.
_SEND_RETRY = 0.005
# At most one malformed-message log line per this many seconds.
_MALFORMED_LOG_EVERY = 1.0
_NOT_IMPLEMENTED = b"WebSocket is not available through this gateway\n"


class Worker:
    """Serves ``app`` for a gateway over one DEALER socket (asyncio).

    Args:
        app: a WSGI or ASGI application (``config.interface`` tells, or auto).
        config: settings (threads, lifespan, body buffer, output high water...).
        connect: the gateway's fabric endpoint.
        capacity: requests taken at once (``Ready.k``); default ``config.threads``.
        context: the ZeroMQ context; default the process-wide instance.
        body_window: ``Ready.w``, request body bytes per request in flight.
        app_name: what ``Ready.a`` says (``module:attr``).
        heartbeat_interval: seconds; the protocol fixes 1 s. Also the pace the
            worker expects from the gateway (silent for 3 intervals = lost), so
            only tests against a fake gateway that heartbeats faster shorten it.
    """

    def __init__(self, app: Any, config: Config, connect: str = "tcp://127.0.0.1:5555",
                 capacity: int | None = None, context: zmq.Context[Any] | None = None, *,
                 body_window: int = DEFAULT_BODY_WINDOW, app_name: str | None = None,
                 heartbeat_interval: float = HEARTBEAT_INTERVAL) -> None:
        self.app = app
        self.config = config
        self.connect = connect
        self.capacity = capacity if capacity is not None else config.threads
        if self.capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.body_window = max(1, body_window)
        self.app_name = app_name or _describe(app)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.heartbeat_interval = heartbeat_interval
        self._context = context or zmq.Context.instance()
        self._adapter: AppAdapter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: LoopInbox | None = None
        self._sock: zmq.Socket[bytes] | None = None
        #: Reads _sock; a new one with each socket (reconnection).
        self._reader: LoopSocket | None = None
        self._generation = 0
        self._requests: dict[int, RemoteConnection] = {}
        self._out: deque[list[bytes]] = deque()
        #: The last queued Response and its frames, while they are the tail of
        #: _out: the slots freed in this turn are folded into it (its ``c``).
        self._fold: tuple[Response, list[bytes]] | None = None
        #: Slots freed (request_done) and not yet returned to the gateway.
        self._credit_due = 0
        #: Connections whose held response head waits for the end of the turn.
        self._held: list[RemoteConnection] = []
        self._turn_scheduled = False
        self._loop_thread = 0
        self._retry: asyncio.TimerHandle | None = None
        self._last_sent = 0.0
        self._last_received = 0.0
        self._ticker: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self._idle: asyncio.Event | None = None
        self._malformed = 0
        self._malformed_logged = 0.0
        #: CURVE keys (``config.curve_*``), read once by start(); None: no CURVE.
        self._curve: ClientSecurity | None = None
        #: Times the worker connected (1 after start, +1 per reconnection).
        self.connections = 0

    # -- life cycle --------------------------------------------------------------

    async def start(self) -> None:
        """Start the app (ASGI lifespan), connect and send ``Ready``.

        Raises:
            ConfigError: a CURVE key file is missing or bad (before the app starts).
        """
        self._curve = client_security(self.config)
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._inbox = LoopInbox(loop)
        self._idle = asyncio.Event()
        adapter = make_adapter(self.app, self.config)
        await adapter.startup()
        self._adapter = adapter
        self._open()
        self._ticker = loop.create_task(self._tick())

    async def stop(self, timeout: float | None = None) -> None:
        """Graceful: ``Goodbye``, finish the requests in flight, then close.

        Args:
            timeout: seconds to wait for in-flight requests; default
                ``config.timeout_graceful_shutdown``. Past it they are abandoned.
        """
        if self._closed or self._loop is None:
            return
        if not self._stopping:
            self._stopping = True
            self.send(Goodbye())
            log.info("fabric worker: stopping; %d request(s) in flight", len(self._requests))
        wait = self.config.timeout_graceful_shutdown if timeout is None else timeout
        if self._requests and self._idle is not None:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), wait)
        # Give libzmq a moment to hand the last messages to the kernel.
        deadline = time.monotonic() + 1.0
        while self._out and self._sock is not None and time.monotonic() < deadline:
            self._flush()
            await asyncio.sleep(_SEND_RETRY)
        await self._close(linger_ms=1000)

    def close(self) -> None:
        """Close at once (no Goodbye): in-flight requests are abandoned."""
        if self._loop is not None and not self._closed:
            self._loop.create_task(self._close(linger_ms=0))

    async def _close(self, linger_ms: int) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self._abandon_all("worker closed")
        self._close_socket(linger_ms)
        adapter = self._adapter
        if adapter is not None:
            try:
                await adapter.shutdown()
            finally:
                adapter.close()

    # -- socket --------------------------------------------------------------------

    def _open(self) -> None:
        assert self._loop is not None
        sock: zmq.Socket[bytes] = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if self._curve is not None:  # every new socket: a reconnection opens one
            secure_client(sock, self._curve)
        sock.connect(self.connect)
        self._sock = sock
        self._reader = LoopSocket(self._loop, sock, recv_message, self._received,
                                  budget=_RECV_BUDGET, log=log, name="fabric worker")
        self._generation += 1
        self.connections += 1
        now = time.monotonic()
        self._last_received = now
        self._last_sent = now
        self.send(Ready(name=self.name, pid=os.getpid(), capacity=self.capacity,
                        revision=REVISION, app=self.app_name, body_window=self.body_window))
        log.info("fabric worker: connecting to %s (capacity %d)", self.connect, self.capacity)

    def _close_socket(self, linger_ms: int) -> None:
        sock, self._sock = self._sock, None
        self._out.clear()
        self._fold = None
        self._credit_due = 0  # the slots of the old link went with it
        self._held.clear()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if sock is None:
            return
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        sock.close(linger=linger_ms)

    def _reconnect(self, why: str) -> None:
        log.warning("fabric worker: %s; reconnecting to %s", why, self.connect)
        self._abandon_all(why)
        self._close_socket(0)
        if self._stopping:
            if self._idle is not None:
                self._idle.set()
            return
        self._open()

    def _abandon_all(self, why: str) -> None:
        requests, self._requests = self._requests, {}
        for conn in requests.values():
            conn.cancel(why)
        if self._idle is not None:
            self._idle.set()

    def send(self, message: Message) -> None:
        """Queue ``message`` for the gateway; never blocks (loop only).

        Raises:
            FabricProtocolError: the message cannot be encoded (too large).
        """
        frames = encode(message)
        if self._sock is None:
            return
        self._out.append(frames)
        self._fold = (message, frames) if type(message) is Response else None
        self._last_sent = time.monotonic()
        self._schedule_turn()

    def hold(self, conn: RemoteConnection) -> None:
        """Call ``conn.release()`` at the end of this turn (RequestOwner)."""
        self._held.append(conn)
        self._schedule_turn()

    def _schedule_turn(self) -> None:
        if not self._turn_scheduled and self._loop is not None:
            self._turn_scheduled = True
            self._loop.call_soon(self._end_turn)

    def _end_turn(self) -> None:
        """Release held responses, return freed slots, then send everything queued."""
        self._turn_scheduled = False
        held, self._held = self._held, []
        for conn in held:
            try:
                conn.release()
            except Exception:
                log.exception("fabric worker: error sending the response to %d", conn.id)
        if self._credit_due and self._sock is not None:
            slots, self._credit_due = self._credit_due, 0
            fold, self._fold = self._fold, None
            if fold is not None and self._out and self._out[-1] is fold[1]:
                response = fold[0]
                self._out[-1] = encode(replace(response, credit=response.credit + slots))
            else:
                self._out.append(encode(Credit(slots)))
        self._flush()

    def _flush(self) -> None:
        sock = self._sock
        out = self._out
        if sock is None:
            return
        while out:
            try:
                send_message(sock, out[0])
            except zmq.Again:
                if self._retry is None and self._loop is not None:
                    self._retry = self._loop.call_later(_SEND_RETRY, self._retry_flush)
                break
            except zmq.ZMQError as exc:
                log.error("fabric worker: send failed: %s", exc)
                out.popleft()
                continue
            out.popleft()
        self._schedule_check()

    def _retry_flush(self) -> None:
        self._retry = None
        self._flush()

    def _schedule_check(self) -> None:
        # A send may have consumed the FD's edge: look at ZMQ_EVENTS once more.
        if self._reader is not None:
            self._reader.schedule_drain()

    async def _tick(self) -> None:
        interval = self.heartbeat_interval
        while True:
            await asyncio.sleep(interval / 4)
            if self._sock is None:
                continue
            now = time.monotonic()
            if now - self._last_received > interval * HEARTBEAT_LIVENESS:
                self._reconnect(f"the gateway was silent for {now - self._last_received:.1f} s")
                continue
            if now - self._last_sent >= interval:
                self.send(Heartbeat())
            if self._reader is not None:
                self._reader.drain()  # a safety net against a missed edge

    # -- messages from the gateway ----------------------------------------------------

    def _received(self, frames: list[bytes]) -> None:
        self._last_received = time.monotonic()
        try:
            message = decode(frames, sender=Side.GATEWAY)
        except FabricProtocolError as exc:
            self._log_malformed(exc)
            return
        try:
            self._dispatch(message)
        except Exception:
            log.exception("fabric worker: error handling %s", type(message).__name__)

    def _log_malformed(self, exc: FabricProtocolError) -> None:
        self._malformed += 1
        now = time.monotonic()
        if now - self._malformed_logged >= _MALFORMED_LOG_EVERY:
            log.warning("fabric worker: dropped %d malformed message(s) from the gateway: %s",
                        self._malformed, exc)
            self._malformed = 0
            self._malformed_logged = now

    def _dispatch(self, message: Message) -> None:
        kind = type(message)
        if kind is RequestBody:
            assert isinstance(message, RequestBody)
            conn = self._requests.get(message.id)
            if conn is not None:
                conn.body_received(message.data)
        elif kind is ResponseCredit:
            assert isinstance(message, ResponseCredit)
            conn = self._requests.get(message.id)
            if conn is not None:
                conn.add_credit(message.size)
        elif kind is RequestHead:
            assert isinstance(message, RequestHead)
            self._request(message)
        elif kind is RequestEnd:
            assert isinstance(message, RequestEnd)
            conn = self._requests.get(message.id)
            if conn is not None:
                conn.body_ended()
        elif kind is Cancel:
            assert isinstance(message, Cancel)
            conn = self._requests.get(message.id)
            if conn is not None:
                log.debug("fabric worker: request %d cancelled (%s)", message.id,
                          message.reason.name)
                conn.cancel(f"cancelled by the gateway ({message.reason.name.lower()})")
        elif kind is Goodbye:
            self._reconnect("the gateway said goodbye")
        # Heartbeat: receiving it was the point.

    def _request(self, head: RequestHead) -> None:
        if head.id in self._requests:
            log.warning("fabric worker: request id %d already in flight; dropped", head.id)
            return
        conn = RemoteConnection(self, head, self.body_window, self._generation)
        config = self.config
        cycle = RequestCycle(
            conn,
            request_from_head(head),
            conn.make_body(config.body_buffer),
            config.output_high_water,
            client=head.client,
            server=head.server,
            scheme=head.scheme,
            root_path=head.root_path,
            started=time.time(),
            started_mono=time.monotonic(),
        )
        conn.cycle = cycle
        self._requests[head.id] = conn
        if self._stopping:
            self._answer(conn, cycle, 503, b"Service Unavailable\n")
            return
        if is_websocket_upgrade(head):
            self._answer(conn, cycle, 501, _NOT_IMPLEMENTED)
            return
        self._run_app(conn, cycle)

    def _answer(self, conn: RemoteConnection, cycle: RequestCycle, status: int,
                body: bytes) -> None:
        headers: Headers = [(b"Content-Type", b"text/plain; charset=utf-8"),
                            (b"Content-Length", b"%d" % len(body))]
        conn.app_done = True
        cycle.respond(status, headers, body)

    def _run_app(self, conn: RemoteConnection, cycle: RequestCycle) -> None:
        adapter = self._adapter
        assert adapter is not None
        # The adapter calls cycle.app_done() when the app returns, from the
        # thread that ran it; the slot is freed on the loop.
        cycle.on_app_done = lambda: self._app_done(conn)
        adapter.handle(cycle)

    def _app_done(self, conn: RemoteConnection) -> None:
        if threading.get_ident() == self._loop_thread:
            # ASGI: the app returned in the turn of its last send. Hopping
            # through the inbox would land after this turn's flush, so the
            # freed slot would miss the Response it could ride on.
            conn.app_finished()
        else:
            self.call_soon_threadsafe(conn.app_finished)

    # -- RequestOwner ---------------------------------------------------------------------

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        assert self._inbox is not None
        self._inbox.call_soon_threadsafe(callback, *args)

    def request_done(self, conn: RemoteConnection) -> None:
        if self._requests.get(conn.id) is not conn:
            return  # abandoned with its link: its slot went with the old socket
        del self._requests[conn.id]
        if conn.generation == self._generation and not self._stopping:
            # Sent at the end of the turn, on the last Response if there is one.
            self._credit_due += 1
            self._schedule_turn()
        if not self._requests and self._idle is not None:
            self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._requests)


def _describe(app: Any) -> str:
    module = getattr(app, "__module__", None) or "?"
    name = getattr(app, "__qualname__", None) or type(app).__qualname__
    return f"{module}:{name}"

