"""A supervisor of local worker processes: start, replace, roll, scale, stop.

Strategy: the supervisor runs on an asyncio loop and owns no socket. Each worker
is a ``multiprocessing`` process started with the *spawn* method, and two file
descriptors per worker drive everything: the process sentinel (readable when it
exits) and a pipe on which the worker says ``ready`` or ``failed``. After every
event :meth:`Supervisor._reconcile` compares what runs with what is wanted
(``target`` workers, none of them from before a SIGHUP) and takes the next
step, so crashes, rolling restarts and scaling compose instead of each having
its own state machine.

Why spawn and ``multiprocessing`` rather than ``subprocess`` of
``python -m zmqhttp``: a worker receives the exact, already resolved
:class:`~zmqhttp.config.Config` (flags, environment and TOML file merged once)
and the readiness pipe as Python objects, with no second command line to keep in
step with the first. Spawn rather than fork: a forked child would inherit the
parent's threads and asyncio loop half-alive, and libzmq contexts do not survive
fork; a spawned child is a fresh interpreter that imports the app itself.

Workers stop by PID only: SIGTERM (graceful), then SIGKILL if a worker is
still there ``stop_timeout`` plus a margin later. A worker that dies unexpectedly
is replaced; one that dies before being ready, or soon after, counts as a
failure, and failures in a row delay the next start exponentially (capped), so
an app that crashes at import costs a few starts a minute, not a busy loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from zmqhttp.supervisor.channel import SUPERVISOR_SIGNALS, worker_main

__all__ = ["BootFailed", "Supervisor", "WorkerSpec", "run_supervisor"]

log = logging.getLogger("zmqhttp.error")

# First delay after a failure; doubles with each failure in a row.
_BACKOFF_FIRST = 0.5
# Longest delay between two starts while workers keep failing.
_BACKOFF_MAX = 30.0
# A worker ready this long before dying was healthy: its death is no failure
# and the next start is immediate.
_STABLE_AFTER = 10.0
# Extra seconds after stop_timeout before a stopping worker is killed: the
# worker's own deadline is stop_timeout, then it still has to exit.
_KILL_MARGIN = 5.0


class BootFailed(Exception):
    """No worker could start, for a reason that retrying will not change."""


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker runs: ``target(channel, *args)`` in a fresh interpreter.

    ``target`` must be importable by name (a module-level function) and
    ``args`` picklable. The target calls ``channel.ready()`` once it serves.
    """

    target: Callable[..., None]
    args: tuple[Any, ...] = ()
    #: Used in process names and log lines.
    name: str = "worker"


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    pid: int
    ready_at: float | None = None
    #: We asked it to stop: its exit is expected.
    stopping: bool = False
    #: Its ``failed`` message, if it sent one.
    failure: str | None = None
    kill_timer: asyncio.TimerHandle | None = field(default=None, repr=False)


def _describe(exitcode: int | None) -> str:
    if exitcode is None:
        return "unknown status"
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"


