"""The parts of RFC 9110 a server owns: Host (§7.2, with RFC 9112 §3.2), Expect:
100-continue (§10.1.1), HEAD (§9.3.2), OPTIONS * (§9.3.7), Date (§6.6.1), and
which responses carry no content or no Content-Length (§6.4.1, §8.6, §15)."""

from __future__ import annotations

import time

import pytest
from confsupport import (
    Case,
    Outcome,
    Target,
    case_params,
    exchange,
    is_imf_fixdate,
    rejected,
    request,
    run_cases,
    served,
    verify,
)

NEXT = request("GET", "{p}next", close=True)
NEXT_SEEN = ("GET", "{p}next", 0)


def host_case(*fields: bytes, version: bytes = b"1.1", target: bytes = b"{p}h") -> bytes:
    return (b"GET " + target + b" HTTP/" + version + b"\r\n"
            + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + NEXT)


CASES: dict[str, Case] = {
    "7.2-missing-host-http11": Case(
        host_case(), rejected(400),
        "RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request without Host",
    ),
    "7.2-duplicate-host": Case(
        host_case(b"Host: a.example", b"Host: b.example"), rejected(400),
        "RFC 9112 §3.2: more than one Host field line MUST get 400",
    ),
    "7.2-duplicate-host-same-value": Case(
        host_case(b"Host: a.example", b"Host: a.example"), rejected(400),
        "RFC 9112 §3.2: more than one Host field line MUST get 400, even if equal",
    ),
    "7.2-host-list-value": Case(
        host_case(b"Host: a.example, b.example"), rejected(400),
        "RFC 9112 §3.2: Host = uri-host [\":\" port]; a list is an invalid value: 400",
    ),
    "7.2-host-with-space": Case(
        host_case(b"Host: a b"), rejected(400), "RFC 9112 §3.2: invalid Host value: 400",
    ),
    "7.2-host-with-userinfo": Case(
        host_case(b"Host: user@a.example"), rejected(400),
        "RFC 9112 §3.2: userinfo is not part of uri-host: 400",
    ),
    "7.2-host-bad-port": Case(
        host_case(b"Host: a.example:http"), rejected(400),
        "RFC 9112 §3.2 / RFC 3986 §3.2.3: port = *DIGIT",
    ),
    "7.2-host-with-path": Case(
        host_case(b"Host: a.example/evil"), rejected(400),
        "RFC 9112 §3.2: a path in Host is an invalid value: 400",
    ),
    "7.2-host-empty": Case(
        host_case(b"Host:"), served(("GET", "{p}h", 0), NEXT_SEEN),
        "RFC 9112 §3.2: a Host with an empty value is valid (target without authority)",
    ),
    "7.2-host-with-port": Case(
        host_case(b"Host: a.example:8080"), served(("GET", "{p}h", 0), NEXT_SEEN),
        "RFC 9112 §3.2: uri-host \":\" port",
    ),
    "7.2-host-ipv6-literal": Case(
        host_case(b"Host: [::1]:8080"), served(("GET", "{p}h", 0), NEXT_SEEN),
        "RFC 9112 §3.2 / RFC 3986 §3.2.2: IP-literal host",
    ),
    "7.2-host-ipv4": Case(
        host_case(b"Host: 192.0.2.1"), served(("GET", "{p}h", 0), NEXT_SEEN),
        "RFC 9112 §3.2: IPv4address host",
    ),
    "7.2-http10-without-host": Case(
        host_case(version=b"1.0"), served(("GET", "{p}h", 0)),
        "RFC 9112 §3.2: Host is only required in HTTP/1.1",
    ),
    "7.2-absolute-form-still-needs-host": Case(
        host_case(target=b"http://a.example{p}h"), rejected(400),
        "RFC 9112 §3.2: an HTTP/1.1 request without Host MUST get 400, whatever the target",
    ),
    "7.2-absolute-form-duplicate-host": Case(
        host_case(b"Host: a.example", b"Host: b.example", target=b"http://a.example{p}h"),
        rejected(400), "RFC 9112 §3.2: two Host lines MUST get 400, whatever the target",
    ),
    "9.3.2-head-has-no-body": Case(
        request("HEAD", "{p}fixed") + request("GET", "{p}fixed", close=True),
        served(("HEAD", "{p}fixed", 0), ("GET", "{p}fixed", 0)),
        "RFC 9110 §9.3.2: a HEAD response has no content (the GET after it parses)",
        methods=("HEAD", "GET"),
    ),
    "15.3.5-204-has-no-body": Case(
        request("GET", "{p}204") + request("GET", "{p}fixed", close=True),
        served(("GET", "{p}204", 0), ("GET", "{p}fixed", 0)),
        "RFC 9110 §15.3.5 / RFC 9112 §6.3 rule 1: a 204 has no content",
    ),
    "15.4.5-304-has-no-body": Case(
        request("GET", "{p}304") + request("GET", "{p}fixed", close=True),
        served(("GET", "{p}304", 0), ("GET", "{p}fixed", 0)),
        "RFC 9110 §15.4.5 / RFC 9112 §6.3 rule 1: a 304 has no content",
    ),
}
# served() expects 200s; the 204 and 304 cases are judged below with their real statuses.
_NOT_200 = {"15.3.5-204-has-no-body": [204, 200], "15.4.5-304-has-no-body": [304, 200]}


