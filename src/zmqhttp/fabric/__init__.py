"""The worker fabric: HTTP requests carried over ZeroMQ to worker processes.

Today this package holds the wire protocol (:mod:`zmqhttp.fabric.protocol`,
specified in ``docs/protocol.md``); the dispatcher (gateway ROUTER) and the
worker (DEALER) are built on it next.
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
