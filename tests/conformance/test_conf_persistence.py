"""RFC 9112 §9.3 (persistence), §9.3.2 (pipelining) and §9.6 (closing).

Table cases write several requests at once and judge the whole exchange; the
interactive tests below send one request at a time on one connection.
"""

from __future__ import annotations

import pytest
from confsupport import (
    Case,
    Outcome,
    Target,
    case_params,
    oneof,
    rejected,
    request,
    run_cases,
    served,
    verify,
)

NEXT = request("GET", "{p}next", close=True)
NEXT_SEEN = ("GET", "{p}next", 0)


def get(path: str, *fields: str, version: str = "1.1") -> bytes:
    return request("GET", "{p}" + path, *fields, version=version,
                   host="example.com" if version == "1.1" else None)


PIPELINE = (
    get("1")
    + request("POST", "{p}2", body=b"hello")
    + request("POST", "{p}3", "Transfer-Encoding: chunked") + b"3\r\nabc\r\n0\r\n\r\n"
    + request("HEAD", "{p}4")
    + request("PUT", "{p}5", body=b"x" * 3000)
    + get("6")
    + NEXT
)

CASES: dict[str, Case] = {
    "9.3-http11-persists-by-default": Case(
        get("a") + get("b") + NEXT,
        served(("GET", "{p}a", 0), ("GET", "{p}b", 0), NEXT_SEEN),
        "§9.3: an HTTP/1.1 connection persists unless `close` is sent",
    ),
    "9.3.2-pipelined-responses-in-order": Case(
        PIPELINE,
        served(("GET", "{p}1", 0), ("POST", "{p}2", 5), ("POST", "{p}3", 3), ("HEAD", "{p}4", 0),
               ("PUT", "{p}5", 3000), ("GET", "{p}6", 0), NEXT_SEEN),
        "§9.3.2: a server MUST send its responses to pipelined requests in the order the "
        "requests were received (GET, POST with length, chunked POST, HEAD, PUT)",
        methods=("GET", "POST", "POST", "HEAD", "PUT", "GET", "GET"),
    ),
    "9.6-close-request-is-last": Case(
        get("a", "Connection: close") + get("b") + NEXT, served(("GET", "{p}a", 0)),
        "§9.6: after a request with `close` the server MUST close and MUST NOT process "
        "further requests on that connection",
    ),
    "9.6-close-token-case-insensitive": Case(
        get("a", "Connection: CLOSE") + NEXT, served(("GET", "{p}a", 0)),
        "§9.3 / RFC 9110 §7.6.1: connection options are case-insensitive",
    ),
    "9.6-close-token-in-list": Case(
        get("a", "Connection: x-foo, close") + NEXT, served(("GET", "{p}a", 0)),
        "§9.3: `close` anywhere in the Connection list ends the connection",
    ),
    "9.6-close-token-on-second-line": Case(
        get("a", "Connection: x-foo", "Connection: close") + NEXT, served(("GET", "{p}a", 0)),
        "§9.3 / RFC 9110 §5.3: Connection split over two field lines",
    ),
    "9.3-http10-closes-by-default": Case(
        get("a", version="1.0") + NEXT, served(("GET", "{p}a", 0)),
        "§9.3: an HTTP/1.0 request without keep-alive: the connection closes after the "
        "response",
    ),
    "9.3-http10-keep-alive": Case(
        get("a", "Connection: keep-alive", version="1.0") + NEXT,
        oneof(served(("GET", "{p}a", 0), NEXT_SEEN), served(("GET", "{p}a", 0))),
        "§9.3: an HTTP/1.0 `keep-alive` MAY be honoured (either accepted here)",
    ),
    "9.3-http10-keep-alive-case-insensitive": Case(
        get("a", "Connection: Keep-Alive", version="1.0") + NEXT,
        oneof(served(("GET", "{p}a", 0), NEXT_SEEN), served(("GET", "{p}a", 0))),
        "§9.3: connection options are case-insensitive",
    ),
    "9.3.2-error-ends-pipeline": Case(
        get("a") + b"GET {p}b HTTP/1.1\r\nHost: example.com\r\nBad Field: x\r\n\r\n" + NEXT,
        rejected(400, after=served(("GET", "{p}a", 0))),
        "§9.3.2/§9.6: requests before a malformed one are answered in order, then 400 and "
        "close; nothing after it is processed",
    ),
    "9.3.2-pipelined-after-body-not-read-by-app": Case(
        request("POST", "{p}noread", body=b"z" * 100) + NEXT,
        oneof(served(("POST", "{p}noread", 0), NEXT_SEEN), served(("POST", "{p}noread", 0))),
        "§9.3.2/§6.3: a body the app did not read is still framed (read and dropped), or the "
        "server closes after the response (RFC 9110 §10.1.1 allows either)",
    ),
}


