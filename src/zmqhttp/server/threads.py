"""Worker threads and the way back from them to the event loop.

Strategy: ``ThreadPoolExecutor.submit`` builds a Future (with its own
Condition) per call and ``loop.call_soon_threadsafe`` writes to the loop's
self-pipe per call; at tens of thousands of requests a second both show in
profiles. :class:`WorkerPool` is a fixed set of threads on one queue, woken lazily;
:class:`LoopInbox` batches calls from threads so that a busy loop is woken
once for many completions, not once per completion.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["LoopInbox", "WorkerPool"]

log = logging.getLogger("zmqhttp.error")

_Call = tuple[Callable[..., Any], tuple[Any, ...]]


class LoopInbox:
    """Thread-safe ``call_soon`` for one loop, with one wake-up per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: deque[_Call] = deque()
        self._scheduled = False

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        self._calls.append((callback, args))  # deque.append is atomic
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._run)
            except RuntimeError:  # the loop is closed: nobody is left to answer
                self._scheduled = False

    def _run(self) -> None:
        # Reset first: a call appended after this line schedules a new run,
        # one appended before it is taken by the loop below.
        self._scheduled = False
        calls = self._calls
        while calls:
            callback, args = calls.popleft()
            try:
                callback(*args)
            except Exception:
                log.exception("error in a callback from a worker thread")


class WorkerPool:
    """``threads`` daemon worker threads running submitted calls in order, woken lazily.

    Waking a thread per call let every thread of the pool run at once even for
    an application that never blocks, and the threads then took turns on the
    GIL (WSGI hello world: 10 threads 46,200 requests a second, 2 threads
    49,400). So a call wakes a sleeping thread at once only when no thread is
    awake; otherwise the awake ones take it in turn, and if for ``stall``
    seconds calls stay queued and no thread takes one (the awake ones are
    blocked in the application: a database, a sleep), the loop wakes one more
    thread, and again while that lasts. A blocking application still gets every
    thread, each within about ``stall`` of the previous one; one that never
    blocks keeps the threads it needs to keep up, not all of them.

    Args:
        threads: how many calls may run at once.
        name: thread name prefix.
        stall: seconds a queued call may wait before another thread is woken.
    """

    def __init__(self, threads: int, name: str = "zmqhttp", stall: float = 0.001) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._jobs: deque[_Call] = deque()
        self._stall = stall
        self._awake = threads  # threads not waiting for work (all start awake)
        self._waiting = 0
        #: Calls taken by threads so far; the stall check compares it over time.
        self._taken = 0
        self._taken_at_check = 0
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, func: Callable[..., Any], *args: Any) -> None:
        """Queue ``func(*args)``; called on the event loop."""
        with self._lock:
            self._jobs.append((func, args))
            if self._awake == 0:
                self._wake_one()
                return
        if self._timer is None:
            self._taken_at_check = self._taken
            loop = self._loop
            if loop is None:
                try:
                    loop = self._loop = asyncio.get_running_loop()
                except RuntimeError:  # no loop to watch the queue: wake a thread now
                    with self._lock:
                        self._wake_one()
                    return
            self._timer = loop.call_later(self._stall, self._check_stall)

    def _wake_one(self) -> None:
        """With the lock held: wake a waiting thread, if any."""
        if self._waiting:
            self._waiting -= 1
            self._awake += 1
            self._ready.notify()

    def _check_stall(self) -> None:
        """Loop: calls queued and none taken for ``stall``: wake another thread."""
        self._timer = None
        with self._lock:
            if not self._jobs:
                return
            taken = self._taken
            if taken == self._taken_at_check:
                self._wake_one()
            self._taken_at_check = taken
            watch = self._waiting > 0
        if watch and self._loop is not None:
            self._timer = self._loop.call_later(self._stall, self._check_stall)

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            with self._lock:
                while not jobs and not self._stopping:
                    self._awake -= 1
                    self._waiting += 1
                    self._ready.wait()  # the waker moved us back to awake
                if not jobs:
                    return  # stopping, and the queue is done
                func, args = jobs.popleft()
                self._taken += 1
            try:
                func(*args)
            except BaseException:
                log.exception("uncaught error in a worker thread")

    def shutdown(self, wait: bool = False, timeout: float = 5.0) -> None:
        """Stop the threads once the work queued before this call is done."""
        with self._lock:
            self._stopping = True
            self._waiting = 0
            self._ready.notify_all()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if wait:
            for thread in self._threads:
                thread.join(timeout)
