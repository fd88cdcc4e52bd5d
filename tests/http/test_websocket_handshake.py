"""The WebSocket opening handshake (RFC 6455 §4.2) and the 101 switch in the sans-IO core.

Handshakes are parsed from raw bytes by :class:`ServerConnection` (whole, byte
by byte and in hypothesis-chosen splits) wherever the reader is involved, and
built as :class:`Request` values for the rules the reader cannot express.
"""

from __future__ import annotations

import pytest
from h1support import Split, all_splits, feed, get, respond

from zmqhttp.errors import BadRequest, LocalProtocolError, ProtocolError, UpgradeRequired
from zmqhttp.http import (
    PAUSED,
    EndOfMessage,
    InformationalResponse,
    Request,
    RequestState,
    ServerConnection,
)
from zmqhttp.http.websocket import accept_headers, check_handshake, subprotocols

SAMPLE_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
SAMPLE_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
# A masked text frame "Hi" (as a client sends it after the handshake).
FRAME = b"\x81\x82\x01\x02\x03\x04" + bytes(b ^ k for b, k in zip(b"Hi", b"\x01\x02", strict=True))


def handshake(*extra: bytes, key: bytes = SAMPLE_KEY, version: bytes = b"13") -> bytes:
    return get(b"/chat", b"Upgrade: websocket", b"Connection: Upgrade",
               b"Sec-WebSocket-Key: " + key, b"Sec-WebSocket-Version: " + version, *extra)


def parsed(data: bytes) -> Request:
    conn = ServerConnection()
    (request, *_) = feed(conn, [data])
    assert isinstance(request, Request)
    return request


