"""The server layer: connection table, timers, flow control, shutdown."""

from __future__ import annotations

from zmqhttp.server.clock import Clock, ManualClock, SystemClock
from zmqhttp.server.cycle import AppAdapter, RequestCycle
from zmqhttp.server.run import run_server, serve
from zmqhttp.server.server import Server

__all__ = [
    "AppAdapter",
    "Clock",
    "ManualClock",
    "RequestCycle",
    "Server",
    "SystemClock",
    "run_server",
    "serve",
]
