"""The connection state machine: persistence, pipelining, 100-continue, drain, EOF.

Requests are fed whole, byte by byte and in hypothesis-chosen splits.
"""

from __future__ import annotations

import pytest
from h1support import Split, all_splits, drive, feed, get, respond

from zmqhttp.errors import BadRequest, ContentTooLarge, LocalProtocolError, ServiceUnavailable
from zmqhttp.http import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    InformationalResponse,
    Limits,
    Request,
    RequestState,
    Response,
    ResponseState,
    ServerConnection,
)

OK_HEAD = b"HTTP/1.1 200 OK\r\nServer: zmqhttp\r\nContent-Length: 2\r\n"


def answer(conn: ServerConnection, extra: list[tuple[bytes, bytes]] | None = None) -> bytes:
    return respond(conn, 200, [(b"Content-Length", b"2"), *(extra or [])], b"ok")


# -- persistence (RFC 9112 §9.3) ---------------------------------------------------


@all_splits()
def test_http11_persists_by_default(split: Split) -> None:
    conn = ServerConnection()
    events = feed(conn, split.apply(get(b"/1")))
    assert [type(e) for e in events] == [Request, EndOfMessage]
    assert conn.next_event() is PAUSED
    assert answer(conn) == OK_HEAD + b"\r\nok"
    assert conn.request_state is RequestState.IDLE and conn.keep_alive and not conn.must_close
    assert conn.next_event() is NEED_DATA
    assert isinstance(feed(conn, split.apply(get(b"/2")))[0], Request)


@all_splits()
def test_client_connection_close_closes_after_the_response(split: Split) -> None:
    conn = ServerConnection()
    events = feed(conn, split.apply(get(b"/", b"Connection: close")))
    assert isinstance(events[0], Request) and not events[0].keep_alive
    assert answer(conn) == OK_HEAD + b"Connection: close\r\n\r\nok"
    assert conn.request_state is RequestState.MUST_CLOSE and conn.must_close
    assert conn.next_event() is NEED_DATA
    conn.receive_data(get(b"/ignored"))  # lingering close: read and dropped
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()


@pytest.mark.parametrize("value", [b"close", b"Close", b"keep-alive, close", b"foo,CLOSE "])
def test_connection_close_token_spellings(value: bytes) -> None:
    conn = ServerConnection()
    (req, _eom) = feed(conn, [get(b"/", b"Connection: " + value)])
    assert isinstance(req, Request) and not req.keep_alive


@all_splits()
def test_http10_closes_by_default(split: Split) -> None:
    conn = ServerConnection()
    feed(conn, split.apply(b"GET / HTTP/1.0\r\n\r\n"))
    assert answer(conn) == OK_HEAD + b"Connection: close\r\n\r\nok"
    assert conn.request_state is RequestState.MUST_CLOSE