@pytest.fixture(scope="module")
def results(target: Target) -> dict[str, Outcome]:
    return run_cases(target, CASES)


@pytest.mark.parametrize("name", case_params(CASES))
def test_semantics(name: str, results: dict[str, Outcome]) -> None:
    """One RFC 9110 case (see ``CASES[name].why``)."""
    outcome = results[name]
    if name in _NOT_200:
        ex = outcome.exchange
        assert ex.statuses == _NOT_200[name] and ex.closed
        assert ex.responses[0].body == b"" and ex.responses[1].body == b"x" * 100
        assert [s.target for s in outcome.seen] == [outcome.prefix + t for t in
                                                    (name.split("-")[1], "fixed")]
        return
    verify(CASES[name], outcome)


# -- Host ---------------------------------------------------------------------------------


def test_3_2_2_absolute_form_overrides_host(target: Target) -> None:
    """RFC 9112 §3.2.2: with an absolute-form target the server MUST ignore the Host field
    and use the target's authority; RFC 9110 §7.2. Over the fabric the gateway
    rewrites Host, as a forwarder must."""
    mark = target.app.mark()
    ex = exchange(target, b"GET http://target.example:81/abs?q=1 HTTP/1.1\r\n"
                          b"Host: field.example\r\nConnection: close\r\n\r\n")
    assert ex.statuses == [200]
    (seen,) = target.app.since(mark)
    assert (seen.host, seen.path) == ("target.example:81", "/abs")


def test_7_2_host_reaches_app(target: Target) -> None:
    """RFC 9110 §7.2: the Host value identifies the target authority."""
    mark = target.app.mark()
    ex = exchange(target, request("GET", "/h", host="www.example:8080", close=True))
    assert ex.statuses == [200]
    assert [s.host for s in target.app.since(mark)] == ["www.example:8080"]


# -- Expect: 100-continue ---------------------------------------------------------------------


def continue_head(path: str, version: str = "1.1") -> bytes:
    return request("POST", path, "Content-Length: 5", "Expect: 100-continue",
                   version=version, host="example.com", close=True)


def test_10_1_1_continue_sent_when_app_reads(target: Target) -> None:
    """RFC 9110 §10.1.1: for `Expect: 100-continue` the server sends 100 (Continue) before
    the client sends the body, when the app asks for the body; then the final response.
    RFC 9110 §15.2: a 1xx response has no content (the final response after it parses)."""
    with target.connect() as conn:
        assert conn.send(continue_head("/cont"))
        interim = conn.read_head()
        assert (interim.status, interim.headers) == (100, [])
        assert conn.send(b"hello")
        resp = conn.read_response()
        assert resp.status == 200 and resp.body.startswith(b"POST /cont len=5 ")


def test_10_1_1_continue_waits_for_the_app_to_read(target: Target) -> None:
    """RFC 9110 §10.1.1: the 100 is the server's answer to the app asking for the body: an
    app that reads only after 0.5 s gets its 100 then, not when the head arrives."""
    with target.connect() as conn:
        assert conn.send(continue_head("/x/slowread"))
        assert not conn.has_data(0.25)  # the app has not read yet
        interim = conn.read_head()
        assert interim.status == 100
        assert conn.send(b"hello")
        resp = conn.read_response()
        assert resp.status == 200 and resp.body.startswith(b"POST /x/slowread len=5 ")


def test_10_1_1_no_continue_when_app_does_not_read(target: Target) -> None:
    """RFC 9110 §10.1.1: a server MAY answer with a final status instead of 100; an app that
    never reads the body must not trigger a 100. The server then closes or reads the body
    (RFC 9110 §10.1.1 / RFC 9112 §9.3 allow either)."""
    with target.connect() as conn:
        assert conn.send(continue_head("/x/noread"))
        resp = conn.read_response()
        assert resp.status == 200 and resp.body == b"noread\n"
        assert resp.interim == []


def test_10_1_1_no_continue_to_http10(target: Target) -> None:
    """RFC 9110 §10.1.1: a server that receives 100-continue in an HTTP/1.0 request MUST
    ignore that expectation: no 100 ever, the body is read as sent."""
    with target.connect() as conn:
        assert conn.send(continue_head("/cont10", version="1.0"))
        assert not conn.has_data(0.4)  # no 100 (Continue)
        assert conn.send(b"hello")
        resp = conn.read_response()
        assert resp.interim == []
        assert resp.status == 200 and resp.body.startswith(b"POST /cont10 len=5 ")


