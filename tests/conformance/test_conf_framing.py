"""RFC 9112 §6: message body framing (Content-Length, Transfer-Encoding), both directions.

Each request case is written on its own connection and followed, where it matters,
by a pipelined ``GET {p}next`` that proves where the server thinks the body ended.
The case name starts with the section it checks; ``Case.why`` quotes the rule.
"""

from __future__ import annotations

import pytest
from confsupport import (
    Case,
    Outcome,
    Target,
    case_params,
    exchange,
    oneof,
    rejected,
    request,
    run_cases,
    served,
    verify,
)

NEXT = request("GET", "{p}next", close=True)
NEXT_SEEN = ("GET", "{p}next", 0)


def post(*fields: str, body: bytes = b"", version: str = "1.1") -> bytes:
    host = "example.com" if version == "1.1" else None
    return request("POST", "{p}a", *fields, body=body, version=version, host=host)


def cl_case(value: str, why: str) -> Case:
    """A request with ``Content-Length: value`` that the server must refuse."""
    return Case(post(f"Content-Length: {value}") + b"hello" + NEXT, rejected(400), why)


CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"

CASES: dict[str, Case] = {
    "6.2-content-length-delimits-body": Case(
        post("Content-Length: 5") + b"hello" + NEXT,
        served(("POST", "{p}a", 5), NEXT_SEEN),
        "§6.2/§6.3 rule 6: Content-Length gives the body length; the next request follows it",
    ),
    "6.2-content-length-zero": Case(
        post("Content-Length: 0") + NEXT, served(("POST", "{p}a", 0), NEXT_SEEN),
        "§6.2: Content-Length: 0 is an empty body",
    ),
    "6.2-content-length-leading-zeros": Case(
        post("Content-Length: 005") + b"hello" + NEXT, served(("POST", "{p}a", 5), NEXT_SEEN),
        "§6.2: Content-Length = 1*DIGIT, so 005 is 5",
    ),
    "6.2-content-length-surrounding-ows": Case(
        post("Content-Length: \t 5 \t") + b"hello" + NEXT,
        served(("POST", "{p}a", 5), NEXT_SEEN),
        "RFC 9110 §5.5: OWS around a field value is not part of it",
    ),
    "6.3r7-no-framing-fields-means-no-body": Case(
        post() + NEXT, served(("POST", "{p}a", 0), NEXT_SEEN),
        "§6.3 rule 7: a request with neither Transfer-Encoding nor Content-Length has no body",
    ),
    "6.3r5-duplicate-content-length-equal": Case(
        post("Content-Length: 5", "Content-Length: 5") + b"hello" + NEXT,
        oneof(rejected(400), served(("POST", "{p}a", 5), NEXT_SEEN)),
        "§6.3 rule 5 / RFC 9110 §8.6: identical repeated Content-Length MAY be rejected or "
        "replaced by the single value (either is accepted here)",
    ),
    "6.3r5-content-length-list-equal": Case(
        post("Content-Length: 5, 5") + b"hello" + NEXT,
        oneof(rejected(400), served(("POST", "{p}a", 5), NEXT_SEEN)),
        "RFC 9110 §8.6: a list of identical values MAY be rejected or taken as one value",
    ),
    "6.3r5-conflicting-content-length": Case(
        post("Content-Length: 5", "Content-Length: 6") + b"hello!" + NEXT, rejected(400),
        "§6.3 rule 5: differing Content-Length values are an unrecoverable error: "
        "400 and close (MUST)",
    ),
    "6.3r5-content-length-list-different": Case(
        post("Content-Length: 5, 6") + b"hello!" + NEXT, rejected(400),
        "§6.3 rule 5: a list of differing values is invalid: 400 and close (MUST)",
    ),
    "6.3r5-content-length-not-a-number": cl_case("five", "§6.3 rule 5: invalid Content-Length"),
    "6.3r5-content-length-empty": cl_case("", "§6.3 rule 5: an empty Content-Length is invalid"),
    "6.3r5-content-length-decimal-point": cl_case("5.0", "§6.3 rule 5: 1*DIGIT only"),
    "6.3r5-content-length-two-numbers": cl_case("5 5", "§6.3 rule 5: 1*DIGIT only"),
    "6.3r5-content-length-trailing-garbage": cl_case("5x", "§6.3 rule 5: 1*DIGIT only"),
    "6.1-content-length-with-transfer-encoding": Case(
        post("Content-Length: 5", "Transfer-Encoding: chunked") + CHUNKED_HELLO + NEXT,
        oneof(rejected(400), served(("POST", "{p}a", 5))),
        "§6.1/§6.3 rule 3: a request with both MAY be rejected or read as chunked, and either "
        "way the server MUST close after responding (so `next` is never served)",
    ),
    "6.1-transfer-encoding-in-http10": Case(
        post("Transfer-Encoding: chunked", version="1.0") + CHUNKED_HELLO + NEXT,
        oneof(rejected(400), served(("POST", "{p}a", 5))),
        "§6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing; the server "
        "MUST close after processing it (rejecting is also accepted)",
    ),
    "6.1-unknown-coding-before-chunked-is-501": Case(
        post("Transfer-Encoding: gzip, chunked") + CHUNKED_HELLO + NEXT, rejected(501),
        "§6.1: a transfer coding the server does not understand SHOULD get 501",
    ),
    "6.1-unknown-coding-token-is-501": Case(
        post("Transfer-Encoding: x-custom, chunked") + CHUNKED_HELLO + NEXT, rejected(501),
        "§6.1: a transfer coding the server does not understand SHOULD get 501",
    ),
    "6.3r4-chunked-not-final": Case(
        post("Transfer-Encoding: chunked, gzip") + CHUNKED_HELLO + NEXT, rejected(400, 501),
        "§6.3 rule 4: chunked not the final coding: 400 and close (MUST); 501 (§6.1, unknown "
        "coding) is accepted too since both rules apply",
    ),
    "6.3r4-only-unknown-coding": Case(
        post("Transfer-Encoding: gzip") + b"hello" + NEXT, rejected(400, 501),
        "§6.3 rule 4 (400, MUST) and §6.1 (501, SHOULD) both apply; either, with a close",
    ),
    "6.1-chunked-applied-twice": Case(
        post("Transfer-Encoding: chunked, chunked") + CHUNKED_HELLO + NEXT, rejected(400, 501),
        "§6.1: a sender MUST NOT apply chunked more than once; the framing is unreliable",
    ),
    "6.1-chunked-split-over-two-lines-twice": Case(
        post("Transfer-Encoding: chunked", "Transfer-Encoding: chunked") + CHUNKED_HELLO + NEXT,
        rejected(400, 501),
        "§6.1 + RFC 9110 §5.3: two field lines combine to `chunked, chunked`",
    ),
    "6.1-coding-split-over-two-lines": Case(
        post("Transfer-Encoding: gzip", "Transfer-Encoding: chunked") + CHUNKED_HELLO + NEXT,
        rejected(501),
        "§6.1 + RFC 9110 §5.3: two lines combine to `gzip, chunked`: unknown coding, 501",
    ),
}


