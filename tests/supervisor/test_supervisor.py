"""The supervisor with toy workers (no HTTP): start, crash backoff, roll, scale, stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from zmqhttp.supervisor import BootFailed, Supervisor, WorkerChannel, WorkerSpec


def sleeper(channel: WorkerChannel, delay: float = 0.0) -> None:
    """Ready after ``delay``; exits 0 on SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    time.sleep(delay)
    channel.ready([f"tcp://toy:{os.getpid()}"])
    for _ in range(600):
        time.sleep(0.1)


def crasher(channel: WorkerChannel) -> None:
    raise SystemExit(1)


def refuser(channel: WorkerChannel) -> None:
    channel.failed("cannot start: no such thing")
    raise SystemExit(3)


async def wait_until(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def run(supervisor: Supervisor, body: Callable[[], Any], timeout: float = 20) -> None:
    """Start ``supervisor``, run the coroutine ``body``, always kill what is left."""

    async def main() -> None:
        await supervisor.start()
        try:
            await body()
        finally:
            if supervisor.pids:
                supervisor.kill()
                await asyncio.wait_for(supervisor.wait_closed(), 10)

    asyncio.run(asyncio.wait_for(main(), timeout))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_and_graceful_stop() -> None:
    supervisor = Supervisor(WorkerSpec(sleeper), 2, stop_timeout=5)

    async def body() -> None:
        await wait_until(lambda: len(supervisor.ready_pids) == 2)
        pids = supervisor.pids
        await asyncio.wait_for(supervisor.stop(), 10)
        assert supervisor.pids == []
        assert not any(alive(pid) for pid in pids)

    run(supervisor, body)


def test_dead_worker_is_replaced() -> None:
    supervisor = Supervisor(WorkerSpec(sleeper), 2, stop_timeout=5)

    async def body() -> None:
        await wait_until(lambda: len(supervisor.ready_pids) == 2)
        victim = supervisor.pids[0]
        os.kill(victim, signal.SIGKILL)
        await wait_until(lambda: len(supervisor.ready_pids) == 2 and victim not in supervisor.pids)

    run(supervisor, body)


def test_crash_loop_backs_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "zmqhttp")
    supervisor = Supervisor(WorkerSpec(crasher), 2, stop_timeout=5)

    async def body() -> None:
        await asyncio.sleep(3)

    run(supervisor, body)
    starts = [r for r in caplog.records if r.getMessage().endswith(" started")]
    # 2 at once, 2 more after 0.5-1 s, then the delay is 2-4 s.
    assert 2 <= len(starts) <= 6, [r.getMessage() for r in caplog.records]
    assert any("died before it was ready (exit code 1); next start in" in r.getMessage()
               for r in caplog.records)


def test_first_workers_reporting_failure_is_fatal() -> None:
    supervisor = Supervisor(WorkerSpec(refuser), 2, stop_timeout=5)

    async def body() -> None:
        with pytest.raises(BootFailed, match="no such thing"):
            await asyncio.wait_for(supervisor.wait_closed(), 10)

    run(supervisor, body)


def test_rolling_restart_readies_the_new_before_stopping_the_old(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "zmqhttp")
    supervisor = Supervisor(WorkerSpec(sleeper, (0.3,)), 2, stop_timeout=5)
    seen_ready: list[int] = []

    async def body() -> None:
        await wait_until(lambda: len(supervisor.ready_pids) == 2)
        old = set(supervisor.pids)
        supervisor.reload()
        deadline = time.monotonic() + 10
        while not (set(supervisor.pids).isdisjoint(old) and len(supervisor.ready_pids) == 2):
            assert time.monotonic() < deadline, "rolling restart did not finish"
            seen_ready.append(len(supervisor.ready_pids))
            await asyncio.sleep(0.01)

    run(supervisor, body)
    assert min(seen_ready) >= 2  # never fewer than 2 serving workers
    messages = [r.getMessage() for r in caplog.records]
    assert "rolling restart done" in messages


def test_scale_up_and_down() -> None:
    supervisor = Supervisor(WorkerSpec(sleeper), 2, stop_timeout=5)

    async def body() -> None:
        await wait_until(lambda: len(supervisor.ready_pids) == 2)
        supervisor.scale(1)
        await wait_until(lambda: len(supervisor.ready_pids) == 3)
        supervisor.scale(-1)
        await wait_until(lambda: len(supervisor.pids) == 2)
        supervisor.scale(-5)
        await wait_until(lambda: len(supervisor.pids) == 1)
        assert supervisor.target == 1

    run(supervisor, body)
