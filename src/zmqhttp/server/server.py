"""The server: one ZMQ_STREAM socket on an asyncio loop, a table of connections.

Strategy: the socket's FD is registered with the loop. It is edge-triggered
(libzmq signals state changes, not levels), so every wake-up drains messages
with ``NOBLOCK`` until ``Again`` and re-checks ``ZMQ_EVENTS`` after any send,
exactly as pyzmq's ``zmqstream`` does. Output is queued per connection and
flushed once per loop iteration, so pipelined responses and many small writes
leave as few ZeroMQ messages. Deadlines are swept a few times a second instead
of one timer per connection: thousands of idle connections cost a dict entry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from zmqhttp.config import Config
from zmqhttp.observability.accesslog import AccessLogger
from zmqhttp.server.clock import Clock, DateCache, SystemClock
from zmqhttp.server.connection import Connection, Deadline
from zmqhttp.server.cycle import AppAdapter, RequestCycle
from zmqhttp.server.threads import LoopInbox
from zmqhttp.transport.stream import StreamTransport, configure_io_thread, format_endpoint

if TYPE_CHECKING:
    from zmqhttp.observability.exporter import MetricsExporter, RequestMetrics

__all__ = ["Server"]

log = logging.getLogger("zmqhttp.error")

# Messages handled per wake-up before yielding to other loop callbacks
# (thread completions, timers), so a flood on one socket cannot starve them.
_DRAIN_BUDGET = 512
# How often deadlines are checked; timeouts fire up to this late.
_SWEEP_INTERVAL = 0.25
# Retry delays for output stuck behind a full libzmq pipe (no per-peer POLLOUT).
_RETRY_FIRST = 0.002
_RETRY_MAX = 0.05
# Connections over the cap still get a 503 until this many more are open;
# past that they are closed without a word.
_REJECT_HEADROOM = 1024
# After a SO_REUSEPORT listener leaves the kernel's group on a graceful stop,
# connections libzmq accepted just before are served normally this long (their
# requests are on the way) rather than closed as idle.
_PORT_GROUP_SETTLE = 0.2


def remove_reader(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """``loop.remove_reader(fd)``, its result ignored.

    asyncio's returns a bool and uvloop's None: called directly, the compiled
    build (setup.py) would check the declared bool and raise on uvloop.
    """
    remove: Callable[[int], object] = loop.remove_reader
    remove(fd)


def _connection_failed(conn: Connection) -> None:
    """In an ``except`` block: log the bug and close that connection only."""
    log.exception("internal error on a connection from %s", conn.peer)
    try:
        conn.close()
    except Exception:  # pragma: no cover - closing is best effort here
        log.exception("could not close the connection from %s", conn.peer)


class Server:
    """An HTTP/1.1 server for one application.

    Args:
        app: a WSGI or ASGI application, or anything an ``adapter`` understands.
        config: settings; keyword ``overrides`` replace single fields.
        context: a ZeroMQ context to share (a pyzmq program's own); the
            server creates (and terminates) its own if not given.
        adapter: how to run ``app``; by default chosen from ``config.interface``.
        clock: time source, injectable for tests.

    Use ``await server.start()`` then ``await server.stop()`` from asyncio, or
    ``async with Server(app) as server:``.
    """

    #: The startup log line per address; tools wait for "Listening on".
    listening_message = "Listening on %s"

    def __init__(
        self,
        app: Any,
        config: Config | None = None,
        *,
        context: zmq.Context[Any] | None = None,
        adapter: AppAdapter | None = None,
        clock: Clock | None = None,
        **overrides: Any,
    ) -> None:
        config = config or Config()
        self.config = config.replace(**overrides) if overrides else config
        self.limits = self.config.limits()
        self.timeouts = {
            Deadline.HEADER: self.config.timeout_request_header,
            Deadline.BODY: self.config.timeout_request_body,
            Deadline.KEEP_ALIVE: self.config.timeout_keep_alive,
            Deadline.LINGER: self.config.timeout_linger,
            Deadline.PING: self.config.ws_ping_interval,
            Deadline.PONG: self.config.ws_ping_timeout,
        }
        self._inbox: LoopInbox | None = None
        self.app = app
        self.clock: Clock = clock or SystemClock()
        self.date = DateCache(self.clock)
        self._own_context = context is None
        self._context = context
        self._adapter = adapter
        self._conns: dict[bytes, Connection] = {}
        self._dirty: dict[Connection, None] = {}
        self._blocked: dict[Connection, None] = {}
        self._flush_scheduled = False
        self._retry_handle: asyncio.TimerHandle | None = None
        self._retry_delay = _RETRY_FIRST
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: StreamTransport | None = None
        self._shutting_down = False
        self._stop_started = False
        self._closed: asyncio.Event | None = None
        self._empty: asyncio.Event | None = None
        self._access = AccessLogger(self.config.access_log_format, self.config.access_log)
        self._access_off = not self.config.access_log
        self.endpoints: list[str] = []
        self.server_address: tuple[str, int] = ("", 0)
        #: With ``config.metrics_bind``: the metrics listener, and the request
        #: metrics :meth:`log_access` feeds.
        self.exporter: MetricsExporter | None = None
        self.metrics: RequestMetrics | None = None

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Bind every configured address and start serving.

        Raises:
            zmq.ZMQError: a bind failed (address in use, bad address).
        """
        from zmqhttp.apps import make_adapter

        loop = asyncio.get_running_loop()
        self._loop = loop
        self._inbox = LoopInbox(loop)
        self._closed = asyncio.Event()
        self._empty = asyncio.Event()
        config = self.config
        binds = config.binds()
        if self._adapter is None:
            # Before binding: an app we cannot run must not leave a bound socket.
            self._adapter = make_adapter(self.app, config)
        try:
            await self._adapter.startup()  # ASGI lifespan: before accepting requests
        except BaseException:
            self._adapter.close()
            raise
        if self._context is None:
            # Ours: tuned before its first socket starts the I/O thread. A
            # context the embedding program shares stays as it made it.
            self._context = zmq.Context()
            configure_io_thread(self._context, config.io_thread_scheduling)
        ipv6 = any(":" in host or host in ("*", "::") for host, _ in binds)
        transport = StreamTransport(
            self._context,
            sndhwm=config.sndhwm,
            rcvhwm=config.rcvhwm,
            send_timeout=config.timeout_send,
            ipv6=ipv6,
            backlog=config.backlog,
        )
        bind = transport.bind_reuseport if config.reuse_port else transport.bind
        try:
            for host, port in binds:
                host, port = bind(host, port)
                self.endpoints.append(format_endpoint(host, port))
        except zmq.ZMQError:
            transport.close()
            self._adapter.close()
            raise
        self._transport = transport
        self.server_address = (binds[0][0], int(self.endpoints[0].rsplit(":", 1)[1]))
        loop.add_reader(transport.fd, self._on_readable)
        self._sweep_handle = loop.call_later(_SWEEP_INTERVAL, self._sweep)
        if config.metrics_bind:
            try:
                await self._start_exporter()
            except BaseException:  # e.g. its port is taken: start fails as a whole
                self._close_now()
                raise
        for endpoint in self.endpoints:
            log.info(self.listening_message, endpoint)
        self._on_readable()

    async def stop(self, timeout: float | None = None) -> None:
        """Graceful shutdown: finish in-flight requests, close idle connections.

        New connections are closed at once (unbinding would drop the open
        ones too: libzmq tears down a listener's sessions with it). With
        ``config.reuse_port`` the listener leaves the kernel's SO_REUSEPORT
        group first, so new connections go to the other processes. After
        ``timeout`` (default ``config.timeout_graceful_shutdown``) whatever
        is left is closed.
        """
        if self._transport is None or self._closed is None or self._empty is None:
            return
        if self._shutting_down or self._stop_started:
            await self._closed.wait()
            return
        self._stop_started = True
        if self.config.reuse_port and self._transport.detach_listeners():
            await asyncio.sleep(_PORT_GROUP_SETTLE)
            if self._transport is None:  # close() meanwhile
                return
        self._shutting_down = True
        # An adapter that holds requests of its own (the fabric gateway's
        # queue) may want to answer them now rather than at their deadline.
        draining = getattr(self._adapter, "draining", None)
        if draining is not None:
            draining()
        for conn in list(self._conns.values()):
            conn.shutdown()
        self._check_empty()
        limit = self.config.timeout_graceful_shutdown if timeout is None else timeout
        try:
            await asyncio.wait_for(self._empty.wait(), limit)
        except TimeoutError:
            log.warning("graceful shutdown timed out; closing %d connections", len(self._conns))
        for conn in list(self._conns.values()):
            conn.close()
        if self._adapter is not None:
            try:
                await self._adapter.shutdown()
            except Exception:
                log.exception("error during application shutdown")
        self._close_now()

    def close(self) -> None:
        """Stop at once: every connection is closed, in-flight work is abandoned."""
        self._shutting_down = True
        self._close_now()

    async def wait_closed(self) -> None:
        if self._closed is not None:
            await self._closed.wait()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _close_now(self) -> None:
        transport = self._transport
        if transport is None:
            return
        # Connections close through self.transport: do it before letting go of it.
        for conn in list(self._conns.values()):
            conn.close()
        self._transport = None
        for handle in (self._sweep_handle, self._retry_handle):
            if handle is not None:
                handle.cancel()
        assert self._loop is not None
        remove_reader(self._loop, transport.fd)
        transport.close()
        if self._adapter is not None:
            self._adapter.close()
        if self.exporter is not None:
            self.exporter.close()  # before the context it shares is terminated
        if self._own_context and self._context is not None:
            self._context.term()
        if self._closed is not None:
            self._closed.set()

    # -- the socket ---------------------------------------------------------------

    @property
    def transport(self) -> StreamTransport:
        assert self._transport is not None, "server not started"
        return self._transport

    @property
    def adapter(self) -> AppAdapter:
        assert self._adapter is not None, "server not started"
        return self._adapter

    @property
    def closed(self) -> bool:
        """True once the server stopped (gracefully or not)."""
        return self._closed is not None and self._closed.is_set()

    @property
    def stopping(self) -> bool:
        """True once a stop began (graceful or not)."""
        return self._stop_started or self._shutting_down

    @property
    def active_requests(self) -> int:
        """Requests received and not yet answered (counted: for metrics scrapes)."""
        return sum(1 for conn in self._conns.values() if conn.cycle is not None)

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    def _on_readable(self) -> None:
        transport = self._transport
        if transport is None:
            return
        while True:
            more = transport.drain(self, _DRAIN_BUDGET)
            self._flush_only()  # the input check below covers the sends
            if self._blocked:
                self._retry_blocked()
            if more:
                assert self._loop is not None
                self._loop.call_soon(self._on_readable)
                return
            if self._transport is None or not transport.has_input():
                return

    # StreamHandler: called by transport.drain

    def connection_made(self, rid: bytes, peer: str) -> None:
        if self._shutting_down:
            self.transport.close_peer(rid)
            return
        conn = Connection(self, rid, peer)
        self._conns[rid] = conn
        cap = self.config.limit_connections
        if cap is not None and len(self._conns) > cap:
            if len(self._conns) > cap + _REJECT_HEADROOM:
                conn.close()
            else:
                conn.reject_busy()

    def data_received(self, rid: bytes, data: bytes | list[bytes]) -> None:
        conn = self._conns.get(rid)
        if conn is not None:
            try:  # _guarded, inlined: this runs for every message
                conn.data_received(data)
            except Exception:
                _connection_failed(conn)

    @staticmethod
    def _guarded(conn: Connection, method: Callable[..., None], *args: Any) -> None:
        """Run a connection's method; a bug there costs that connection only.

        An exception escaping into the drain loop would leave the edge-triggered
        FD silent, and one escaping the sweep would stop every timeout.
        """
        try:
            method(*args)
        except Exception:
            _connection_failed(conn)

    def connection_lost(self, rid: bytes) -> None:
        conn = self._conns.get(rid)
        if conn is not None:
            conn.connection_lost()

    # -- ConnectionOwner ------------------------------------------------------------

    def schedule_flush(self, conn: Connection) -> None:
        self._dirty[conn] = None
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_dirty)

    def _flush_dirty(self) -> None:
        if self._flush_only():
            self._recheck_input()

    def _flush_only(self) -> bool:
        """Flush every connection with new output; True if anything was sent."""
        self._flush_scheduled = False
        if not self._dirty:
            return False
        dirty, self._dirty = self._dirty, {}
        for conn in dirty:
            self._guarded(conn, conn.flush)
        return True

    def _recheck_input(self) -> None:
        """After sending outside ``_on_readable``: a send may have consumed the FD's edge.

        libzmq's ZMQ_FD is edge-triggered and any operation on the socket (a
        send included) can reset it, so input that arrived meanwhile would sit
        unread until some other event (pyzmq's zmqstream does the same check).
        """
        transport = self._transport
        if transport is not None and transport.has_input() and self._loop is not None:
            self._loop.call_soon(self._on_readable)

    def retry_later(self, conn: Connection) -> None:
        self._blocked[conn] = None
        if self._retry_handle is None and self._loop is not None:
            self._retry_handle = self._loop.call_later(self._retry_delay, self._retry_timer)

    def _retry_timer(self) -> None:
        self._retry_handle = None
        self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
        self._retry_blocked()
        if not self._blocked:
            self._retry_delay = _RETRY_FIRST
        self._recheck_input()

    def _retry_blocked(self) -> None:
        blocked, self._blocked = self._blocked, {}
        for conn in blocked:
            if not conn.closed:
                conn.flush()

    def forget(self, conn: Connection) -> None:
        if self._conns.get(conn.rid) is conn:
            del self._conns[conn.rid]
        self._dirty.pop(conn, None)
        self._blocked.pop(conn, None)
        self._check_empty()

    def _check_empty(self) -> None:
        if self._shutting_down and not self._conns and self._empty is not None:
            self._empty.set()

    def log_access(self, cycle: RequestCycle) -> None:
        if self._access_off and self.metrics is None:
            return  # --no-access-log: not even a clock read
        now = self.clock.monotonic()
        self._access.log(cycle, now)
        if self.metrics is not None:
            self.metrics.request_done(cycle, now)

    async def _start_exporter(self) -> None:
        from zmqhttp.observability.exporter import MetricsExporter

        assert self._context is not None
        exporter = MetricsExporter(self, self._context)
        await exporter.start()
        self.exporter = exporter
        self.metrics = exporter.requests

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        inbox = self._inbox
        if inbox is not None:
            inbox.call_soon_threadsafe(callback, *args)

    # -- deadlines ----------------------------------------------------------------

    def _sweep(self) -> None:
        now = self.clock.monotonic()
        try:
            for conn in list(self._conns.values()):
                deadline = conn.deadline
                if deadline is not None and deadline <= now:
                    self._guarded(conn, conn.deadline_passed)
            self._flush_dirty()
            self._recheck_input()  # closing peers sent frames too
        finally:  # a failing connection must never stop every other timeout
            if self._transport is not None and self._loop is not None:
                self._sweep_handle = self._loop.call_later(_SWEEP_INTERVAL, self._sweep)