@pytest.fixture(scope="module")
def results(target: Target) -> dict[str, Outcome]:
    return run_cases(target, CASES)


@pytest.mark.parametrize("name", case_params(CASES))
def test_request_framing(name: str, results: dict[str, Outcome]) -> None:
    """One RFC 9112 §6 request-framing case (see ``CASES[name].why``)."""
    verify(CASES[name], results[name])


# -- response framing -------------------------------------------------------------------------


def test_6_2_response_content_length_matches_body(target: Target) -> None:
    """§6.2/§6.3 rule 6: a Content-Length response carries exactly that many bytes (the
    response after it parses, so no byte is missing or extra)."""
    ex = exchange(target, request("GET", "/fixed") + request("GET", "/fixed", close=True))
    assert ex.statuses == [200, 200]
    for resp in ex.responses:
        assert (resp.framing, resp.header("content-length"), resp.body) == ("length", "100",
                                                                            b"x" * 100)
        assert resp.header("transfer-encoding") is None


def test_7_1_streamed_response_is_chunked_for_http11(target: Target) -> None:
    """§6.1/§7.1: a body of unknown length to an HTTP/1.1 client is sent chunked, without
    Content-Length (§6.2: MUST NOT send Content-Length with Transfer-Encoding)."""
    ex = exchange(target, request("GET", "/stream", close=True))
    (resp,) = ex.responses
    assert resp.framing == "chunked"
    assert resp.header("content-length") is None
    assert resp.body == b"part 0\npart 1\npart 2\n"
    assert resp.chunk_sizes[-1] == 0 and all(resp.chunk_sizes[:-1])


def test_6_1_no_transfer_encoding_to_http10(target: Target) -> None:
    """§6.1: a server MUST NOT send Transfer-Encoding to an HTTP/1.0 request; §6.3 rule 8:
    the body is then close-delimited, so the server closes the connection to end it."""
    ex = exchange(target, request("GET", "/stream", version="1.0", host=None))
    (resp,) = ex.responses
    assert resp.header("transfer-encoding") is None
    assert resp.framing in ("close", "length")
    assert resp.body == b"part 0\npart 1\npart 2\n"
    assert ex.closed


def test_6_1_http10_keep_alive_stream_still_not_chunked(target: Target) -> None:
    """§6.1: even when an HTTP/1.0 client asks for keep-alive, a body of unknown length
    cannot be chunked; it is close-delimited (§6.3 rule 8) or given a length."""
    ex = exchange(target, request("GET", "/stream", "Connection: keep-alive", version="1.0",
                                  host=None))
    (resp,) = ex.responses
    assert resp.header("transfer-encoding") is None
    assert resp.body == b"part 0\npart 1\npart 2\n"
    if resp.framing == "close":
        assert ex.closed
