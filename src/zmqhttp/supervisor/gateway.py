"""``zmqhttp gateway MODULE:ATTR --workers N``: the gateway and its local workers.

One process, one loop: the HTTP :class:`~zmqhttp.server.Server` with the
fabric adapter serves while the :class:`Supervisor` keeps N fabric worker
processes (:mod:`.fabric_worker`) connected to a private ``ipc://`` endpoint.
The server never waits on the supervisor, so it keeps serving (queueing
requests for ``queue_timeout``) while workers crash, restart or roll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from zmqhttp.server.server import Server
from zmqhttp.supervisor.supervisor import BootFailed, Supervisor

__all__ = ["run_gateway"]

log = logging.getLogger("zmqhttp.error")


async def run_gateway(server: Server, supervisor: Supervisor) -> bool:
    """Serve with ``server`` and run ``supervisor``'s workers until SIGINT/SIGTERM.

    The stop is graceful: the server finishes its requests (the workers still
    serve them), then the workers stop. SIGHUP restarts the workers one at a
    time, SIGTTIN adds one, SIGTTOU removes one. A second SIGINT/SIGTERM closes
    everything at once.

    Returns:
        True if a second signal forced the stop.

    Raises:
        BootFailed: the first workers could not start (the message says why).
        zmq.ZMQError: the server could not bind.
    """
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    forced: list[bool] = []

    async def drain() -> None:
        await server.stop()  # in-flight requests finish: the workers still serve
        with contextlib.suppress(BootFailed):  # raised below, from workers_gone
            await supervisor.stop()

    def on_stop(signum: signal.Signals) -> None:
        if stopping:
            log.warning("second %s: closing everything now", signum.name)
            forced.append(True)
            server.close()
            supervisor.kill()
            return
        log.info("%s: shutting down gracefully", signum.name)
        stopping.append(loop.create_task(drain()))

    await server.start()
    handlers: dict[signal.Signals, Callable[[], None]] = {
        signal.SIGINT: lambda: on_stop(signal.SIGINT),
        signal.SIGTERM: lambda: on_stop(signal.SIGTERM),
        signal.SIGHUP: supervisor.reload,
        signal.SIGTTIN: lambda: supervisor.scale(1),
        signal.SIGTTOU: lambda: supervisor.scale(-1),
    }
    for signum, handler in handlers.items():
        loop.add_signal_handler(signum, handler)
    try:
        await supervisor.start()
        workers_gone = loop.create_task(supervisor.wait_closed())
        server_closed = loop.create_task(server.wait_closed())
        await asyncio.wait({workers_gone, server_closed}, return_when=asyncio.FIRST_COMPLETED)
        if not stopping:
            # The supervisor gave up (the app cannot start) or the server
            # closed by itself: stop the other side too.
            stopping.append(loop.create_task(drain()))
        for task in stopping:
            await task
        await server_closed
        await workers_gone  # raises BootFailed
    except BaseException:
        server.close()
        supervisor.kill()
        raise
    finally:
        for signum in handlers:
            loop.remove_signal_handler(signum)
    return bool(forced)
