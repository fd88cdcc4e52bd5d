"""tornado's own app with the routes of ``apps.py``, on uvloop when installed.

    python bench/tornado_app.py --port 8000
"""

from __future__ import annotations

import argparse
import asyncio

import tornado.web

from apps import BODY, CHUNK, DOWNLOAD_CHUNKS, DOWNLOAD_SIZE


class Hello(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(BODY)


class Echo(tornado.web.RequestHandler):
    def post(self) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        self.write(self.request.body)


@tornado.web.stream_request_body
class Upload(tornado.web.RequestHandler):
    def prepare(self) -> None:
        self.total = 0

    def data_received(self, chunk: bytes) -> None:
        self.total += len(chunk)

    def post(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.write(str(self.total))


class Download(tornado.web.RequestHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(DOWNLOAD_SIZE))
        for _ in range(DOWNLOAD_CHUNKS):
            self.write(CHUNK)
            await self.flush()


def make_app() -> tornado.web.Application:
    return tornado.web.Application(
        [(r"/", Hello), (r"/echo", Echo), (r"/upload", Upload), (r"/download", Download)],
        log_function=lambda handler: None,  # no access log
    )


async def serve(host: str, port: int) -> None:
    make_app().listen(port, address=host, idle_connection_timeout=60)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
