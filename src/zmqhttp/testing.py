"""Testing helpers, shipped as product (trio's habit).

* :class:`ServerThread` runs a real :class:`~zmqhttp.Server` on a real
  ZMQ_STREAM socket, bound to a random loopback port, on its own event loop in
  a background thread, so blocking clients (``http.client``, raw sockets,
  ``httpx``) can talk to it from a test.
* :class:`WorkerThread` runs a fabric :class:`~zmqhttp.fabric.worker.Worker`
  the same way, connected to a gateway (e.g. a ``ServerThread`` with
  ``adapter=FabricAdapter``), to test an app through the fabric in one process.
* :func:`splits` yields a byte string cut in the ways h11 tests its readers:
  whole, one byte at a time, and at every single position.
* :class:`~zmqhttp.server.clock.ManualClock` (re-exported) moves only when told.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from zmqhttp.config import Config
from zmqhttp.server.clock import ManualClock
from zmqhttp.server.cycle import AppAdapter
from zmqhttp.server.server import Server

__all__ = ["ManualClock", "ServerThread", "WorkerThread", "splits"]


def splits(data: bytes) -> Iterator[list[bytes]]:
    """``data`` whole, byte by byte, and split in two at every position."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


class ServerThread:
    """A server on a background thread, for tests and notebooks.

    Args:
        app: the WSGI or ASGI application (None with a custom adapter).
        adapter: builds the AppAdapter from the merged Config, e.g.
            ``FabricAdapter`` to test the gateway.
        config: base settings; ``bind`` defaults to a random loopback port.
        startup_timeout: seconds to wait for the server to listen.
        **settings: Config fields to override.

    Use as a context manager; :attr:`url` is ``http://127.0.0.1:PORT``.
    """

    def __init__(self, app: Any, config: Config | None = None, *,
                 startup_timeout: float = 10.0,
                 adapter: Callable[[Config], AppAdapter] | None = None,
                 **settings: Any) -> None:
        settings.setdefault("bind", ["tcp://127.0.0.1:0"])
        settings.setdefault("access_log", False)
        merged = (config or Config()).replace(**settings)
        #: The adapter built by ``adapter(config)``, if one was given.
        self.adapter = adapter(merged) if adapter is not None else None
        self.server = Server(app, merged, adapter=self.adapter)
        self._startup_timeout = startup_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="zmqhttp-test-server", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return int(self.server.endpoints[0].rsplit(":", 1)[1])

    @property
    def host(self) -> str:
        """The bound host; wildcard binds report the matching loopback address."""
        host = self.server.server_address[0]
        return {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)

    @property
    def url(self) -> str:
        host = self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(self._startup_timeout):
            raise TimeoutError("server did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_until_complete(self.server.wait_closed())
        self._loop.close()

    def call(self, func: Any, *args: Any) -> Any:
        """Run ``func(*args)`` on the server's loop and return its result."""
        done = threading.Event()
        result: list[Any] = []

        def run() -> None:
            try:
                result.append(func(*args))
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(10):
            raise TimeoutError("server loop did not answer")
        return result[0] if result else None

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (in-flight requests finish), bounded by ``timeout``."""
        if not self._thread.is_alive():
            return
        if self.server.closed:
            # Already closed (server.close()): the loop is ending on its own.
            self._thread.join(timeout + 5)
            return
        future = asyncio.run_coroutine_threadsafe(self.server.stop(timeout), self._loop)
        self._thread.join(timeout + 5)
        if future.done() and future.exception() is not None:
            raise RuntimeError("server.stop() failed") from future.exception()
        if self._thread.is_alive():
            raise TimeoutError("server thread did not stop")

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class WorkerThread:
    """A fabric worker on a background thread, serving ``app`` for the gateway at ``connect``.

    Args:
        app: the WSGI or ASGI application.
        connect: the gateway's fabric endpoint, e.g. ``FabricAdapter.endpoints[0]``.
        config: the worker's settings (``access_log`` off by default).
        startup_timeout: seconds to wait for the worker to connect.
        **options: passed on to :class:`~zmqhttp.fabric.worker.Worker`
            (``capacity``, ``context``, ``heartbeat_interval``, ...).

    ``start()`` returns it running; use as a context manager or call :meth:`stop`.
    """

    def __init__(self, app: Any, connect: str, config: Config | None = None, *,
                 startup_timeout: float = 10.0, **options: Any) -> None:
        from zmqhttp.fabric.worker import Worker  # the fabric only when asked for

        merged = config if config is not None else Config(access_log=False)
        options.setdefault("capacity", merged.threads)
        self.worker = Worker(app, merged, connect, **options)
        self.loop = asyncio.new_event_loop()
        self._startup_timeout = startup_timeout
        self._thread = threading.Thread(target=self._run, name="zmqhttp-test-worker",
                                        daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> WorkerThread:
        self._thread.start()
        if not self._ready.wait(self._startup_timeout):
            raise TimeoutError("fabric worker did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.worker.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful: Goodbye, finish what is in flight (bounded by ``timeout``), close."""
        if self.loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self.worker.stop(timeout), self.loop)
            with contextlib.suppress(Exception):  # the test's own result stands
                future.result(timeout + 5)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()

    def freeze(self) -> None:
        """Stop answering anything, without a Goodbye: a hung or unplugged worker."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def __enter__(self) -> WorkerThread:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
