"""Response framing: exact bytes for each way a body can be delimited."""

from __future__ import annotations

import pytest
from h1support import Split, all_splits, feed, get

from zmqhttp.errors import LocalProtocolError
from zmqhttp.http import (
    Data,
    EndOfMessage,
    Headers,
    Response,
    ResponseState,
    ServerConnection,
)
from zmqhttp.http.writer import (
    ChunkedWriter,
    CloseDelimitedWriter,
    LengthWriter,
    NoBodyWriter,
    reason_phrase,
    render_head,
)

DATE = b"Thu, 01 Jan 2026 00:00:00 GMT"


def connection_for(request: bytes, **kw: object) -> ServerConnection:
    conn = ServerConnection(**kw)  # type: ignore[arg-type]
    feed(conn, [request])
    return conn


def exchange(conn: ServerConnection, status: int, headers: Headers, *body: bytes) -> bytes:
    out = conn.send(Response(status, headers))
    for piece in body:
        out += conn.send(Data(piece))
    return out + conn.send(EndOfMessage())


# -- framing ------------------------------------------------------------------------


def test_content_length_given_by_the_app() -> None:
    conn = connection_for(get())
    out = exchange(conn, 200, [(b"Content-Type", b"text/plain"), (b"content-length", b"5")],
                   b"he", b"llo")
    assert out == (
        b"HTTP/1.1 200 OK\r\nServer: zmqhttp\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    )
    assert conn.response_state is ResponseState.IDLE  # cycle restarted


def test_body_longer_than_content_length_is_refused() -> None:
    conn = connection_for(get())
    conn.send(Response(200, [(b"Content-Length", b"3")]))
    assert conn.send(Data(b"ab")) == b"ab"
    with pytest.raises(LocalProtocolError):
        conn.send(Data(b"cd"))


def test_body_shorter_than_content_length_is_refused() -> None:
    conn = connection_for(get())
    conn.send(Response(200, [(b"Content-Length", b"3")]))
    conn.send(Data(b"ab"))
    with pytest.raises(LocalProtocolError):
        conn.send(EndOfMessage())


@pytest.mark.parametrize("value", [b"-1", b"+1", b"0x1", b"", b"1.0", b"1, 1"])
def test_invalid_app_content_length_is_refused(value: bytes) -> None:
    conn = connection_for(get())
    with pytest.raises(LocalProtocolError):
        conn.send(Response(200, [(b"Content-Length", value)]))
    assert conn.response_state is ResponseState.IDLE


def test_conflicting_app_content_lengths_are_refused() -> None:
    conn = connection_for(get())
    with pytest.raises(LocalProtocolError):
        conn.send(Response(200, [(b"Content-Length", b"1"), (b"Content-Length", b"2")]))


def test_equal_app_content_lengths_are_merged() -> None:
    conn = connection_for(get())
    out = exchange(conn, 200, [(b"Content-Length", b"1"), (b"Content-Length", b"1")], b"x")
    assert out == b"HTTP/1.1 200 OK\r\nServer: zmqhttp\r\nContent-Length: 1\r\n\r\nx"


def test_chunked_for_http11_without_length() -> None:
    conn = connection_for(get())
    out = exchange(conn, 200, [], b"hello", b"", b"0123456789abcdef")
    assert out == (
        b"HTTP/1.1 200 OK\r\nServer: zmqhttp\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"
    )
    assert not conn.must_close


def test_app_transfer_encoding_is_dropped() -> None:
    conn = connection_for(get())
    out = exchange(conn, 200, [(b"Transfer-Encoding", b"gzip, chunked")], b"ab")
    assert out == (
        b"HTTP/1.1 200 OK\r\nServer: zmqhttp\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nab\r\n0\r\n\r\n"
    )


def test_app_transfer_encoding_with_length_uses_the_length() -> None:
    conn = connection_for(get())
    out = exchange(conn, 200, [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"2")],
                   b"ab")
    assert out == b"HTTP/1.1 200 OK\r\nServer: zmqhttp\r\nContent-Length: 2\r\n\r\nab"


@all_splits(10)
def test_close_delimited_for_http10_without_length(split: Split) -> None:
    conn = ServerConnection()
    feed(conn, split.apply(b"GET / HTTP/1.0\r\n\r\n"))
    out = exchange(conn, 200, [], b"some ", b"bytes")
    assert out == b"HTTP/1.1 200 OK\r\nServer: zmqhttp\r\nConnection: close\r\n\r\nsome bytes"
    assert conn.close_delimited and conn.must_close


@pytest.mark.parametrize(
    ("request_bytes", "status", "headers", "expected"),
    [
        pytest.param(
            b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", 200, [(b"Content-Length", b"5")],
            b"HTTP/1.1 200 OK\r\nServer: zmqhttp\r\nContent-Length: 5\r\n\r\n",
            id="head-keeps-length",
        ),
        pytest.param(
            # The fields GET would get (RFC 9110 §9.3.2): chunked, but no body.
            b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", 200, [],
            b"HTTP/1.1 200 OK\r\nServer: zmqhttp\r\nTransfer-Encoding: chunked\r\n\r\n",
            id="head-without-length",
        ),
        pytest.param(
            get(), 204, [(b"Content-Length", b"5")],
            b"HTTP/1.1 204 No Content\r\nServer: zmqhttp\r\n\r\n",
            id="204-drops-length",
        ),
        pytest.param(
            get(), 304, [(b"ETag", b'"x"')],
            b'HTTP/1.1 304 Not Modified\r\nServer: zmqhttp\r\nETag: "x"\r\n\r\n',
            id="304",
        ),
        pytest.param(
            get(), 304, [(b"Content-Length", b"5")],
            b"HTTP/1.1 304 Not Modified\r\nServer: zmqhttp\r\nContent-Length: 5\r\n\r\n",
            id="304-keeps-length",
        ),
    ],
)
def test_no_body_responses(request_bytes: bytes, status: int, headers: Headers,
                           expected: bytes) -> None:
    conn = connection_for(request_bytes)
    out = exchange(conn, status, headers, b"hello")  # the body is dropped
    assert out == expected
    assert not conn.must_close


