"""RFC 9112 §5 (field syntax), §2.2 (line endings) and RFC 9110 §5 (field values).

Table cases add one field line to ``POST {p}f`` (with a 5-byte body) and pipeline
``GET {p}next`` behind it; the tests below check what value the app received.
"""

from __future__ import annotations

import ast

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
SERVED = served(("POST", "{p}f", 5), ("GET", "{p}next", 0))


def with_line(field_line: bytes) -> bytes:
    """A POST whose head carries ``field_line`` between Host and Content-Length."""
    return (b"POST {p}f HTTP/1.1\r\nHost: example.com\r\n" + field_line
            + b"\r\nContent-Length: 5\r\n\r\nhello" + NEXT)


def good(field_line: bytes, why: str) -> Case:
    return Case(with_line(field_line), SERVED, why)


def bad(field_line: bytes, why: str) -> Case:
    return Case(with_line(field_line), rejected(400), why)


def either(field_line: bytes, why: str) -> Case:
    return Case(with_line(field_line), oneof(rejected(400), SERVED), why)


CASES: dict[str, Case] = {
    "5.1-name-case-insensitive": Case(
        b"POST {p}f HTTP/1.1\r\nhOsT: example.com\r\ncontent-LENGTH: 5\r\n\r\nhello" + NEXT,
        SERVED, "§5.1 / RFC 9110 §5.1: field names are case-insensitive",
    ),
    "5.1-space-before-colon": bad(b"X-Test : v", "§5.1: whitespace between field name and "
                                  "colon MUST be rejected with 400"),
    "5.1-tab-before-colon": bad(b"X-Test\t: v", "§5.1: no whitespace before the colon (MUST "
                                "400)"),
    "5.1-space-before-colon-content-length": Case(
        b"POST {p}f HTTP/1.1\r\nHost: example.com\r\nContent-Length : 5\r\n\r\nhello" + NEXT,
        rejected(400), "§5.1: MUST 400, never read as Content-Length or ignored",
    ),
    "5-no-colon": bad(b"X-Test v", "§5: field-line = field-name \":\" OWS field-value OWS"),
    "5-empty-name": bad(b": v", "RFC 9110 §5.1: field-name = token (at least one tchar)"),
    "5.1-name-with-space": bad(b"X Test: v", "RFC 9110 §5.1: field-name = token"),
    "5.1-name-with-at-sign": bad(b"X@Test: v", "RFC 9110 §5.1: `@` is not a tchar"),
    "5.1-name-with-quote": bad(b'"X": v', "RFC 9110 §5.1: DQUOTE is not a tchar"),
    "5.1-name-with-del": bad(b"X\x7fTest: v", "RFC 9110 §5.1: DEL is not a tchar"),
    "5.1-name-with-nul": bad(b"X\x00Test: v", "RFC 9110 §5.1: NUL is not a tchar"),
    "5.1-name-with-obs-text": bad(b"X\xe9: v", "RFC 9110 §5.1: obs-text is not a tchar"),
    "5.1-name-tchar-punctuation": good(b"X!#$%&'*+-.^_`|~1: v",
                                       "RFC 9110 §5.6.2: every tchar is allowed in a name"),
    "5.5-empty-value": good(b"X-Empty:", "RFC 9110 §5.5: field-value may be empty"),
    "5.5-htab-in-value": good(b"X-Test: a\tb", "RFC 9110 §5.5: HTAB is allowed inside a value"),
    "5.5-obs-text-in-value": good(b"X-Test: caf\xe9", "RFC 9110 §5.5: obs-text is allowed "
                                  "in a value"),
    "5.5-nul-in-value": either(b"X-Test: a\x00b", "RFC 9110 §5.5: NUL in a value MUST be "
                               "rejected or replaced with SP (either accepted)"),
    "5.5-bare-cr-in-value": either(b"X-Test: a\rb", "§2.2 / RFC 9110 §5.5: a bare CR MUST be "
                                   "rejected or replaced with SP"),
    "5.5-ctl-in-value": either(b"X-Test: a\x01b", "RFC 9110 §5.5: a CTL is not a field-vchar "
                               "(rejecting or passing it on are both seen in practice)"),
    "5.2-obs-fold": either(b"X-Test: a\r\n b", "§5.2: obs-fold MUST be rejected with 400 or "
                           "replaced by SP"),
    "5.2-obs-fold-tab": either(b"X-Test: a\r\n\tb", "§5.2: obs-fold with HTAB"),
    "2.2-whitespace-before-first-field": Case(
        b"POST {p}f HTTP/1.1\r\n X-Test: v\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello"
        + NEXT, oneof(rejected(400), SERVED),
        "§2.2: whitespace between the start-line and the first field MUST be rejected or the "
        "line ignored",
    ),
    "2.2-bare-lf-ends-field-line": either(b"X-Test: v\nX-Other: w",
                                          "§2.2: a recipient MAY accept a bare LF as a line "
                                          "terminator (or reject it)"),
    "2.2-bare-lf-everywhere": Case(
        b"POST {p}f HTTP/1.1\nHost: example.com\nContent-Length: 5\n\nhello" + NEXT,
        oneof(rejected(400), SERVED), "§2.2: bare LF MAY be accepted as a line terminator",
    ),
    "5.4-many-fields-within-limit": good(
        b"\r\n".join(b"X-F%d: %d" % (i, i) for i in range(90)),
        "RFC 9110 §5.4: 90 fields are below the limit of 100",
    ),
    "5.4-long-field-within-limit": good(b"X-Long: " + b"v" * 8000,
                                        "RFC 9110 §5.4: an 8 KB field is below the limit"),
}


