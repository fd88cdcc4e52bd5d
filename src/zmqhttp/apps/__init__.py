"""Application adapters: how a request cycle reaches a WSGI or ASGI app."""

from __future__ import annotations

import inspect
from typing import Any

from zmqhttp.apps.asgi import ASGIAdapter, asgi2_to_asgi3
from zmqhttp.apps.lifespan import LifespanFailure
from zmqhttp.apps.loader import AppLoadError, load_app
from zmqhttp.apps.wsgi import WSGIAdapter
from zmqhttp.config import Config
from zmqhttp.server.cycle import AppAdapter

__all__ = [
    "ASGIAdapter",
    "AppLoadError",
    "LifespanFailure",
    "WSGIAdapter",
    "detect_interface",
    "load_app",
    "make_adapter",
]


def detect_interface(app: Any) -> str:
    """``"asgi3"``, ``"asgi2"`` or ``"wsgi"``, as uvicorn tells them apart.

    A coroutine function, or an object whose ``__call__`` is one, is ASGI 3; a
    class whose instances are awaitable-callables (``__call__`` a coroutine
    function) is ASGI 2; anything else is WSGI.
    """
    if inspect.iscoroutinefunction(app):
        return "asgi3"
    if inspect.isclass(app):
        call = getattr(app, "__call__", None)  # noqa: B004 - the instances' method
        return "asgi2" if call is not None and inspect.iscoroutinefunction(call) else "wsgi"
    call = getattr(type(app), "__call__", None)  # noqa: B004 - we want the method
    if call is not None and inspect.iscoroutinefunction(call):
        return "asgi3"
    return "wsgi"


def make_adapter(app: Any, config: Config) -> AppAdapter:
    """The adapter for ``config.interface`` (``auto`` detects it).

    Raises:
        AppLoadError: an interface this server cannot run.
    """
    interface: str = config.interface
    if interface == "auto":
        interface = detect_interface(app)
    elif interface == "asgi":
        interface = "asgi2" if detect_interface(app) == "asgi2" else "asgi3"
    if interface == "wsgi":
        return WSGIAdapter(app, config)
    if interface == "asgi3":
        return ASGIAdapter(app, config)
    if interface == "asgi2":
        return ASGIAdapter(asgi2_to_asgi3(app), config)
    raise AppLoadError(f"unknown interface {interface!r}")
