"""Time sources, injectable so timeouts can be tested in zero time (trio's MockClock idea)."""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Protocol

__all__ = ["Clock", "DateCache", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; used for every deadline."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch; used for the Date field and the access log."""
        ...


class SystemClock:
    # The C functions themselves: read several times a request, and a Python
    # method around them doubles the cost of each read.
    monotonic = staticmethod(time.monotonic)
    wall = staticmethod(time.time)


class ManualClock:
    """A clock that moves only when told to; for tests."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        self._now += seconds


class DateCache:
    """The IMF-fixdate for the Date field (RFC 9110 §6.6.1), formatted once a second."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(self._clock.wall())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode("ascii")
        return self._value
