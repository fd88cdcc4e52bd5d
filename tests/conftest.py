from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from zmqhttp.testing import ServerThread


@pytest.fixture
def serve() -> Iterator[Callable[..., ServerThread]]:
    """Start a real server on 127.0.0.1:random for a WSGI app; stopped at teardown."""
    started: list[ServerThread] = []

    def start(app: Any, **settings: Any) -> ServerThread:
        thread = ServerThread(app, **settings).start()
        started.append(thread)
        return thread

    yield start
    for thread in reversed(started):
        thread.stop(timeout=5)
