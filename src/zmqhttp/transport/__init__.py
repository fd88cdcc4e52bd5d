"""ZeroMQ transport: the ZMQ_STREAM socket and its rules."""

from __future__ import annotations

from zmqhttp.transport.stream import SendResult, StreamHandler, StreamTransport, format_endpoint

__all__ = ["SendResult", "StreamHandler", "StreamTransport", "format_endpoint"]
