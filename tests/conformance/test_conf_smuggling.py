"""Request smuggling corpus, against a running server (RFC 9112 §11.2).

Each attack is a ``POST {p}attack`` whose body, depending on how its framing is
read, holds a complete request ``GET {p}smuggled``. After it, on the same
connection, comes a legitimate ``GET {p}legit`` with ``Connection: close``. The
proof, per case, is one of:

* **rejected**: one 4xx/5xx response, then the server closes the connection;
  neither ``{p}smuggled`` nor ``{p}legit`` ever reaches the app;
* **accepted**: the attack is answered with the body length the RFC gives it,
  then ``{p}legit``; the app saw exactly those two requests;
* **accepted, then closed** (where the RFC says the connection MUST close after
  it, e.g. Content-Length with Transfer-Encoding): only the attack is answered.

In every case the app's record proves ``{p}smuggled`` was never seen. Each case
states which outcomes are allowed, so a parser change that flips a rejection
into an acceptance is noticed. The sans-IO version of this corpus is
tests/http/test_smuggling.py; this one adds the transport, the server's
lingering close and the fabric hop.
"""

from __future__ import annotations

import pytest
from confsupport import (
    Case,
    Expect,
    Outcome,
    Served,
    Target,
    blen,
    case_params,
    oneof,
    rejected,
    run_cases,
    served,
    verify,
)

SMUGGLED = b"GET {p}smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n"
N = b"%d" % blen(SMUGGLED)  # the smuggled request's length, for Content-Length
X = b"%x" % blen(SMUGGLED)  # and in hex, for a chunk size
LEGIT = b"GET {p}legit HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
HOST = b"Host: example.com"


def attack(*fields: bytes, start: bytes = b"POST {p}attack HTTP/1.1", eol: bytes = b"\r\n",
           host: bool = True) -> bytes:
    """A request head: ``start`` line, Host, ``fields``, each ended by ``eol``."""
    lines = [start, *([HOST] if host else []), *fields]
    return b"".join(line + eol for line in lines) + eol


def chunked(payload: bytes = SMUGGLED, eol: bytes = b"\r\n") -> bytes:
    return b"%x" % blen(payload) + eol + payload + eol + b"0" + eol + eol


def case(head: bytes, body: bytes, expect: Expect, why: str,
         methods: tuple[str, ...] = ()) -> Case:
    return Case(head + body + LEGIT, expect, why, methods=methods)


def accepted(n: int, method: str = "POST", target: str = "{p}attack") -> Served:
    """The attack read with an ``n``-byte body, then the legitimate request."""
    return served((method, target, n), ("GET", "{p}legit", 0))


def closed_after(n: int) -> Served:
    """The attack read with an ``n``-byte body, then the connection closed."""
    return served(("POST", "{p}attack", n))


NB = blen(SMUGGLED)
REJECT = rejected(400)
REJECT_CODING = rejected(400, 501)
TE = b"Transfer-Encoding: "
CL = b"Content-Length: "