class Supervisor:
    """Keeps ``workers`` processes of ``spec`` running.

    Args:
        spec: what each worker runs.
        workers: how many to keep running.
        stop_timeout: seconds a worker has to finish after SIGTERM (its
            graceful shutdown deadline) before it is killed.

    From asyncio: ``await start()``, then :meth:`reload`, :meth:`scale`,
    ``await stop()`` or :meth:`kill`; :meth:`wait_closed` returns when all
    workers are gone after a stop, and raises :class:`BootFailed` if the first
    workers could not start at all.
    """

    def __init__(self, spec: WorkerSpec, workers: int, *, stop_timeout: float = 30.0) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.spec = spec
        self.target = workers
        self.stop_timeout = stop_timeout
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}  # by PID, oldest first
        self._outdated: set[int] = set()  # PIDs a rolling restart must replace
        self._failures = 0
        self._not_before = 0.0  # loop time before which no worker starts
        self._wake: asyncio.TimerHandle | None = None
        self._ever_ready = False
        self._stopping = False
        self._fatal: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gone: asyncio.Event | None = None

    @property
    def pids(self) -> list[int]:
        """PIDs of the running workers, oldest first."""
        return list(self._workers)

    @property
    def ready_pids(self) -> list[int]:
        """PIDs of the workers that said they serve and were not asked to stop."""
        return [w.pid for w in self._workers.values() if w.ready_at is not None
                and not w.stopping]

    async def start(self) -> None:
        """Start the workers; returns at once (readiness is logged)."""
        self._loop = asyncio.get_running_loop()
        self._gone = asyncio.Event()
        self._reconcile()

    def reload(self) -> None:
        """Rolling restart: replace each worker, one at a time, new one ready first."""
        if self._stopping:
            return
        self._outdated = {w.pid for w in self._workers.values() if not w.stopping}
        log.info("replacing %d workers one at a time", len(self._outdated))
        self._reconcile()

    def scale(self, delta: int) -> None:
        """Run ``delta`` more (or fewer) workers; never fewer than one."""
        if self._stopping:
            return
        self.target = max(1, self.target + delta)
        log.info("%d workers wanted", self.target)
        self._reconcile()

    async def stop(self) -> None:
        """Stop every worker gracefully and wait until all have exited."""
        self._begin_stop()
        await self.wait_closed()

    def kill(self) -> None:
        """Stop at once: SIGKILL every worker."""
        self._begin_stop()
        for worker in list(self._workers.values()):
            self._signal(worker, signal.SIGKILL)

    async def wait_closed(self) -> None:
        """Wait until a stop has ended every worker.

        Raises:
            BootFailed: the first workers reported they cannot start.
        """
        assert self._gone is not None, "supervisor not started"
        await self._gone.wait()
        if self._fatal is not None:
            raise BootFailed(self._fatal)

    # -- the reconciler ---------------------------------------------------------------

    def _reconcile(self) -> None:
        """Take the next steps from what runs towards what is wanted."""
        while not self._stopping:
            active = [w for w in self._workers.values() if not w.stopping]
            missing = self.target - len(active)
            if missing > 0:
                self._start(missing)
                return
            booting = [w for w in active if w.ready_at is None]
            outdated = [w for w in active if w.pid in self._outdated]
            if outdated:
                if booting:
                    return  # the replacement must serve before an old one stops
                if missing < 0:
                    self._terminate(outdated[0])
                    if len(outdated) == 1:
                        log.info("rolling restart done")
                    continue
                self._start(1)
                return
            if missing < 0:
                self._terminate((booting or active)[0])
                continue
            return

    def _start(self, count: int) -> None:
        loop = self._loop
        assert loop is not None
        if loop.time() < self._not_before:
            if self._wake is None:
                self._wake = loop.call_at(self._not_before, self._wake_up)
            return
        for _ in range(count):
            try:
                self._spawn()
            except OSError:
                log.exception("cannot start a %s process", self.spec.name)
                self._failed_once(loop.time())
                self._wake = self._wake or loop.call_at(self._not_before, self._wake_up)
                return

    def _wake_up(self) -> None:
        self._wake = None
        self._reconcile()

    def _spawn(self) -> None:
        loop = self._loop
        assert loop is not None
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main, args=(self.spec.target, child_end, self.spec.args),
            name=f"zmqhttp-{self.spec.name}",
        )
        # Inherited across exec: the worker ignores them before unblocking, so
        # a Ctrl-C while it boots cannot reach it.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISOR_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            child_end.close()
        assert process.pid is not None
        worker = _Worker(process, parent_end, process.pid)
        self._workers[worker.pid] = worker
        loop.add_reader(process.sentinel, self._on_exit, worker)
        loop.add_reader(parent_end.fileno(), self._on_message, worker)
        log.info("%s %d started", self.spec.name, worker.pid)

    # -- worker events --------------------------------------------------------------

    def _on_message(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                kind, value = worker.conn.recv()
                if kind == "ready":
                    self._on_ready(worker, value)
                elif kind == "failed":
                    worker.failure = str(value)
        except (EOFError, OSError):
            # The worker is exiting; its sentinel brings us to _on_exit.
            assert self._loop is not None
            self._loop.remove_reader(worker.conn.fileno())

    def _on_ready(self, worker: _Worker, endpoints: list[str]) -> None:
        assert self._loop is not None
        worker.ready_at = self._loop.time()
        log.info("%s %d ready", self.spec.name, worker.pid)
        if not self._ever_ready:
            self._ever_ready = True
            for endpoint in endpoints:
                log.info("Listening on %s", endpoint)
        self._reconcile()

    def _on_exit(self, worker: _Worker) -> None:
        loop = self._loop
        assert loop is not None
        self._on_message(worker)  # a last "failed" may still be in the pipe
        loop.remove_reader(worker.process.sentinel)
        loop.remove_reader(worker.conn.fileno())
        worker.process.join(1)
        exitcode = worker.process.exitcode
        if worker.kill_timer is not None:
            worker.kill_timer.cancel()
        del self._workers[worker.pid]
        self._outdated.discard(worker.pid)
        worker.conn.close()
        if worker.stopping or self._stopping:
            log.info("%s %d stopped (%s)", self.spec.name, worker.pid, _describe(exitcode))
        else:
            self._on_crash(worker, exitcode, loop.time())
        if self._stopping and not self._workers and self._gone is not None:
            self._gone.set()
        self._reconcile()

    def _on_crash(self, worker: _Worker, exitcode: int | None, now: float) -> None:
        reason = worker.failure or _describe(exitcode)
        if worker.failure is not None and not self._ever_ready:
            # A configuration error (bad MODULE:ATTR, ...): no retry will help.
            self._fatal = worker.failure
            self._begin_stop()
            return
        if worker.ready_at is not None and now - worker.ready_at >= _STABLE_AFTER:
            self._failures = 0
            log.warning("%s %d died (%s); starting a new one", self.spec.name, worker.pid,
                        reason)
            return
        delay = self._failed_once(now)
        when = "before it was ready" if worker.ready_at is None else "soon after starting"
        log.error("%s %d died %s (%s); next start in %.1f s (%d failures in a row)",
                  self.spec.name, worker.pid, when, reason, delay, self._failures)

    def _failed_once(self, now: float) -> float:
        self._failures += 1
        delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2.0 ** (self._failures - 1))
        self._not_before = max(self._not_before, now + delay)
        return delay

    # -- stopping -----------------------------------------------------------------------

    def _begin_stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        for worker in list(self._workers.values()):
            self._terminate(worker)
        if not self._workers and self._gone is not None:
            self._gone.set()

    def _terminate(self, worker: _Worker) -> None:
        if worker.stopping:
            return
        worker.stopping = True
        self._signal(worker, signal.SIGTERM)
        assert self._loop is not None
        worker.kill_timer = self._loop.call_later(
            self.stop_timeout + _KILL_MARGIN, self._kill_late, worker)

    def _kill_late(self, worker: _Worker) -> None:
        log.warning("%s %d did not stop in time; killing it", self.spec.name, worker.pid)
        self._signal(worker, signal.SIGKILL)

    def _signal(self, worker: _Worker, signum: signal.Signals) -> None:
        # Only workers not yet reaped are in the table: the PID is still theirs.
        if worker.pid in self._workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signum)


async def run_supervisor(supervisor: Supervisor) -> bool:
    """Run ``supervisor`` until SIGINT/SIGTERM, then stop the workers gracefully.

    SIGHUP restarts the workers one at a time, SIGTTIN adds one, SIGTTOU removes
    one. A second SIGINT/SIGTERM kills the workers.

    Returns:
        True if a second signal forced the stop.

    Raises:
        BootFailed: the first workers could not start (the message says why).
    """
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    forced: list[bool] = []

    def on_stop(signum: signal.Signals) -> None:
        if stopping:
            log.warning("second %s: killing the workers", signum.name)
            forced.append(True)
            supervisor.kill()
            return
        log.info("%s: stopping the workers gracefully", signum.name)
        stopping.append(loop.create_task(supervisor.stop()))

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
        await supervisor.wait_closed()
        for task in stopping:
            await task
    finally:
        for signum in handlers:
            loop.remove_signal_handler(signum)
    return bool(forced)
