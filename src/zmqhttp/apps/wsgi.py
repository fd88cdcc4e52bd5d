"""WSGI (PEP 3333) on a bounded thread pool.

Strategy: the app runs in a worker thread and never touches a socket
(waitress's rule). It reads ``wsgi.input`` from the request's
:class:`~zmqhttp.server.body.RequestBody` (streamed as it arrives, spilled to
disk past a bound) and hands response pieces to the event loop with
``call_soon_threadsafe``, waiting on :class:`~zmqhttp.server.flow.FlowControl`
while the client is slower than the app. A list or tuple body is sent whole
with a Content-Length in one hand-off; an iterator is streamed (chunked to
HTTP/1.1 clients).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import IO, Any, Final
from urllib.parse import unquote_to_bytes

from zmqhttp.config import Config
from zmqhttp.errors import LocalProtocolError, ProtocolError
from zmqhttp.http.events import Headers
from zmqhttp.server.body import ClientDisconnected, RequestBody
from zmqhttp.server.cycle import RequestCycle
from zmqhttp.server.threads import WorkerPool

__all__ = ["FileWrapper", "InputStream", "WSGIAdapter", "build_environ"]

log = logging.getLogger("zmqhttp.error")

WSGIApp = Callable[[dict[str, Any], Callable[..., Callable[[bytes], None]]], Iterable[bytes]]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

# Bytes read from a file per block when streaming wsgi.file_wrapper bodies.
_FILE_BLOCK = 256 * 1024
# How long a producer thread sleeps at most between checks for a vanished client.
_FLOW_POLL = 1.0
_ERROR_BODY = b"Internal Server Error\n"
# Status strings already parsed ("200 OK"): apps use a handful (bounded).
_STATUSES: dict[str, tuple[int, bytes]] = {}
_STATUSES_MAX = 256
# environ keys by lower-case field name ("HTTP_USER_AGENT"); bounded like _STATUSES.
_KEYS: dict[bytes, str] = {}
_KEYS_MAX: Final = 1024
# int needles: a one-byte bytes needle makes `in` raise and clear a TypeError first.
_UNDERSCORE: Final = ord("_")
_PERCENT: Final = ord("%")


class InputStream:
    """``wsgi.input``: a read-only binary stream over the request body."""

    def __init__(self, body: RequestBody) -> None:
        self._body = body

    def read(self, size: int | None = -1) -> bytes:
        return self._body.read(-1 if size is None else size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._body.readline(-1 if size is None else size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


class ErrorStream:
    """``wsgi.errors``: text written by the app goes to the error log, a line per record."""

    def __init__(self) -> None:
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            log.error("%s", line)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._partial:
            log.error("%s", self._partial)
            self._partial = ""


class FileWrapper:
    """``wsgi.file_wrapper``: iterate a file in blocks; ``close()`` closes it."""

    def __init__(self, filelike: IO[bytes], blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        size = max(self.blksize, _FILE_BLOCK)
        return iter(lambda: read(size), b"")

    def remaining_size(self) -> int | None:
        """Bytes left in a regular file, for a Content-Length; None if unknown."""
        try:
            fd = self.filelike.fileno()
            size = os.fstat(fd).st_size
            return max(0, size - self.filelike.tell())
        except (AttributeError, OSError, ValueError):
            return None


def build_environ(cycle: RequestCycle, errors: ErrorStream) -> dict[str, Any]:
    """The PEP 3333 environ for ``cycle``. Native strings are latin-1 decoded bytes."""
    request = cycle.request
    root_path = cycle.root_path
    raw_path = request.path
    path = (unquote_to_bytes(raw_path) if _PERCENT in raw_path else raw_path).decode("latin-1")
    if root_path and (path == root_path or path.startswith(root_path + "/")):
        path = path[len(root_path) :]
    host, port = cycle.server
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("latin-1"),
        "SCRIPT_NAME": root_path,
        "PATH_INFO": path,
        "QUERY_STRING": request.query.decode("latin-1"),
        "RAW_URI": request.target.decode("latin-1"),
        "SERVER_NAME": host,
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": f"HTTP/{request.http_version}",
        "REMOTE_ADDR": cycle.client[0],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": cycle.scheme,
        "wsgi.input": InputStream(cycle.body),
        "wsgi.input_terminated": True,
        "wsgi.errors": errors,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    }
    for name, value in request.headers:
        if _UNDERSCORE in name:
            continue  # "X_Forwarded_For" would pass for "X-Forwarded-For": drop it
        text = value.decode("latin-1")
        if name == b"content-type":
            environ["CONTENT_TYPE"] = text
        elif name == b"content-length":
            environ["CONTENT_LENGTH"] = text
        else:
            key = _KEYS.get(name)
            if key is None:
                key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
                if len(_KEYS) < _KEYS_MAX:
                    _KEYS[name] = key
            previous = environ.get(key)
            environ[key] = text if previous is None else f"{previous},{text}"
    if request.host:
        environ["HTTP_HOST"] = request.host.decode("latin-1")  # RFC 9112 §3.2.2
    return environ


def _parse_status(status: str) -> tuple[int, bytes]:
    parsed = _STATUSES.get(status)
    if parsed is not None:
        return parsed
    code, _, reason = status.partition(" ")
    if len(code) != 3 or not code.isdigit():
        raise LocalProtocolError(f"invalid WSGI status {status!r}")
    parsed = int(code), reason.encode("latin-1")
    if len(_STATUSES) < _STATUSES_MAX:
        _STATUSES[status] = parsed
    return parsed


def _has_length(headers: Headers) -> bool:
    # A loop, not any() over a generator: a generator object per response.
    for name, _ in headers:  # noqa: SIM110
        if name.lower() == b"content-length":
            return True
    return False


def _encode_headers(headers: list[tuple[str, str]]) -> Headers:
    try:
        return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    except (AttributeError, UnicodeEncodeError, ValueError, TypeError):
        raise LocalProtocolError("WSGI headers must be a list of (str, str) in latin-1") from None


class _Responder:
    """``start_response`` and the ``write`` callable for one request (app thread)."""

    def __init__(self, cycle: RequestCycle) -> None:
        self.cycle = cycle
        self.status: int | None = None
        self.reason = b""
        self.headers: Headers = []
        self.head_sent = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        self.status, self.reason = _parse_status(status)
        self.headers = _encode_headers(headers)
        return self.write

    # ``object``, not ``bytes``: apps hand bytes-like objects too (accepted, as
    # bytes(data)) and other types get the TypeError below. The compiled build
    # (setup.py) checks a ``bytes`` parameter on entry, which would refuse a
    # bytearray and word a str's error its own way.
    def write(self, data: object) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"WSGI body chunks must be bytes, not {type(data).__name__}")
        if self.status is None:
            raise AssertionError("write() before start_response()")
        cycle = self.cycle
        if not cycle.flow.wait_writable(_FLOW_POLL) or cycle.disconnected:
            raise ClientDisconnected("client disconnected")
        self._send_head()
        if data:
            chunk = bytes(data)
            cycle.flow.reserve(len(chunk))
            cycle.call_soon_threadsafe(cycle.send_data, chunk, len(chunk))

    def _send_head(self) -> None:
        if not self.head_sent:
            assert self.status is not None
            self.head_sent = True
            cycle = self.cycle
            cycle.call_soon_threadsafe(cycle.start_response, self.status, self.headers, self.reason)

    def respond_whole(self, body: bytes) -> None:
        """Head, body and end in one hand-off, with a Content-Length if missing."""
        assert self.status is not None
        headers = self.headers
        # 204 and 304 have no content, and an app may leave a HEAD body empty:
        # a computed "Content-Length: 0" would misstate the representation's
        # length (RFC 9110 §8.6, §9.3.2, §15.4.5).
        skip = self.status in (204, 304) or (not body and self.cycle.request.method == b"HEAD")
        if not skip and not _has_length(headers):
            headers.append((b"Content-Length", b"%d" % len(body)))  # our own list
        self.head_sent = True
        cycle = self.cycle
        # Already in memory: no pacing needed for a body handed over whole.
        cycle.call_soon_threadsafe(cycle.respond, self.status, headers, body)

    def send_iterable(self, result: Iterable[bytes]) -> None:
        if isinstance(result, list | tuple) and not self.head_sent:
            if self.status is None:
                raise AssertionError("the application returned without start_response()")
            self.respond_whole(b"".join(result))
            return
        if isinstance(result, FileWrapper) and not self.head_sent:
            self._add_file_length(result)
        # Declared ``object`` so that the compiled build does not check each
        # item as ``bytes`` (write() validates it, and accepts bytes-like).
        chunk: object
        for chunk in result:
            if chunk:
                self.write(chunk)
        if self.status is None:
            raise AssertionError("the application returned without start_response()")
        if not self.head_sent:
            self.respond_whole(b"")
            return
        cycle = self.cycle
        cycle.call_soon_threadsafe(cycle.end_response)

    def _add_file_length(self, wrapper: FileWrapper) -> None:
        if _has_length(self.headers):
            return
        size = wrapper.remaining_size()
        if size is not None:
            self.headers.append((b"Content-Length", b"%d" % size))


class WSGIAdapter:
    """Runs a WSGI application for each request on a pool of ``config.threads`` threads."""

    def __init__(self, app: WSGIApp, config: Config) -> None:
        self.app = app
        self._pool = WorkerPool(config.threads, name="zmqhttp-wsgi")
        self._errors = ErrorStream()

    def handle(self, cycle: RequestCycle) -> None:
        self._pool.submit(self._run, cycle)

    async def startup(self) -> None:
        """WSGI has no lifespan protocol."""

    async def shutdown(self) -> None:
        """WSGI has no lifespan protocol."""

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def _run(self, cycle: RequestCycle) -> None:
        try:
            self._serve(cycle)
        finally:
            cycle.app_done()

    def _serve(self, cycle: RequestCycle) -> None:
        if cycle.disconnected:
            return
        responder = _Responder(cycle)
        try:
            result = self.app(build_environ(cycle, self._errors), responder.start_response)
            try:
                responder.send_iterable(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except ClientDisconnected:
            log.debug("client went away during %r", cycle.request.target)
        except ProtocolError as exc:
            # Raised by wsgi.input: the client's fault (408, 413, bad chunk),
            # already answered by the server; not an application error.
            log.debug("request %r failed: %s", cycle.request.target, exc)
        except BaseException as exc:
            self._failed(cycle, responder, exc)

    def _failed(self, cycle: RequestCycle, responder: _Responder, exc: BaseException) -> None:
        request = cycle.request
        log.error(
            "Exception in WSGI application for %s %s",
            request.method.decode("latin-1"),
            request.target.decode("latin-1"),
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        if responder.head_sent:
            cycle.call_soon_threadsafe(cycle.abort)
        else:
            headers: Headers = [
                (b"Content-Type", b"text/plain; charset=utf-8"),
                (b"Content-Length", b"%d" % len(_ERROR_BODY)),
            ]
            cycle.call_soon_threadsafe(cycle.respond, 500, headers, _ERROR_BODY, 0)
        if not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt, SystemExit: not ours to swallow
