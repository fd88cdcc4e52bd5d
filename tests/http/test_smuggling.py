"""Request smuggling corpus: each attack is followed by a legitimate request.

For every case, fed whole, byte by byte and in hypothesis-chosen splits, the
proof is one of:

* rejected: a ProtocolError is raised before any second Request event, or
* accepted: exactly two requests come out, the attack as we framed it and the
  legitimate one, byte for byte; nothing hidden in a body ever becomes a request.

Each case also states which of the two must happen, so a parser change that
flips a rejection into an acceptance is noticed.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from h1support import Split, all_splits, drive

from zmqhttp.errors import ProtocolError
from zmqhttp.http import Data, EndOfMessage, Request

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n"
N = b"%d" % len(SMUGGLED)  # its length, for Content-Length
NX = b"%x" % len(SMUGGLED)  # and in hex, for a chunk size
LEGIT = b"GET /legit HTTP/1.1\r\nHost: example.com\r\n\r\n"
LEGIT_EVENT = Request(
    b"GET", b"/legit", b"/legit", b"", [(b"host", b"example.com")], "1.1", b"example.com"
)


@dataclass(frozen=True)
class Case:
    attack: bytes
    #: The body the attack is framed with when accepted; None: must be rejected.
    body: bytes | None = None
    status: int = 400


def post(*fields: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: example.com\r\n" + b"".join(f + b"\r\n" for f in fields)


def chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)


CASES: dict[str, Case] = {
    # Content-Length and Transfer-Encoding together (RFC 9112 §6.1: reject).
    "CL.TE": Case(
        post(b"Content-Length: 6", b"Transfer-Encoding: chunked") + b"\r\n0\r\n\r\n" + SMUGGLED
    ),
    "TE.CL": Case(
        post(b"Transfer-Encoding: chunked", b"Content-Length: 4") + b"\r\n"
        + chunked(SMUGGLED)
    ),
    "CL.TE-xchunked": Case(
        post(b"Content-Length: 5", b"Transfer-Encoding: xchunked") + b"\r\n0\r\n\r\n" + SMUGGLED
    ),
    # TE.TE: obfuscated Transfer-Encoding.
    "TE-xchunked": Case(post(b"Transfer-Encoding: xchunked") + b"\r\n" + chunked(SMUGGLED),
                        status=501),
    "TE-leading-space": Case(
        post(b"Transfer-Encoding:  chunked") + b"\r\n" + chunked(SMUGGLED), body=SMUGGLED
    ),
    "TE-tab-before-value": Case(
        post(b"Transfer-Encoding:\tchunked") + b"\r\n" + chunked(SMUGGLED), body=SMUGGLED
    ),
    "TE-chunked-identity": Case(
        post(b"Transfer-Encoding: chunked, identity") + b"\r\n" + chunked(SMUGGLED)
    ),
    "TE-identity-chunked": Case(
        post(b"Transfer-Encoding: identity, chunked") + b"\r\n" + chunked(SMUGGLED),
        status=501,
    ),
    "TE-duplicate-lines": Case(
        post(b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked") + b"\r\n"
        + chunked(SMUGGLED)
    ),
    "TE-duplicate-lines-with-identity": Case(
        post(b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity") + b"\r\n"
        + chunked(SMUGGLED)
    ),
    "TE-space-before-colon": Case(
        post(b"Transfer-Encoding : chunked", b"Content-Length: 5") + b"\r\n"
        + chunked(SMUGGLED)
    ),
    "TE-vertical-tab": Case(
        post(b"Transfer-Encoding:\x0bchunked") + b"\r\n" + chunked(SMUGGLED)
    ),
    "TE-obs-fold": Case(
        post(b"Transfer-Encoding:", b" chunked") + b"\r\n" + chunked(SMUGGLED)
    ),
    "TE-uppercase-value-is-fine": Case(
        post(b"Transfer-Encoding: CHUNKED") + b"\r\n" + chunked(SMUGGLED), body=SMUGGLED
    ),
    # Content-Length variants.
    "CL-duplicate-equal": Case(
        post(b"Content-Length: 5", b"Content-Length: 5") + b"\r\nhello" + SMUGGLED
    ),
    "CL-duplicate-different": Case(
        post(b"Content-Length: 0", b"Content-Length: " + N) + b"\r\n" + SMUGGLED
    ),
    "CL-list": Case(post(b"Content-Length: 5, 5") + b"\r\nhello"),
    "CL-negative": Case(post(b"Content-Length: -1") + b"\r\n" + SMUGGLED),
    "CL-plus": Case(post(b"Content-Length: +" + N) + b"\r\n" + SMUGGLED),
    "CL-hex": Case(post(b"Content-Length: 0x" + NX) + b"\r\n" + SMUGGLED),
    "CL-empty": Case(post(b"Content-Length: ") + b"\r\n" + SMUGGLED),
    "CL-trailing-garbage": Case(post(b"Content-Length: " + N + b"x") + b"\r\n" + SMUGGLED),
    "CL-overflow": Case(post(b"Content-Length: %d" % (2**64 + len(SMUGGLED))) + b"\r\n" + SMUGGLED),
    "CL-leading-zeros-is-fine": Case(
        post(b"Content-Length: 00" + N) + b"\r\n" + SMUGGLED, body=SMUGGLED
    ),
    # Chunk-size tricks.
    "chunk-size-overflow": Case(
        post(b"Transfer-Encoding: chunked") + b"\r\n"
        + b"1000000000000000000000000000000" + NX + b"\r\n" + SMUGGLED + b"\r\n0\r\n\r\n"
    ),
    "chunk-size-64bit-wrap": Case(
        post(b"Transfer-Encoding: chunked") + b"\r\n"
        + b"%x\r\n" % (2**64 + len(SMUGGLED)) + SMUGGLED + b"\r\n0\r\n\r\n"
    ),
    "chunk-size-bad-char": Case(
        post(b"Transfer-Encoding: chunked") + b"\r\n2g\r\nab\r\n0\r\n\r\n"
    ),
    "chunk-size-0x-prefix": Case(
        post(b"Transfer-Encoding: chunked") + b"\r\n0x" + NX + b"\r\n" + SMUGGLED + b"\r\n0\r\n\r\n"
    ),
    "chunk-size-negative": Case(
        post(b"Transfer-Encoding: chunked") + b"\r\n-1\r\n" + SMUGGLED + b"\r\n0\r\n\r\n"
    ),
    "chunk-size-space-before-ext": Case(
        post(b"Transfer-Encoding: chunked") + b"\r\n"
        + NX + b" ;x\r\n" + SMUGGLED + b"\r\n0\r\n\r\n"
    ),
    "chunk-data-longer-than-size": Case(
        post(b"Transfer-Encoding: chunked") + b"\r\n1\r\nab\r\n0\r\n\r\n"
    ),
    "chunk-bare-lf": Case(
        post(b"Transfer-Encoding: chunked") + b"\r\n" + NX + b"\n" + SMUGGLED + b"\n0\n\n"
    ),
    "last-chunk-bare-lf-then-request": Case(
        post(b"Transfer-Encoding: chunked") + b"\r\n0\n\n" + SMUGGLED
    ),
    # Line endings and field syntax.
    "bare-lf-head": Case(
        b"POST / HTTP/1.1\nHost: example.com\nContent-Length: " + N + b"\n\n" + SMUGGLED
    ),
    "bare-lf-one-field": Case(
        b"POST / HTTP/1.1\r\nHost: example.com\nContent-Length: " + N + b"\r\n\r\n" + SMUGGLED
    ),
    "bare-cr-in-head": Case(
        b"POST / HTTP/1.1\r\nHost: example.com\rContent-Length: " + N + b"\r\n\r\n" + SMUGGLED
    ),
    "bare-cr-in-value": Case(post(b"X: a\rb", b"Content-Length: " + N) + b"\r\n" + SMUGGLED),
    "obs-fold": Case(post(b"X-Fold: a", b" Content-Length: " + N) + b"\r\n" + SMUGGLED),
    "obs-fold-tab": Case(post(b"X-Fold: a", b"\tb") + b"\r\n"),
    "nul-in-value": Case(post(b"X: a\x00b", b"Content-Length: " + N) + b"\r\n" + SMUGGLED),
    "nul-in-name": Case(post(b"X\x00: a") + b"\r\n"),
    "space-before-colon": Case(post(b"Content-Length : " + N) + b"\r\n" + SMUGGLED),
    "space-in-name": Case(post(b"Content Length: " + N) + b"\r\n" + SMUGGLED),
    "empty-field-name": Case(post(b": " + N) + b"\r\n"),
    "CL-in-trailer": Case(
        post(b"Transfer-Encoding: chunked") + b"\r\n0\r\nContent-Length: " + N + b"\r\n\r\n"
        + SMUGGLED
    ),
    "http10-te": Case(
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(SMUGGLED)
    ),
    "ignored-upgrade-chunked": Case(
        post(b"Connection: upgrade", b"Upgrade: h2c", b"Transfer-Encoding: chunked") + b"\r\n"
        + chunked(SMUGGLED),
        status=501,
    ),
    "ignored-upgrade-content-length": Case(
        post(b"Connection: upgrade", b"Upgrade: h2c", b"Content-Length: " + N) + b"\r\n"
        + SMUGGLED,
        body=SMUGGLED,
    ),
    "GET-with-body-is-framed": Case(
        b"GET / HTTP/1.1\r\nHost: example.com\r\nContent-Length: " + N + b"\r\n\r\n" + SMUGGLED,
        body=SMUGGLED,
    ),
}


def test_corpus_is_well_formed() -> None:
    assert int(N) == int(NX, 16) == len(SMUGGLED)
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", sorted(CASES))
@all_splits(10)
def test_nothing_is_smuggled(name: str, split: Split) -> None:
    case = CASES[name]
    outcome = drive(split.apply(case.attack + LEGIT))
    requests = outcome.requests
    assert all(r.path != b"/smuggled" for r in requests)
    if case.body is None:
        # Rejected, before any second request could appear.
        assert isinstance(outcome.error, ProtocolError), outcome.events
        assert outcome.error.status == case.status
        assert len(requests) <= 1
        assert EndOfMessage() not in outcome.events  # the attack never completed
    else:
        assert outcome.error is None
        assert requests[1:] == [LEGIT_EVENT]
        first = outcome.events[: outcome.events.index(requests[1])]
        assert first[1:] == [Data(case.body), EndOfMessage()]
        assert outcome.events[-1] == EndOfMessage()
