"""The request body as the application reads it: streamed, bounded in memory.

Strategy: the event loop feeds body pieces as they arrive; an application
thread reads them. A ZMQ_STREAM socket cannot pause one peer (libzmq reads all
peers through one socket), so instead of stalling every client when an app
reads slowly, bytes beyond ``memory_limit`` are spilled to an anonymous
temporary file, as waitress does with ``inbuf_overflow``. Memory per request is
therefore bounded by ``memory_limit``; disk by the request body limit.
"""

from __future__ import annotations

import tempfile
import threading
from collections import deque
from collections.abc import Callable
from typing import IO

from mypy_extensions import mypyc_attr

__all__ = ["ClientDisconnected", "NoBody", "RequestBody"]


# Compiled builds (setup.py): an exception subclass stays a Python class, and
# RequestBody may be subclassed by interpreted code (the fabric's WindowedBody).
@mypyc_attr(native_class=False)
class ClientDisconnected(OSError):
    """The client went away before the body (or the response) was complete."""


@mypyc_attr(allow_interpreted_subclasses=True)
class RequestBody:
    """A FIFO byte stream: loop side ``feed``/``feed_eof``/``fail``, reader side ``read``.

    Args:
        memory_limit: bytes kept in memory before spilling to a temporary file.
        on_first_read: called (from the reading thread) the first time the app
            asks for body bytes; used to send ``100 Continue``.
    """

    def __init__(self, memory_limit: int, on_first_read: Callable[[], None] | None = None) -> None:
        self._memory_limit = memory_limit
        self._on_first_read = on_first_read
        # A plain lock guards the state; the Condition (a Python object, and
        # costly to build) is made only when a reader has to wait for bytes:
        # ASGI readers never do, and most bodies are complete before the
        # app reads them.
        self._lock = threading.Lock()
        self._cond: threading.Condition | None = None
        self._chunks: deque[bytes] = deque()
        self._mem_bytes = 0
        self._file: IO[bytes] | None = None
        self._file_read = 0
        self._file_write = 0
        self._eof = False
        self._error: BaseException | None = None
        self.received = 0
        #: Called on the loop after every feed, end or failure (async readers).
        self.listener: Callable[[], None] | None = None

    # -- loop side -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        with self._lock:
            self.received += len(data)
            if self._file is not None or self._mem_bytes + len(data) > self._memory_limit:
                self._spill(data)
            else:
                self._chunks.append(data)
                self._mem_bytes += len(data)
            if self._cond is not None:
                self._cond.notify_all()
        if self.listener is not None:
            self.listener()

    def feed_eof(self) -> None:
        with self._lock:
            self._eof = True
            if self._cond is not None:
                self._cond.notify_all()
        if self.listener is not None:
            self.listener()

    def fail(self, error: BaseException) -> None:
        """The body will never complete (client gone, timeout): readers raise ``error``."""
        with self._lock:
            if not self._eof and self._error is None:  # the first cause wins
                self._error = error
            if self._cond is not None:
                self._cond.notify_all()
        if self.listener is not None:
            self.listener()

    def _wait(self) -> None:
        """Reader side, with the lock held: sleep until the loop changes the state."""
        cond = self._cond
        if cond is None:
            # Under the lock: a feeder that runs after this sees the Condition.
            cond = self._cond = threading.Condition(self._lock)
        cond.wait()

    @property
    def complete(self) -> bool:
        return self._eof

    def _spill(self, data: bytes) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="zmqhttp-body-")  # noqa: SIM115
        self._file.seek(self._file_write)
        self._file.write(data)
        self._file_write += len(data)

    # -- reader side -----------------------------------------------------------

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all remaining if negative); ``b""`` at the end.

        Raises:
            ClientDisconnected: the body cannot complete.
        """
        self._first_read()
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        if size == 0:
            return b""
        with self._lock:
            while not self._available():
                if self._eof:
                    return b""
                if self._error is not None:
                    raise self._error
                self._wait()
            return self._take(size)

    def read_nowait(self, size: int) -> bytes | None:
        """Loop side, for async readers: bytes, ``b""`` at the end, None if none yet.

        Raises:
            ClientDisconnected (or the failure cause): the body cannot complete.
        """
        self._first_read()
        with self._lock:
            if self._available():
                return self._take(size)
            if self._eof:
                return b""
            if self._error is not None:
                raise self._error
            return None

    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def exhausted(self) -> bool:
        """Every byte of the body was received and read."""
        with self._lock:
            return self._eof and not self._available()

    def readline(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        total = 0
        while size < 0 or total < size:
            want = 8192 if size < 0 else min(8192, size - total)
            chunk = self._peek_line(want)
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if chunk.endswith(b"\n"):
                break
        return b"".join(parts)

    def _peek_line(self, limit: int) -> bytes:
        """Read up to and including a newline, at most ``limit`` bytes."""
        self._first_read()
        with self._lock:
            while not self._available():
                if self._eof:
                    return b""
                if self._error is not None:
                    raise self._error
                self._wait()
            if self._chunks:
                head = self._chunks[0]
                end = head.find(b"\n", 0, limit)
                return self._take(end + 1 if end >= 0 else min(limit, len(head)))
            data = self._take(limit)
            end = data.find(b"\n")
            if end >= 0 and end + 1 < len(data):
                # Memory is empty whenever we read the file, so the rest goes first.
                self._chunks.appendleft(data[end + 1 :])
                self._mem_bytes += len(data) - end - 1
                data = data[: end + 1]
            return data

    def _first_read(self) -> None:
        callback, self._on_first_read = self._on_first_read, None
        if callback is not None:
            callback()

    def _available(self) -> bool:
        return bool(self._chunks) or self._file_read < self._file_write

    def _take(self, size: int) -> bytes:
        if self._chunks:
            head = self._chunks.popleft()
            if len(head) > size:
                self._chunks.appendleft(head[size:])
                head = head[:size]
            self._mem_bytes -= len(head)
            return head
        assert self._file is not None
        self._file.seek(self._file_read)
        data = self._file.read(min(size, self._file_write - self._file_read))
        self._file_read += len(data)
        if self._file_read == self._file_write:
            self._file.close()  # everything spilled was read: back to memory
            self._file = None
            self._file_read = self._file_write = 0
        return data

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._chunks.clear()


class NoBody(RequestBody):
    """The body of a request without one: always at its end, nothing to lock."""

    def __init__(self) -> None:  # no Condition, no buffers: most requests are GETs
        self._eof = True
        self.received = 0
        self.listener = None

    def feed(self, data: bytes) -> None:
        raise AssertionError("a request without a body received body bytes")

    def feed_eof(self) -> None:
        pass

    def fail(self, error: BaseException) -> None:
        if self.listener is not None:
            self.listener()  # an async reader waiting for the disconnect

    def read(self, size: int = -1) -> bytes:
        return b""

    def read_nowait(self, size: int) -> bytes | None:
        return b""

    @property
    def exhausted(self) -> bool:
        return True

    def readline(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass
