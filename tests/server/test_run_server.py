"""run_server: a signal starts a graceful stop; a stop that fails still ends the run."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

import pytest

from zmqhttp.server.run import loop_factory, run, run_server


class FailingStopServer:
    """Stands in for Server (run_server only starts, stops, closes and waits)."""

    def __init__(self) -> None:
        self._closed = asyncio.Event()
        self.closed_by_force = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        raise RuntimeError("injected failure in stop")

    def close(self) -> None:
        self.closed_by_force = True
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_failing_graceful_stop_closes_instead_of_hanging(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = FailingStopServer()

    async def main() -> bool:
        started = lambda: os.kill(os.getpid(), signal.SIGUSR1)  # noqa: E731
        fake: Any = server
        return await asyncio.wait_for(
            run_server(fake, signals=(signal.SIGUSR1,), on_started=started), 10)

    with caplog.at_level(logging.ERROR, logger="zmqhttp.error"):
        assert run(main(), loop) is False
    assert server.closed_by_force
    assert "graceful shutdown failed" in caplog.text


def test_loop_factory_names() -> None:
    assert loop_factory("asyncio") is asyncio.new_event_loop
    uvloop = pytest.importorskip("uvloop")
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("auto") is uvloop.new_event_loop
