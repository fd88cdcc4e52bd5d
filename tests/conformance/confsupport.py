"""Raw-socket helpers for the RFC 9112 / RFC 9110 conformance suite.

Strategy: every case talks to a real server over a real TCP socket on
127.0.0.1 with bytes written by hand, and reads the answer back byte by byte
with a small, strict response reader (Content-Length, chunked and
close-delimited bodies; 1xx interim responses kept aside). A stray byte the
server should not have sent (a body after ``HEAD``, a ``204`` with content)
shows up as a malformed status line of the next response, which the reader
refuses.

The application (:class:`RecordingApp`) records every request it sees in a
thread-safe list, so a test can prove that a request hidden in a body never
reached it. The same app runs in-process (:func:`start_target` ``"inprocess"``)
or behind a fabric gateway in a worker on its own thread (``"fabric"``).

Every socket operation has a timeout; nothing here can hang a test.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from zmqhttp.config import Config
from zmqhttp.fabric.dispatcher import FabricAdapter
from zmqhttp.testing import ServerThread, WorkerThread

__all__ = [
    "BASE_SETTINGS",
    "BODY_LIMIT",
    "KINDS",
    "Case",
    "Conn",
    "Exchange",
    "Expect",
    "OneOf",
    "Outcome",
    "RecordingApp",
    "Rejected",
    "Response",
    "Seen",
    "Served",
    "Target",
    "blen",
    "case_params",
    "echo_line",
    "exchange",
    "fill",
    "is_imf_fixdate",
    "oneof",
    "rejected",
    "request",
    "run_cases",
    "served",
    "start_target",
    "verify",
]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

#: The two paths every case runs on: the app in the server's process, and the
#: app in a fabric worker behind a gateway.
KINDS = ("inprocess", "fabric")

#: Small enough that a test can cross it with a few frames.
BODY_LIMIT = 64 * 1024

#: Settings of every conformance server. ``timeout_linger`` is short so that a
#: rejected connection is closed quickly (the server lingers for the client to
#: close first, RFC 9112 §9.6); the other values are the defaults, named here so
#: the limit tests do not depend on them changing.
BASE_SETTINGS: dict[str, Any] = {
    "timeout_linger": 0.05,
    "timeout_graceful_shutdown": 3,
    "limit_request_body": BODY_LIMIT,
    "limit_request_line": 8192,
    "limit_request_field_size": 8190,
    "limit_request_fields": 100,
    "limit_request_head": 64 * 1024,
    "threads": 8,
}

IO_TIMEOUT = 5.0

_STATUS_LINE = re.compile(rb"HTTP/(\d)\.(\d) (\d{3}) ?([^\r\n]*)")
_IMF_FIXDATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT"
)


# -- the application ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the application saw it."""

    method: str
    target: str
    path: str
    version: str
    host: str | None
    #: Body bytes read, or None if reading the body failed (the server refused it).
    body_len: int | None


def echo_line(method: str, target: str, body_len: int) -> bytes:
    """The first bytes of the echo app's answer, for ``method target`` with a body."""
    return f"{method} {target} len={body_len}".encode("latin-1")