def test_10_1_1_body_sent_without_waiting(target: Target) -> None:
    """RFC 9110 §10.1.1: a client may send the body without waiting; the server MAY then
    omit the 100. Either way exactly one final response follows, and no 100 after it."""
    with target.connect() as conn:
        assert conn.send(continue_head("/eager") + b"hello")
        resp = conn.read_response()
        assert resp.status == 200 and resp.body.startswith(b"POST /eager len=5 ")
        assert [r.status for r in resp.interim] in ([], [100])
        assert conn.at_eof()


def test_10_1_1_unknown_expectation(target: Target) -> None:
    """RFC 9110 §10.1.1: an expectation other than 100-continue MAY get 417; otherwise the
    request is processed normally (either accepted)."""
    ex = exchange(target, request("GET", "/exp", "Expect: x-unknown", close=True))
    assert ex.statuses in ([200], [417]) and ex.closed


# -- HEAD, OPTIONS, status codes without content -----------------------------------------------


def test_9_3_2_head_has_same_fields_as_get(target: Target) -> None:
    """RFC 9110 §9.3.2: the server SHOULD send the same header fields for HEAD as for GET
    (fields generated with the content MAY be omitted); §8.6: a Content-Length in the HEAD
    response is the length a GET would have had."""
    ex = exchange(target, request("HEAD", "/fixed") + request("GET", "/fixed")
                  + request("GET", "/fixed", close=True), methods=("HEAD", "GET", "GET"))
    head, get, _ = ex.responses
    assert (head.status, get.status) == (200, 200)
    ignore = {"date"}
    assert sorted((k.lower(), v) for k, v in head.headers if k.lower() not in ignore) == sorted(
        (k.lower(), v) for k, v in get.headers if k.lower() not in ignore)
    assert head.header("content-length") in (None, "100")


def test_9_3_2_head_of_streamed_resource_has_no_body(target: Target) -> None:
    """RFC 9110 §9.3.2: no content for HEAD even where GET would be chunked; a
    Transfer-Encoding it would have had MAY be sent (RFC 9112 §6.1), never chunk bytes."""
    ex = exchange(target, request("HEAD", "/stream") + request("GET", "/stream", close=True),
                  methods=("HEAD", "GET"))
    assert ex.statuses == [200, 200]
    head, get = ex.responses
    assert head.header("content-length") is None or head.header("transfer-encoding") is None
    assert get.body == b"part 0\npart 1\npart 2\n"


def test_8_6_no_content_length_in_204(target: Target) -> None:
    """RFC 9110 §8.6: a server MUST NOT send Content-Length in a 204; RFC 9112 §6.1: nor
    Transfer-Encoding."""
    ex = exchange(target, request("GET", "/204", close=True))
    (resp,) = ex.responses
    assert resp.status == 204
    assert resp.header("content-length") is None and resp.header("transfer-encoding") is None


def test_8_6_content_length_in_304_matches_get(target: Target) -> None:
    """RFC 9110 §8.6: a 304 MAY carry Content-Length only if it equals the length of the
    200 response's content (the app says 100, as GET /fixed has)."""
    ex = exchange(target, request("GET", "/304", close=True))
    (resp,) = ex.responses
    assert resp.status == 304
    assert resp.header("content-length") in (None, "100")
    assert resp.header("transfer-encoding") is None


def test_15_2_interim_100_has_no_fields_framing(target: Target) -> None:
    """RFC 9110 §8.6 / RFC 9112 §6.1: a 1xx carries neither Content-Length nor
    Transfer-Encoding."""
    with target.connect() as conn:
        assert conn.send(continue_head("/cont-fields"))
        interim = conn.read_head()
        assert interim.status == 100
        assert interim.header("content-length") is None
        assert interim.header("transfer-encoding") is None
        assert conn.send(b"hello")
        assert conn.read_response().status == 200


# -- Date ---------------------------------------------------------------------------------


def test_6_6_1_date_on_success(target: Target) -> None:
    """RFC 9110 §6.6.1: an origin server with a clock MUST send Date in 2xx responses, as
    an IMF-fixdate (§5.6.7), once."""
    now = time.time()
    ex = exchange(target, request("GET", "/date", close=True))
    (resp,) = ex.responses
    assert resp.header_count("date") == 1
    assert is_imf_fixdate(resp.header("date"), now), resp.header("date")


def test_6_6_1_date_on_server_error_responses(target: Target) -> None:
    """RFC 9110 §6.6.1: Date MUST also be sent in 4xx responses (here the server's own 400)."""
    ex = exchange(target, b"GET /date HTTP/1.1\r\n\r\n")
    (resp,) = ex.responses
    assert resp.status == 400
    assert is_imf_fixdate(resp.header("date")), resp.header("date")


def test_6_6_1_date_on_204_and_304(target: Target) -> None:
    """RFC 9110 §6.6.1: Date in 2xx and 3xx responses, including those without content."""
    ex = exchange(target, request("GET", "/204") + request("GET", "/304", close=True))
    assert ex.statuses == [204, 304]
    assert all(is_imf_fixdate(r.header("date")) for r in ex.responses)
