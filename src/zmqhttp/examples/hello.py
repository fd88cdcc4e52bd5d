"""A sample WSGI app: ``zmqhttp serve zmqhttp.examples.hello:app``.

``/`` says hello, ``/echo`` returns the request body, ``/stream`` streams
chunks, ``/environ`` shows the WSGI environ.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

StartResponse = Callable[..., Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stream(int(environ.get("QUERY_STRING") or 5))
    if path == "/environ":
        lines = [f"{k}: {v!r}" for k, v in sorted(environ.items())]
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
        return ["\n".join(lines).encode("utf-8")]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!\n"]


def _stream(count: int) -> Iterator[bytes]:
    for i in range(count):
        yield f"chunk {i}\n".encode()
        time.sleep(0.01)
