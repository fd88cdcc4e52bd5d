"""Request parsing: framing, Host rules, targets, errors and limits.

Each rule is fed whole, byte by byte and in hypothesis-chosen splits
(:func:`h1support.all_splits`), through the public ServerConnection API.
"""

from __future__ import annotations

from collections import deque

import pytest
from h1support import Split, all_splits, drive, feed, get, respond

from zmqhttp.errors import (
    BadRequest,
    ContentTooLarge,
    HeaderFieldsTooLarge,
    NotImplementedByServer,
    ProtocolError,
    URITooLong,
    VersionNotSupported,
)
from zmqhttp.http import (
    NEED_DATA,
    PAUSED,
    Data,
    EndOfMessage,
    Limits,
    Request,
    ServerConnection,
)
from zmqhttp.http.reader import ParseError, QueueItem, RequestReader

HOST = (b"host", b"example.com")


def request(
    method: bytes = b"GET",
    target: bytes = b"/",
    headers: list[tuple[bytes, bytes]] | None = None,
    **kw: object,
) -> Request:
    """The Request event expected for a simple origin-form target."""
    path, _, query = target.partition(b"?")
    fields: dict[str, object] = {
        "method": method,
        "target": target,
        "path": path,
        "query": query,
        "headers": [HOST] if headers is None else headers,
        "http_version": "1.1",
        "host": b"example.com",
    }
    fields.update(kw)
    return Request(**fields)  # type: ignore[arg-type]


def error_of(
    chunks: list[bytes], limits: Limits | None = None
) -> tuple[list[object], ProtocolError]:
    """Events before the ProtocolError the chunks must raise, and the error."""
    outcome = drive(chunks, ServerConnection(limits))
    assert outcome.error is not None, f"no error; events: {outcome.events}"
    return list(outcome.events), outcome.error


# -- bodies ----------------------------------------------------------------------

CL_REQUEST = (
    b"POST /upload?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\nhello world"
)


@all_splits()
def test_content_length_body(split: Split) -> None:
    events = feed(ServerConnection(), split.apply(CL_REQUEST))
    assert events == [
        request(
            b"POST",
            b"/upload?x=1",
            [HOST, (b"content-length", b"11")],
            content_length=11,
        ),
        Data(b"hello world"),
        EndOfMessage(),
    ]


CHUNKED_REQUEST = (
    b"POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value;flag\r\nhello\r\n"
    b"1\r\n \r\n"
    b"10;ext=\"quoted;value\"\r\n0123456789abcdef\r\n"
    b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
)


@all_splits()
def test_chunked_body_extensions_ignored_trailers_exposed(split: Split) -> None:
    events = feed(ServerConnection(), split.apply(CHUNKED_REQUEST))
    assert events == [
        request(
            b"POST",
            b"/",
            [HOST, (b"transfer-encoding", b"chunked")],
            content_length=None,
            chunked=True,
        ),
        Data(b"hello 0123456789abcdef"),
        EndOfMessage([(b"x-checksum", b"abc"), (b"x-other", b"1")]),
    ]


