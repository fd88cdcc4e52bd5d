"""RFC 9112 §7.1: the chunked transfer coding in requests and responses.

Every request case sends a chunked ``POST {p}a`` and then ``GET {p}next``: the
server must find the end of the chunked body exactly where §7.1 puts it.
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


def chunked(body: bytes, te: str = "chunked") -> bytes:
    return request("POST", "{p}a", f"Transfer-Encoding: {te}") + body + NEXT


def ok(n: int) -> tuple[tuple[str, str, int], tuple[str, str, int]]:
    return ("POST", "{p}a", n), NEXT_SEEN


def good(body: bytes, n: int, why: str, te: str = "chunked") -> Case:
    return Case(chunked(body, te), served(*ok(n)), why)


def bad(body: bytes, why: str, *statuses: int) -> Case:
    return Case(chunked(body), rejected(*(statuses or (400,))), why)


CASES: dict[str, Case] = {
    "7.1-single-chunk": good(b"5\r\nhello\r\n0\r\n\r\n", 5, "§7.1: chunk, last-chunk, CRLF"),
    "7.1-several-chunks": good(b"3\r\nhel\r\n2\r\nlo\r\n1\r\n!\r\n0\r\n\r\n", 6,
                               "§7.1: the body is the concatenation of the chunks"),
    "7.1-no-chunks-only-last-chunk": good(b"0\r\n\r\n", 0, "§7.1: an empty chunked body"),
    "7.1-chunk-size-hex-uppercase": good(b"A\r\n0123456789\r\n0\r\n\r\n", 10,
                                         "§7.1: chunk-size = 1*HEXDIG (A-F)"),
    "7.1-chunk-size-hex-lowercase": good(b"a\r\n0123456789\r\n0\r\n\r\n", 10,
                                         "§7.1: chunk-size = 1*HEXDIG; HEXDIG is "
                                         "case-insensitive (RFC 5234 §2.3)"),
    "7.1-chunk-size-multi-digit": good(b"1F\r\n" + b"z" * 31 + b"\r\n0\r\n\r\n", 31,
                                       "§7.1: a multi-digit hex chunk-size"),
    "7.1-chunk-size-leading-zeros": good(b"0005\r\nhello\r\n0\r\n\r\n", 5,
                                         "§7.1: 1*HEXDIG allows leading zeros"),
    "7.1-last-chunk-several-zeros": good(b"5\r\nhello\r\n000\r\n\r\n", 5,
                                         "§7.1: last-chunk = 1*(\"0\")"),
    "7-coding-name-case-insensitive": good(b"5\r\nhello\r\n0\r\n\r\n", 5,
                                           "§7: transfer-coding names are case-insensitive",
                                           te="Chunked"),
    "7-coding-name-uppercase": good(b"5\r\nhello\r\n0\r\n\r\n", 5,
                                    "§7: transfer-coding names are case-insensitive",
                                    te="CHUNKED"),
    "7.1.1-extension-ignored": good(b"5;name=value\r\nhello\r\n0\r\n\r\n", 5,
                                    "§7.1.1: a recipient MUST ignore unrecognized chunk "
                                    "extensions"),
    "7.1.1-extension-without-value": good(b"5;flag\r\nhello\r\n0\r\n\r\n", 5,
                                          "§7.1.1: chunk-ext-name without a value"),
    "7.1.1-extension-quoted-value": good(b'5;name="a b;\\"c"\r\nhello\r\n0\r\n\r\n', 5,
                                         "§7.1.1: chunk-ext-val may be a quoted-string "
                                         "(with ; and quoted-pair inside)"),
    "7.1.1-several-extensions": good(b"5;a=1;b=2;c\r\nhello\r\n0\r\n\r\n", 5,
                                     "§7.1.1: chunk-ext is a list"),
    "7.1.1-extension-on-last-chunk": good(b"5\r\nhello\r\n0;done=yes\r\n\r\n", 5,
                                          "§7.1: last-chunk = 1*(\"0\") [ chunk-ext ] CRLF"),
    "7.1.1-extension-with-bws": Case(
        chunked(b"5 ;a = 1\r\nhello\r\n0\r\n\r\n"), rejected(400),
        "DELIBERATE DEVIATION from §7.1.1 (chunk-ext = *( BWS \";\" BWS chunk-ext-name "
        "[ BWS \"=\" BWS chunk-ext-val ] )) and RFC 9110 §5.6.3 (a recipient MUST remove "
        "BWS): llhttp's strict grammar, which is the parser's and not ours, refuses whitespace "
        "in a chunk line, and chunk-line whitespace is where parsers have disagreed about "
        "framing (request smuggling); the request is refused and the connection closed, so "
        "nothing after it is parsed (docs/conformance.md, Known deviations)"),
    "7.1.2-trailer-fields": good(b"5\r\nhello\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n", 5,
                                 "§7.1.2: a trailer section after the last chunk"),
    "7.1.2-framing-field-in-trailer": Case(
        chunked(b"5\r\nhello\r\n0\r\nContent-Length: 40\r\n\r\n"),
        oneof(rejected(400), served(*ok(5))),
        "§7.1.2 / RFC 9110 §6.5.1: a trailer field must not change the framing; rejecting the "
        "message or ignoring the field are both accepted",
    ),
    "7.1.2-trailer-space-before-colon": bad(b"5\r\nhello\r\n0\r\nX-T : 1\r\n\r\n",
                                            "§5.1 applies to trailer fields: whitespace before "
                                            "the colon MUST be rejected with 400"),
    "7.1.2-trailer-obs-fold": Case(
        chunked(b"5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"), oneof(rejected(400), served(*ok(5))),
        "§5.2: obs-fold MUST be rejected with 400 or replaced by SP (either accepted)",
    ),
    "7.1-chunk-size-missing": bad(b"\r\nhello\r\n0\r\n\r\n", "§7.1: chunk-size = 1*HEXDIG"),
    "7.1-chunk-size-not-hex": bad(b"5g\r\nhello\r\n0\r\n\r\n", "§7.1: chunk-size = 1*HEXDIG"),
    "7.1-chunk-size-0x-prefix": bad(b"0x5\r\nhello\r\n0\r\n\r\n", "§7.1: no 0x prefix"),
    "7.1-chunk-size-signed": bad(b"+5\r\nhello\r\n0\r\n\r\n", "§7.1: no sign"),
    "7.1-chunk-size-overflows-64-bits": bad(
        b"1" + b"0" * 16 + b"5\r\nhello\r\n0\r\n\r\n",
        "§7.1: recipients MUST anticipate large hex numerals and prevent overflow; 17 hex "
        "digits do not fit 64 bits: 400 (or 413, the body limit) and close", 400, 413),
    "7.1-chunk-size-huge-numeral": bad(
        b"f" * 64 + b"\r\nhello\r\n0\r\n\r\n",
        "§7.1: a 64-digit chunk-size must not wrap around: 400 or 413 and close", 400, 413),
    "7.1-chunk-data-longer-than-size": bad(b"3\r\nhello\r\n0\r\n\r\n",
                                           "§7.1: chunk-data is followed by CRLF"),
    "7.1-chunk-data-shorter-than-size": bad(b"7\r\nhello\r\n0\r\n\r\n",
                                            "§7.1: chunk-data is chunk-size octets, then CRLF"),
    "7.1-chunk-data-missing-crlf": bad(b"5\r\nhello0\r\n\r\n",
                                       "§7.1: chunk-data is followed by CRLF"),
    "7.1-last-chunk-missing-final-crlf": bad(b"5\r\nhello\r\n0\r\nGET",
                                             "§7.1: the trailer section ends with CRLF; what "
                                             "follows here is not a field line"),
}


@pytest.fixture(scope="module")
def results(target: Target) -> dict[str, Outcome]:
    return run_cases(target, CASES)


@pytest.mark.parametrize("name", case_params(CASES))
def test_chunked_request(name: str, results: dict[str, Outcome]) -> None:
    """One RFC 9112 §7.1 chunked-request case (see ``CASES[name].why``)."""
    verify(CASES[name], results[name])


def test_7_1_chunked_response_syntax(target: Target) -> None:
    """§7.1: the server's chunked response has hex sizes, CRLF after each chunk, a
    last-chunk and an empty trailer section; the response after it parses cleanly."""
    ex = exchange(target, request("GET", "/stream") + request("GET", "/fixed", close=True))
    assert ex.statuses == [200, 200]
    first, second = ex.responses
    assert first.framing == "chunked" and first.header("transfer-encoding") == "chunked"
    assert first.body == b"part 0\npart 1\npart 2\n"
    assert first.chunk_sizes[-1] == 0
    assert second.body == b"x" * 100


def test_7_1_chunked_body_byte_by_byte(target: Target) -> None:
    """§7.1: chunk boundaries may fall anywhere in TCP segments; the body arrives in
    one-byte writes and is still read exactly."""
    data = (request("POST", "/bytes", "Transfer-Encoding: chunked")
            + b"3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"
            + request("GET", "/bytes-next", close=True))
    with target.connect() as conn:
        for i in range(len(data)):
            assert conn.send(data[i : i + 1])
        responses, closed = conn.responses()
    assert [r.status for r in responses] == [200, 200]
    assert responses[0].body.startswith(b"POST /bytes len=5 ")
    assert responses[1].body.startswith(b"GET /bytes-next len=0 ")
    assert closed
