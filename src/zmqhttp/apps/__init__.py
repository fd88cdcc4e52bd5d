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
    call = app if inspect.isfunction(app) or inspect.ismethod(app) else getattr(app, "__call__", app)
    if inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(app):
        return "asgi"
    return "wsgi"


def make_adapter(app: Any, config: Config) -> AppAdapter:
    """The adapter for ``config.interface`` (``auto`` detects it).

    Raises:
        AppLoadError: the app is of an interface this server cannot run.
    """
    interface = config.interface
    if interface == "auto":
        interface = detect_interface(app)
    if interface == "wsgi":
        return WSGIAdapter(app, config)
    raise AppLoadError(f"interface {interface!r} is not supported by this version (WSGI only)")
