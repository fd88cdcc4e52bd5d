"""One configuration object for the server, with every tunable explained.

Precedence (highest first): command-line flags, ``ZMQHTTP_*`` environment
variables, a TOML file given with ``--config``, these defaults. The CLI builds
a :class:`Config`; embedders construct one directly or pass keywords to
:func:`zmqhttp.serve`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from zmqhttp.http.limits import KIB, MIB, Limits

__all__ = ["Config", "parse_bind"]

_DEFAULT_LIMITS = Limits()
DEFAULT_BIND = "tcp://127.0.0.1:8000"
DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'


def parse_bind(value: str) -> tuple[str, int]:
    """``tcp://HOST:PORT``, ``HOST:PORT`` or ``[V6]:PORT`` -> (host, port).

    Raises:
        ValueError: not of that form.
    """
    text = value.strip()
    if text.startswith("tcp://"):
        text = text[len("tcp://") :]
    elif "://" in text:
        raise ValueError(f"only tcp:// binds are possible on ZMQ_STREAM, not {value!r}")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"bind must be tcp://HOST:PORT or HOST:PORT, not {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if int(port) > 65535:
        raise ValueError(f"port out of range in {value!r}")
    return host, int(port)


@dataclass
class Config:
    """Everything the server can be told. Times are seconds, sizes bytes."""

    #: Where to listen; several allowed. ``HOST:PORT`` or ``tcp://HOST:PORT``.
    bind: list[str] = field(default_factory=lambda: [DEFAULT_BIND])
    #: ``auto`` tells ASGI (a coroutine function, or a class for ASGI 2) from WSGI.
    interface: Literal["auto", "wsgi", "asgi", "asgi3", "asgi2"] = "auto"
    #: ASGI lifespan: ``auto`` runs it and tolerates apps without it, ``on``
    #: requires it, ``off`` skips it.
    lifespan: Literal["auto", "on", "off"] = "auto"
    #: WSGI worker threads. Apps block (database calls); 10 keeps a few slow
    #: requests from starving the rest, while bounding memory and GIL churn.
    threads: int = 10
    #: Mount point of the app (WSGI ``SCRIPT_NAME``), e.g. behind a proxy prefix.
    root_path: str = ""
    #: ``wsgi.url_scheme``; ZMQ_STREAM has no TLS, so ``https`` only behind a proxy.
    url_scheme: str = "http"
    log_level: str = "info"
    access_log: bool = True
    #: The event loop: ``uvloop`` (its scheduling and timers are C; about 5 %
    #: more requests a second for an ASGI hello world) or ``asyncio``'s own;
    #: ``auto`` takes uvloop when it is installed (a dependency on CPython/POSIX).
    loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    #: Edge processes, each running the app, sharing the port with
    #: SO_REUSEPORT (the CLI's supervisor reads it; :class:`Server` ignores it).
    #: About one per core; 1 serves from the calling process.
    workers: int = 1
    #: Listen on our own socket with SO_REUSEPORT handed to libzmq (ZMQ_USE_FD),
    #: so other processes can bind the same address and the kernel spreads
    #: connections over them. On a graceful stop the socket leaves the kernel's
    #: group first, so new connections go to the others. Set by ``--workers``.
    reuse_port: bool = False
    #: gunicorn's access-log atoms (h l u t r s b f a T D M L m U q H p {x}i {x}o).
    access_log_format: str = DEFAULT_ACCESS_LOG_FORMAT
    #: ``Server`` field value; empty sends none.
    server_header: str = "zmqhttp"
    date_header: bool = True

    #: Open connections at most; more get 503 and are closed. ``None``: no cap
    #: (the file-descriptor limit still applies).
    limit_connections: int | None = None
    #: Pending connections the kernel queues before we accept them (listen(2)
    #: backlog; capped by net.core.somaxconn). libzmq's default of 100 drops
    #: SYNs in a burst of new connections, costing each 1 s (uvicorn: 2048).
    backlog: int = 2048
    limit_request_line: int = _DEFAULT_LIMITS.max_request_line
    limit_request_head: int = _DEFAULT_LIMITS.max_head
    limit_request_fields: int = _DEFAULT_LIMITS.max_fields
    limit_request_field_size: int = _DEFAULT_LIMITS.max_field_size
    limit_request_body: int = _DEFAULT_LIMITS.max_body
    limit_pipeline: int = _DEFAULT_LIMITS.max_pipeline_bytes

    #: Idle time allowed between requests on a kept-alive connection
    #: (uvicorn: 5 s, nginx: 75 s). Short frees file descriptors sooner.
    timeout_keep_alive: float = 5.0
    #: Time from the first byte of a request (or from connecting) to the end of
    #: its head; the slowloris bound. nginx's client_header_timeout is 60 s.
    timeout_request_header: float = 10.0
    #: Longest pause between two pieces of a request body (nginx: 60 s).
    timeout_request_body: float = 30.0
    #: After ``Connection: close`` we wait this long for the client to close
    #: first, so libzmq never drops the tail of the response (libzmq#4763).
    timeout_linger: float = 2.0
    #: How long SIGINT/SIGTERM waits for in-flight requests before closing all.
    timeout_graceful_shutdown: float = 30.0
    #: A client that acknowledges none of our data for this long is dropped by
    #: the kernel (ZMQ_TCP_MAXRT); it is the only way out of a full pipe.
    timeout_send: float = 60.0

    #: Largest WebSocket message (uvicorn's default); larger closes with 1009.
    ws_max_size: int = 16 * MIB
    #: WebSocket messages received but not yet read by the app; more (or more
    #: unread bytes than ws_max_size) closes with 1008: a ZMQ_STREAM peer cannot
    #: be paused, so this bounds memory. High enough for bursts in one write.
    ws_max_queue: int = 256
    #: Seconds between keep-alive pings on a WebSocket; 0 disables them.
    ws_ping_interval: float = 20.0
    #: Seconds to wait for the pong before dropping the connection.
    ws_ping_timeout: float = 20.0

    #: How the kernel schedules libzmq's I/O thread (ZMQ_THREAD_SCHED_POLICY) in
    #: a context the server creates. ``batch`` (SCHED_BATCH): its wake-ups do
    #: not preempt the Python thread, so when both share a core, each response
    #: handed to libzmq no longer costs a context switch and the I/O thread
    #: moves the whole batch at once (hello world on one core: about 1.15x the
    #: requests a second, p99 unchanged). ``normal`` leaves it as libzmq starts
    #: it. Linux only; elsewhere ignored.
    io_thread_scheduling: Literal["batch", "normal"] = "batch"
    #: libzmq per-connection outbound queue, in messages (each <= 64 KiB):
    #: 64 bounds a stuck reader at 4 MiB inside libzmq.
    sndhwm: int = 64
    #: libzmq per-connection inbound queue, in messages (each <= 8 KiB).
    rcvhwm: int = 256
    #: Request body bytes kept in memory per request before spilling to disk.
    body_buffer: int = 1 * MIB
    #: Unsent response bytes per connection before the app is made to wait.
    output_high_water: int = 256 * KIB

    #: Gateway (``zmqhttp gateway``): ZeroMQ endpoints the fabric ROUTER binds,
    #: e.g. ``tcp://127.0.0.1:5555`` or ``ipc:///run/zmqhttp.sock``.
    fabric: list[str] = field(default_factory=list)
    #: Bind the fabric on non-loopback tcp:// without CURVE (anyone who can
    #: connect receives requests): only for trusted private networks.
    fabric_insecure: bool = False
    #: CURVE (``ZMQHTTP_CURVE_SECRET_KEY``): this process's own key pair, the
    #: ``NAME.key_secret`` file of ``zmqhttp keys generate``. On the gateway it
    #: turns CURVE on for every fabric endpoint (ZeroMQ security is per socket)
    #: and requires ``authorized_keys``; on a worker it is the key the gateway
    #: must find among its authorized keys. Links are then encrypted and both
    #: ends proven, so a non-loopback fabric needs no ``fabric_insecure``.
    curve_secret_key: str | None = None
    #: Worker (``ZMQHTTP_CURVE_SERVER_KEY``): the gateway's public key file
    #: (``NAME.key``). The handshake fails against any other gateway, so a man
    #: in the middle cannot receive the worker's responses.
    curve_server_key: str | None = None
    #: Gateway (``ZMQHTTP_AUTHORIZED_KEYS``): directory of the workers' public
    #: key files (``*.key``), read at startup. ZAP refuses every other key
    #: during the handshake, before the worker can send a single message.
    authorized_keys: str | None = None
    #: Gateway: requests waiting for a free worker slot at most; more get 503.
    queue_limit: int = 1000
    #: Gateway: seconds a request waits for a free worker slot before a 503.
    queue_timeout: float = 30.0
    #: Gateway: seconds from dispatch to the worker's response head before a 504,
    #: restarted whenever request body bytes go to the worker (a long upload is
    #: no reason for a 504; a worker that stops taking the body is).
    request_timeout: float = 60.0

    #: Where to serve Prometheus metrics (``GET /metrics``, plus ``/healthz`` and
    #: ``/readyz``): ``HOST:PORT`` or ``tcp://HOST:PORT``, several allowed; empty
    #: for none. A listener of its own, apart from ``bind``, so the public port
    #: never exposes them and a firewall can keep this one internal.
    metrics_bind: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.bind, str):  # Server(app, bind="127.0.0.1:8000")
            self.bind = [self.bind]
        if isinstance(self.metrics_bind, str):
            self.metrics_bind = [self.metrics_bind]

    def limits(self) -> Limits:
        return Limits(
            max_request_line=self.limit_request_line,
            max_head=self.limit_request_head,
            max_fields=self.limit_request_fields,
            max_field_size=self.limit_request_field_size,
            max_body=self.limit_request_body,
            max_pipeline_bytes=self.limit_pipeline,
        )

    def binds(self) -> list[tuple[str, int]]:
        return [parse_bind(b) for b in self.bind]

    def metrics_binds(self) -> list[tuple[str, int]]:
        return [parse_bind(b) for b in self.metrics_bind]

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]
