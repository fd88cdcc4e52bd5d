"""PEP 3333 through a real server: environ, wsgi.input, start_response, write, close, files."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import flask
import httpx
import pytest

from rawhttp import Environ, Reader, StartResponse, connect, wait_for
from zmqhttp.testing import ServerThread

Serve = Callable[..., ServerThread]


def environ_app(seen: list[Environ]) -> Callable[[Environ, StartResponse], Iterable[bytes]]:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(dict(environ))
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", "0")])
        return []

    return app


def raw_request(port: int, data: bytes) -> bytes:
    sock = connect(port)
    sock.sendall(data)
    resp = Reader(sock).response()
    sock.close()
    assert resp.status == 200, resp
    return resp.body


# -- environ --------------------------------------------------------------------------------


def test_environ_keys(serve: Serve) -> None:
    seen: list[Environ] = []
    server = serve(environ_app(seen), root_path="/app")
    raw_request(server.port,
                b"POST /app/caf%C3%A9/a%2Fb?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\n"
                b"Content-Type: text/plain\r\nContent-Length: 3\r\n"
                b"X-Multi: one\r\nX-Multi: two\r\nX_Sneaky: bad\r\nAccept: */*\r\n\r\nabc")
    env = seen[0]
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == "/app"
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9/a/b"  # decoded bytes as latin-1 (PEP 3333)
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/café/a/b"
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.multithread"] is True and env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_HOST"] == "example.com:8080"
    assert env["HTTP_X_MULTI"] == "one,two"
    assert env["HTTP_ACCEPT"] == "*/*"
    assert "HTTP_X_SNEAKY" not in env
    assert all(isinstance(k, str) and (not k.isupper() or isinstance(v, str))
               for k, v in env.items() if k.isupper())


def test_environ_outside_root_path_and_http10(serve: Serve) -> None:
    seen: list[Environ] = []
    server = serve(environ_app(seen), root_path="/app", url_scheme="https")
    raw_request(server.port, b"GET /application HTTP/1.0\r\n\r\n")
    raw_request(server.port, b"GET /app HTTP/1.1\r\nHost: h\r\n\r\n")
    first, second = seen
    assert (first["SCRIPT_NAME"], first["PATH_INFO"]) == ("/app", "/application")
    assert first["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert first["wsgi.url_scheme"] == "https"
    assert "CONTENT_LENGTH" not in first or first["CONTENT_LENGTH"] in ("", "0")
    assert (second["SCRIPT_NAME"], second["PATH_INFO"]) == ("/app", "")


# -- wsgi.input -----------------------------------------------------------------------------


def test_wsgi_input_read_variants(serve: Serve) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        mode = environ["PATH_INFO"]
        if mode == "/read":
            parts = [stream.read()]
        elif mode == "/readn":
            parts = list(iter(lambda: stream.read(7), b""))
        elif mode == "/readline":
            parts = [stream.readline(), stream.readline(3), stream.readline(), stream.readline()]
        else:
            parts = list(stream)
        out = json.dumps([p.decode() for p in parts]).encode()
        start_response("200 OK", [("Content-Length", str(len(out)))])
        return [out]

    server = serve(app)
    body = b"line one\nline two\nend"
    with httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.post("/read", content=body).json() == [body.decode()]
        readn = client.post("/readn", content=body).json()
        assert "".join(readn) == body.decode() and all(len(p) <= 7 for p in readn)
        assert max(len(p) for p in readn) == 7
        assert client.post("/readline", content=body).json() == [
            "line one\n", "lin", "e two\n", "end"]
        assert client.post("/iter", content=body).json() == ["line one\n", "line two\n", "end"]
        # Chunked request bodies read the same way.
        chunks = iter([b"line one\nli", b"ne two\n", b"end"])
        assert client.post("/iter", content=chunks).json() == [
            "line one\n", "line two\n", "end"]


def test_large_upload_streams_and_spills_to_disk(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    spills: list[IO[bytes]] = []
    real = tempfile.TemporaryFile

    def tracking(*args: Any, **kwargs: Any) -> IO[bytes]:
        handle: IO[bytes] = real(*args, **kwargs)
        spills.append(handle)
        return handle

    monkeypatch.setattr(tempfile, "TemporaryFile", tracking)
    total = 64 * 1024 * 1024
    piece = 64 * 1024
    max_piece = [0]

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        time.sleep(0.5)  # slower than the client: the body piles up and spills
        stream = environ["wsgi.input"]
        count = 0
        digest = hashlib.sha256()
        while data := stream.read(piece):
            max_piece[0] = max(max_piece[0], len(data))
            count += len(data)
            digest.update(data)
        out = f"{count} {digest.hexdigest()}".encode()
        start_response("200 OK", [("Content-Length", str(len(out)))])
        return [out]

    server = serve(app, body_buffer=1024 * 1024, limit_request_body=128 * 1024 * 1024)
    block = bytes(range(256)) * (piece // 256)
    expected = hashlib.sha256(block * (total // piece)).hexdigest()
    rss_before = _rss_bytes()
    peak = [rss_before]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/", body=(block for _ in range(total // piece)),
                     headers={"Content-Length": str(total)})
        resp = conn.getresponse()
        assert resp.read() == f"{total} {expected}".encode()
        conn.close()
    finally:
        done.set()
        watcher.join()
    assert max_piece[0] == piece
    assert spills, "a body larger than body_buffer never spilled to disk"
    assert all(handle.closed for handle in spills)
    # The whole body is 64 MiB; memory grew by far less.
    assert peak[0] - rss_before < 40 * 1024 * 1024


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


# -- wsgi.errors, start_response, write ---------------------------------------------------


def test_wsgi_errors_goes_to_error_log(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        errors = environ["wsgi.errors"]
        errors.write("first line\nsecond ")
        errors.writelines(["line\n"])
        errors.flush()
        start_response("204 No Content", [])
        return []

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="zmqhttp.error"):
        assert httpx.get(server.url, timeout=5).status_code == 204
    messages = [r.getMessage() for r in caplog.records if r.name == "zmqhttp.error"]
    assert "first line" in messages and "second line" in messages


def test_start_response_exc_info_before_headers_sent(serve: Serve) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("changed my mind")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Length", "5")], sys.exc_info())
        return [b"sorry"]

    server = serve(app)
    resp = httpx.get(server.url, timeout=5)
    assert (resp.status_code, resp.content) == (503, b"sorry")
    assert "content-type" not in resp.headers


def test_start_response_twice_without_exc_info_is_an_error(serve: Serve) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b""]

    server = serve(app)
    assert httpx.get(server.url, timeout=5).status_code == 500


def test_start_response_exc_info_after_headers_sent_reraises(serve: Serve) -> None:
    reraised: list[BaseException] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        try:
            raise ValueError("late")
        except ValueError:
            try:
                start_response("500 Oops", [], sys.exc_info())
            except ValueError as exc:
                reraised.append(exc)
                raise

    server = serve(app)
    sock = connect(server.port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = Reader(sock)
    resp = reader.response()
    assert resp.status == 200
    assert not resp.complete and resp.body == b"partial"
    assert [str(e) for e in reraised] == ["late"]
    sock.close()


def test_write_callable(serve: Serve) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        lenient: Any = bytearray(b"then ")  # bytes-like is accepted too
        write(lenient)
        return [b"returned"]

    server = serve(app)
    sock = connect(server.port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    resp = Reader(sock).response()
    assert resp.header("transfer-encoding") == "chunked"
    assert resp.body == b"written then returned"
    sock.close()


def test_write_with_content_length(serve: Serve) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Length", "6")])
        write(b"abc")
        write(b"def")
        return []

    server = serve(app)
    resp = httpx.get(server.url, timeout=5)
    assert (resp.content, resp.headers["content-length"]) == (b"abcdef", "6")


# -- the returned iterable ----------------------------------------------------------------


class Tracked:
    def __init__(self, chunks: Iterable[bytes], closed: threading.Event) -> None:
        self._chunks = iter(chunks)
        self._closed = closed

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self._closed.set()


def test_close_called_on_iterable(serve: Serve) -> None:
    closed = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        return Tracked([b"a", b"b"], closed)

    server = serve(app)
    assert httpx.get(server.url, timeout=5).content == b"ab"
    assert closed.wait(3)


def test_close_called_when_client_disconnects_mid_stream(serve: Serve) -> None:
    closed = threading.Event()
    yielded = [0]

    def endless() -> Iterator[bytes]:
        while True:
            yielded[0] += 1
            time.sleep(0.01)
            yield b"tick\n" * 100

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        return Tracked(endless(), closed)

    server = serve(app)
    sock = connect(server.port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = Reader(sock)
    assert reader.head().status == 200
    assert wait_for(lambda: yielded[0] > 3)
    sock.close()
    assert closed.wait(5)
    assert wait_for(lambda: server.server.connection_count == 0)


def test_file_wrapper_sets_content_length(serve: Serve, tmp_path: Path) -> None:
    data = bytes(range(256)) * 3000 + b"tail"
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    handles: list[IO[bytes]] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the server through the wrapper
        handles.append(handle)
        if environ["PATH_INFO"] == "/skip":
            handle.seek(100)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](handle, 8192)
        return wrapper

    server = serve(app)
    with httpx.Client(base_url=server.url, timeout=5) as client:
        resp = client.get("/")
        assert resp.headers["content-length"] == str(len(data))
        assert "transfer-encoding" not in resp.headers
        assert resp.content == data
        skipped = client.get("/skip")
        assert skipped.headers["content-length"] == str(len(data) - 100)
        assert skipped.content == data[100:]
    assert wait_for(lambda: all(h.closed for h in handles))


def test_file_wrapper_over_non_file(serve: Serve) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](io.BytesIO(b"in memory"))
        return wrapper

    server = serve(app)
    resp = httpx.get(server.url, timeout=5)
    assert resp.content == b"in memory"


# -- application errors ---------------------------------------------------------------------


def test_exception_before_start_response(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        raise KeyError("missing-thing")

    server = serve(app)
    with caplog.at_level(logging.ERROR, logger="zmqhttp.error"):
        resp = httpx.get(f"{server.url}/boom?q=1", timeout=5)
        assert wait_for(lambda: any(r.exc_info for r in caplog.records))
    assert resp.status_code == 500
    assert resp.content == b"Internal Server Error\n"
    record = next(r for r in caplog.records if r.exc_info)
    assert record.name == "zmqhttp.error"
    assert "GET /boom?q=1" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert "missing-thing" in caplog.text and "Traceback" in caplog.text


def test_exception_after_response_started(serve: Serve) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"first piece"
        raise RuntimeError("mid-stream")

    server = serve(app)
    sock = connect(server.port)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = Reader(sock)
    resp = reader.response()
    assert resp.status == 200
    assert resp.header("transfer-encoding") == "chunked"
    assert resp.complete is False
    assert resp.body == b"first piece"
    sock.close()


def test_body_longer_than_content_length_truncates_and_closes(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        yield b"12345"
        yield b"67890"

    server = serve(app)
    sock = connect(server.port)
    with caplog.at_level(logging.ERROR, logger="zmqhttp.error"):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        resp = reader.response()
        assert (resp.status, resp.body) == (200, b"12345")
        assert reader.at_eof(timeout=3)  # framing broken: the connection is closed
        assert reader.buf == b""
    assert any("Content-Length" in r.getMessage() for r in caplog.records)
    sock.close()


def test_no_computed_length_on_304_and_204(serve: Serve) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        status = "304 Not Modified" if environ["PATH_INFO"] == "/304" else "204 No Content"
        start_response(status, [("ETag", '"v1"')])
        return [b""]

    server = serve(app)
    sock = connect(server.port)
    reader = Reader(sock)
    for path, status in (("/304", 304), ("/204", 204)):
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        resp = reader.response()
        assert resp.status == status
        assert resp.header("content-length") is None
        assert resp.header("transfer-encoding") is None
        assert resp.header("etag") == '"v1"'
    sock.sendall(b"GET /304 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reader.response().status == 304  # nothing stray was left on the wire
    sock.close()


def test_bad_status_from_app_is_500(serve: Serve) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("OK", [])
        return [b""]

    server = serve(app)
    assert httpx.get(server.url, timeout=5).status_code == 500


# -- Flask end to end ------------------------------------------------------------------------


def make_flask_app() -> flask.Flask:
    app = flask.Flask("zmqhttp_test")

    @app.get("/")
    def index() -> str:
        return "index"

    @app.get("/user/<name>")
    def user(name: str) -> dict[str, Any]:
        return {"name": name, "q": flask.request.args.get("q"),
                "script": flask.request.script_root}

    @app.post("/form")
    def form() -> dict[str, Any]:
        return {"fields": flask.request.form.to_dict(),
                "upload": flask.request.files["f"].read().decode()
                if "f" in flask.request.files else None}

    @app.post("/json")
    def echo_json() -> Any:
        return flask.jsonify(flask.request.get_json())

    @app.get("/stream")
    def stream() -> flask.Response:
        def generate() -> Iterator[str]:
            for i in range(5):
                yield f"{flask.request.args.get('p', '')}{i}\n"

        return flask.Response(flask.stream_with_context(generate()), mimetype="text/plain")

    return app


def test_flask_app(serve: Serve) -> None:
    server = serve(make_flask_app(), root_path="/mnt")
    with httpx.Client(base_url=f"{server.url}/mnt", timeout=5) as client:
        assert client.get("/").text == "index"
        assert client.get("/user/ada", params={"q": "x y"}).json() == {
            "name": "ada", "q": "x y", "script": "/mnt"}
        assert client.get("/nope").status_code == 404
        assert client.post("/form", data={"a": "1", "b": "é"}).json() == {
            "fields": {"a": "1", "b": "é"}, "upload": None}
        multipart = client.post("/form", data={"a": "2"}, files={"f": ("f.txt", b"file body")})
        assert multipart.json() == {"fields": {"a": "2"}, "upload": "file body"}
        assert client.post("/json", json={"k": [1, 2, None]}).json() == {"k": [1, 2, None]}
        streamed = client.get("/stream", params={"p": "n"})
        assert streamed.headers["transfer-encoding"] == "chunked"
        assert streamed.text == "".join(f"n{i}\n" for i in range(5))
        assert client.get("/").status_code == 200  # same connection still good


def test_head_with_an_empty_body_gets_no_invented_length(
    serve: Callable[..., ServerThread],
) -> None:
    # RFC 9110 §9.3.2: HEAD gets GET's fields; an app that skips the body for
    # HEAD must not be answered "Content-Length: 0".
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [b"hello"]

    server = serve(app)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("HEAD", "/")
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    assert response.getheader("Content-Length") is None
    conn.close()
