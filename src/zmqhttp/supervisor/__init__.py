"""Local worker processes: start, replace on crash, roll on SIGHUP, scale, stop.

:class:`Supervisor` is generic (any :class:`WorkerSpec`); :mod:`.edge` is its
first user, ``zmqhttp serve --workers N``.
"""

from __future__ import annotations

from zmqhttp.supervisor.channel import SUPERVISOR_SIGNALS, WorkerChannel
from zmqhttp.supervisor.supervisor import BootFailed, Supervisor, WorkerSpec, run_supervisor

__all__ = [
    "SUPERVISOR_SIGNALS",
    "BootFailed",
    "Supervisor",
    "WorkerChannel",
    "WorkerSpec",
    "run_supervisor",
]
