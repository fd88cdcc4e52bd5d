"""Importing ``MODULE:ATTR`` the way uvicorn and gunicorn do."""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = ["AppLoadError", "load_app"]


class AppLoadError(Exception):
    """The application could not be imported; the message is one line for the user."""


def load_app(spec: str, *, app_dir: str | None = None, factory: bool = False) -> Any:
    """Import ``MODULE:ATTR`` (ATTR may be dotted); call it if ``factory``.

    The current directory is put on ``sys.path`` first (like uvicorn), then
    ``app_dir`` if given.

    Raises:
        AppLoadError: bad spec, missing module or attribute, failing factory.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AppLoadError(f'app must be given as "MODULE:ATTR", not {spec!r}')
    for path in (app_dir, ""):
        if path is not None and path not in sys.path:
            sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppLoadError(f"could not import module {module_name!r}") from None
        raise
    obj: Any = module
    try:
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise AppLoadError(f"attribute {attr!r} not found in module {module_name!r}") from None
    if factory:
        try:
            obj = obj()
        except TypeError as exc:
            raise AppLoadError(f"error calling the app factory {spec!r}: {exc}") from None
    if not callable(obj):
        raise AppLoadError(f"{spec!r} is not callable")
    return obj