@all_splits()
def test_chunked_body_without_trailers(split: Split) -> None:
    data = (
        b"PUT /x HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    )
    events = feed(ServerConnection(), split.apply(data))
    assert events[1:] == [Data(b"abc"), EndOfMessage([])]


@all_splits()
def test_get_and_head_without_body(split: Split) -> None:
    head = b"HEAD /h HTTP/1.1\r\nHost: example.com\r\n\r\n"
    conn = ServerConnection()
    assert feed(conn, split.apply(get(b"/g?a=b"))) == [request(target=b"/g?a=b"), EndOfMessage()]
    respond(conn)
    assert feed(conn, split.apply(head)) == [request(b"HEAD", b"/h"), EndOfMessage()]
    assert conn.next_event() is PAUSED


@all_splits()
def test_zero_content_length_has_no_data_event(split: Split) -> None:
    data = b"POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n"
    events = feed(ServerConnection(), split.apply(data))
    assert events == [
        request(b"POST", b"/", [HOST, (b"content-length", b"0")]),
        EndOfMessage(),
    ]


@all_splits()
def test_header_names_lowercased_values_raw_order_kept(split: Split) -> None:
    data = get(b"/", b"X-A: 1", b"x-b:2", b"X-A:  3\t", b"Cookie: a=b; c=d")
    (req, _eom) = feed(ServerConnection(), split.apply(data))
    assert isinstance(req, Request)
    assert req.headers == [HOST, (b"x-a", b"1"), (b"x-b", b"2"), (b"x-a", b"3"),
                           (b"cookie", b"a=b; c=d")]


# -- Host rules (RFC 9112 §3.2) --------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", id="missing-host-1.1"),
        pytest.param(get(b"/", b"Host: other.com"), id="two-host-fields"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", id="host-with-space"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", id="host-with-slash"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", id="host-with-userinfo"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", id="host-bad-port"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: [zz]\r\n\r\n", id="host-bad-ip-literal"),
        pytest.param(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", id="asterisk-not-options"),
    ],
)
@all_splits(10)
def test_host_and_target_errors_are_400(data: bytes, split: Split) -> None:
    events, error = error_of(split.apply(data))
    assert events == []
    assert isinstance(error, BadRequest)
    assert error.status == 400


@all_splits()
def test_http10_without_host_is_accepted(split: Split) -> None:
    events = feed(ServerConnection(), split.apply(b"GET /old HTTP/1.0\r\n\r\n"))
    assert events == [
        request(
            target=b"/old", headers=[], http_version="1.0", host=b"", keep_alive=False
        ),
        EndOfMessage(),
    ]


@all_splits()
def test_absolute_form_target_overrides_host(split: Split) -> None:
    data = b"GET http://example.com:81/p?q=1 HTTP/1.1\r\nHost: ignored.org\r\n\r\n"
    events = feed(ServerConnection(), split.apply(data))
    assert events == [
        Request(
            method=b"GET",
            target=b"http://example.com:81/p?q=1",
            path=b"/p",
            query=b"q=1",
            headers=[(b"host", b"ignored.org")],
            http_version="1.1",
            host=b"example.com:81",
        ),
        EndOfMessage(),
    ]


@pytest.mark.parametrize(
    ("target", "host", "path", "query"),
    [
        (b"http://example.com", b"example.com", b"/", b""),
        (b"https://example.com/a/b", b"example.com", b"/a/b", b""),
        (b"http://[::1]:8080/x?y", b"[::1]:8080", b"/x", b"y"),
    ],
)
def test_absolute_form_variants(target: bytes, host: bytes, path: bytes, query: bytes) -> None:
    (req, _eom) = feed(ServerConnection(), [b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % target])
    assert isinstance(req, Request)
    assert (req.host, req.path, req.query) == (host, path, query)


@pytest.mark.parametrize(
    "target", [b"ftp://example.com/", b"example.com:80", b"http://example.com:99999/"]
)
def test_bad_absolute_or_authority_form_is_400(target: bytes) -> None:
    _events, error = error_of([b"GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % target])
    assert error.status == 400


@all_splits()
def test_options_asterisk_is_accepted(split: Split) -> None:
    data = b"OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n"
    events = feed(ServerConnection(), split.apply(data))
    assert events == [
        Request(b"OPTIONS", b"*", b"*", b"", [HOST], "1.1", b"example.com"),
        EndOfMessage(),
    ]


@all_splits()
def test_a_later_minor_version_is_handled_as_1_1(split: Split) -> None:
    """RFC 9110 §2.5: HTTP/1.2 SHOULD be processed as the highest 1.x we conform to."""
    data = b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"
    events = feed(ServerConnection(), split.apply(data))
    assert events == [Request(b"GET", b"/", b"/", b"", [(b"host", b"a")], "1.1", b"a"),
                      EndOfMessage()]


def test_fragment_is_dropped_from_path() -> None:
    (req, _eom) = feed(ServerConnection(), [get(b"/a?b=c#frag")])
    assert isinstance(req, Request)
    assert (req.path, req.query, req.target) == (b"/a", b"b=c", b"/a?b=c#frag")


# -- errors carry their status ---------------------------------------------------

ERRORS = [
    pytest.param(b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n", BadRequest, id="junk-after-version"),
    pytest.param(b"GET /\r\n\r\n", VersionNotSupported, id="http-0.9-simple-request"),
    pytest.param(b"GARBAGE\r\n\r\n", BadRequest, id="garbage"),
    pytest.param(b"get / HTTP/1.1\r\nHost: a\r\n\r\n", BadRequest, id="lowercase-method"),
    pytest.param(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", BadRequest, id="space-first-line"),
    pytest.param(b"GET / HTTP/1.1\r\nHost a\r\n\r\n", BadRequest, id="field-no-colon"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", VersionNotSupported, id="http-2.0"),
    pytest.param(b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", VersionNotSupported, id="http-0.9"),
    pytest.param(b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", VersionNotSupported, id="http-3.0"),
    pytest.param(b"GET / HTTP/9.9\r\nHost: a\r\n\r\n", VersionNotSupported, id="http-9.9"),
    pytest.param(b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", BadRequest, id="two-digit-minor"),
    pytest.param(b"GET / HTTP/11.1\r\nHost: a\r\n\r\n", BadRequest, id="two-digit-major"),
    pytest.param(b"GET / HTTP/1.x\r\nHost: a\r\n\r\n", BadRequest, id="letter-minor"),
    pytest.param(
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        BadRequest,
        id="te-in-http-1.0",
    ),
    pytest.param(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        NotImplementedByServer,
        id="connect",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        NotImplementedByServer,
        id="te-gzip",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
        NotImplementedByServer,
        id="te-xchunked",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        NotImplementedByServer,
        id="te-gzip-chunked",
    ),
]


@pytest.mark.parametrize(("data", "kind"), ERRORS)
@all_splits(10)
def test_request_head_errors(data: bytes, kind: type[ProtocolError], split: Split) -> None:
    events, error = error_of(split.apply(data))
    assert events == []
    assert type(error) is kind
    assert error.status == {
        BadRequest: 400,
        VersionNotSupported: 505,
        NotImplementedByServer: 501,
    }[kind]


def test_error_ends_the_connection() -> None:
    conn = ServerConnection()
    conn.receive_data(b"GARBAGE\r\n\r\n" + get())
    with pytest.raises(BadRequest):
        conn.next_event()
    assert conn.must_close
    assert conn.next_event() is NEED_DATA  # nothing after the error is parsed
    conn.receive_data(get())
    assert conn.next_event() is NEED_DATA


def test_requests_before_an_error_are_answered_first() -> None:
    conn = ServerConnection()
    conn.receive_data(get(b"/ok") + b"GARBAGE\r\n\r\n")
    (req, eom) = (conn.next_event(), conn.next_event())
    assert isinstance(req, Request) and req.path == b"/ok"
    assert eom == EndOfMessage()
    assert conn.next_event() is PAUSED
    respond(conn)
    with pytest.raises(BadRequest):
        conn.next_event()


# -- limits ------------------------------------------------------------------------

SMALL = Limits(max_request_line=64, max_head=1024, max_field_size=256, max_fields=8,
               max_body=100)


def field_line(name: bytes, total: int) -> bytes:
    """A field line of ``total`` bytes including ': ' and CRLF."""
    return name + b": " + b"v" * (total - len(name) - 4)


@all_splits(15)
def test_target_at_limit_is_accepted(split: Split) -> None:
    target = b"/" + b"a" * 63
    events = feed(ServerConnection(SMALL), split.apply(get(target)))
    assert isinstance(events[0], Request) and events[0].target == target


@all_splits(15)
def test_target_over_limit_is_414(split: Split) -> None:
    events, error = error_of(split.apply(get(b"/" + b"a" * 64)), SMALL)
    assert (events, type(error), error.status) == ([], URITooLong, 414)


@all_splits(15)
def test_field_over_max_field_size_is_431(split: Split) -> None:
    events, error = error_of(split.apply(get(b"/", field_line(b"X-Big", 257))), SMALL)
    assert (events, type(error), error.status) == ([], HeaderFieldsTooLarge, 431)


@all_splits(15)
def test_field_at_max_field_size_is_accepted(split: Split) -> None:
    events = feed(ServerConnection(SMALL), split.apply(get(b"/", field_line(b"X-Big", 256))))
    assert len(events) == 2 and isinstance(events[0], Request)


@all_splits(15)
def test_too_many_fields_is_431(split: Split) -> None:
    lines = [b"X-%d: 1" % i for i in range(8)]  # plus Host: 9 fields
    events, error = error_of(split.apply(get(b"/", *lines)), SMALL)
    assert (events, error.status) == ([], 431)
    accepted = feed(ServerConnection(SMALL), split.apply(get(b"/", *lines[:7])))
    assert isinstance(accepted[0], Request) and len(accepted[0].headers) == 8


@all_splits(15)
def test_head_over_max_head_is_431(split: Split) -> None:
    lines = [field_line(b"X-%d" % i, 250) for i in range(5)]  # > 1024 bytes
    events, error = error_of(split.apply(get(b"/", *lines)), SMALL)
    assert (events, type(error), error.status) == ([], HeaderFieldsTooLarge, 431)


@all_splits(15)
def test_head_under_max_head_is_accepted_in_every_split(split: Split) -> None:
    # Regression: raw bytes of a head split across feeds were counted twice
    # (raw plus parsed fields), so a head over half of max_head was a 431
    # when it arrived in pieces and fine when it arrived whole.
    lines = [field_line(b"X-%d" % i, 250) for i in range(3)]
    data = get(b"/", *lines)
    assert 700 < len(data) < 1024
    events = feed(ServerConnection(SMALL), split.apply(data))
    assert isinstance(events[0], Request) and len(events[0].headers) == 4


def endless(prefix: bytes, piece: int, limit: int) -> int:
    """Feed ``prefix`` then ``piece``-byte runs of 'a'; return bytes fed at the 431."""
    conn = ServerConnection()
    conn.receive_data(prefix)
    fed = len(prefix)
    with pytest.raises(HeaderFieldsTooLarge) as info:
        while fed < limit:
            conn.next_event()
            conn.receive_data(b"a" * piece)
            fed += piece
        conn.next_event()
    assert info.value.status == 431
    return fed


@pytest.mark.parametrize("piece", [1, 100, 8192])
def test_field_value_that_never_ends_is_431_with_bounded_buffering(piece: int) -> None:
    max_head = Limits().max_head
    fed = endless(b"GET / HTTP/1.1\r\nHost: a\r\nX-Endless: ", piece, 4 * max_head)
    assert fed <= max_head + 2 * piece + 64


@pytest.mark.parametrize("piece", [100, 8192])
def test_trailer_that_never_ends_is_431_with_bounded_buffering(piece: int) -> None:
    # Regression: the trailer section was not counted at all, so httptools
    # buffered an endless trailer field without limit.
    max_head = Limits().max_head
    prefix = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: "
    fed = endless(prefix, piece, 4 * max_head)
    assert fed <= max_head + 2 * piece + 128


def test_endless_field_in_one_huge_feed_is_431() -> None:
    conn = ServerConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * (4 * 1024 * 1024))
    with pytest.raises(HeaderFieldsTooLarge):
        conn.next_event()


@all_splits(15)
def test_declared_body_over_max_body_is_413(split: Split) -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n" + b"x" * 101
    events, error = error_of(split.apply(data), SMALL)
    assert (events, type(error), error.status) == ([], ContentTooLarge, 413)


@all_splits(15)
def test_chunked_body_over_max_body_is_413(split: Split) -> None:
    data = (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"32\r\n" + b"x" * 50 + b"\r\n"
        + b"33\r\n" + b"y" * 51 + b"\r\n0\r\n\r\n"
    )
    events, error = error_of(split.apply(data), SMALL)
    assert isinstance(events[0], Request)
    assert sum(len(e.data) for e in events if isinstance(e, Data)) <= 100
    assert EndOfMessage() not in events
    assert (type(error), error.status) == (ContentTooLarge, 413)


@all_splits(15)
def test_body_at_max_body_is_accepted(split: Split) -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
    events = feed(ServerConnection(SMALL), split.apply(data))
    assert events[1:] == [Data(b"x" * 100), EndOfMessage()]


# -- Upgrade is ignored (RFC 9110 §7.8) ------------------------------------------


@all_splits()
def test_upgrade_request_with_body_is_a_normal_request(split: Split) -> None:
    data = (
        b"POST /up HTTP/1.1\r\nHost: example.com\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: 5\r\n\r\nhello"
        + get(b"/next")
    )
    outcome = drive(split.apply(data))
    assert outcome.error is None
    assert outcome.events == [
        request(
            b"POST",
            b"/up",
            [HOST, (b"connection", b"upgrade"), (b"upgrade", b"h2c"), (b"content-length", b"5")],
            content_length=5,
        ),
        Data(b"hello"),
        EndOfMessage(),
        request(target=b"/next"),
        EndOfMessage(),
    ]


@all_splits()
def test_upgrade_request_without_body_then_next_request(split: Split) -> None:
    data = get(b"/up", b"Connection: Upgrade", b"Upgrade: websocket") + get(b"/next")
    outcome = drive(split.apply(data))
    assert outcome.error is None
    assert [r.path for r in outcome.requests] == [b"/up", b"/next"]
    assert outcome.events[-1] == EndOfMessage()


# -- the reader on its own ---------------------------------------------------------


def test_reader_queues_pipelined_requests_and_an_error_in_order() -> None:
    queue: deque[QueueItem] = deque()
    reader = RequestReader(Limits(), queue)
    reader.feed(get(b"/1") + get(b"/2") + b"BAD\r\n\r\n" + get(b"/3"))
    kinds = [type(item).__name__ for item in queue]
    assert kinds == ["Request", "EndOfMessage", "Request", "EndOfMessage", "ParseError"]
    last = queue[-1]
    assert isinstance(last, ParseError) and last.error.status == 400
    assert reader.broken
    reader.feed(get(b"/4"))  # nothing parsed after an error
    assert len(queue) == 5


def test_reader_in_message_tracks_partial_requests() -> None:
    queue: deque[QueueItem] = deque()
    reader = RequestReader(Limits(), queue)
    assert not reader.in_message
    reader.feed(b"GET / HT")
    assert reader.in_message and not queue
    reader.feed(b"TP/1.1\r\nHost: a\r\n\r\n")
    assert not reader.in_message
    assert [type(i) for i in queue] == [Request, EndOfMessage]


def test_closing_frees_the_reader_without_the_garbage_collector() -> None:
    """The parser references the reader (callbacks); close() breaks that cycle."""
    import gc
    import sys

    from zmqhttp.http.events import ConnectionClosed

    conn = ServerConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\n")
    conn.next_event()
    # A strong reference and its count, not weakref.ref(): in the compiled
    # build (setup.py) RequestReader is a native class, and mypyc's native
    # classes do not support weak references.
    reader = conn._reader
    conn.close()
    assert isinstance(conn.next_event(), ConnectionClosed)
    gc.disable()
    try:
        del conn
        # Nothing but `reader` (and getrefcount's own argument) refers to it,
        # no cycle included: dropping `reader` frees it without the collector.
        assert sys.getrefcount(reader) == 2
    finally:
        gc.enable()
