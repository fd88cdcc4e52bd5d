"""Log set-up for the command line (embedders configure logging themselves)."""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]


def configure_logging(level: str, access_log: bool) -> None:
    """Plain lines on stderr: ``LEVEL: message`` for errors, bare lines for access."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    error_handler = logging.StreamHandler(sys.stderr)
    error_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s: %(message)s"))
    error_log = logging.getLogger("zmqhttp")
    error_log.handlers[:] = [error_handler]
    error_log.setLevel(numeric)
    error_log.propagate = False
    access = logging.getLogger("zmqhttp.access")
    access_handler = logging.StreamHandler(sys.stdout)
    access_handler.setFormatter(logging.Formatter("%(message)s"))
    access.handlers[:] = [access_handler]
    access.propagate = False
    access.setLevel(max(logging.INFO, numeric) if access_log else logging.CRITICAL + 1)