@pytest.fixture(scope="module")
def results(target: Target) -> dict[str, Outcome]:
    return run_cases(target, CASES)


@pytest.mark.parametrize("name", case_params(CASES))
def test_field_syntax(name: str, results: dict[str, Outcome]) -> None:
    """One RFC 9112 §5 field-syntax case (see ``CASES[name].why``)."""
    verify(CASES[name], results[name])


# -- what the app receives ------------------------------------------------------------------


def app_headers(target: Target, *field_lines: bytes) -> dict[str, str] | int:
    """The HTTP_X_* values the app saw, or the status if the request was refused."""
    data = (b"GET /x/headers HTTP/1.1\r\nHost: example.com\r\n"
            + b"".join(f + b"\r\n" for f in field_lines) + b"Connection: close\r\n\r\n")
    ex = exchange(target, data)
    assert len(ex.responses) == 1 and ex.closed
    resp = ex.responses[0]
    if resp.status != 200:
        return resp.status
    lines = resp.body.decode("ascii").splitlines()
    return {k: ast.literal_eval(v) for k, v in (line.split("=", 1) for line in lines)}


def test_5_5_ows_around_value_is_stripped(target: Target) -> None:
    """RFC 9110 §5.5: leading and trailing OWS are not part of the field value."""
    assert app_headers(target, b"X-A: \t value with  inner space \t ") == {
        "HTTP_X_A": "value with  inner space"}


def test_5_5_obs_text_value_is_passed_as_latin1(target: Target) -> None:
    """RFC 9110 §5.5: obs-text octets are kept; WSGI gives them as latin-1 (PEP 3333)."""
    assert app_headers(target, b"X-A: caf\xe9 \x80\xff") == {"HTTP_X_A": "caf\xe9 \x80\xff"}


def test_5_3_repeated_field_lines_are_combined(target: Target) -> None:
    """RFC 9110 §5.3: repeated field lines combine, in order, into one comma list."""
    got = app_headers(target, b"X-A: 1", b"X-B: z", b"X-A: 2")
    assert isinstance(got, dict)
    assert got["HTTP_X_A"].replace(" ", "") == "1,2" and got["HTTP_X_B"] == "z"


def test_5_2_obs_fold_rejected_or_replaced_by_space(target: Target) -> None:
    """§5.2: a server MUST reject obs-fold with 400 or replace each with SP before use."""
    got = app_headers(target, b"X-A: one", b" two")
    assert got == 400 or got == {"HTTP_X_A": "one two"}


def test_5_5_nul_rejected_or_replaced_by_space(target: Target) -> None:
    """RFC 9110 §5.5: NUL, CR or LF in a value MUST be rejected or replaced with SP."""
    got = app_headers(target, b"X-A: a\x00b")
    assert got == 400 or got == {"HTTP_X_A": "a b"}


def test_5_1_names_are_case_insensitive_for_the_app(target: Target) -> None:
    """RFC 9110 §5.1: `x-a` and `X-A` are one field."""
    got = app_headers(target, b"x-a: 1", b"X-A: 2")
    assert isinstance(got, dict) and got["HTTP_X_A"].replace(" ", "") == "1,2"
