"""The worker's side: its pipe to the supervisor, and how a worker process begins.

A worker tells the supervisor ``ready`` once it serves (the supervisor waits for
it before stopping an old worker in a rolling restart) or ``failed`` with a
one-line reason when it cannot start because of its configuration. The
supervisor never writes: end-of-file on the pipe means it is gone, and a worker
then stops by itself instead of holding the port as an orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["SUPERVISOR_SIGNALS", "WorkerChannel"]

#: Signals meant for the supervisor alone. Workers ignore them: a Ctrl-C reaches
#: the whole process group, and the supervisor relays it as SIGTERM, once.
SUPERVISOR_SIGNALS: frozenset[signal.Signals] = frozenset(
    {signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU}
)


class WorkerChannel:
    """The worker's end of its pipe to the supervisor."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def ready(self, endpoints: Sequence[str] = ()) -> None:
        """Tell the supervisor this worker serves, listening on ``endpoints``."""
        self._send(("ready", list(endpoints)))

    def failed(self, message: str) -> None:
        """Tell the supervisor this worker cannot start, in one line for the user."""
        self._send(("failed", message))

    def watch_parent(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, on ``loop``, when the supervisor is gone."""
        fd = self._conn.fileno()

        def readable() -> None:  # never written to: readable means end-of-file
            loop.remove_reader(fd)
            callback()

        loop.add_reader(fd, readable)

    def _send(self, message: tuple[str, Any]) -> None:
        # The supervisor may be gone: watch_parent then stops us.
        with contextlib.suppress(OSError, EOFError):
            self._conn.send(message)


def worker_main(target: Callable[..., None], conn: Connection, args: tuple[Any, ...]) -> None:
    """The first code a worker process runs (``multiprocessing`` spawn target)."""
    for signum in SUPERVISOR_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    # The supervisor blocked them around the spawn, so none came in before now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISOR_SIGNALS)
    target(WorkerChannel(conn), *args)
