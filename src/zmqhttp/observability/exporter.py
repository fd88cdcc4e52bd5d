"""``--metrics-bind``: a second listener serving ``/metrics``, ``/healthz`` and ``/readyz``.

Strategy: the metrics endpoint is another zmqhttp :class:`Server` (its own
ZMQ_STREAM socket) on the main server's event loop and ZeroMQ context, with a
tiny adapter of its own: it reads the metrics on the loop that writes them,
so nothing needs a lock, and the public port never serves them. The main
server reports each finished request to :class:`RequestMetrics` (the same
point the access log is written, so every response counts once, whether the
app, the gateway or the connection itself answered). Its adapter may add
metrics of its own through an optional ``register_metrics(registry)`` method
(the fabric gateway does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from zmqhttp.config import Config
from zmqhttp.http.events import Headers
from zmqhttp.observability.metrics import (
    CONTENT_TYPE,
    Counter,
    CounterChild,
    Gauge,
    Histogram,
    Registry,
)
from zmqhttp.server.cycle import RequestCycle

if TYPE_CHECKING:
    from zmqhttp.server.server import Server

__all__ = ["MetricsApp", "MetricsExporter", "RequestMetrics"]

_TEXT = b"text/plain; charset=utf-8"
_METRICS_TYPE = CONTENT_TYPE.encode()
_ALLOWED = (b"GET", b"HEAD")
#: Connections the metrics listener accepts at once: a scraper or two and a
#: health checker need a handful; the cap bounds what this unauthenticated
#: port can cost if it is reachable by more than intended.
_METRICS_CONNECTIONS = 64


class RequestMetrics:
    """Requests by status, their latency, and the server's live counts."""

    def __init__(self, registry: Registry) -> None:
        self.requests = Counter(
            "zmqhttp_requests_total", "HTTP responses sent, by status code.", ("code",))
        self.duration = Histogram(
            "zmqhttp_request_duration_seconds",
            "Seconds from a request's head arriving to the end of its response.")
        self.in_progress = Gauge(
            "zmqhttp_requests_in_progress", "Requests received and not yet answered.")
        self.connections = Gauge("zmqhttp_connections", "Open HTTP connections.")
        self.send_full = Counter(
            "zmqhttp_http_send_full_total",
            "Sends to a client that met its full ZMQ_STREAM pipe (a slow reader).")
        registry.register(self.requests, self.duration, self.in_progress, self.connections,
                          self.send_full)
        # The hot path touches children directly: one counter child per status
        # code kept by int (no str() per request), the histogram's only child.
        self._by_status: dict[int, CounterChild] = {}
        self._latency = self.duration.labels()

    def request_done(self, cycle: RequestCycle, now: float) -> None:
        """A response ended (hot path: called once per request)."""
        status = cycle.status
        if status is None:
            return  # never answered (the client left first): no status to count
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self.requests.labels(str(status))
        child.value += 1
        self._latency.observe(now - cycle.started_mono)

    def collect(self, server: Server) -> None:
        """Set the live gauges from ``server`` (at scrape time)."""
        if server.closed:
            return
        self.in_progress.set(server.active_requests)
        self.connections.set(server.connection_count)
        self.send_full.set_total(server.transport.full_sends)


class MetricsApp:
    """The metrics listener's adapter: three paths, GET or HEAD, nothing else.

    Args:
        registry: rendered for ``/metrics``.
        ready: answers ``/readyz`` (503 when False).
    """

    def __init__(self, registry: Registry, ready: Callable[[], bool]) -> None:
        self.registry = registry
        self._ready = ready

    def handle(self, cycle: RequestCycle) -> None:
        request = cycle.request
        path = request.path
        if path not in (b"/metrics", b"/healthz", b"/readyz"):
            _respond(cycle, 404, _TEXT, b"not found\n")
        elif request.method not in _ALLOWED:
            _respond(cycle, 405, _TEXT, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
        elif path == b"/metrics":
            _respond(cycle, 200, _METRICS_TYPE, self.registry.render().encode())
        elif path == b"/healthz":
            _respond(cycle, 200, _TEXT, b"ok\n")
        elif self._ready():
            _respond(cycle, 200, _TEXT, b"ready\n")
        else:
            _respond(cycle, 503, _TEXT, b"not ready\n")
        cycle.app_done()

    async def startup(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    def close(self) -> None:
        pass


def _respond(cycle: RequestCycle, status: int, content_type: bytes, body: bytes,
             extra: Headers | None = None) -> None:
    headers: Headers = [(b"content-type", content_type),
                        (b"content-length", b"%d" % len(body)),
                        (b"cache-control", b"no-store")]
    if extra:
        headers.extend(extra)
    cycle.respond(status, headers, body)


class MetricsExporter:
    """The metrics of ``server`` on its ``config.metrics_bind`` addresses.

    Args:
        server: the main server; its adapter's ``register_metrics`` (if any)
            adds to the registry, its adapter's ``ready`` (if any) decides
            ``/readyz`` along with the server not stopping.
        context: the main server's ZeroMQ context (the listener shares it).
    """

    def __init__(self, server: Server, context: zmq.Context[Any]) -> None:
        from zmqhttp.server.server import Server  # the listener is a Server too

        self.registry = Registry()
        self.requests = RequestMetrics(self.registry)
        self._server = server
        self.registry.add_collector(lambda: self.requests.collect(server))
        register = getattr(server.adapter, "register_metrics", None)
        if register is not None:
            register(self.registry)
        base = server.config
        config = Config(bind=list(base.metrics_bind), access_log=False,
                        server_header=base.server_header, limit_connections=_METRICS_CONNECTIONS,
                        timeout_graceful_shutdown=0)
        self.listener = Server(None, config, context=context,
                               adapter=MetricsApp(self.registry, self._ready))
        self.listener.listening_message = "Serving metrics on %s"

    def _ready(self) -> bool:
        server = self._server
        return not server.stopping and bool(getattr(server.adapter, "ready", True))

    @property
    def endpoints(self) -> list[str]:
        """The bound addresses, wildcard ports resolved."""
        return self.listener.endpoints

    @property
    def port(self) -> int:
        return int(self.endpoints[0].rsplit(":", 1)[1])

    async def start(self) -> None:
        """Bind and serve.

        Raises:
            zmq.ZMQError: a bind failed.
        """
        await self.listener.start()

    def close(self) -> None:
        self.listener.close()