CASES: dict[str, Case] = {
    # -- CL.TE and TE.CL: both framings on one message (RFC 9112 §6.1, §6.3 rule 3) --------------
    "CL.TE": case(attack(CL + b"6", TE + b"chunked"), b"0\r\n\r\n" + SMUGGLED,
                  oneof(REJECT, closed_after(0)),
                  "§6.1: reject, or read as chunked and then close"),
    "TE.CL": case(attack(TE + b"chunked", CL + b"4"), chunked(),
                  oneof(REJECT, closed_after(NB)),
                  "§6.1: reject, or read as chunked and then close"),
    "CL.TE-xchunked": case(attack(CL + b"5", TE + b"xchunked"), b"0\r\n\r\n" + SMUGGLED,
                           REJECT_CODING, "§6.1/§6.3: CL with an unknown coding"),
    "CL.TE-identity": case(attack(CL + N, TE + b"identity"), SMUGGLED, REJECT_CODING,
                           "§6.1: `identity` is no longer a transfer coding"),
    "TE.CL-http10": case(attack(TE + b"chunked", CL + b"0", start=b"POST {p}attack HTTP/1.0"),
                         chunked(), oneof(REJECT, closed_after(NB)),
                         "§6.1: TE in HTTP/1.0 is faulty framing: reject or process and close"),
    "TE-http10": case(attack(TE + b"chunked", start=b"POST {p}attack HTTP/1.0", host=False),
                      chunked(), oneof(REJECT, closed_after(NB)),
                      "§6.1: TE in HTTP/1.0 is faulty framing: reject or process and close"),
    # -- TE.TE: obfuscated Transfer-Encoding ----------------------------------------------------
    "TE-xchunked": case(attack(TE + b"xchunked"), chunked(), REJECT_CODING,
                        "§6.1: unknown coding: 501 (or 400: chunked is not final)"),
    "TE-chunked-prefix-word": case(attack(TE + b"chunkedx"), chunked(), REJECT_CODING,
                                   "§6.1: `chunkedx` is not chunked"),
    "TE-leading-space-in-value": case(attack(TE + b"   chunked"), chunked(), accepted(NB),
                                      "RFC 9110 §5.5: leading OWS is not part of the value"),
    "TE-tab-before-value": case(attack(TE[:-1] + b"\tchunked"), chunked(), accepted(NB),
                                "RFC 9110 §5.5: HTAB is OWS"),
    "TE-trailing-space": case(attack(TE + b"chunked  "), chunked(), accepted(NB),
                              "RFC 9110 §5.5: trailing OWS is not part of the value"),
    "TE-vertical-tab-before-value": case(attack(TE[:-1] + b"\x0bchunked"), chunked(),
                                         REJECT_CODING, "VT is not OWS: not `chunked`"),
    "TE-form-feed-before-value": case(attack(TE[:-1] + b"\x0cchunked"), chunked(),
                                      REJECT_CODING, "FF is not OWS: not `chunked`"),
    "TE-vertical-tab-after-value": case(attack(TE + b"chunked\x0b"), chunked(), REJECT_CODING,
                                        "VT is not OWS: not `chunked`"),
    "TE-chunked-identity": case(attack(TE + b"chunked, identity"), chunked(), REJECT_CODING,
                                "§6.3 rule 4: chunked not final: 400 (501 also accepted)"),
    "TE-identity-chunked": case(attack(TE + b"identity, chunked"), chunked(), REJECT_CODING,
                                "§6.1: an unknown coding before chunked: 501"),
    "TE-duplicate-lines": case(attack(TE + b"chunked", TE + b"chunked"), chunked(),
                               REJECT_CODING, "§6.1: chunked applied twice"),
    "TE-duplicate-lines-identity": case(attack(TE + b"chunked", TE + b"identity"), chunked(),
                                        REJECT_CODING, "§6.3 rule 4: chunked not final"),
    "TE-uppercase-value": case(attack(TE + b"CHUNKED"), chunked(), accepted(NB),
                               "§7: coding names are case-insensitive"),
    "TE-mixed-case-name": case(attack(b"tRaNsFeR-eNcOdInG: chunked"), chunked(), accepted(NB),
                               "RFC 9110 §5.1: field names are case-insensitive"),
    "TE-quoted-value": case(attack(TE + b'"chunked"'), chunked(), REJECT_CODING,
                            "a quoted string is not the token `chunked`"),
    "TE-empty-list-element": case(attack(TE + b", chunked"), chunked(),
                                  oneof(REJECT_CODING, accepted(NB)),
                                  "RFC 9110 §5.6.1.2: empty list elements MAY be ignored"),
    "TE-space-before-colon": case(attack(b"Transfer-Encoding : chunked", CL + b"5"), chunked(),
                                  REJECT, "§5.1: whitespace before the colon MUST be 400"),
    "TE-obs-fold": case(attack(b"Transfer-Encoding:", b" chunked"), chunked(),
                        oneof(REJECT, accepted(NB)),
                        "§5.2: obs-fold rejected, or replaced by SP (then it is chunked)"),
    "TE-nul-after-value": case(attack(TE + b"chunked\x00"), chunked(), REJECT_CODING,
                               "RFC 9110 §5.5: NUL rejected (or replaced by SP)"),
    "TE-underscore-name-with-CL": case(attack(b"Transfer_Encoding: chunked", CL + N), SMUGGLED,
                                       accepted(NB),
                                       "`Transfer_Encoding` is another field: CL frames the "
                                       "body"),
    "TE-header-is-not-transfer-encoding": case(attack(b"TE: chunked", CL + N), SMUGGLED,
                                               accepted(NB),
                                               "the TE request field is not framing"),
    # -- Content-Length variants ---------------------------------------------------------------
    "CL-duplicate-equal": case(attack(CL + N, CL + N), SMUGGLED,
                               oneof(REJECT, accepted(NB)),
                               "RFC 9110 §8.6: identical repeats MAY be rejected or merged"),
    "CL-duplicate-different": case(attack(CL + b"0", CL + N), SMUGGLED, REJECT,
                                   "§6.3 rule 5: differing values: 400 and close"),
    "CL-duplicate-different-reversed": case(attack(CL + N, CL + b"0"), SMUGGLED, REJECT,
                                            "§6.3 rule 5: differing values: 400 and close"),
    "CL-list-equal": case(attack(CL + N + b", " + N), SMUGGLED, oneof(REJECT, accepted(NB)),
                          "RFC 9110 §8.6: an identical list MAY be rejected or merged"),
    "CL-list-different": case(attack(CL + b"0, " + N), SMUGGLED, REJECT,
                              "§6.3 rule 5: a list of differing values: 400"),
    "CL-trailing-comma": case(attack(CL + N + b","), SMUGGLED, oneof(REJECT, accepted(NB)),
                              "RFC 9110 §8.6 / §5.6.1.2: reject, or ignore the empty element"),
    "CL-signed-plus": case(attack(CL + b"+" + N), SMUGGLED, REJECT, "§6.3 rule 5: 1*DIGIT"),
    "CL-negative": case(attack(CL + b"-1"), SMUGGLED, REJECT, "§6.3 rule 5: 1*DIGIT"),
    "CL-hex": case(attack(CL + b"0x" + X), SMUGGLED, REJECT, "§6.3 rule 5: 1*DIGIT"),
    "CL-space-inside": case(attack(CL + N[:1] + b" " + N[1:]), SMUGGLED, REJECT,
                            "§6.3 rule 5: 1*DIGIT, no inner space"),
    "CL-empty": case(attack(CL[:-1]), SMUGGLED, REJECT, "§6.3 rule 5: empty is invalid"),
    "CL-trailing-garbage": case(attack(CL + N + b"x"), SMUGGLED, REJECT, "§6.3 rule 5"),
    "CL-overflow-64-bits": case(attack(CL + b"%d" % (2**64 + NB)), SMUGGLED,
                                rejected(400, 413),
                                "RFC 9110 §8.6: no integer wrap-around"),
    "CL-leading-zeros": case(attack(CL + b"000" + N), SMUGGLED, accepted(NB),
                             "§6.2: 1*DIGIT allows leading zeros"),
    "CL-surrounding-tabs": case(attack(CL[:-1] + b"\t" + N + b"\t"), SMUGGLED, accepted(NB),
                                "RFC 9110 §5.5: HTAB is OWS"),
    "CL-space-before-colon": case(attack(b"Content-Length : " + N), SMUGGLED, REJECT,
                                  "§5.1: MUST 400"),
    "CL-space-in-name": case(attack(b"Content Length: " + N), SMUGGLED, REJECT,
                             "RFC 9110 §5.1: a field name is a token"),
    "CL-in-trailer": case(attack(TE + b"chunked"),
                          chunked()[:-2] + b"Content-Length: 0\r\n\r\n",
                          oneof(REJECT, accepted(NB)),
                          "§7.1.2: a trailer never changes the framing: reject or ignore it"),
    # -- chunk-size tricks (§7.1) --------------------------------------------------------------
    "chunk-size-overflow": case(attack(TE + b"chunked"),
                                b"1" + b"0" * 30 + X + b"\r\n" + SMUGGLED + b"\r\n0\r\n\r\n",
                                rejected(400, 413), "§7.1: MUST prevent overflow"),
    "chunk-size-64-bit-wrap": case(attack(TE + b"chunked"),
                                   b"%x\r\n" % (2**64 + NB) + SMUGGLED + b"\r\n0\r\n\r\n",
                                   rejected(400, 413), "§7.1: 2**64+n must not become n"),
    "chunk-size-0x-prefix": case(attack(TE + b"chunked"),
                                 b"0x" + X + b"\r\n" + SMUGGLED + b"\r\n0\r\n\r\n", REJECT,
                                 "§7.1: chunk-size = 1*HEXDIG"),
    "chunk-size-negative": case(attack(TE + b"chunked"),
                                b"-1\r\n" + SMUGGLED + b"\r\n0\r\n\r\n", REJECT, "§7.1"),
    "chunk-size-bad-char": case(attack(TE + b"chunked"), b"2g\r\nab\r\n0\r\n\r\n" + SMUGGLED,
                                REJECT, "§7.1: chunk-size = 1*HEXDIG"),
    "chunk-size-space-before-ext": case(attack(TE + b"chunked"),
                                        X + b" ;x\r\n" + SMUGGLED + b"\r\n0\r\n\r\n",
                                        oneof(REJECT, accepted(NB)),
                                        "§7.1.1: BWS before `;` (parsed or rejected; never "
                                        "mis-framed)"),
    "chunk-size-trailing-space": case(attack(TE + b"chunked"),
                                      X + b" \r\n" + SMUGGLED + b"\r\n0\r\n\r\n",
                                      oneof(REJECT, accepted(NB)),
                                      "§7.1: whitespace after the size: rejected or ignored"),
    "chunk-data-longer-than-size": case(attack(TE + b"chunked"),
                                        b"1\r\nab\r\n0\r\n\r\n" + SMUGGLED, REJECT,
                                        "§7.1: chunk-data is followed by CRLF"),
    "chunk-ext-bare-lf": case(attack(TE + b"chunked"),
                              X + b";a\nb\r\n" + SMUGGLED + b"\r\n0\r\n\r\n", REJECT,
                              "§7.1.1: no LF inside a chunk extension"),
    "chunk-size-bare-lf": case(attack(TE + b"chunked"), chunked(eol=b"\n"),
                               oneof(REJECT, accepted(NB)),
                               "§7.1: CRLF after the size (a bare LF rejected, or read as one)"),
    "last-chunk-bare-lf-then-request": case(attack(TE + b"chunked"), b"0\n\n" + SMUGGLED,
                                            REJECT,
                                            "§7.1: the last chunk and trailer end in CRLF; "
                                            "reading `0\\n\\n` as the end would hand the "
                                            "smuggled request to the app"),
    # -- line endings and field syntax ---------------------------------------------------------
    "bare-lf-head": case(attack(CL + N, eol=b"\n"), SMUGGLED, oneof(REJECT, accepted(NB)),
                         "§2.2: a bare LF MAY be read as a line end (or rejected)"),
    "bare-lf-one-field": case(b"POST {p}attack HTTP/1.1\r\nHost: example.com\nContent-Length: "
                              + N + b"\r\n\r\n", SMUGGLED, oneof(REJECT, accepted(NB)),
                              "§2.2: one field ended by a bare LF"),
    "bare-cr-in-head": case(b"POST {p}attack HTTP/1.1\r\nHost: example.com\rContent-Length: "
                            + N + b"\r\n\r\n", SMUGGLED, REJECT,
                            "§2.2: a bare CR is invalid (or SP: then Host is invalid)"),
    "bare-cr-in-value": case(attack(b"X-A: a\rb", CL + N), SMUGGLED, oneof(REJECT, accepted(NB)),
                             "§2.2: a bare CR rejected or replaced by SP"),
    "cr-cr-lf": case(attack(b"X-A: a\r", CL + N), SMUGGLED, oneof(REJECT, accepted(NB)),
                     "§2.2: CR CR LF: a bare CR before the line end"),
    "obs-fold-hides-content-length": case(attack(b"X-Fold: a", b" Content-Length: " + N),
                                          SMUGGLED, REJECT,
                                          "§5.2: obs-fold MUST be rejected or folded; the "
                                          "server rejects (folding would make the body a "
                                          "request)"),
    "obs-fold-tab": case(attack(b"X-Fold: a", b"\tb", CL + N), SMUGGLED,
                         oneof(REJECT, accepted(NB)), "§5.2: obs-fold rejected or folded"),
    "nul-in-value": case(attack(b"X-A: a\x00b", CL + N), SMUGGLED, oneof(REJECT, accepted(NB)),
                         "RFC 9110 §5.5: NUL rejected or replaced by SP"),
    "nul-in-name": case(attack(b"X\x00A: a", CL + N), SMUGGLED, REJECT,
                        "RFC 9110 §5.1: a field name is a token"),
    "obs-text-in-name": case(attack(b"X\xffA: a", CL + N), SMUGGLED, REJECT,
                             "RFC 9110 §5.1: a field name is a token"),
    "obs-text-in-value": case(attack(b"X-A: \xff\xfe", CL + N), SMUGGLED, accepted(NB),
                              "RFC 9110 §5.5: obs-text is allowed in a value"),
    "empty-field-name": case(attack(b": " + N, CL + N), SMUGGLED, REJECT,
                             "RFC 9110 §5.1: a field name is a token"),
    "whitespace-before-first-field": case(b"POST {p}attack HTTP/1.1\r\n Content-Length: "
                                          + N + b"\r\nHost: example.com\r\n\r\n", SMUGGLED,
                                          REJECT,
                                          "§2.2: MUST reject or ignore the line; the server "
                                          "rejects (ignoring it would leave no body)"),
    # -- request-line tricks (§3) --------------------------------------------------------------
    "request-line-bare-lf": case(b"POST {p}attack HTTP/1.1\nHost: example.com\r\n"
                                 b"Content-Length: " + N + b"\r\n\r\n", SMUGGLED,
                                 oneof(REJECT, accepted(NB)), "§2.2: bare LF after the line"),
    "request-line-double-space": case(attack(CL + N, start=b"POST  {p}attack HTTP/1.1"),
                                      SMUGGLED, oneof(REJECT, accepted(NB)),
                                      "§3: MAY split on whitespace, or 400"),
    "request-line-tab": case(attack(CL + N, start=b"POST\t{p}attack\tHTTP/1.1"), SMUGGLED,
                             oneof(REJECT, accepted(NB)), "§3: MAY split on whitespace, or 400"),
    "request-line-trailing-junk": case(attack(CL + N, start=b"POST {p}attack HTTP/1.1 x"),
                                       SMUGGLED, REJECT, "§3: invalid request-line: 400"),
    "request-line-nul-in-target": case(attack(CL + N, start=b"POST {p}attack\x00 HTTP/1.1"),
                                       SMUGGLED, REJECT, "§3.2: no NUL in a target"),
    "request-line-no-version": case(b"GET {p}attack\r\n", SMUGGLED, rejected(400, 505),
                                    "§3: no HTTP/0.9 simple request"),
    "request-line-lowercase-method": case(attack(CL + N, start=b"post {p}attack HTTP/1.1"),
                                          SMUGGLED, rejected(400, 501),
                                          "RFC 9110 §9.1: methods are case-sensitive"),
    "request-line-version-http2": case(attack(CL + N, start=b"POST {p}attack HTTP/2.0"),
                                       SMUGGLED, rejected(505, 400),
                                       "RFC 9110 §2.5: another major version"),
    # -- requests whose body must simply be framed --------------------------------------------
    "GET-with-body-is-framed": case(attack(CL + N, start=b"GET {p}attack HTTP/1.1"), SMUGGLED,
                                    accepted(NB, method="GET"),
                                    "§6.3: a GET body is framed like any other"),
    "HEAD-with-body-is-framed": case(attack(CL + N, start=b"HEAD {p}attack HTTP/1.1"),
                                     SMUGGLED, accepted(NB, method="HEAD"),
                                     "§6.3: a HEAD request body is framed like any other",
                                     methods=("HEAD", "GET")),
    "ignored-upgrade-content-length": case(attack(b"Connection: upgrade", b"Upgrade: h2c",
                                                  CL + N), SMUGGLED, accepted(NB),
                                           "RFC 9110 §7.8: an ignored Upgrade; the body is "
                                           "read by its Content-Length"),
    "ignored-upgrade-chunked": case(attack(b"Connection: upgrade", b"Upgrade: h2c",
                                           TE + b"chunked"), chunked(),
                                    oneof(rejected(400, 501), accepted(NB)),
                                    "RFC 9110 §7.8: an ignored Upgrade; reject or read chunked"),
    "expect-continue-body-sent-anyway-app-does-not-read": case(
        attack(b"Expect: 100-continue", CL + N, start=b"POST {p}noread HTTP/1.1"), SMUGGLED,
        oneof(served(("POST", "{p}noread", 0), ("GET", "{p}legit", 0)),
              served(("POST", "{p}noread", 0))),
        "RFC 9110 §10.1.1: the unread body is drained or the connection closed; never parsed "
        "as a request"),
    "unread-body-app-does-not-read": case(
        attack(CL + N, start=b"POST {p}noread HTTP/1.1"), SMUGGLED,
        oneof(served(("POST", "{p}noread", 0), ("GET", "{p}legit", 0)),
              served(("POST", "{p}noread", 0))),
        "§6.3: a body the app ignores is still skipped by its length (or the server closes)"),
}


@pytest.fixture(scope="module")
def results(target: Target) -> dict[str, Outcome]:
    return run_cases(target, CASES)


def test_corpus_is_well_formed() -> None:
    assert int(N) == int(X, 16) == NB
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", case_params(CASES))
def test_nothing_is_smuggled(name: str, target: Target, results: dict[str, Outcome]) -> None:
    """One smuggling attack; see the module docstring for what is proved."""
    outcome = results[name]
    assert not [s for s in outcome.seen if "smuggled" in s.target], outcome.seen
    verify(CASES[name], outcome)
