"""Status codes for limits and timeouts: 413 (RFC 9110 §15.5.14), 414 (§15.5.15),
431 (RFC 6585 §5, RFC 9110 §5.4), 408 (§15.5.9) and RFC 9112 §9.5 timeouts.

The servers of this module run with short header and body timeouts, so the 408
cases take about a second; the limits are confsupport.BASE_SETTINGS.
"""

from __future__ import annotations

import time

import pytest
from confsupport import (
    BODY_LIMIT,
    Case,
    Outcome,
    Target,
    case_params,
    rejected,
    request,
    run_cases,
    served,
    verify,
)

SERVER_SETTINGS = {"timeout_request_header": 1.0, "timeout_request_body": 1.0,
                   "timeout_linger": 0.3}

NEXT = request("GET", "{p}next", close=True)
NEXT_SEEN = ("GET", "{p}next", 0)


def chunks(total: int, size: int = 8192) -> bytes:
    out = b""
    while total > 0:
        n = min(size, total)
        out += b"%x\r\n%s\r\n" % (n, b"c" * n)
        total -= n
    return out + b"0\r\n\r\n"


def get_with(*field_lines: bytes) -> bytes:
    return (b"GET {p}g HTTP/1.1\r\nHost: example.com\r\n"
            + b"".join(f + b"\r\n" for f in field_lines) + b"\r\n" + NEXT)


CASES: dict[str, Case] = {
    "15.5.14-413-declared-length-over-limit": Case(
        request("POST", "{p}big", f"Content-Length: {BODY_LIMIT + 1}") + NEXT, rejected(413),
        "RFC 9110 §15.5.14: 413 when the declared content is larger than the server accepts",
    ),
    "15.5.14-413-or-400-content-length-beyond-64-bits": Case(
        request("POST", "{p}big", "Content-Length: 99999999999999999999999") + NEXT,
        rejected(400, 413),
        "RFC 9112 §6.3: a Content-Length that overflows is invalid (400) or too large (413)",
    ),
    "15.5.14-413-chunked-body-grows-over-limit": Case(
        request("POST", "{p}big", "Transfer-Encoding: chunked") + chunks(BODY_LIMIT + 8192)
        + NEXT, rejected(413),
        "RFC 9110 §15.5.14: a chunked body growing past the limit gets 413",
    ),
    "15.5.14-413-huge-chunk-size": Case(
        request("POST", "{p}big", "Transfer-Encoding: chunked") + b"100000000\r\n"
        + b"c" * (BODY_LIMIT + 8192) + NEXT, rejected(413),
        "RFC 9110 §15.5.14: a 4 GiB chunk is refused, at its size line or when the data "
        "crosses the limit",
    ),
    "15.5.14-body-at-limit-is-served": Case(
        request("POST", "{p}big", body=b"b" * BODY_LIMIT) + NEXT,
        served(("POST", "{p}big", BODY_LIMIT), NEXT_SEEN),
        "a body exactly at the limit is accepted",
    ),
    "15.5.15-414-target-too-long": Case(
        request("GET", "{p}" + "t" * 9000) + NEXT, rejected(414),
        "RFC 9112 §3: a request-target longer than the server parses MUST get 414",
    ),
    "15.5.15-long-target-within-limit": Case(
        request("GET", "{p}" + "t" * 8000) + NEXT,
        served(("GET", "{p}" + "t" * 8000, 0), NEXT_SEEN), "8000 bytes are below the limit",
    ),
    "5.4-431-field-line-too-long": Case(
        get_with(b"X-Long: " + b"v" * 9000), rejected(431),
        "RFC 9110 §5.4 / RFC 6585 §5: a field line over the limit gets 431 (a 4xx MUST)",
    ),
    "5.4-431-too-many-fields": Case(
        get_with(*(b"X-F%d: v" % i for i in range(101))), rejected(431),
        "RFC 9110 §5.4 / RFC 6585 §5: more fields than the server processes gets 431",
    ),
    "5.4-431-header-section-too-large": Case(
        get_with(*(b"X-F%d: %s" % (i, b"v" * 1000) for i in range(70))), rejected(431),
        "RFC 9110 §5.4 / RFC 6585 §5: a header section over the limit gets 431",
    ),
    "5.4-431-field-line-never-ends": Case(
        b"GET {p}g HTTP/1.1\r\nHost: example.com\r\nX-Endless: " + b"v" * (200 * 1024),
        rejected(431), "RFC 9110 §5.4: an unterminated field line is cut off (the server "
        "bounds it by the head limit plus one 64 KiB parser slice) with 431",
    ),
    "5.4-4xx-short-field-line-never-ends": Case(
        b"GET {p}g HTTP/1.1\r\nHost: example.com\r\nX-Endless: " + b"v" * (70 * 1024),
        rejected(431, 408), "RFC 9110 §5.4: a 4xx for an oversized field line; while it stays "
        "within the server's buffer bound it may instead end with the header timeout (408)",
    ),
    "5.4-431-trailer-field-too-long": Case(
        request("POST", "{p}t", "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n"
        + b"X-Trailer: " + b"v" * 9000 + b"\r\n\r\n" + NEXT, rejected(431, 400),
        "RFC 9112 §7.1.2 / RFC 9110 §5.4: trailer fields are bounded like header fields",
    ),
}


@pytest.fixture(scope="module")
def results(target: Target) -> dict[str, Outcome]:
    return run_cases(target, CASES)


@pytest.mark.parametrize("name", case_params(CASES))
def test_limits(name: str, results: dict[str, Outcome]) -> None:
    """One limit case (see ``CASES[name].why``)."""
    verify(CASES[name], results[name])


def test_15_5_9_408_when_head_does_not_complete(target: Target) -> None:
    """RFC 9110 §15.5.9 / RFC 9112 §9.5: a request head that does not complete within the
    header timeout (1 s here) gets 408 and the connection closes."""
    with target.connect() as conn:
        started = time.monotonic()
        assert conn.send(b"GET /slow-head HTTP/1.1\r\nHost: example.com\r\n")
        resp = conn.read_response()
        assert resp.status == 408
        assert time.monotonic() - started >= 0.9
        assert conn.at_eof()
    assert not target.app.matching("/slow-head")


def test_15_5_9_408_when_body_stalls(target: Target) -> None:
    """RFC 9110 §15.5.9: a body that stops arriving (body timeout 1 s here) gets 408 while
    no response has started, and the connection closes."""
    with target.connect() as conn:
        assert conn.send(request("POST", "/slow-body", "Content-Length: 10") + b"abc")
        resp = conn.read_response()
        assert resp.status == 408
        assert conn.at_eof()
    assert all(s.body_len is None for s in target.app.matching("/slow-body"))


def test_9_5_idle_connection_closed_without_response(target: Target) -> None:
    """RFC 9112 §9.5: a server MAY close an idle connection; with no byte of a request
    received it sends nothing (a 408 is for a request in progress)."""
    with target.connect() as conn:
        assert conn.at_eof(5.0)
        assert conn.buf == b""
