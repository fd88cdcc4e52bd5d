"""``zmqhttp serve --workers N``: N edge processes sharing the listening port.

Each worker imports the app and runs a whole :class:`~zmqhttp.server.Server` on
its own ``SO_REUSEPORT`` socket (``Config.reuse_port``); the kernel spreads new
connections over the processes. The supervisor holds one bound, non-listening
``SO_REUSEPORT`` socket per address: it resolves port 0 once for all workers,
fails at once (one line) when another program has the port, and keeps the port
ours while workers come and go.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass

import zmq

from zmqhttp.apps.lifespan import LifespanFailure
from zmqhttp.apps.loader import AppLoadError, load_app
from zmqhttp.config import Config
from zmqhttp.observability.logs import configure_logging
from zmqhttp.server.run import run, run_server
from zmqhttp.server.server import Server
from zmqhttp.supervisor.channel import WorkerChannel
from zmqhttp.transport.reuseport import reuse_port_socket
from zmqhttp.transport.stream import format_endpoint

__all__ = ["EdgeApp", "reserve_ports", "serve_edge"]

# Exit status of a worker that reported ``failed``: it will not start as configured.
_EXIT_CANNOT_START = 3


@dataclass(frozen=True)
class EdgeApp:
    """The app and logging a worker sets up for itself (picklable)."""

    spec: str
    app_dir: str | None = None
    factory: bool = False
    log_level: str = "info"
    access_log: bool = True


def reserve_ports(config: Config) -> tuple[list[socket.socket], Config]:
    """Bind (not listen) an SO_REUSEPORT socket per ``config.bind``.

    Returns:
        The sockets, to keep open while workers run, and ``config`` with
        every port 0 replaced by the port the kernel chose.

    Raises:
        OSError: e.g. EADDRINUSE when a socket without SO_REUSEPORT has a port.
    """
    held: list[socket.socket] = []
    binds: list[str] = []
    try:
        for host, port in config.binds():
            sock = reuse_port_socket(host, port)
            held.append(sock)
            binds.append(format_endpoint(host, sock.getsockname()[1]))
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return held, config.replace(bind=binds)


class _NotListening(logging.Filter):
    """Drops the server's ``Listening on`` lines: the supervisor says it, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Listening on")


def _configure_worker_logging(app: EdgeApp) -> None:
    configure_logging(app.log_level, app.access_log)
    for handler in logging.getLogger("zmqhttp").handlers:
        handler.setFormatter(
            logging.Formatter("%(asctime)s [%(process)d] %(levelname)s: %(message)s"))
        handler.addFilter(_NotListening())


def serve_edge(channel: WorkerChannel, app: EdgeApp, config: Config) -> None:
    """A worker: serve ``app`` on ``config.bind`` with SO_REUSEPORT until SIGTERM."""
    _configure_worker_logging(app)
    try:
        application = load_app(app.spec, app_dir=app.app_dir, factory=app.factory)
        server = Server(application, config.replace(reuse_port=True, workers=1))
        forced = run(_serve(server, channel), config.loop)
    except (AppLoadError, LifespanFailure) as exc:
        channel.failed(str(exc))
        sys.exit(_EXIT_CANNOT_START)
    except zmq.ZMQError as exc:
        channel.failed(f"cannot listen on {', '.join(config.bind)}: {exc}")
        sys.exit(_EXIT_CANNOT_START)
    if forced:  # application threads may still run: do not wait for them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


async def _serve(server: Server, channel: WorkerChannel) -> bool:
    loop = asyncio.get_running_loop()

    def started() -> None:
        channel.ready(server.endpoints)
        # An orphan would hold the port forever: stop as on SIGTERM.
        channel.watch_parent(loop, lambda: os.kill(os.getpid(), signal.SIGTERM))

    return await run_server(server, signals=(signal.SIGTERM,), on_started=started)
