"""RFC 9112 §3 (request line), §3.2 (request-target forms), §2.2, §2.3/RFC 9110 §2.5
(versions) and RFC 9110 §9.1 (methods).

Each case writes its request line with a normal head, then a pipelined
``GET {p}next`` that must only be served if the first request was.
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
HEAD_FIELDS = b"\r\nHost: example.com\r\n\r\n"


def line(request_line: bytes) -> bytes:
    """``request_line`` (without CRLF) with a Host field, then the follow-up request."""
    return request_line + HEAD_FIELDS + NEXT


def good(request_line: bytes, method: str, target: str, why: str) -> Case:
    return Case(line(request_line), served((method, target, 0), NEXT_SEEN), why,
                methods=(method, "GET"))


def bad(request_line: bytes, why: str, *statuses: int) -> Case:
    return Case(line(request_line), rejected(*(statuses or (400,))), why)


def lenient(request_line: bytes, method: str, target: str, why: str) -> Case:
    """Either rejected, or served as the well-formed line would be."""
    return Case(line(request_line),
                oneof(rejected(400), served((method, target, 0), NEXT_SEEN)), why)


METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE")

CASES: dict[str, Case] = {
    **{f"9.1-method-{m}": good(f"{m} {{p}}m HTTP/1.1".encode(), m, "{p}m",
                               f"RFC 9110 §9.1: {m} is a standard method")
       for m in METHODS},
    "9.1-extension-method-PATCH": good(b"PATCH {p}m HTTP/1.1", "PATCH", "{p}m",
                                       "RFC 9110 §9.1 / RFC 5789: an extension method"),
    "9.1-method-is-case-sensitive": bad(b"get {p}m HTTP/1.1",
                                        "RFC 9110 §9.1: methods are case-sensitive; `get` is "
                                        "not GET (an unknown method: 501 SHOULD, 400 accepted)",
                                        400, 501),
    "9.1-unknown-method": bad(b"FROB {p}m HTTP/1.1",
                              "RFC 9110 §9.1: an unrecognized method SHOULD get 501; 400 is "
                              "accepted too", 400, 501),
    "3-method-too-long": bad(b"A" * 64 + b" {p}m HTTP/1.1",
                             "§3: a method longer than any implemented SHOULD get 501; 400 "
                             "accepted", 400, 501),
    "3-method-not-a-token": bad(b"G(T {p}m HTTP/1.1", "§3: method = token"),
    "3.2.1-origin-form-with-query": good(b"GET {p}q?a=1&b=%20 HTTP/1.1", "GET",
                                         "{p}q?a=1&b=%20", "§3.2.1: origin-form with a query"),
    "3.2.2-absolute-form": good(b"GET http://example.org:81{p}abs?x HTTP/1.1", "GET",
                                "http://example.org:81{p}abs?x",
                                "§3.2.2: a server MUST accept the absolute-form"),
    "3.2.2-absolute-form-https": good(b"GET https://example.org{p}abs HTTP/1.1", "GET",
                                      "https://example.org{p}abs",
                                      "§3.2.2: absolute-form with an https URI"),
    "3.2.3-authority-form-only-with-connect": bad(b"GET example.org:80 HTTP/1.1",
                                                  "§3.2.3: authority-form is only for CONNECT"),
    "3.2.3-connect-not-implemented": Case(
        b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n" + NEXT,
        rejected(501, 405),
        "§3.2.3 / RFC 9110 §9.3.6: CONNECT to a server that does not tunnel: 501 (§9.1 SHOULD) "
        "or 405; never served, never a tunnel",
    ),
    "3.2.4-asterisk-form-only-with-options": bad(b"GET * HTTP/1.1",
                                                 "§3.2.4: asterisk-form is only for OPTIONS"),
    "3-target-with-space": bad(b"GET {p}a b HTTP/1.1",
                               "§3: an invalid request-line SHOULD get 400 (or a 301)", 400, 301),
    "3-target-with-control-char": bad(b"GET {p}a\x01b HTTP/1.1",
                                      "§3.2 / RFC 3986: a CTL is not allowed in a target"),
    "3-target-missing": bad(b"GET  HTTP/1.1", "§3: request-target is required"),
    "3-double-space-separator": lenient(b"GET  {p}ws HTTP/1.1", "GET", "{p}ws",
                                        "§3: recipients MAY parse on whitespace word "
                                        "boundaries; rejecting with 400 is the other choice"),
    "3-tab-separator": lenient(b"GET\t{p}ws\tHTTP/1.1", "GET", "{p}ws",
                               "§3: HTAB MAY be treated as SP; or 400"),
    "3-vertical-tab-separator": lenient(b"GET\x0b{p}ws HTTP/1.1", "GET", "{p}ws",
                                        "§3: VT MAY be treated as SP; or 400"),
    "3-trailing-space-after-version": lenient(b"GET {p}ws HTTP/1.1 ", "GET", "{p}ws",
                                              "§3: trailing whitespace MAY be ignored; or 400"),
    "3-leading-space-before-method": lenient(b" GET {p}ws HTTP/1.1", "GET", "{p}ws",
                                             "§3: preceding whitespace MAY be ignored; or 400"),
    "2.2-empty-line-before-request-line": lenient(b"\r\nGET {p}ws HTTP/1.1", "GET", "{p}ws",
                                                  "§2.2: a server SHOULD ignore at least one "
                                                  "empty line before the request-line"),
    "2.2-bare-cr-in-request-line": lenient(b"GET {p}ws\rHTTP/1.1", "GET", "{p}ws",
                                           "§2.2: a bare CR MUST make the element invalid "
                                           "or be replaced by SP"),
    "2.3-http10": Case(
        b"GET {p}v HTTP/1.0\r\n\r\n" + NEXT, served(("GET", "{p}v", 0)),
        "§2.3: HTTP/1.0 is served (and, without keep-alive, the connection then closes)",
    ),
    "2.5-higher-minor-version": Case(
        line(b"GET {p}v HTTP/1.2"), served(("GET", "{p}v", 0), NEXT_SEEN),
        "RFC 9110 §2.5: a higher minor version SHOULD be processed as HTTP/1.1",
    ),
    "2.5-major-version-2": bad(b"GET {p}v HTTP/2.0",
                               "RFC 9110 §2.5/§15.6.6: 505 for an unsupported major version",
                               505),
    "2.5-major-version-3": bad(b"GET {p}v HTTP/3.0",
                               "RFC 9110 §2.5/§15.6.6: 505 for an unsupported major version",
                               505),
    "2.3-http-name-is-case-sensitive": bad(b"GET {p}v http/1.1",
                                           "§2.3: HTTP-name is case-sensitive"),
    "2.3-version-two-digit-minor": bad(b"GET {p}v HTTP/1.10",
                                       "§2.3: HTTP-version = HTTP-name \"/\" DIGIT \".\" DIGIT",
                                       400, 505),
    "2.3-version-two-digit-major": bad(b"GET {p}v HTTP/11.1",
                                       "§2.3: one DIGIT for the major version", 400, 505),
    "2.3-version-missing-minor": bad(b"GET {p}v HTTP/1", "§2.3: the minor version is required"),
    "2.3-version-with-space": bad(b"GET {p}v HTTP/ 1.1", "§2.3: no whitespace inside"),
    "2.3-version-missing": Case(
        b"GET {p}v\r\n\r\n" + NEXT, rejected(400, 505),
        "§3: request-line = method SP request-target SP HTTP-version; no HTTP/0.9",
    ),
}


@pytest.fixture(scope="module")
def results(target: Target) -> dict[str, Outcome]:
    return run_cases(target, CASES)


@pytest.mark.parametrize("name", case_params(CASES))
def test_request_line(name: str, results: dict[str, Outcome]) -> None:
    """One RFC 9112 §3 request-line case (see ``CASES[name].why``)."""
    verify(CASES[name], results[name])


def test_3_2_4_options_asterisk(target: Target) -> None:
    """§3.2.4 / RFC 9110 §9.3.7: `OPTIONS *` is served, the app sees the target `*`."""
    mark = target.app.mark()
    ex = exchange(target, b"OPTIONS * HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
    assert ex.statuses == [200]
    assert ex.responses[0].body.startswith(b"OPTIONS * len=0 ")
    assert [(s.method, s.target) for s in target.app.since(mark)] == [("OPTIONS", "*")]


def test_2_5_response_version_is_http11(target: Target) -> None:
    """RFC 9110 §2.5: a server sends its highest conformant version (HTTP/1.1), also to an
    HTTP/1.0 client, and also on its own error responses."""
    ex = exchange(target, request("GET", "/v10", version="1.0", host=None))
    assert [(r.version, r.status) for r in ex.responses] == [("HTTP/1.1", 200)]
    ex = exchange(target, b"GET /v10 HTTP/1.0\r\nBad Field: x\r\n\r\n")
    assert [(r.version, r.status) for r in ex.responses] == [("HTTP/1.1", 400)]
