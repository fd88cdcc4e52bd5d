"""Application adapters: how a request cycle reaches a WSGI (later ASGI) app."""

from __future__ import annotations

import inspect
from typing import Any

from zmqhttp.apps.loader import AppLoadError, load_app
from zmqhttp.apps.wsgi import WSGIAdapter
from zmqhttp.config import Config
from zmqhttp.server.cycle import AppAdapter

__all__ = ["AppLoadError", "WSGIAdapter", "detect_interface", "load_app", "make_adapter"]


def detect_interface(app: Any) -> str:
    """``"asgi"`` for coroutine callables (ASGI 3), else ``"wsgi"``."""
    if inspect.iscoroutinefunction(app):
        return "asgi"
    call = getattr(type(app), "__call__", None)  # noqa: B004 - we want the method
    if call is not None and inspect.iscoroutinefunction(call):
        return "asgi"
    return "wsgi"


def make_adapter(app: Any, config: Config) -> AppAdapter:
    """The adapter for ``config.interface`` (``auto`` detects it).

    Raises:
        AppLoadError: the app is of an interface this server cannot run.
    """
    interface: str = config.interface
    if interface == "auto":
        interface = detect_interface(app)
    if interface == "wsgi":
        return WSGIAdapter(app, config)
    raise AppLoadError(f"interface {interface!r} is not supported by this version (WSGI only)")
