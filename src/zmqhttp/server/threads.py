"""Worker threads and the way back from them to the event loop.

Strategy: ``ThreadPoolExecutor.submit`` builds a Future (with its own
Condition) per call and ``loop.call_soon_threadsafe`` writes to the loop's
self-pipe per call; at tens of thousands of requests a second both show in
profiles. :class:`WorkerPool` is a fixed set of threads on a C ``SimpleQueue``;
:class:`LoopInbox` batches calls from threads so that a busy loop is woken
once for many completions, not once per completion.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["LoopInbox", "WorkerPool"]

log = logging.getLogger("zmqhttp.error")

_Call = tuple[Callable[..., Any], tuple[Any, ...]]
_STOP = object()


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
    """``threads`` daemon worker threads running submitted calls in order.

    Args:
        threads: how many calls may run at once.
        name: thread name prefix.
    """

    def __init__(self, threads: int, name: str = "zmqhttp") -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, func: Callable[..., Any], *args: Any) -> None:
        self._queue.put((func, args))

    def _work(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            func, args = item
            try:
                func(*args)
            except BaseException:
                log.exception("uncaught error in a worker thread")

    def shutdown(self, wait: bool = False, timeout: float = 5.0) -> None:
        """Stop the threads once the work queued before this call is done."""
        for _ in self._threads:
            self._queue.put(_STOP)
        if wait:
            for thread in self._threads:
                thread.join(timeout)
