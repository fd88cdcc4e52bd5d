"""The WebSocket opening handshake from the server's side (RFC 6455 §4.2).

Strategy: the handshake is an HTTP request the server checks before any
application sees it; frames after it belong to wsproto. Invalid handshakes get
400 (or 426 for an unknown version) and never reach the app.
"""

from __future__ import annotations

import base64
import binascii

from wsproto.utilities import generate_accept_token

from zmqhttp.errors import BadRequest, UpgradeRequired
from zmqhttp.http.events import Headers, Request
from zmqhttp.http.fields import connection_tokens, get_header

__all__ = ["accept_headers", "check_handshake", "subprotocols"]


def check_handshake(request: Request) -> bytes:
    """Validate a WebSocket upgrade request; return its Sec-WebSocket-Key.

    Raises:
        BadRequest: not GET over HTTP/1.1, no ``Connection: upgrade``, or a
            missing or malformed key.
        UpgradeRequired: a Sec-WebSocket-Version other than 13.
    """
    if request.method != b"GET":
        raise BadRequest("WebSocket handshake must be GET")
    if request.http_version != "1.1":
        raise BadRequest("WebSocket handshake must be HTTP/1.1")
    if b"upgrade" not in connection_tokens(get_header(request.headers, b"connection")):
        raise BadRequest("WebSocket handshake without Connection: upgrade")
    versions = get_header(request.headers, b"sec-websocket-version")
    if [v.strip() for v in versions] != [b"13"]:
        raise UpgradeRequired("unsupported WebSocket version")
    keys = get_header(request.headers, b"sec-websocket-key")
    if len(keys) != 1:
        raise BadRequest("WebSocket handshake needs one Sec-WebSocket-Key")
    key = keys[0].strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise BadRequest("Sec-WebSocket-Key must encode 16 bytes")
    except binascii.Error:
        raise BadRequest("Sec-WebSocket-Key is not base64") from None
    return key


def subprotocols(request: Request) -> list[str]:
    """The subprotocols the client offers, in order (Sec-WebSocket-Protocol)."""
    offered: list[str] = []
    for value in get_header(request.headers, b"sec-websocket-protocol"):
        offered.extend(p.strip().decode("latin-1") for p in value.split(b",") if p.strip())
    return offered


def accept_headers(key: bytes, subprotocol: str | None, extra: Headers) -> Headers:
    """The fields of the 101 response that accepts the handshake."""
    headers: Headers = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", generate_accept_token(key)),
    ]
    if subprotocol is not None:
        headers.append((b"Sec-WebSocket-Protocol", subprotocol.encode("latin-1")))
    reserved = {b"upgrade", b"connection", b"sec-websocket-accept", b"sec-websocket-protocol"}
    headers.extend((n, v) for n, v in extra if n.lower() not in reserved)
    return headers
