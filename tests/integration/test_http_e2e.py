"""HTTP/1.1 end to end: real clients against a real ZMQ_STREAM server on loopback."""

from __future__ import annotations

import http.client
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rawhttp import Environ, Reader, StartResponse, connect, simple_app, wait_for
from zmqhttp.server.body import ClientDisconnected
from zmqhttp.testing import ServerThread

Serve = Callable[..., ServerThread]


def echo_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Answers ``METHOD PATH len=N`` and the body it read."""
    body = environ["wsgi.input"].read()
    text = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} len={len(body)}\n".encode()
    out = text + body
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


def get(port: int, path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode()


# -- keep-alive, pipelining, HEAD, versions ---------------------------------------------------


def test_keep_alive_reuses_one_connection(serve: Serve) -> None:
    peers: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        peers.append(environ["REMOTE_ADDR"])
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serve(app)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/")
    conn.getresponse().read()
    first_sock = conn.sock
    for _ in range(5):
        conn.request("GET", "/again")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"ok")
        assert resp.getheader("Connection") is None
    assert conn.sock is first_sock  # never reconnected
    assert server.server.connection_count == 1
    conn.close()


def test_pipelined_requests_answered_in_order(serve: Serve) -> None:
    server = serve(echo_app)
    sock = connect(server.port)
    paths = [f"/p{i}" for i in range(10)]
    sock.sendall(b"".join(get(server.port, p) for p in paths)
                 + b"POST /last HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    reader = Reader(sock)
    for path in paths:
        resp = reader.response()
        assert resp.status == 200
        assert resp.body == f"GET {path} len=0\n".encode()
    assert reader.response().body == b"POST /last len=3\nabc"
    sock.close()


def test_request_split_byte_by_byte(serve: Serve) -> None:
    server = serve(echo_app)
    sock = connect(server.port)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = b"POST /split HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    for i in range(len(request)):
        sock.send(request[i : i + 1])
        time.sleep(0.002)
    resp = Reader(sock).response()
    assert (resp.status, resp.body) == (200, b"POST /split len=5\nhello")
    sock.close()


def test_head_has_length_but_no_body(serve: Serve) -> None:
    server = serve(simple_app(b"x" * 100))
    sock = connect(server.port)
    sock.sendall(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + get(server.port, "/"))
    reader = Reader(sock)
    head = reader.response("HEAD")
    assert head.status == 200
    assert head.header("content-length") == "100"
    # The GET right behind it proves HEAD sent no body bytes.
    after = reader.response()
    assert after.body == b"x" * 100
    sock.close()


def test_http10_without_keep_alive_closes(serve: Serve) -> None:
    server = serve(simple_app(b"ten"), timeout_linger=0.3)
    sock = connect(server.port)
    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
    reader = Reader(sock)
    resp = reader.response()
    assert (resp.version, resp.status, resp.body) == ("HTTP/1.1", 200, b"ten")
    assert resp.header("connection") == "close"
    assert reader.at_eof(timeout=3)
    sock.close()


def test_http10_keep_alive(serve: Serve) -> None:
    server = serve(simple_app(b"ten"))
    sock = connect(server.port)
    reader = Reader(sock)
    for _ in range(3):
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        resp = reader.response()
        assert (resp.status, resp.body) == (200, b"ten")
        assert resp.header("connection") == "keep-alive"
    sock.close()


def test_http10_streamed_body_is_close_delimited(serve: Serve) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"one,"
        yield b"two"

    server = serve(app)
    sock = connect(server.port)
    sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    reader = Reader(sock)
    resp = reader.head()
    assert resp.header("transfer-encoding") is None
    assert resp.header("connection") == "close"
    assert reader.read_to_eof() == b"one,two"  # the server closes to end the body
    sock.close()


def test_connection_close_then_server_closes(serve: Serve) -> None:
    server = serve(simple_app(b"bye"), timeout_linger=0.5)
    sock = connect(server.port)
    sock.sendall(get(server.port, extra="Connection: close\r\n"))
    reader = Reader(sock)
    resp = reader.response()
    assert (resp.status, resp.body, resp.header("connection")) == (200, b"bye", "close")
    started = time.monotonic()
    assert reader.at_eof(timeout=3)
    assert time.monotonic() - started < 2
    assert wait_for(lambda: server.server.connection_count == 0)
    sock.close()


def test_connection_close_with_http_client(serve: Serve) -> None:
    server = serve(simple_app(b"bye"))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/", headers={"Connection": "close"})
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"bye")
    assert resp.will_close
    conn.close()


# -- request bodies ------------------------------------------------------------------------


def test_chunked_upload_with_http_client(serve: Serve) -> None:
    server = serve(echo_app)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    pieces = [b"alpha-", b"beta-", b"", b"gamma" * 1000]
    conn.request("PUT", "/up", body=iter(pieces), encode_chunked=True,
                 headers={"Transfer-Encoding": "chunked"})
    resp = conn.getresponse()
    expected = b"".join(pieces)
    assert resp.status == 200
    assert resp.read() == f"PUT /up len={len(expected)}\n".encode() + expected
    conn.close()


def test_chunked_upload_raw_with_trailer(serve: Serve) -> None:
    server = serve(echo_app)
    sock = connect(server.port)
    sock.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
                 + get(server.port, "/next"))
    reader = Reader(sock)
    assert reader.response().body == b"POST /c len=11\nhello world"
    assert reader.response().body == b"GET /next len=0\n"
    sock.close()


def test_expect_continue_with_curl(serve: Serve, tmp_path: Path) -> None:
    server = serve(echo_app)
    data = bytes(range(256)) * 4000
    upload = tmp_path / "upload.bin"
    upload.write_bytes(data)
    result = subprocess.run(
        ["curl", "-sS", "-v", "--max-time", "10", "-H", "Expect: 100-continue",
         "--expect100-timeout", "5", "--data-binary", f"@{upload}", f"{server.url}/curl"],
        capture_output=True, timeout=20, check=True,
    )
    assert result.stdout == f"POST /curl len={len(data)}\n".encode() + data
    assert b"HTTP/1.1 100 Continue" in result.stderr


def continue_app(delay: float, reads: list[bytes]) -> Callable[..., Iterable[bytes]]:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        time.sleep(delay)
        reads.append(environ["wsgi.input"].read())
        start_response("201 Created", [("Content-Length", "4")])
        return [b"done"]

    return app


def test_expect_continue_sent_only_when_app_reads(serve: Serve) -> None:
    reads: list[bytes] = []
    server = serve(continue_app(0.6, reads))
    sock = connect(server.port)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 5\r\n\r\n")
    sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        sock.recv(100)  # the app has not read yet: no 100
    sock.settimeout(5)
    reader = Reader(sock)
    interim = reader.head()
    assert (interim.status, interim.headers) == (100, [])
    sock.sendall(b"12345")
    resp = reader.response()
    assert (resp.status, resp.body) == (201, b"done")
    assert reads == [b"12345"]
    # Still usable: the connection was kept alive.
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert reader.response().status == 201
    sock.close()


def test_expect_continue_app_answers_without_reading(serve: Serve) -> None:
    server = serve(simple_app(b"no thanks"), timeout_linger=0.5)
    sock = connect(server.port)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 100000\r\n\r\n")
    reader = Reader(sock)
    resp = reader.response()
    assert (resp.status, resp.body) == (200, b"no thanks")  # no 100 before it
    assert resp.header("connection") == "close"
    assert reader.at_eof(timeout=3)
    assert reader.buf == b""
    sock.close()


def test_unread_small_body_is_drained_and_connection_kept(serve: Serve) -> None:
    server = serve(simple_app(b"ignored"))
    sock = connect(server.port)
    sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"
                 + get(server.port))
    reader = Reader(sock)
    first = reader.response()
    assert (first.status, first.header("connection")) == (200, None)
    assert reader.response().body == b"ignored"
    sock.close()


# -- errors and timeouts -------------------------------------------------------------------


def test_garbage_gets_400_and_close_while_others_work(serve: Serve) -> None:
    server = serve(simple_app(b"fine"), timeout_linger=0.5)
    good = connect(server.port)
    good_reader = Reader(good)
    good.sendall(get(server.port))
    assert good_reader.response().body == b"fine"
    bad = connect(server.port)
    bad.sendall(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
    bad_reader = Reader(bad)
    resp = bad_reader.response()
    assert resp.status == 400
    assert resp.header("connection") == "close"
    assert bad_reader.at_eof(timeout=3)
    good.sendall(get(server.port))
    assert good_reader.response().body == b"fine"
    bad.close()
    good.close()


def test_slowloris_gets_408_while_others_are_served(serve: Serve) -> None:
    server = serve(simple_app(b"fast"), timeout_request_header=0.5, timeout_linger=0.5)
    slow = connect(server.port)
    slow.sendall(b"GET / HTTP/1.1\r\n")
    stop = threading.Event()

    def drip() -> None:
        while not stop.is_set():
            try:
                slow.send(b"X")
            except OSError:
                return
            time.sleep(0.05)

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        started = time.monotonic()
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"fast"
        assert time.monotonic() - started < 0.3
        conn.close()
        started = time.monotonic()
        reader = Reader(slow)
        resp = reader.response()
        assert resp.status == 408
        assert time.monotonic() - started < 1.5
    finally:
        stop.set()
        dripper.join(2)
    slow.close()


def test_body_timeout_gets_408(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    errors: list[BaseException] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            environ["wsgi.input"].read()
        except Exception as exc:
            errors.append(exc)
            raise
        start_response("200 OK", [])
        return [b""]

    server = serve(app, timeout_request_body=0.5, timeout_linger=0.5)
    sock = connect(server.port)
    with caplog.at_level(logging.INFO, logger="zmqhttp.error"):
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n123")
        reader = Reader(sock)
        resp = reader.response()
        assert resp.status == 408
        assert resp.header("connection") == "close"
        assert reader.at_eof(timeout=3)
        assert wait_for(lambda: bool(errors))
        time.sleep(0.1)
    assert errors[0].__class__.__name__ == "RequestTimeout"
    # The client's slowness is not logged as an application error.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    sock.close()


def test_keep_alive_idle_timeout_closes(serve: Serve) -> None:
    server = serve(simple_app(b"ok"), timeout_keep_alive=0.5)
    sock = connect(server.port)
    reader = Reader(sock)
    sock.sendall(get(server.port))
    assert reader.response().status == 200
    started = time.monotonic()
    assert reader.at_eof(timeout=3)
    assert 0.4 < time.monotonic() - started < 1.5
    assert wait_for(lambda: server.server.connection_count == 0)
    sock.close()


def test_vanishing_client_mid_body(serve: Serve) -> None:
    seen: list[BaseException] = []
    got = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/upload":
            try:
                environ["wsgi.input"].read()
            except ClientDisconnected as exc:
                seen.append(exc)
                got.set()
                raise
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serve(app)
    other = connect(server.port)
    other_reader = Reader(other)
    gone = connect(server.port)
    gone.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                 + b"z" * 500)
    time.sleep(0.1)
    gone.close()
    assert got.wait(3)
    assert isinstance(seen[0], ClientDisconnected)
    other.sendall(get(server.port))
    assert other_reader.response().body == b"ok"
    assert wait_for(lambda: server.server.connection_count == 1)
    other.close()


def test_half_close_does_not_harm_others(serve: Serve) -> None:
    """ZMQ_STREAM has no half-close: a SHUT_WR client loses its response, nobody else does."""
    server = serve(simple_app(b"ok"))
    half = connect(server.port)
    half.sendall(get(server.port))
    half.shutdown(socket.SHUT_WR)
    other = connect(server.port)
    other.sendall(get(server.port))
    assert Reader(other).response().body == b"ok"
    half.close()
    other.close()


def test_many_concurrent_keep_alive_connections(serve: Serve) -> None:
    server = serve(simple_app(b"pong"), threads=16)
    per_conn = 10
    results: list[int] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(200, timeout=20)

    def client() -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
            conn.connect()
            barrier.wait()
            ok = 0
            for _ in range(per_conn):
                conn.request("GET", "/")
                resp = conn.getresponse()
                if resp.status == 200 and resp.read() == b"pong":
                    ok += 1
            conn.close()
            with lock:
                results.append(ok)
        except BaseException as exc:
            with lock:
                failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)
    assert failures == []
    assert sum(results) == 2000


def test_app_exception_logged_and_500(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Any:
        raise RuntimeError("boom")

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="zmqhttp.error"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/x")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (500, b"Internal Server Error\n")
        conn.close()
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    ],
    ids=["1.1-connection-close", "1.0-no-keep-alive"],
)
def test_server_closes_promptly_after_a_final_small_response(
    serve: Callable[..., ServerThread], head: bytes
) -> None:
    # RFC 9112 §9.6: the server initiates the close after the final response;
    # a client reading until EOF must not wait for the linger timeout.
    server = serve(simple_app(), timeout_linger=5.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        start = time.monotonic()
        sock.sendall(head)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        elapsed = time.monotonic() - start
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close" in data
    assert elapsed < 1.0, elapsed