@pytest.fixture(scope="module")
def results(target: Target) -> dict[str, Outcome]:
    return run_cases(target, CASES)


@pytest.mark.parametrize("name", case_params(CASES))
def test_persistence(name: str, results: dict[str, Outcome]) -> None:
    """One RFC 9112 §9 persistence/pipelining case (see ``CASES[name].why``)."""
    verify(CASES[name], results[name])


# -- one request at a time ----------------------------------------------------------------


def test_9_3_http11_connection_reused_sequentially(target: Target) -> None:
    """§9.3: an HTTP/1.1 server keeps the connection after each response (no `close` in
    it) and reads the next request sent after the response arrived."""
    with target.connect() as conn:
        for i in range(3):
            assert conn.send(request("GET", f"/seq{i}"))
            resp = conn.read_response()
            assert resp.status == 200
            assert resp.body.startswith(f"GET /seq{i} len=0 ".encode())
            assert "close" not in resp.connection_tokens()
        assert not conn.at_eof(0.3)  # still open


def test_9_6_close_request_gets_close_response_and_eof(target: Target) -> None:
    """§9.6: the server closes after the response to a `close` request, and SHOULD say
    `Connection: close` in it (the server does; checked)."""
    with target.connect() as conn:
        assert conn.send(request("GET", "/bye", close=True))
        resp = conn.read_response()
        assert resp.status == 200 and "close" in resp.connection_tokens()
        assert conn.at_eof()


def test_9_3_http10_keep_alive_response_says_so(target: Target) -> None:
    """§9.3 / RFC 9112 Appendix C.2.2: an HTTP/1.0 keep-alive connection persists only if
    the response carries `Connection: keep-alive`; the connection then serves a second
    request. A server that declines closes instead (either is accepted)."""
    with target.connect() as conn:
        assert conn.send(request("GET", "/ka", "Connection: keep-alive", version="1.0",
                                 host=None))
        resp = conn.read_response()
        assert resp.status == 200
        if "keep-alive" in resp.connection_tokens():
            assert conn.send(request("GET", "/ka2", "Connection: keep-alive", version="1.0",
                                     host=None))
            assert conn.read_response().body.startswith(b"GET /ka2 len=0 ")
        else:
            assert conn.at_eof()


def test_9_3_http10_response_without_keep_alive_closes(target: Target) -> None:
    """§9.3: an HTTP/1.0 request without keep-alive: the server closes after the
    response, and the response does not claim `keep-alive`."""
    with target.connect() as conn:
        assert conn.send(request("GET", "/ten", version="1.0", host=None))
        resp = conn.read_response()
        assert resp.status == 200 and resp.version == "HTTP/1.1"
        assert "keep-alive" not in resp.connection_tokens()
        assert conn.at_eof()


def test_9_6_app_connection_close_ends_connection(target: Target) -> None:
    """§9.6: a server that sends `close` MUST close after that response."""
    with target.connect() as conn:
        assert conn.send(request("GET", "/x/close") + request("GET", "/after-close"))
        resp = conn.read_response()
        assert resp.body == b"closing\n" and "close" in resp.connection_tokens()
        assert conn.at_eof()
    assert not target.app.matching("/after-close")


def test_9_3_2_pipeline_split_in_small_writes(target: Target) -> None:
    """§9.3.2: pipelined requests arriving in arbitrary pieces are answered in order."""
    data = b"".join(request("POST", f"/piece{i}", body=b"%d" % i * i) for i in range(1, 6))
    data += request("GET", "/piece-end", close=True)
    with target.connect() as conn:
        for i in range(0, len(data), 7):
            assert conn.send(data[i : i + 7])
        responses, closed = conn.responses()
    assert [r.body.split(b" path=")[0] for r in responses] == [
        *(f"POST /piece{i} len={i}".encode() for i in range(1, 6)), b"GET /piece-end len=0"]
    assert closed
