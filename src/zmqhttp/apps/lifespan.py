"""The ASGI lifespan protocol (startup and shutdown events).

Strategy: the app's lifespan call runs as one task for the server's whole life.
``startup()`` sends ``lifespan.startup`` and waits for the answer; ``shutdown()``
sends ``lifespan.shutdown`` after the last connection closed. In ``auto`` mode an
app that raises on the lifespan scope is taken not to support it (as uvicorn
does); in ``on`` mode that is an error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from zmqhttp.errors import ZmqHttpError

__all__ = ["Lifespan", "LifespanFailure"]

log = logging.getLogger("zmqhttp.error")

# How long shutdown waits for the app's lifespan.shutdown.complete.
_SHUTDOWN_TIMEOUT = 30.0


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


class LifespanFailure(ZmqHttpError):
    """Startup failed: the server must not start (the CLI exits non-zero)."""


class Lifespan:
    """Runs an ASGI app's lifespan protocol.

    Args:
        app: the ASGI 3 callable.
        mode: ``auto``, ``on`` or ``off``.
        state: the dict handed to the app as ``scope["state"]``; request scopes
            get a shallow copy of it.
    """

    def __init__(self, app: Any, mode: str, state: dict[str, Any]) -> None:
        self._app = app
        self._mode = mode
        self.state = state
        self._task: asyncio.Task[None] | None = None
        self._messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._started = asyncio.Event()
        self._stopped = asyncio.Event()
        self._failure: str | None = None
        self._error: BaseException | None = None
        self._startup_complete = False

    async def startup(self) -> None:
        """Run the app's startup.

        Raises:
            LifespanFailure: the app reported ``lifespan.startup.failed``, or
                raised with ``mode="on"``.
        """
        if self._mode == "off":
            return
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._messages.put({"type": "lifespan.startup"})
        await self._started.wait()
        if self._failure is not None:
            if "\n" in self._failure.strip():
                # Starlette sends a whole traceback: log it, keep the error one line.
                log.error("Application startup failed:\n%s", self._failure)
            raise LifespanFailure(f"application startup failed: {_last_line(self._failure)}")
        if self._error is not None and self._mode == "on":
            raise LifespanFailure(f"application startup failed: {self._error!r}")
        if self._startup_complete:
            log.info("Application startup complete")

    async def shutdown(self) -> None:
        """Run the app's shutdown, if its lifespan is still running."""
        task = self._task
        if task is None or task.done() or not self._startup_complete:
            return
        await self._messages.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._stopped.wait(), _SHUTDOWN_TIMEOUT)
        except TimeoutError:
            log.error("application shutdown did not complete in %.0f s", _SHUTDOWN_TIMEOUT)
            task.cancel()
            return
        if self._failure is not None:
            log.error("application shutdown failed: %s", self._failure)
        else:
            log.info("Application shutdown complete")

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self._app(scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise  # the server is closing without a shutdown (forced stop)
        except BaseException as exc:
            self._error = exc
            if self._startup_complete:
                log.error("exception in the 'lifespan' protocol", exc_info=exc)
            elif self._mode == "auto":
                log.info("ASGI 'lifespan' protocol appears unsupported.")
            else:
                log.error("exception in the 'lifespan' protocol", exc_info=exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._started.set()
            self._stopped.set()

    def close(self) -> None:
        """Forced stop: end the app's lifespan call without a shutdown event."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _receive(self) -> dict[str, Any]:
        return await self._messages.get()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "lifespan.startup.complete":
            self._startup_complete = True
            self._started.set()
        elif kind == "lifespan.startup.failed":
            self._failure = str(message.get("message", ""))
            self._started.set()
        elif kind == "lifespan.shutdown.complete":
            self._stopped.set()
        elif kind == "lifespan.shutdown.failed":
            self._failure = str(message.get("message", ""))
            self._stopped.set()
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r}")
