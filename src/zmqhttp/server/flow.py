"""Byte budget between a response producer and a connection's output queue.

Strategy: ZMQ_STREAM offers no per-peer POLLOUT, so a slow reader shows up only
as our own output queue growing (sends report FULL). Producers (application
threads or tasks) check this budget before handing over more bytes and wait
while it is above the high-water mark; the event loop lowers it as libzmq takes
the bytes. That bounds memory per connection and slows the app, not the server.
"""

from __future__ import annotations

import threading

__all__ = ["FlowControl"]


class FlowControl:
    """Thread-safe producer/consumer byte accounting with a high/low water mark.

    Args:
        high: producers wait while more than this many bytes are unsent.
        low: waiting producers resume once at most this many bytes are unsent.
    """

    def __init__(self, high: int, low: int) -> None:
        self._high = high
        self._low = low
        self._cond = threading.Condition(threading.Lock())
        self._in_transit = 0  # handed over by the producer, not yet queued
        self._queued = 0  # in the connection's output queue
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def reserve(self, size: int) -> None:
        """Producer side: ``size`` bytes are on their way to the loop."""
        with self._cond:
            self._in_transit += size

    def wait_writable(self, poll: float | None = None) -> bool:
        """Producer side: block while over the high-water mark.

        Args:
            poll: re-check at least this often (a safety net; every change
                notifies).

        Returns False if the connection closed (the producer should stop).
        """
        with self._cond:
            while not self._closed and self._in_transit + self._queued > self._high:
                self._cond.wait(poll)
            return not self._closed

    def update(self, arrived: int, queued: int) -> None:
        """Loop side: ``arrived`` reserved bytes were queued; ``queued`` now unsent."""
        with self._cond:
            self._in_transit = max(0, self._in_transit - arrived)
            self._queued = queued
            if self._in_transit + queued <= self._low:
                self._cond.notify_all()

    def writable(self) -> bool:
        return self._closed or self._in_transit + self._queued <= self._high

    def close(self) -> None:
        """The connection is gone: wake every producer for good."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