def request(method: bytes = b"GET", version: str = "1.1",
            headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    if headers is None:
        headers = [(b"host", b"a"), (b"upgrade", b"websocket"), (b"connection", b"upgrade"),
                   (b"sec-websocket-key", SAMPLE_KEY), (b"sec-websocket-version", b"13")]
    return Request(method, b"/", b"/", b"", headers, version, b"a", upgrade=b"websocket")


# -- check_handshake -----------------------------------------------------------------


def test_valid_handshake_returns_the_key() -> None:
    assert check_handshake(parsed(handshake())) == SAMPLE_KEY


def test_connection_with_several_tokens_and_any_case() -> None:
    data = handshake().replace(b"Connection: Upgrade", b"Connection: keep-alive, UPGRADE")
    assert check_handshake(parsed(data)) == SAMPLE_KEY


@pytest.mark.parametrize(("req", "message"), [
    pytest.param(request(method=b"POST"), "must be GET", id="post"),
    pytest.param(request(method=b"HEAD"), "must be GET", id="head"),
    pytest.param(request(version="1.0"), "HTTP/1.1", id="http-1.0"),
    pytest.param(request(headers=[(b"sec-websocket-key", SAMPLE_KEY),
                                  (b"sec-websocket-version", b"13")]),
                 "Connection", id="no-connection-upgrade"),
])
def test_wrong_request_shape_is_400(req: Request, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        check_handshake(req)
    assert info.value.status == 400


@pytest.mark.parametrize("data", [
    pytest.param(handshake(version=b"8"), id="version-8"),
    pytest.param(handshake(version=b"13, 8"), id="two-versions-one-field"),
    pytest.param(handshake(b"Sec-WebSocket-Version: 8"), id="two-version-fields"),
    pytest.param(handshake().replace(b"Sec-WebSocket-Version: 13\r\n", b""), id="no-version"),
])
def test_other_version_is_426_with_ours(data: bytes) -> None:
    with pytest.raises(UpgradeRequired) as info:
        check_handshake(parsed(data))
    assert info.value.status == 426
    assert (b"Sec-WebSocket-Version", b"13") in info.value.headers


@pytest.mark.parametrize("data", [
    pytest.param(handshake().replace(b"Sec-WebSocket-Key: " + SAMPLE_KEY + b"\r\n", b""),
                 id="no-key"),
    pytest.param(handshake(b"Sec-WebSocket-Key: " + SAMPLE_KEY), id="two-keys"),
    pytest.param(handshake(key=b"c2hvcnQ="), id="decodes-to-5-bytes"),
    pytest.param(handshake(key=b"AAAAAAAAAAAAAAAAAAAAAAAA"), id="decodes-to-18-bytes"),
    pytest.param(handshake(key=b"dGhlIHNhbXBsZSBub25jZQ"), id="no-padding"),
    pytest.param(handshake(key=b"dGhlIHNhbXBsZSBub25j*Q=="), id="not-base64"),
    pytest.param(handshake(key=b""), id="empty"),
])
def test_bad_key_is_400(data: bytes) -> None:
    with pytest.raises(BadRequest, match="Sec-WebSocket-Key") as info:
        check_handshake(parsed(data))
    assert info.value.status == 400


def test_version_is_checked_before_the_key() -> None:
    # A client of another version may use another key format: it must learn our version.
    with pytest.raises(UpgradeRequired):
        check_handshake(parsed(handshake(key=b"whatever", version=b"8")))


def test_errors_are_protocol_errors_with_a_response() -> None:
    for data in (handshake(version=b"7"), handshake(key=b"x")):
        with pytest.raises(ProtocolError) as info:
            check_handshake(parsed(data))
        assert ServerConnection().send_error(info.value).startswith(
            b"HTTP/1.1 %d " % info.value.status)


# -- subprotocols and the 101's fields ----------------------------------------------


@pytest.mark.parametrize(("fields", "offered"), [
    ((), []),
    ((b"Sec-WebSocket-Protocol: chat",), ["chat"]),
    ((b"Sec-WebSocket-Protocol: chat.v1, chat.v2",), ["chat.v1", "chat.v2"]),
    ((b"Sec-WebSocket-Protocol: a,b", b"Sec-WebSocket-Protocol: c"), ["a", "b", "c"]),
    ((b"Sec-WebSocket-Protocol: a, , b,",), ["a", "b"]),
])
def test_offered_subprotocols_in_order(fields: tuple[bytes, ...], offered: list[str]) -> None:
    assert subprotocols(parsed(handshake(*fields))) == offered


def test_accept_headers() -> None:
    headers = accept_headers(SAMPLE_KEY, None, [])
    assert headers == [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                       (b"Sec-WebSocket-Accept", SAMPLE_ACCEPT)]


def test_accept_headers_with_subprotocol_and_extras() -> None:
    extra = [(b"X-One", b"1"), (b"SEC-WEBSOCKET-ACCEPT", b"forged"), (b"connection", b"close"),
             (b"Upgrade", b"h2c"), (b"sec-websocket-protocol", b"other"), (b"x-two", b"2")]
    headers = accept_headers(SAMPLE_KEY, "chat", extra)
    assert headers == [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                       (b"Sec-WebSocket-Accept", SAMPLE_ACCEPT),
                       (b"Sec-WebSocket-Protocol", b"chat"),
                       (b"X-One", b"1"), (b"x-two", b"2")]


# -- the switch in ServerConnection ----------------------------------------------------


@all_splits()
def test_bytes_after_the_handshake_are_kept_for_the_new_protocol(split: Split) -> None:
    conn = ServerConnection()
    data = handshake() + FRAME + FRAME
    events = feed(conn, split.apply(data))
    assert [type(e) for e in events] == [Request, EndOfMessage]
    assert conn.next_event() is PAUSED
    head = conn.send(InformationalResponse(101, accept_headers(SAMPLE_KEY, None, [])))
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: " + SAMPLE_ACCEPT + b"\r\n" in head
    assert head.endswith(b"\r\n\r\n")
    assert conn.request_state is RequestState.SWITCHED
    assert conn.trailing_data() == FRAME + FRAME
    assert conn.trailing_data() == b""  # handed over once


@all_splits()
def test_refused_upgrade_parses_what_followed_as_http(split: Split) -> None:
    conn = ServerConnection()
    events = feed(conn, split.apply(handshake() + get(b"/next")))
    assert [type(e) for e in events] == [Request, EndOfMessage]
    respond(conn, 200, None, b"plain")
    events = feed(conn, [])
    assert [type(e) for e in events] == [Request, EndOfMessage]
    assert isinstance(events[0], Request) and events[0].target == b"/next"
    assert events[0].upgrade is None


def test_101_only_for_an_upgrade_request() -> None:
    conn = ServerConnection()
    feed(conn, [get(b"/")])
    with pytest.raises(LocalProtocolError):
        conn.send(InformationalResponse(101, []))


def test_101_not_after_the_response_started() -> None:
    conn = ServerConnection()
    feed(conn, [handshake()])
    respond(conn, 403, None, b"no")
    with pytest.raises(LocalProtocolError):
        conn.send(InformationalResponse(101, []))


def test_trailing_data_only_after_a_switch() -> None:
    conn = ServerConnection()
    feed(conn, [handshake() + FRAME])
    with pytest.raises(LocalProtocolError):
        conn.trailing_data()
