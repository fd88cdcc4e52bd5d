"""Real frameworks served end to end: FastAPI/Starlette over ASGI, Django over ASGI and WSGI."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path, reverse
from django.views.decorators.csrf import csrf_exempt
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from rawhttp import wait_for
from zmqhttp.testing import ServerThread

Serve = Callable[..., ServerThread]


# -- FastAPI (Starlette underneath) ---------------------------------------------------------


class Item(BaseModel):
    name: str
    quantity: int


class Probe:
    """What the FastAPI app reports back to the test (it runs on the server's thread)."""

    def __init__(self) -> None:
        self.lifespan: list[str] = []
        self.gate = threading.Event()
        self.produced: list[int] = []
        self.sse_sent = 0
        self.sse_closed = threading.Event()


def fastapi_app(probe: Probe) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        probe.lifespan.append("startup")
        yield {"greeting": "hello from lifespan"}
        probe.lifespan.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/items/{item_id}", name="item")
    async def get_item(item_id: int, request: Request, q: str | None = None) -> dict[str, Any]:
        return {"id": item_id, "q": q, "greeting": request.state.greeting,
                "root_path": request.scope["root_path"], "path": request.url.path,
                "url_for": str(request.url_for("item", item_id=item_id))}

    @app.post("/items")
    async def create_item(item: Item) -> dict[str, Any]:
        return {"created": item.name, "double": item.quantity * 2}

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def pieces() -> AsyncIterator[bytes]:
            probe.produced.append(1)
            yield b"chunk-1\n"
            await asyncio.to_thread(probe.gate.wait, 5)  # until the test saw chunk 1
            probe.produced.append(2)
            yield b"chunk-2\n"
            probe.produced.append(3)
            yield b"chunk-3\n"

        return StreamingResponse(pieces(), media_type="text/plain")

    @app.get("/events")
    async def events() -> StreamingResponse:
        async def sse() -> AsyncIterator[str]:
            try:
                while True:  # endless: only the client's disconnect ends it
                    probe.sse_sent += 1
                    yield f"id: {probe.sse_sent}\ndata: event {probe.sse_sent}\n\n"
                    await asyncio.sleep(0.05)
            finally:
                probe.sse_closed.set()

        return StreamingResponse(sse(), media_type="text/event-stream")

    return app


@pytest.fixture
def fastapi_server(serve: Serve) -> Iterator[tuple[ServerThread, Probe]]:
    probe = Probe()
    server = serve(fastapi_app(probe), root_path="/api")
    yield server, probe


def test_fastapi_json_routes(fastapi_server: tuple[ServerThread, Probe]) -> None:
    server, _ = fastapi_server
    with httpx.Client(base_url=server.url, timeout=5) as client:
        resp = client.get("/api/items/42", params={"q": "x y"})
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/json"
        assert resp.headers["content-length"] == str(len(resp.content))
        assert resp.json() == {
            "id": 42, "q": "x y", "greeting": "hello from lifespan", "root_path": "/api",
            "path": "/api/items/42", "url_for": f"{server.url}/api/items/42",
        }
        # A proxy that strips the prefix: the app still routes and builds URLs.
        stripped = client.get("/items/7").json()
        assert (stripped["path"], stripped["url_for"]) == (
            "/api/items/7", f"{server.url}/api/items/7")
        assert client.get("/api/items/not-a-number").status_code == 422
        assert client.get("/api/nowhere").status_code == 404


def test_fastapi_post_json(fastapi_server: tuple[ServerThread, Probe]) -> None:
    server, _ = fastapi_server
    with httpx.Client(base_url=server.url, timeout=5) as client:
        resp = client.post("/api/items", json={"name": "widget", "quantity": 21})
        assert (resp.status_code, resp.json()) == (200, {"created": "widget", "double": 42})
        bad = client.post("/api/items", content=b"{not json",
                          headers={"content-type": "application/json"})
        assert bad.status_code == 422
        big = client.post("/api/items", json={"name": "n" * 500_000, "quantity": 1})
        assert big.json()["created"] == "n" * 500_000


def test_fastapi_streaming_response_read_incrementally(
    fastapi_server: tuple[ServerThread, Probe],
) -> None:
    server, probe = fastapi_server
    with httpx.Client(base_url=server.url, timeout=5) as client, \
            client.stream("GET", "/api/stream") as resp:
        assert resp.status_code == 200
        assert resp.headers["transfer-encoding"] == "chunked"
        pieces = resp.iter_raw()
        assert next(pieces) == b"chunk-1\n"
        assert probe.produced == [1]  # the rest is not produced yet: truly streamed
        probe.gate.set()
        assert b"".join(pieces) == b"chunk-2\nchunk-3\n"
    assert probe.produced == [1, 2, 3]


def test_fastapi_server_sent_events_arrive_as_sent(
    fastapi_server: tuple[ServerThread, Probe],
) -> None:
    server, probe = fastapi_server
    seen: list[tuple[str, int]] = []
    with httpx.Client(base_url=server.url, timeout=5) as client, \
            client.stream("GET", "/api/events") as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                seen.append((line, probe.sse_sent))
            if len(seen) == 3:
                break
    assert [line for line, _ in seen] == ["data: event 1", "data: event 2", "data: event 3"]
    # Each event was read while the app had produced at most a couple more.
    assert all(sent - n <= 2 for n, (_, sent) in enumerate(seen, start=1)), seen
    # The client left: the endless generator is stopped (send raises, ASGI 2.4).
    assert probe.sse_closed.wait(5)
    sent = probe.sse_sent
    time.sleep(0.2)
    assert probe.sse_sent == sent
    assert wait_for(lambda: server.server.connection_count == 0)


def test_fastapi_lifespan_startup_and_shutdown() -> None:
    probe = Probe()
    server = ServerThread(fastapi_app(probe), root_path="/api").start()
    try:
        assert probe.lifespan == ["startup"]
        resp = httpx.get(f"{server.url}/api/items/1", timeout=5)
        assert resp.json()["greeting"] == "hello from lifespan"
    finally:
        server.stop(timeout=5)
    assert probe.lifespan == ["startup", "shutdown"]


# -- Django ---------------------------------------------------------------------------------


def hello_view(request: HttpRequest) -> HttpResponse:
    body = (f"hello {request.method} path={request.path} info={request.path_info} "
            f"q={request.GET.get('q', '')} reverse={reverse('hello')}")
    return HttpResponse(body, content_type="text/plain")


@csrf_exempt
def echo_view(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    return JsonResponse({"method": request.method, "received": data,
                         "length": len(request.body),
                         "type": request.headers.get("content-type")})


urlpatterns = [
    path("hello/", hello_view, name="hello"),
    path("echo/", echo_view, name="echo"),
]


@pytest.fixture(scope="module")
def django_configured() -> None:
    """Django settings are process-global: configured once, shared by both tests."""
    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ALLOWED_HOSTS=["*"],
            SECRET_KEY="zmqhttp-tests-only",
            ROOT_URLCONF=__name__,
            INSTALLED_APPS=[],
            MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
            DATABASES={},
            USE_TZ=True,
        )


def exercise_django(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        resp = client.get("/dj/hello/", params={"q": "zmq"})
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/plain"
        assert resp.text == ("hello GET path=/dj/hello/ info=/hello/ q=zmq "
                             "reverse=/dj/hello/")
        payload = {"numbers": list(range(1000)), "text": "héllo"}
        raw = json.dumps(payload).encode()
        resp = client.post("/dj/echo/", content=raw,
                           headers={"content-type": "application/json"})
        assert resp.status_code == 200
        body = resp.json()
        assert body["received"] == payload
        assert body["method"] == "POST"
        assert body["type"] == "application/json"
        assert body["length"] == len(raw)
        assert client.get("/dj/missing/").status_code == 404
        assert client.get("/dj/hello").status_code == 301  # APPEND_SLASH redirect


@pytest.mark.usefixtures("django_configured")
def test_django_asgi(serve: Serve) -> None:
    from django.core.asgi import get_asgi_application

    server = serve(get_asgi_application(), root_path="/dj")
    assert type(server.server.adapter).__name__ == "ASGIAdapter"
    exercise_django(server)


@pytest.mark.usefixtures("django_configured")
def test_django_wsgi(serve: Serve) -> None:
    from django.core.wsgi import get_wsgi_application

    server = serve(get_wsgi_application(), root_path="/dj")
    assert type(server.server.adapter).__name__ == "WSGIAdapter"
    exercise_django(server)
