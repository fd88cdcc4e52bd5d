"""h11's fuzz invariant: whatever the bytes and however they are split,
``next_event()`` returns an event, NEED_DATA or PAUSED (or ConnectionClosed),
or raises ProtocolError, never anything else, and what the connection holds
stays bounded by the limits, not by the amount of input.
"""

from __future__ import annotations

from collections.abc import Sequence

from h1support import Split, split_strategy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqhttp.errors import LocalProtocolError, ProtocolError
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

LIMITS = Limits(
    max_request_line=64,
    max_head=512,
    max_field_size=128,
    max_fields=10,
    max_body=256,
    max_pipeline_bytes=512,
    max_drain=64,
)
FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

VALID = [
    b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    b"GET /a?b=c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"HEAD /h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://example.com:81/p?q HTTP/1.1\r\nHost: b\r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
    b"Content-Length: 2\r\n\r\nhi",
]
ALPHABET = b"\r\n :;,\t\x00\x7f\xff0123456789abcdefGETPOSTHTTP/1.chunkedContent-LengthHost"


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A few valid requests, pipelined, then mutated a few times."""
    data = b"".join(draw(st.lists(st.sampled_from(VALID), min_size=1, max_size=4)))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        junk = bytes(draw(st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=6)))
        if kind == "insert":
            data = data[:pos] + junk + data[pos:]
        elif kind == "delete":
            data = data[:pos] + data[pos + len(junk) :]
        elif kind == "replace":
            data = data[:pos] + junk + data[pos + len(junk) :]
        else:
            data = data[:pos] + data[pos : pos + 40] + data[pos:]
    return data


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    """A request assembled from plausible and hostile parts."""
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"CONNECT", b"G\x00T"]))
    target = draw(st.sampled_from([b"/", b"*", b"/x?y", b"http://h/p", b"h:1", b"/\xff", b""]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b""]))
    names = st.sampled_from(
        [b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Expect",
         b"Upgrade", b"X", b"Host ", b" X", b""]
    )
    values = st.sampled_from(
        [b"a", b"5", b"chunked", b"close", b"keep-alive", b"100-continue", b"h2c", b"",
         b"-1", b"gzip, chunked", b"a\rb", b"999999999999999999999", b" chunked"]
    )
    fields = draw(st.lists(st.tuples(names, values), max_size=6))
    head = b"%s %s %s\r\n" % (method, target, version)
    head += b"".join(b"%s: %s\r\n" % field for field in fields)
    body = draw(st.sampled_from([b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"0\r\n\r\n"]))
    return head + b"\r\n" + body


def held_bytes(conn: ServerConnection) -> int:
    """Bytes the connection holds for requests not yet handed out."""
    total = conn._pending_bytes
    for item in conn._queue:
        if isinstance(item, Data):
            total += len(item.data)
        elif isinstance(item, Request):
            total += len(item.target) + sum(len(n) + len(v) for n, v in item.headers)
    return total


def check_bounded(conn: ServerConnection, largest_chunk: int) -> None:
    limits = conn.limits
    assert held_bytes(conn) <= 2 * (limits.max_pipeline_bytes + largest_chunk)
    reader = conn._reader
    assert len(reader._url) <= limits.max_request_line
    assert reader._head_size <= limits.max_head
    assert reader._section_raw <= limits.max_head


def act(conn: ServerConnection, policy: int) -> None:
    """Respond the way ``policy`` says; application mistakes may be refused."""
    try:
        if policy == 1:
            conn.send(InformationalResponse(100))  # b"" unless the client waits
        headers = [] if policy == 2 else [(b"Content-Length", b"2")]
        if policy == 3:
            headers.append((b"Connection", b"close"))
        conn.send(Response(204 if policy == 4 else 200, headers))
        conn.send(Data(b"ok"))
        conn.send(EndOfMessage())
    except LocalProtocolError:
        pass


def run(data: bytes, split: Split, policies: Sequence[int]) -> None:
    conn = ServerConnection(LIMITS)
    chunks = [*split.apply(data), b""]
    largest = max(len(c) for c in chunks)
    turn = 0
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                check_bounded(conn, largest)
                if event is NEED_DATA:
                    break
                if isinstance(event, ConnectionClosed):
                    assert conn.must_close
                    return
                if event is PAUSED:
                    assert conn.request_state is RequestState.DONE
                    assert conn.response_state is not ResponseState.DONE
                    act(conn, policies[turn % len(policies)])
                    turn += 1
                    if conn.response_state is ResponseState.BODY:
                        conn.send(EndOfMessage())  # a refused body: close the response
                    continue
                assert isinstance(event, Request | Data | EndOfMessage), event
                if isinstance(event, Request) and policies[turn % len(policies)] == 0:
                    act(conn, 0)  # an early response, before the body
                    turn += 1
                    if conn.response_state is ResponseState.BODY:
                        conn.send(EndOfMessage())
    except ProtocolError as error:
        assert 400 <= error.status < 600
        assert conn.must_close


POLICIES = st.lists(st.integers(0, 4), min_size=1, max_size=5)


@given(data=st.binary(max_size=400), split=split_strategy, policies=POLICIES)
@FUZZ
def test_random_bytes(data: bytes, split: Split, policies: list[int]) -> None:
    run(data, split, policies)


@given(data=mutated(), split=split_strategy, policies=POLICIES)
@FUZZ
def test_mutated_valid_requests(data: bytes, split: Split, policies: list[int]) -> None:
    run(data, split, policies)


@given(data=structured(), split=split_strategy, policies=POLICIES)
@FUZZ
def test_structured_requests(data: bytes, split: Split, policies: list[int]) -> None:
    run(data, split, policies)


@given(
    requests=st.lists(st.sampled_from(VALID), min_size=50, max_size=200),
    split=split_strategy,
)
@settings(max_examples=20, deadline=None, database=None)
def test_unanswered_pipeline_stays_bounded(requests: list[bytes], split: Split) -> None:
    """A client pipelining far more than the bound while nothing is answered."""
    conn = ServerConnection(LIMITS)
    chunks = split.apply(b"".join(requests))
    largest = max(len(c) for c in chunks)
    for chunk in chunks:
        conn.receive_data(chunk)
        while (event := conn.next_event()) not in (NEED_DATA, PAUSED):
            assert isinstance(event, Request | Data | EndOfMessage)
        check_bounded(conn, largest)