def test_date_and_server_fields_are_added() -> None:
    conn = connection_for(get(), date=lambda: DATE, server_header=b"test/1")
    out = exchange(conn, 200, [(b"Content-Length", b"0")])
    assert out == (
        b"HTTP/1.1 200 OK\r\nServer: test/1\r\nDate: " + DATE + b"\r\nContent-Length: 0\r\n\r\n"
    )


def test_app_date_and_server_fields_win() -> None:
    conn = connection_for(get(), date=lambda: DATE)
    out = exchange(conn, 200, [(b"date", b"x"), (b"SERVER", b"app"), (b"Content-Length", b"0")])
    assert out == b"HTTP/1.1 200 OK\r\ndate: x\r\nSERVER: app\r\nContent-Length: 0\r\n\r\n"


def test_no_server_field_when_disabled() -> None:
    conn = connection_for(get(), server_header=b"")
    out = exchange(conn, 200, [(b"Content-Length", b"0")])
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_date_callable_called_per_response() -> None:
    calls: list[int] = []

    def date() -> bytes:
        calls.append(1)
        return b"D%d" % len(calls)

    conn = ServerConnection(date=date, server_header=b"")
    for expected in (b"D1", b"D2"):
        feed(conn, [get()])
        out = exchange(conn, 200, [(b"Content-Length", b"0")])
        assert out == b"HTTP/1.1 200 OK\r\nDate: " + expected + b"\r\nContent-Length: 0\r\n\r\n"


def test_custom_reason_and_unknown_status() -> None:
    conn = connection_for(get(), server_header=b"")
    out = conn.send(Response(299, [(b"Content-Length", b"0")], reason=b"Fine\tThanks"))
    assert out == b"HTTP/1.1 299 Fine\tThanks\r\nContent-Length: 0\r\n\r\n"
    assert render_head(599, b"", []) == b"HTTP/1.1 599 \r\n\r\n"


# -- injection ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [b"a\r\nSet-Cookie: x=y", b"a\rb", b"a\nb", b"a\x00b", b"\r\n"]
)
def test_field_values_with_cr_lf_nul_are_refused(value: bytes) -> None:
    conn = connection_for(get())
    with pytest.raises(LocalProtocolError):
        conn.send(Response(200, [(b"X-Value", value), (b"Content-Length", b"0")]))
    assert conn.response_state is ResponseState.IDLE


@pytest.mark.parametrize("name", [b"", b"X Bad", b"X:Bad", b"X\r\nY", b"\xff"])
def test_invalid_field_names_are_refused(name: bytes) -> None:
    conn = connection_for(get())
    with pytest.raises(LocalProtocolError):
        conn.send(Response(200, [(name, b"v")]))


@pytest.mark.parametrize("reason", [b"OK\r\nSet-Cookie: x=y", b"OK\n", b"OK\r", b"O\x00K"])
def test_reason_with_control_characters_is_refused(reason: bytes) -> None:
    # Regression: the reason phrase was written unchecked (response splitting).
    conn = connection_for(get())
    with pytest.raises(LocalProtocolError):
        conn.send(Response(200, [(b"Content-Length", b"0")], reason=reason))
    assert conn.response_state is ResponseState.IDLE


@pytest.mark.parametrize("status", [0, 99, 1000, -200])
def test_invalid_status_codes_are_refused(status: int) -> None:
    with pytest.raises(LocalProtocolError):
        render_head(status, b"", [])


def test_reason_phrases_follow_rfc_9110() -> None:
    assert reason_phrase(200) == b"OK"
    assert reason_phrase(413) == b"Content Too Large"
    assert reason_phrase(414) == b"URI Too Long"
    assert reason_phrase(431) == b"Request Header Fields Too Large"
    assert reason_phrase(599) == b""


# -- the body writers alone ---------------------------------------------------------


def test_length_writer() -> None:
    writer = LengthWriter(3)
    assert writer.write(b"a") + writer.write(b"") + writer.write(b"bc") == b"abc"
    assert writer.end() == b""
    with pytest.raises(LocalProtocolError):
        writer.write(b"d")


def test_chunked_writer_never_emits_an_empty_chunk_early() -> None:
    writer = ChunkedWriter()
    assert writer.write(b"") == b""
    assert writer.write(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
    assert writer.end() == b"0\r\n\r\n"


def test_close_delimited_and_no_body_writers() -> None:
    assert CloseDelimitedWriter().write(b"abc") == b"abc"
    assert CloseDelimitedWriter().end() == b""
    assert NoBodyWriter().write(b"abc") == b""
    assert NoBodyWriter().end() == b""
