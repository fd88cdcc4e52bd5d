"""Fixtures of the conformance suite: one server per module and per path.

``target`` is a running server (see :func:`confsupport.start_target`), shared by
the tests of one module and parametrized over the two ways a request can be
served: ``inprocess`` (the app in the server) and ``fabric`` (a gateway and a
worker on its own thread). A module may set ``SERVER_SETTINGS`` (a dict of
Config fields) to start its servers with other settings.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confsupport import KINDS, Target, start_target


@pytest.fixture(scope="module", params=KINDS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    settings = getattr(request.module, "SERVER_SETTINGS", {})
    with start_target(request.param, **settings) as server:
        yield server
