"""aiohttp's own web app with the routes of ``apps.py``, on uvloop when installed.

    python bench/aiohttp_app.py --port 8000
"""

from __future__ import annotations

import argparse

from aiohttp import web

from apps import BODY, CHUNK, DOWNLOAD_CHUNKS, DOWNLOAD_SIZE, READ_SIZE


async def hello(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="text/plain")


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read(), content_type="application/octet-stream")


async def upload(request: web.Request) -> web.Response:
    total = 0
    async for piece in request.content.iter_chunked(READ_SIZE):
        total += len(piece)
    return web.Response(text=str(total))


async def download(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = DOWNLOAD_SIZE
    await response.prepare(request)
    for _ in range(DOWNLOAD_CHUNKS):
        await response.write(CHUNK)
    await response.write_eof()
    return response


def make_app() -> web.Application:
    app = web.Application()
    app.add_routes([web.get("/", hello), web.post("/echo", echo),
                    web.post("/upload", upload), web.get("/download", download)])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None,
                keepalive_timeout=60, loop=loop_factory() if loop_factory else None)


if __name__ == "__main__":
    main()
