"""WorkerPool: lazy wake-ups for calls that never block, every thread for calls that do."""

from __future__ import annotations

import asyncio
import threading
import time

from zmqhttp.server.threads import WorkerPool


async def run_calls(pool: WorkerPool, count: int, work: float) -> tuple[set[str], float]:
    """Submit ``count`` calls at once from the loop; return the threads used and the time."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    names: set[str] = set()
    finished = [0]
    lock = threading.Lock()

    def call() -> None:
        if work:
            time.sleep(work)
        with lock:
            names.add(threading.current_thread().name)
            finished[0] += 1
            if finished[0] == count:
                loop.call_soon_threadsafe(done.set)

    start = time.monotonic()
    for _ in range(count):
        pool.submit(call)
    await asyncio.wait_for(done.wait(), 10)
    return names, time.monotonic() - start


def test_calls_that_never_block_run_on_one_thread() -> None:
    pool = WorkerPool(10, name="lazy", stall=0.5)
    try:
        time.sleep(0.05)  # every thread is waiting for work
        names, _ = asyncio.run(run_calls(pool, 200, 0.0))
    finally:
        pool.shutdown(wait=True)
    assert len(names) == 1  # one thread woken; nothing stalled long enough to wake more


def test_blocking_calls_get_every_thread() -> None:
    pool = WorkerPool(5, name="blocking", stall=0.01)
    try:
        time.sleep(0.05)
        names, elapsed = asyncio.run(run_calls(pool, 5, 0.3))
    finally:
        pool.shutdown(wait=True)
    # One after the other would take 1.5 s; each further thread is woken
    # about `stall` after the previous one.
    assert len(names) == 5
    assert elapsed < 0.9


def test_shutdown_finishes_queued_calls_then_stops_the_threads() -> None:
    pool = WorkerPool(2, name="stop", stall=0.01)
    ran: list[int] = []
    for i in range(20):
        pool.submit(ran.append, i)  # no loop running: each submit may wake a thread
    pool.shutdown(wait=True, timeout=5)
    assert sorted(ran) == list(range(20))
    assert not any(t.name.startswith("stop-") for t in threading.enumerate())
