"""The one exception hierarchy of zmqhttp.

Strategy: every error that ends up on the wire knows its own status code, so the
layer that catches it never has to map types to numbers (waitress's and
wsproto's habit). Errors are raised, never stored in a field for callers to check.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ConfigError",
    "ContentTooLarge",
    "FabricError",
    "FabricProtocolError",
    "HeaderFieldsTooLarge",
    "LocalProtocolError",
    "NoWorker",
    "NotImplementedByServer",
    "ProtocolError",
    "RequestTimeout",
    "ServiceUnavailable",
    "URITooLong",
    "UpgradeRequired",
    "VersionNotSupported",
    "WorkerLost",
    "WorkerTimeout",
    "ZmqHttpError",
]


class ZmqHttpError(Exception):
    """Base of every error zmqhttp raises on purpose."""


class ProtocolError(ZmqHttpError):
    """The peer broke HTTP; the server answers with :attr:`status` and closes.

    Args:
        message: what was wrong, for the log and the plain-text error body.
        status: overrides the class's default status code.
    """

    status: int = 400
    #: Extra fields for the error response (e.g. 426's Sec-WebSocket-Version).
    headers: tuple[tuple[bytes, bytes], ...] = ()

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequest(ProtocolError):
    status = 400


class RequestTimeout(ProtocolError):
    status = 408


class UpgradeRequired(ProtocolError):
    """426: a WebSocket version we do not speak (RFC 6455 §4.4)."""

    status = 426
    headers = ((b"Sec-WebSocket-Version", b"13"),)


class ContentTooLarge(ProtocolError):
    status = 413


class URITooLong(ProtocolError):
    status = 414


class HeaderFieldsTooLarge(ProtocolError):
    status = 431


class NotImplementedByServer(ProtocolError):
    """501: a method or transfer coding we do not implement (RFC 9110 §15.6.2)."""

    status = 501


class ServiceUnavailable(ProtocolError):
    status = 503


class VersionNotSupported(ProtocolError):
    status = 505


class ConfigError(ZmqHttpError, ValueError):
    """A setting the server refuses to run with (the CLI prints it in one line)."""


class LocalProtocolError(ZmqHttpError):
    """The application (our side) tried to send something HTTP does not allow.

    Examples: a body longer than its Content-Length, a second response head.
    The server logs it; if the response has not started the client gets a 500,
    otherwise the connection is closed because framing cannot be trusted.
    """

    status: int = 500


class FabricError(ZmqHttpError):
    """Base of errors of the worker fabric (no worker, worker lost, timeout)."""

    status: int = 502


class FabricProtocolError(FabricError):
    """A fabric message broke the wire protocol (``docs/protocol.md``).

    Raised by :func:`zmqhttp.fabric.protocol.decode` for anything malformed and
    by :func:`~zmqhttp.fabric.protocol.encode` for metadata over the size bound.
    A peer that receives one drops that message and logs it; it never crashes.
    """


class NoWorker(FabricError):
    """503: no worker had a free slot before the queue filled or timed out."""

    status = 503


class WorkerLost(FabricError):
    """502: the worker serving the request went silent, restarted or broke the protocol."""

    status = 502


class WorkerTimeout(FabricError):
    """504: the worker did not start its response within the request timeout."""

    status = 504