class RecordingApp:
    """A WSGI app that records each request and echoes it.

    The default answer is ``METHOD TARGET len=N path=... host=... proto=...`` with a
    ``Content-Length``. The last path segment selects other behaviours:

    ``noread``  answer without reading the body;
    ``slowread`` wait 0.5 s, then read the body;
    ``stream``  a generator body (chunked to HTTP/1.1, close-delimited to 1.0);
    ``fixed``   100 bytes with a ``Content-Length`` (the same for GET and HEAD);
    ``204``     ``204 No Content``; ``304``: ``304`` with the ``fixed`` length;
    ``close``   the app sets ``Connection: close``;
    ``headers`` one line ``KEY=ascii(value)`` per ``HTTP_X_*`` environ key.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[Seen] = []

    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def mark(self) -> int:
        """An index to pass to :meth:`since`."""
        with self._lock:
            return len(self._seen)

    def since(self, mark: int) -> list[Seen]:
        with self._lock:
            return self._seen[mark:]

    def matching(self, fragment: str) -> list[Seen]:
        """Requests whose target contains ``fragment``."""
        return [seen for seen in self.seen() if fragment in seen.target]

    def _record(self, environ: Environ, body_len: int | None) -> None:
        seen = Seen(environ["REQUEST_METHOD"], environ["RAW_URI"], environ["PATH_INFO"],
                    environ["SERVER_PROTOCOL"], environ.get("HTTP_HOST"), body_len)
        with self._lock:
            self._seen.append(seen)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        last = environ["PATH_INFO"].rstrip("/").rsplit("/", 1)[-1]
        if last == "noread":
            self._record(environ, 0)
            return _answer(start_response, b"noread\n")
        if last == "slowread":
            time.sleep(0.5)
        try:
            body = environ["wsgi.input"].read()
        except Exception:
            self._record(environ, None)
            raise
        self._record(environ, len(body))
        return self._respond(last, environ, start_response, body)

    def _respond(self, last: str, environ: Environ, start_response: StartResponse,
                 body: bytes) -> Iterable[bytes]:
        if last == "stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return (b"part %d\n" % i for i in range(3))
        if last == "fixed":
            return _answer(start_response, b"x" * 100)
        if last == "204":
            start_response("204 No Content", [])
            return []
        if last == "304":
            start_response("304 Not Modified", [("ETag", '"v1"'), ("Content-Length", "100")])
            return []
        if last == "close":
            return _answer(start_response, b"closing\n", [("Connection", "close")])
        if last == "headers":
            lines = [f"{k}={v!a}\n" for k, v in sorted(environ.items())
                     if k.startswith("HTTP_X_")]
            return _answer(start_response, "".join(lines).encode())
        text = (f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} len={len(body)}"
                f" path={environ['PATH_INFO']} host={environ.get('HTTP_HOST')}"
                f" proto={environ['SERVER_PROTOCOL']}\n")
        return _answer(start_response, text.encode("latin-1"))


def _answer(start_response: StartResponse, body: bytes,
            extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body))), *(extra or [])])
    return [body]


# -- servers ------------------------------------------------------------------------------------


@dataclass
class Target:
    """A running server the suite talks to."""

    kind: str
    port: int
    app: RecordingApp

    def connect(self, timeout: float = IO_TIMEOUT) -> Conn:
        return Conn(self.port, timeout)


@contextlib.contextmanager
def start_target(kind: str, **settings: Any) -> Iterator[Target]:
    """A server of ``kind`` (see :data:`KINDS`) running a fresh :class:`RecordingApp`."""
    app = RecordingApp()
    merged = {**BASE_SETTINGS, **settings}
    if kind == "inprocess":
        with ServerThread(app, **merged) as server:
            yield Target(kind, server.port, app)
        return
    if kind != "fabric":
        raise ValueError(kind)
    gateway = ServerThread(None, adapter=FabricAdapter, fabric=["tcp://127.0.0.1:*"],
                           **merged).start()
    worker: WorkerThread | None = None
    try:
        assert isinstance(gateway.adapter, FabricAdapter)
        worker = WorkerThread(app, gateway.adapter.endpoints[0], Config().replace(**merged)).start()
        _wait_ready(gateway.port)
        yield Target(kind, gateway.port, app)
    finally:
        if worker is not None:
            worker.stop()
        gateway.stop(timeout=5)


def _wait_ready(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ex = exchange(Target("fabric", port, RecordingApp()),
                      request("GET", "/readyz", close=True))
        if ex.statuses == [200]:
            return
        time.sleep(0.05)
    raise TimeoutError("no fabric worker became ready")


# -- requests -----------------------------------------------------------------------------------


def request(method: str, target: str, *fields: str, body: bytes = b"", version: str = "1.1",
            host: str | None = "example.com", close: bool = False) -> bytes:
    """A well-formed request; ``fields`` are ``"Name: value"`` strings, in order.

    A ``Content-Length`` is added for a non-empty ``body`` unless a field frames it.
    """
    lines = [f"{method} {target} HTTP/{version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += fields
    framed = any(f.lower().startswith(("content-length:", "transfer-encoding:")) for f in fields)
    if body and not framed:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# -- responses ----------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    #: "none", "length", "chunked" or "close": how the body was delimited.
    framing: str = "none"
    chunk_sizes: list[int] = field(default_factory=list)
    trailers: list[tuple[str, str]] = field(default_factory=list)
    #: 1xx responses received before this one.
    interim: list[Response] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """All values of ``name`` joined with ``,`` (RFC 9110 §5.3), or None."""
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ",".join(values) if values else None

    def header_count(self, name: str) -> int:
        return sum(1 for k, _ in self.headers if k.lower() == name.lower())

    def connection_tokens(self) -> set[str]:
        value = self.header("connection") or ""
        return {t.strip().lower() for t in value.split(",") if t.strip()}

    def __repr__(self) -> str:
        return (f"<{self.version} {self.status} {self.reason} {self.headers}"
                f" body={self.body[:80]!r}>")


class Conn:
    """One client connection: raw writes, strict response reads, EOF detection."""

    def __init__(self, port: int, timeout: float = IO_TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> bool:
        """Send ``data``; False if the server had already closed (that can be the point)."""
        self.sock.settimeout(self.timeout)
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            return False
        return True

    def _fill(self, timeout: float | None = None) -> bool:
        """Read more into the buffer; False at end of stream (EOF or reset)."""
        if self.eof:
            return False
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ConnectionAbortedError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise EOFError(f"EOF inside a line; have {self.buf[:200]!r}")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"EOF after {len(self.buf)} of {n} body bytes")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def has_data(self, wait: float) -> bool:
        """True if any byte arrives (or is buffered) within ``wait`` seconds."""
        if self.buf:
            return True
        try:
            return self._fill(wait)
        except TimeoutError:
            return False

    def at_eof(self, wait: float = IO_TIMEOUT) -> bool:
        """True if the server ends the stream within ``wait`` with nothing more sent."""
        if self.buf:
            return False
        try:
            return not self._fill(wait)
        except TimeoutError:
            return False

    def read_head(self) -> Response:
        line = self._line()
        match = _STATUS_LINE.fullmatch(line)
        if match is None:
            raise AssertionError(f"not a status line: {line!r} (then {self.buf[:200]!r})")
        major, minor, status, reason = match.groups()
        headers: list[tuple[str, str]] = []
        while (line := self._line()) != b"":
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise AssertionError(f"malformed response field line {line!r}")
            headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        version = f"HTTP/{major.decode()}.{minor.decode()}"
        return Response(int(status), reason.decode("latin-1"), version, headers)

    def read_response(self, method: str = "GET") -> Response:
        """The next final response; 1xx responses before it go to ``.interim``."""
        interim: list[Response] = []
        while True:
            resp = self.read_head()
            if resp.status >= 200:
                break
            interim.append(resp)
        resp.interim = interim
        self._read_body(resp, method)
        return resp

    def _read_body(self, resp: Response, method: str) -> None:
        # RFC 9112 §6.3, as a client applies it.
        if method == "HEAD" or resp.status in (204, 304):
            return
        te = resp.header("transfer-encoding")
        length = resp.header("content-length")
        if te is not None:
            assert te.replace(" ", "").lower().endswith("chunked"), f"odd framing {te!r}"
            assert length is None, "a response with both Transfer-Encoding and Content-Length"
            resp.framing = "chunked"
            self._chunked(resp)
        elif length is not None:
            assert length.isdigit(), f"bad response Content-Length {length!r}"
            resp.framing = "length"
            resp.body = self._exact(int(length))
        else:
            resp.framing = "close"
            while self._fill():
                pass
            resp.body, self.buf = self.buf, b""

    def _chunked(self, resp: Response) -> None:
        parts = []
        while True:
            size_text = self._line()
            assert re.fullmatch(rb"[0-9a-fA-F]+", size_text), f"bad chunk size {size_text!r}"
            size = int(size_text, 16)
            resp.chunk_sizes.append(size)
            if size == 0:
                break
            parts.append(self._exact(size))
            assert self._exact(2) == b"\r\n", "chunk data not followed by CRLF"
        while (line := self._line()) != b"":
            name, _, value = line.decode("latin-1").partition(":")
            resp.trailers.append((name, value.strip()))
        resp.body = b"".join(parts)

    def responses(self, methods: Iterable[str] = (),
                  limit: int = 20) -> tuple[list[Response], bool]:
        """Read responses until end of stream.

        Returns the responses and whether the stream ended (False: it stayed open
        with nothing more to read for :attr:`timeout` seconds, or ended mid-response).
        """
        methods = list(methods)
        out: list[Response] = []
        while len(out) < limit:
            if not self.buf and (self.eof or not self.has_data(self.timeout)):
                return out, self.eof
            method = methods[len(out)] if len(out) < len(methods) else "GET"
            try:
                out.append(self.read_response(method))
            except EOFError:
                return out, False
        return out, self.at_eof()


@dataclass
class Exchange:
    """What came back for some bytes written on one fresh connection."""

    responses: list[Response]
    #: The server ended the connection (EOF or reset) after the last response.
    closed: bool
    #: The server had closed before all the bytes could be written.
    send_failed: bool = False

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    @property
    def bodies(self) -> list[bytes]:
        return [r.body for r in self.responses]


def exchange(target: Target, data: bytes, methods: Iterable[str] = (),
             timeout: float = IO_TIMEOUT) -> Exchange:
    """Write ``data`` on a new connection and read responses until the server closes.

    End the last request with ``Connection: close`` so that a healthy exchange ends
    promptly; a connection still open after ``timeout`` idle seconds ends the read.
    """
    with target.connect(timeout) as conn:
        sent = conn.send(data)
        responses, closed = conn.responses(methods)
        return Exchange(responses, closed, send_failed=not sent)


def is_imf_fixdate(value: str | None, now: float | None = None, slack: float = 60.0) -> bool:
    """True if ``value`` is an IMF-fixdate (RFC 9110 §5.6.7) within ``slack`` s of now."""
    if value is None or not _IMF_FIXDATE.fullmatch(value):
        return False
    when = parsedate_to_datetime(value).timestamp()
    return abs(when - (time.time() if now is None else now)) <= slack


# -- table-driven cases -------------------------------------------------------------------------
#
# Most cases are "write these bytes, read until the server closes, judge what came
# back and what the app saw". They run concurrently, one connection each, in a
# module-scoped fixture (a rejected connection costs a lingering close, a quarter
# of a second; run one after the other they would dominate the suite's time), and
# each is then judged by its own named test.
#
# Case bytes are templates: ``{p}`` becomes a prefix unique to the case, of fixed
# length (``/c000/``), so lengths computed from a template stay right and each
# case finds its own requests in the app's record.

PREFIX_LEN = len("/c000/")


def fill(template: bytes, prefix: str = "/c000/") -> bytes:
    return template.replace(b"{p}", prefix.encode())


def blen(template: bytes) -> int:
    """The length of ``template`` once ``{p}`` is filled in."""
    return len(fill(template))


@dataclass(frozen=True)
class Served:
    """Each listed request got a 200 from the app, in order, and then the server
    closed the connection; the app saw exactly these requests (a hidden one would
    be an extra response and an extra record)."""

    #: (method, target, body length); ``{p}`` in the target is the case prefix.
    requests: tuple[tuple[str, str, int], ...]

    def check(self, ex: Exchange, seen: list[Seen], prefix: str) -> str | None:
        want = [(m, t.replace("{p}", prefix), n) for m, t, n in self.requests]
        got = [(s.method, s.target, s.body_len) for s in seen]
        if got != want:
            return f"app saw {got}, expected {want}"
        if ex.statuses != [200] * len(want):
            return f"statuses {ex.statuses}, expected {[200] * len(want)}"
        for (method, target, n), resp in zip(want, ex.responses, strict=True):
            if method == "HEAD" or _special(target):
                continue
            if not resp.body.startswith(echo_line(method, target, n) + b" "):
                return f"response body {resp.body!r} does not echo {method} {target} len={n}"
        if not ex.closed:
            return "the connection was not closed after the last (Connection: close) request"
        return None


@dataclass(frozen=True)
class Rejected:
    """After ``served`` requests are answered, the server answers one error with a
    status in ``statuses`` and closes; nothing after the bad request reaches the app."""

    statuses: tuple[int, ...]
    served: Served = Served(())

    def check(self, ex: Exchange, seen: list[Seen], prefix: str) -> str | None:
        k = len(self.served.requests)
        head = Exchange(ex.responses[:k], True)
        problem = self.served.check(head, seen[:k], prefix) if k else None
        if problem:
            return problem
        rest = ex.statuses[k:]
        if len(rest) != 1 or rest[0] not in self.statuses:
            return f"statuses {ex.statuses}, expected {[200] * k} + one of {self.statuses}"
        # The rejected request itself may have reached the app if it failed in its
        # body (the app's read raised); nothing may come after it.
        extra = seen[k:]
        if extra and (len(extra) > 1 or extra[0].body_len is not None):
            return f"the app saw requests after the error: {extra}"
        if not ex.closed:
            return "the connection was not closed after the error response"
        return None


@dataclass(frozen=True)
class OneOf:
    """Either of the permitted outcomes (the RFC leaves the choice to the server)."""

    options: tuple[Served | Rejected, ...]

    def check(self, ex: Exchange, seen: list[Seen], prefix: str) -> str | None:
        problems = [o.check(ex, seen, prefix) for o in self.options]
        if any(p is None for p in problems):
            return None
        return " / ".join(f"[{p}]" for p in problems)


Expect = Served | Rejected | OneOf

_SPECIAL = frozenset({"noread", "stream", "fixed", "204", "304", "close", "headers"})


def _special(target: str) -> bool:
    """True for a path whose answer is not the echo line (see :class:`RecordingApp`)."""
    return target.split("?")[0].rstrip("/").rsplit("/", 1)[-1] in _SPECIAL


def served(*requests: tuple[str, str, int]) -> Served:
    return Served(tuple(requests))


def rejected(*statuses: int, after: Served | None = None) -> Rejected:
    return Rejected(statuses, after or Served(()))


@dataclass(frozen=True)
class Case:
    """Bytes to write on a fresh connection and the outcome(s) the RFC permits."""

    data: bytes
    expect: Expect
    #: The requirement, with its section: shown when the case fails.
    why: str
    #: Request methods in order, where a HEAD changes how a response is read.
    methods: tuple[str, ...] = ()
    #: Set for a known server bug: the case is marked xfail(strict=True).
    bug: str | None = None


@dataclass
class Outcome:
    exchange: Exchange
    prefix: str
    seen: list[Seen]


def run_cases(target: Target, cases: dict[str, Case], workers: int = 16) -> dict[str, Outcome]:
    """Run every case concurrently, one connection each; see the module comment."""
    prefixes = {name: f"/c{i:03d}/" for i, name in enumerate(cases)}

    def run(name: str) -> Exchange:
        case = cases[name]
        return exchange(target, fill(case.data, prefixes[name]), case.methods)

    with ThreadPoolExecutor(workers) as pool:
        exchanges = dict(zip(cases, pool.map(run, cases), strict=True))
    return {name: Outcome(ex, prefixes[name], target.app.matching(prefixes[name]))
            for name, ex in exchanges.items()}


def verify(case: Case, outcome: Outcome) -> None:
    problem = case.expect.check(outcome.exchange, outcome.seen, outcome.prefix)
    assert problem is None, (
        f"{case.why}\n  sent: {fill(case.data, outcome.prefix)[:300]!r}\n"
        f"  got: {outcome.exchange.responses} closed={outcome.exchange.closed}\n  {problem}"
    )


def case_params(cases: dict[str, Case]) -> list[Any]:
    """``pytest.param`` per case, id = case name, xfail(strict) where ``bug`` is set."""
    return [pytest.param(name, id=name,
                         marks=[pytest.mark.xfail(strict=True, reason=f"BUG: {case.bug}")]
                         if case.bug else [])
            for name, case in cases.items()]


def oneof(*options: Served | Rejected) -> OneOf:
    return OneOf(tuple(options))
