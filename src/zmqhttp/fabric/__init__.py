"""The worker fabric: HTTP requests carried over ZeroMQ to worker processes.

This package re-exports the wire protocol (:mod:`zmqhttp.fabric.protocol`,
specified in ``docs/protocol.md``). The gateway's side is
:mod:`~zmqhttp.fabric.dispatcher` (with ``jobs``, ``router`` and ``relay``), the
worker's :mod:`~zmqhttp.fabric.worker` (with ``remote``); both read their
socket through :mod:`~zmqhttp.fabric.loopsocket`.
"""

from __future__ import annotations

from zmqhttp.fabric.protocol import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    MAX_METADATA_SIZE,
    REVISION,
    SIGNATURE,
    VERSION,
    BodyCredit,
    Cancel,
    CancelReason,
    Continue,
    Credit,
    Goodbye,
    Heartbeat,
    Message,
    Ready,
    RequestBody,
    RequestEnd,
    RequestHead,
    Response,
    ResponseBody,
    ResponseCredit,
    ResponseEnd,
    ResponseHead,
    Side,
    decode,
    encode,
)

__all__ = [
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_LIVENESS",
    "MAX_METADATA_SIZE",
    "REVISION",
    "SIGNATURE",
    "VERSION",
    "BodyCredit",
    "Cancel",
    "CancelReason",
    "Continue",
    "Credit",
    "Goodbye",
    "Heartbeat",
    "Message",
    "Ready",
    "RequestBody",
    "RequestEnd",
    "RequestHead",
    "Response",
    "ResponseBody",
    "ResponseCredit",
    "ResponseEnd",
    "ResponseHead",
    "Side",
    "decode",
    "encode",
]
