"""Logging (the access log) and metrics (Prometheus text format, ``--metrics-bind``)."""

from __future__ import annotations

from zmqhttp.observability.accesslog import AccessLogger, escape
from zmqhttp.observability.logs import configure_logging

__all__ = ["AccessLogger", "configure_logging", "escape"]
