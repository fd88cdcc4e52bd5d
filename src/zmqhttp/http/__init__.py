"""Sans-IO HTTP/1.1 for the server side, with httptools (llhttp) for the grammar.

Nothing in this package performs I/O or imports zmq, asyncio, threading or socket.
"""

from __future__ import annotations

from zmqhttp.http.connection import RequestState, ResponseState, ServerConnection
from zmqhttp.http.events import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Headers,
    InformationalResponse,
    Request,
    Response,
    Sentinel,
)
from zmqhttp.http.limits import KIB, MIB, Limits

__all__ = [
    "KIB",
    "MIB",
    "NEED_DATA",
    "PAUSED",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Event",
    "Headers",
    "InformationalResponse",
    "Limits",
    "Request",
    "RequestState",
    "Response",
    "ResponseState",
    "Sentinel",
    "ServerConnection",
]
