"""Running a server until a signal: the blocking entry point and the CLI's core.

SIGINT/SIGTERM start a graceful shutdown (in-flight requests finish, idle
connections close, ``timeout_graceful_shutdown`` bounds it); a second signal
closes everything at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from zmqhttp.config import Config
from zmqhttp.errors import ConfigError
from zmqhttp.server.server import Server

__all__ = ["loop_factory", "run", "run_server", "serve"]

log = logging.getLogger("zmqhttp.error")

T = TypeVar("T")


def loop_factory(kind: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop constructor for ``Config.loop`` (``auto``, ``asyncio``, ``uvloop``).

    Raises:
        ConfigError: ``uvloop`` was asked for and cannot be imported.
    """
    if kind == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise ConfigError("--loop uvloop: uvloop is not installed") from None
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], kind: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``kind`` chooses (see :func:`loop_factory`)."""
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        return runner.run(main)


async def run_server(
    server: Server,
    *,
    signals: Sequence[signal.Signals] = (signal.SIGINT, signal.SIGTERM),
    on_started: Callable[[], None] | None = None,
) -> bool:
    """Start ``server`` and serve until one of ``signals``, then shut down gracefully.

    Args:
        server: the server to run.
        signals: the stop signals (a supervised worker leaves SIGINT to its
            supervisor); a second one forces.
        on_started: called once the server listens and the handlers are set.

    Returns:
        True if a second signal forced the shutdown: application threads may
        still be running, and only ``os._exit`` ends the process without
        waiting for them (the CLI does that).
    """
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    forced: list[bool] = []

    def on_signal(signum: int) -> None:
        if stopping:
            log.warning("second %s: closing all connections now", signal.Signals(signum).name)
            forced.append(True)
            server.close()
            return
        log.info("%s: shutting down gracefully", signal.Signals(signum).name)
        stopping.append(loop.create_task(stop()))

    async def stop() -> None:
        try:
            await server.stop()
        except Exception:
            # Never left waiting for a close that will not come.
            log.exception("graceful shutdown failed; closing everything now")
            server.close()

    await server.start()
    # The app, its imports and the server's own objects live as long as the
    # process: move them out of the collector's reach, so that a full
    # collection walks only what requests create (gc.freeze, as forking
    # servers do after preloading; a full walk of a framework's heap shows
    # in the latency tail).
    gc.collect()
    gc.freeze()
    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        if on_started is not None:
            on_started()
        await server.wait_closed()
        for task in stopping:
            await task
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    return bool(forced)


def serve(app: Any, bind: str | list[str] | None = None, config: Config | None = None,
          **settings: Any) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; blocks the calling thread.

    Args:
        app: a WSGI or ASGI application (``interface`` tells which; auto by default).
        bind: ``HOST:PORT`` or ``tcp://HOST:PORT``, or a list of them.
        config: base settings; ``settings`` keywords override single fields
            (any :class:`~zmqhttp.config.Config` field, e.g. ``threads=20``).
    """
    config = config or Config()
    if bind is not None:
        settings["bind"] = [bind] if isinstance(bind, str) else list(bind)
    server = Server(app, config.replace(**settings) if settings else config)
    run(run_server(server), server.config.loop)