@all_splits()
def test_http10_keep_alive_is_honoured_and_echoed(split: Split) -> None:
    conn = ServerConnection()
    events = feed(conn, split.apply(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"))
    assert isinstance(events[0], Request) and events[0].keep_alive
    assert answer(conn) == OK_HEAD + b"Connection: keep-alive\r\n\r\nok"
    assert conn.request_state is RequestState.IDLE
    events = feed(conn, split.apply(b"GET /2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
    assert isinstance(events[0], Request) and events[0].path == b"/2"


def test_http10_keep_alive_without_length_is_close_delimited() -> None:
    conn = ServerConnection()
    feed(conn, [b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"])
    head = conn.send(Response(200, []))
    assert head == b"HTTP/1.1 200 OK\r\nServer: zmqhttp\r\nConnection: close\r\n\r\n"
    assert conn.close_delimited
    assert conn.send(Data(b"body")) == b"body"
    assert conn.send(EndOfMessage()) == b""
    assert conn.must_close


@pytest.mark.parametrize("value", [b"close", b"Close", b"x, close"])
def test_app_connection_close_is_honoured(value: bytes) -> None:
    conn = ServerConnection()
    feed(conn, [get()])
    assert answer(conn, [(b"Connection", value)]) == OK_HEAD + b"Connection: close\r\n\r\nok"
    assert conn.must_close


def test_app_connection_keep_alive_cannot_override_client_close() -> None:
    conn = ServerConnection()
    feed(conn, [get(b"/", b"Connection: close")])
    out = answer(conn, [(b"Connection", b"keep-alive")])
    assert out == OK_HEAD + b"Connection: close\r\n\r\nok"
    assert conn.must_close


def test_allow_keep_alive_false_closes_after_the_current_response() -> None:
    conn = ServerConnection()
    feed(conn, [get()])
    conn.allow_keep_alive(False)
    assert answer(conn) == OK_HEAD + b"Connection: close\r\n\r\nok"
    assert conn.must_close


def test_allow_keep_alive_false_when_idle_closes_now() -> None:
    conn = ServerConnection()
    assert conn.idle
    conn.allow_keep_alive(False)
    assert conn.must_close
    conn.receive_data(get())
    assert conn.next_event() is NEED_DATA


# -- pipelining (RFC 9112 §9.3.2) ---------------------------------------------------

PIPELINE = (
    get(b"/1")
    + b"POST /2 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabc"
    + b"PUT /3 HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"2\r\nxy\r\n0\r\n\r\n"
    + get(b"/4")
)


@all_splits()
def test_pipelined_requests_one_at_a_time_responses_in_order(split: Split) -> None:
    conn = ServerConnection()
    seen: list[list[object]] = []
    output = b""
    for chunk in split.apply(PIPELINE):
        conn.receive_data(chunk)
    # All the data arrived before the first event was asked for.
    for number in range(1, 5):
        events: list[object] = []
        while (event := conn.next_event()) is not PAUSED:
            assert event is not NEED_DATA
            events.append(event)
        assert conn.request_state is RequestState.DONE
        assert conn.next_event() is PAUSED  # nothing more until the response ends
        assert conn.next_event() is PAUSED
        seen.append(events)
        output += respond(conn, body=b"r%d" % number)
    assert conn.next_event() is NEED_DATA
    paths = [e[0].path for e in seen if isinstance(e[0], Request)]
    assert paths == [b"/1", b"/2", b"/3", b"/4"]
    bodies = [b"".join(x.data for x in e if isinstance(x, Data)) for e in seen]
    assert bodies == [b"", b"abc", b"xy", b""]
    assert output == b"".join(
        b"HTTP/1.1 200 OK\r\nServer: zmqhttp\r\nContent-Length: 2\r\n\r\nr%d" % n
        for n in range(1, 5)
    )


@all_splits()
def test_pipelined_requests_arriving_while_paused(split: Split) -> None:
    outcome = drive(split.apply(PIPELINE))
    assert outcome.error is None
    assert [r.path for r in outcome.requests] == [b"/1", b"/2", b"/3", b"/4"]
    assert outcome.output.count(b"HTTP/1.1 200 OK\r\n") == 4


def test_pipeline_overflow_answers_complete_requests_then_closes() -> None:
    # Regression: on overflow the *current* response already said
    # Connection: close, so complete pipelined requests held were never answered.
    limits = Limits(max_pipeline_bytes=3 * len(get(b"/2")))
    conn = ServerConnection(limits)
    feed(conn, [get(b"/1")])
    assert conn.next_event() is PAUSED
    for path in (b"/2", b"/3", b"/4", b"/5"):  # /5 no longer fits
        conn.receive_data(get(path))
    conn.receive_data(get(b"/6"))  # dropped as well
    outputs = [answer(conn)]
    paths = []
    while True:
        events = feed(conn, [])
        if not events:
            break
        assert isinstance(events[0], Request)
        paths.append(events[0].path)
        assert conn.next_event() is PAUSED
        outputs.append(answer(conn))
    assert paths == [b"/2", b"/3", b"/4"]
    assert [b"Connection: close" in out for out in outputs] == [False, False, False, True]
    assert conn.must_close
    assert conn.next_event() is NEED_DATA


def test_pipeline_overflow_with_a_partial_request_held() -> None:
    limits = Limits(max_pipeline_bytes=len(get(b"/2")) + 10)
    conn = ServerConnection(limits)
    feed(conn, [get(b"/1")])
    conn.receive_data(get(b"/2"))
    conn.receive_data(get(b"/3")[:10])  # fits: a partial request is held
    conn.receive_data(get(b"/3")[10:])  # does not fit: dropped
    assert b"Connection: close" not in answer(conn)
    events = feed(conn, [])
    assert isinstance(events[0], Request) and events[0].path == b"/2"
    # The partial /3 can never complete: this is the last response.
    assert answer(conn).endswith(b"Connection: close\r\n\r\nok")
    assert conn.next_event() is NEED_DATA and conn.must_close


def test_pipeline_overflow_before_the_response_starts_closes_after_it() -> None:
    limits = Limits(max_pipeline_bytes=10)
    conn = ServerConnection(limits)
    feed(conn, [get(b"/1")])
    conn.receive_data(get(b"/2"))  # over the bound at once
    assert answer(conn).endswith(b"Connection: close\r\n\r\nok")
    assert conn.must_close


def test_pipeline_bytes_held_stay_bounded() -> None:
    limits = Limits(max_pipeline_bytes=1000)
    conn = ServerConnection(limits)
    feed(conn, [get(b"/1")])
    for _ in range(10_000):
        conn.receive_data(b"x" * 100)
        assert conn._pending_bytes <= 1000
        assert conn.next_event() is PAUSED


# -- Expect: 100-continue (RFC 9110 §10.1.1) --------------------------------------

EXPECT_HEAD = (
    b"POST /e HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@all_splits()
def test_100_continue_sent_once_while_the_client_waits(split: Split) -> None:
    conn = ServerConnection()
    (req,) = feed(conn, split.apply(EXPECT_HEAD))
    assert isinstance(req, Request) and req.expect_continue
    assert conn.they_are_waiting_for_100_continue
    assert conn.send(InformationalResponse(100)) == CONTINUE
    assert not conn.they_are_waiting_for_100_continue
    assert conn.send(InformationalResponse(100)) == b""  # never twice
    assert feed(conn, split.apply(b"hello")) == [Data(b"hello"), EndOfMessage()]
    assert answer(conn) == OK_HEAD + b"\r\nok"
    assert conn.request_state is RequestState.IDLE


def test_no_100_continue_once_body_arrived() -> None:
    conn = ServerConnection()
    feed(conn, [EXPECT_HEAD, b"he"])
    assert not conn.they_are_waiting_for_100_continue
    assert conn.send(InformationalResponse(100)) == b""


def test_no_100_continue_after_the_final_response_started() -> None:
    conn = ServerConnection()
    feed(conn, [EXPECT_HEAD])
    conn.send(Response(200, [(b"Content-Length", b"0")]))
    assert conn.send(InformationalResponse(100)) == b""


def test_no_100_continue_for_http10() -> None:
    conn = ServerConnection()
    data = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    (req,) = feed(conn, [data])
    assert isinstance(req, Request) and not req.expect_continue
    assert not conn.they_are_waiting_for_100_continue
    assert conn.send(InformationalResponse(100)) == b""


def test_no_100_continue_without_a_body() -> None:
    conn = ServerConnection()
    (req, _eom) = feed(conn, [get(b"/", b"Expect: 100-continue")])
    assert isinstance(req, Request) and not req.expect_continue
    assert conn.send(InformationalResponse(100)) == b""


@pytest.mark.parametrize("status", [101, 102, 103])
def test_other_informational_responses_are_refused(status: int) -> None:
    # Regression: any InformationalResponse was serialised as 100 Continue.
    conn = ServerConnection()
    feed(conn, [EXPECT_HEAD])
    with pytest.raises(LocalProtocolError):
        conn.send(InformationalResponse(status))
    assert conn.they_are_waiting_for_100_continue


@all_splits()
def test_final_response_without_100_while_client_waits_closes(split: Split) -> None:
    conn = ServerConnection()
    feed(conn, split.apply(EXPECT_HEAD))
    out = respond(conn, 417, [(b"Content-Length", b"0")])
    assert out == (
        b"HTTP/1.1 417 Expectation Failed\r\nServer: zmqhttp\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert conn.request_state is RequestState.MUST_CLOSE
    conn.receive_data(b"hello" + get(b"/2"))
    assert conn.next_event() is NEED_DATA


# -- drain: the response ended before the request body -------------------------------


@all_splits()
def test_early_response_drains_the_body_and_next_request_parses(split: Split) -> None:
    conn = ServerConnection()
    head = b"POST /d HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\n"
    (req,) = feed(conn, [head])
    assert isinstance(req, Request)
    assert answer(conn) == OK_HEAD + b"\r\nok"  # keep-alive: no Connection: close
    assert conn.request_state is RequestState.DRAIN
    events = feed(conn, split.apply(b"0123456789" + get(b"/next")))
    assert events == [
        Request(b"GET", b"/next", b"/next", b"", [(b"host", b"example.com")], "1.1",
                b"example.com"),
        EndOfMessage(),
    ]


def test_early_response_after_100_continue_drains() -> None:
    conn = ServerConnection()
    feed(conn, [EXPECT_HEAD])
    assert conn.send(InformationalResponse(100)) == CONTINUE
    assert answer(conn) == OK_HEAD + b"\r\nok"
    assert conn.request_state is RequestState.DRAIN
    (req, _eom) = feed(conn, [b"hel", b"lo" + get(b"/n")])
    assert isinstance(req, Request) and req.path == b"/n"


def test_early_response_with_body_over_max_drain_closes() -> None:
    conn = ServerConnection(Limits(max_drain=9))
    feed(conn, [b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"])
    assert answer(conn).endswith(b"Connection: close\r\n\r\nok")
    assert conn.request_state is RequestState.MUST_CLOSE


def test_early_response_with_body_at_max_drain_drains() -> None:
    conn = ServerConnection(Limits(max_drain=10))
    feed(conn, [b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"])
    assert answer(conn) == OK_HEAD + b"\r\nok"
    assert conn.request_state is RequestState.DRAIN


def test_early_response_to_a_chunked_body_closes() -> None:
    conn = ServerConnection()
    feed(conn, [b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n"])
    assert answer(conn).endswith(b"Connection: close\r\n\r\nok")
    assert conn.request_state is RequestState.MUST_CLOSE


# -- the peer going away ---------------------------------------------------------------


@pytest.mark.parametrize(
    "partial",
    [
        b"",
        b"GET / HTTP/1.1\r\nHo",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ],
)
def test_eof_mid_request_is_connection_closed(partial: bytes) -> None:
    conn = ServerConnection()
    events = feed(conn, [partial]) if partial else []
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()
    assert conn.next_event() == ConnectionClosed()
    assert conn.must_close
    assert all(not isinstance(e, EndOfMessage) for e in events)


def test_eof_while_paused_is_seen_after_the_response() -> None:
    conn = ServerConnection()
    feed(conn, [get()])
    conn.receive_data(b"")
    assert conn.next_event() is PAUSED
    answer(conn)
    assert conn.next_event() == ConnectionClosed()


def test_eof_after_pipelined_requests_still_hands_them_out() -> None:
    outcome = drive([get(b"/1") + get(b"/2"), b""])
    assert [r.path for r in outcome.requests] == [b"/1", b"/2"]
    assert outcome.events[-1] == ConnectionClosed()


# -- send() contract and errors --------------------------------------------------------


def test_send_error_answers_and_closes() -> None:
    conn = ServerConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(BadRequest) as info:
        conn.next_event()
    assert conn.send_error(info.value) == (
        b"HTTP/1.1 400 Bad Request\r\nServer: zmqhttp\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\n"
        b"Connection: close\r\n\r\n400 Bad Request\n"
    )
    assert conn.must_close


def test_send_error_503_has_retry_after() -> None:
    out = ServerConnection().send_error(ServiceUnavailable("busy"))
    assert out.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nRetry-After: 1\r\n" in out and b"Connection: close\r\n" in out


def test_send_error_to_a_head_request_has_no_body() -> None:
    conn = ServerConnection(Limits(max_body=1))
    conn.receive_data(b"HEAD / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n")
    assert isinstance(conn.next_event(), Request)
    conn.receive_data(b"hello\r\n")
    with pytest.raises(ContentTooLarge) as info:
        conn.next_event()
    assert conn.send_error(info.value) == (
        b"HTTP/1.1 413 Content Too Large\r\nServer: zmqhttp\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 22\r\n"
        b"Connection: close\r\n\r\n"
    )


def test_state_sequence_of_one_cycle() -> None:
    conn = ServerConnection()
    states = [(conn.request_state, conn.response_state)]
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n")
    assert isinstance(conn.next_event(), Request)
    states.append((conn.request_state, conn.response_state))
    conn.receive_data(b"hi")
    assert conn.next_event() == Data(b"hi")
    assert conn.next_event() == EndOfMessage()
    states.append((conn.request_state, conn.response_state))
    conn.send(Response(200, [(b"Content-Length", b"0")]))
    states.append((conn.request_state, conn.response_state))
    conn.send(EndOfMessage())
    states.append((conn.request_state, conn.response_state))
    R, S = RequestState, ResponseState
    assert states == [
        (R.IDLE, S.IDLE),
        (R.BODY, S.IDLE),
        (R.DONE, S.IDLE),
        (R.DONE, S.BODY),
        (R.IDLE, S.IDLE),
    ]


def test_second_response_head_is_refused() -> None:
    conn = ServerConnection()
    feed(conn, [get()])
    conn.send(Response(200, []))
    with pytest.raises(LocalProtocolError):
        conn.send(Response(200, []))


@pytest.mark.parametrize(
    "event", [Data(b"x"), EndOfMessage(), ConnectionClosed(), Response(100, [])]
)
def test_events_out_of_order_are_refused(event: object) -> None:
    conn = ServerConnection()
    feed(conn, [get()])
    with pytest.raises(LocalProtocolError):
        conn.send(event)  # type: ignore[arg-type]


def test_rejected_head_leaves_the_response_unstarted() -> None:
    # Regression: the state moved to BODY before the head was checked, so after
    # a bad header the server could no longer send its 500.
    conn = ServerConnection()
    feed(conn, [get()])
    with pytest.raises(LocalProtocolError):
        conn.send(Response(200, [(b"X-Bad", b"a\r\nSet-Cookie: x=y")]))
    assert conn.response_state is ResponseState.IDLE
    out = conn.send_error(LocalProtocolError("bad header"))
    assert out.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert conn.must_close


def test_idle_property() -> None:
    conn = ServerConnection()
    assert conn.idle
    conn.receive_data(b"GET / HT")
    assert not conn.idle
    assert conn.next_event() is NEED_DATA
    assert not conn.idle  # a partial request is buffered
    conn.receive_data(b"TP/1.1\r\nHost: a\r\n\r\n")
    feed(conn, [])
    answer(conn)
    assert conn.idle
