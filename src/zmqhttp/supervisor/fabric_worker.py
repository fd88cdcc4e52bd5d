"""``zmqhttp gateway MODULE:ATTR --workers N``: local fabric workers under the supervisor.

Each process imports the app itself and runs a fabric
:class:`~zmqhttp.fabric.worker.Worker` connected to the gateway's private
``ipc://`` endpoint. It tells the supervisor ``ready`` once it has sent
``Ready`` to the gateway, and stops gracefully (``Goodbye``, in-flight requests
finish) on SIGTERM or when the supervisor is gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from dataclasses import dataclass

import zmq

from zmqhttp.apps.lifespan import LifespanFailure
from zmqhttp.apps.loader import AppLoadError, load_app
from zmqhttp.config import Config
from zmqhttp.errors import ConfigError
from zmqhttp.fabric.worker import Worker
from zmqhttp.observability.logs import configure_logging
from zmqhttp.server.run import run
from zmqhttp.supervisor.channel import WorkerChannel

__all__ = ["FabricApp", "serve_fabric_worker"]

# Exit status of a worker that reported ``failed``: it will not start as configured.
_EXIT_CANNOT_START = 3


@dataclass(frozen=True)
class FabricApp:
    """The app a local fabric worker loads, and where it connects (picklable)."""

    spec: str
    connect: str
    app_dir: str | None = None
    factory: bool = False
    capacity: int | None = None


def serve_fabric_worker(channel: WorkerChannel, app: FabricApp, config: Config) -> None:
    """A worker: serve ``app`` for the gateway at ``app.connect`` until SIGTERM."""
    configure_logging(config.log_level, False)
    for handler in logging.getLogger("zmqhttp").handlers:
        handler.setFormatter(
            logging.Formatter("%(asctime)s [%(process)d] %(levelname)s: %(message)s"))
    try:
        application = load_app(app.spec, app_dir=app.app_dir, factory=app.factory)
        worker = Worker(application, config, app.connect, app.capacity, app_name=app.spec)
        forced = run(_serve(worker, channel), config.loop)
    except (AppLoadError, LifespanFailure, ConfigError) as exc:  # ConfigError: CURVE keys
        channel.failed(str(exc))
        sys.exit(_EXIT_CANNOT_START)
    except zmq.ZMQError as exc:
        channel.failed(f"cannot connect to {app.connect}: {exc}")
        sys.exit(_EXIT_CANNOT_START)
    if forced:  # application threads may still run: do not wait for them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


async def _serve(worker: Worker, channel: WorkerChannel) -> bool:
    """Run ``worker`` until SIGTERM (or the supervisor's end); a second one forces."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    await worker.start()  # Ready is sent (or queued on the connected pipe)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        channel.ready()
        channel.watch_parent(loop, stop.set)
        await stop.wait()
        stop.clear()
        stopping = loop.create_task(worker.stop())
        second = loop.create_task(stop.wait())
        await asyncio.wait({stopping, second}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            second.cancel()
            stopping.result()
            return False
        worker.close()
        return True
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
