"""The same app for every WSGI/ASGI server: ``wsgi_app`` and ``asgi_app``.

Routes (one per benchmark scenario):

* ``GET /``          hello world (14 bytes)
* ``POST /echo``     answers the request body
* ``POST /upload``   reads the whole body in pieces, answers its length in decimal
* ``GET /download``  streams ``DOWNLOAD_SIZE`` bytes in ``CHUNK``-sized pieces
  (Content-Length framing, the app yields piece by piece)

aiohttp and tornado serve the same routes from their own apps
(``aiohttp_app.py``, ``tornado_app.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

BODY = b"Hello, world!\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
CHUNK = b"x" * (64 * 1024)
DOWNLOAD_CHUNKS = 160
DOWNLOAD_SIZE = len(CHUNK) * DOWNLOAD_CHUNKS  # 10 MiB
READ_SIZE = 64 * 1024

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _plain(body: bytes, content_type: str = "text/plain") -> list[tuple[str, str]]:
    return [("Content-Type", content_type), ("Content-Length", str(len(body)))]


def _wsgi_body_pieces(environ: dict[str, Any]) -> Iterator[bytes]:
    """The request body in pieces, never reading past Content-Length (PEP 3333)."""
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    while remaining > 0:
        piece = stream.read(min(READ_SIZE, remaining))
        if not piece:
            return
        remaining -= len(piece)
        yield piece


def _download() -> Iterator[bytes]:
    for _ in range(DOWNLOAD_CHUNKS):
        yield CHUNK


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/echo":
        body = b"".join(_wsgi_body_pieces(environ))
        start_response("200 OK", _plain(body, "application/octet-stream"))
        return [body]
    if path == "/upload":
        body = str(sum(len(p) for p in _wsgi_body_pieces(environ))).encode()
        start_response("200 OK", _plain(body))
        return [body]
    if path == "/download":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(DOWNLOAD_SIZE))])
        return _download()
    start_response("200 OK", HEADERS)
    return [BODY]


async def _asgi_body_pieces(receive: Receive) -> list[bytes]:
    pieces: list[bytes] = []
    while True:
        message = await receive()
        pieces.append(message.get("body", b""))
        if not message.get("more_body"):
            return pieces


async def _asgi_count(receive: Receive) -> int:
    total = 0
    while True:
        message = await receive()
        total += len(message.get("body", b""))
        if not message.get("more_body"):
            return total


async def _asgi_reply(send: Send, body: bytes, content_type: str = "text/plain") -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(k.lower().encode(), v.encode())
                            for k, v in _plain(body, content_type)]})
    await send({"type": "http.response.body", "body": body})


async def _asgi_download(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", str(DOWNLOAD_SIZE).encode())]})
    for _ in range(DOWNLOAD_CHUNKS - 1):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": CHUNK})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        kind = message["type"].rsplit(".", 1)[-1]  # startup | shutdown
        await send({"type": f"lifespan.{kind}.complete"})
        if kind == "shutdown":
            return


async def asgi_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/echo":
        await _asgi_reply(send, b"".join(await _asgi_body_pieces(receive)),
                          "application/octet-stream")
    elif path == "/upload":
        await _asgi_reply(send, str(await _asgi_count(receive)).encode())
    elif path == "/download":
        await _asgi_download(send)
    else:
        await _asgi_reply(send, BODY)
