"""The livefeed example: SSE and WebSocket feeds, and a headless Chromium watching the page.

The browser test drives Chromium with the Chrome DevTools Protocol over its
remote-debugging WebSocket (a small client on wsproto, below), so that a
message can be published on the ZeroMQ side while the page is live.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import zmq
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from zmqhttp.examples.livefeed import LiveFeed
from zmqhttp.testing import ServerThread

CHROMIUM = "/usr/bin/chromium"
Serve = Callable[..., ServerThread]


# -- a small WebSocket client (wsproto over a blocking socket) --------------------------------


class WSClient:
    """A blocking WebSocket client; every wait is bounded by a deadline."""

    def __init__(self, host: str, port: int, target: str, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.messages: deque[str | bytes] = deque()
        self._parts: list[str | bytes] = []
        self.accepted = False
        self.rejected: int | None = None
        self.close_event: CloseConnection | None = None
        self.eof = False
        self.sock.sendall(self.ws.send(Request(host=f"{host}:{port}", target=target)))
        deadline = time.monotonic() + timeout
        while not self.accepted and self.rejected is None:
            self._pump(deadline)

    def _pump(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.eof:
            raise TimeoutError("no WebSocket data in time" if not self.eof else "connection closed")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError("no WebSocket data in time") from None
        if not data:
            self.eof = True
            return
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                self.accepted = True
            elif isinstance(event, RejectConnection):
                self.rejected = event.status_code
            elif isinstance(event, TextMessage | BytesMessage):
                self._parts.append(bytes(event.data) if isinstance(event, BytesMessage)
                                   else event.data)
                if event.message_finished:
                    parts, self._parts = self._parts, []
                    if isinstance(event, TextMessage):
                        self.messages.append("".join(str(p) for p in parts))
                    else:
                        self.messages.append(b"".join(p for p in parts if isinstance(p, bytes)))
            elif isinstance(event, Ping):
                self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_event = event
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    self.sock.sendall(self.ws.send(event.response()))

    def recv(self, timeout: float = 10.0) -> str | bytes:
        deadline = time.monotonic() + timeout
        while not self.messages:
            if self.close_event is not None:
                raise ConnectionError(f"WebSocket closed: {self.close_event.code}")
            self._pump(deadline)
        return self.messages.popleft()

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def close(self, timeout: float = 5.0) -> int | None:
        """Closing handshake; returns the code the server echoed (None if it did not)."""
        try:
            if self.ws.state is ConnectionState.OPEN:
                self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
                deadline = time.monotonic() + timeout
                while self.close_event is None and not self.eof:
                    self._pump(deadline)
        finally:
            self.sock.close()
        return self.close_event.code if self.close_event is not None else None


def ws_events(client: WSClient) -> Iterator[dict[str, Any]]:
    while True:
        message = client.recv()
        assert isinstance(message, str)
        yield json.loads(message)


@contextmanager
def sse_events(url: str, timeout: float = 10.0) -> Iterator[Iterator[dict[str, Any]]]:
    """The events of an SSE stream, as parsed JSON; the stream closes on exit."""
    with httpx.Client(timeout=timeout) as client, client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["transfer-encoding"] == "chunked"

        def events() -> Iterator[dict[str, Any]]:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield json.loads(line[len("data: "):])

        yield events()


def wait_for_message(events: Iterator[dict[str, Any]], msg: str, timeout: float = 10.0,
                     between: Callable[[], object] | None = None) -> dict[str, Any]:
    """Read events until a message ``msg`` arrives; ``between`` runs after each event."""
    deadline = time.monotonic() + timeout
    for event in events:
        if event.get("kind") == "message" and event.get("msg") == msg:
            return event
        assert time.monotonic() < deadline, f"{msg!r} did not arrive in {timeout} s"
        if between is not None:
            between()
    raise AssertionError("stream ended")


def first_tick(events: Iterator[dict[str, Any]]) -> dict[str, Any]:
    for event in events:
        if event["kind"] == "tick":
            return event
    raise AssertionError("stream ended")


def wait_until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.02)


def info(base: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(base + "/info", timeout=5).json()
    return result


# -- HTTP, SSE and WebSocket ---------------------------------------------------------------


def test_page_info_and_errors(serve: Serve) -> None:
    server = serve(LiveFeed())
    page = httpx.get(server.url + "/", timeout=5)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "new WebSocket" in page.text and "new EventSource" in page.text
    assert info(server.url)["endpoint"] == "inproc://zmqhttp-livefeed"
    assert httpx.get(server.url + "/publish", timeout=5).status_code == 400
    assert httpx.delete(server.url + "/publish", timeout=5).headers["allow"] == "GET, POST"
    assert httpx.get(server.url + "/nope", timeout=5).status_code == 404
    client = WSClient(server.host, server.port, "/not-ws")
    client.sock.close()
    assert client.rejected == 403


def test_sse_stream_delivers_published_message(serve: Serve) -> None:
    server = serve(LiveFeed())
    with sse_events(server.url + "/events") as events:
        tick = first_tick(events)  # the producer's ticks flow
        assert isinstance(tick["n"], int) and abs(tick["time"] - time.time()) < 60
        assert info(server.url)["clients"] == 1
        msg = f"sse-{uuid.uuid4()}"
        published = httpx.post(server.url + "/publish", data={"msg": msg}, timeout=5)
        assert published.status_code == 200
        event = wait_for_message(events, msg)
        assert event["via"] == "http"
        # GET with a query works too, and a raw text body.
        httpx.get(server.url + "/publish", params={"msg": msg + "-get"}, timeout=5)
        wait_for_message(events, msg + "-get")
        httpx.post(server.url + "/publish", content=msg + "-raw", timeout=5)
        wait_for_message(events, msg + "-raw")
    # The client left: its subscription is gone (http.disconnect reached the app).
    wait_until(lambda: info(server.url)["clients"] == 0, what="SSE unsubscribe")


def test_websocket_feed_delivers_published_message(serve: Serve,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    server = serve(LiveFeed(interval=0.01))  # ticks are likely in flight when the client closes
    client = WSClient(server.host, server.port, "/ws")
    try:
        events = ws_events(client)
        first_tick(events)
        msg = f"ws-{uuid.uuid4()}"
        httpx.get(server.url + "/publish", params={"msg": msg}, timeout=5)
        assert wait_for_message(events, msg)["via"] == "http"
        # Text from a WebSocket client is published to everyone, itself included.
        client.send_text(msg + "-from-client")
        assert wait_for_message(events, msg + "-from-client")["via"] == "websocket"
        assert info(server.url)["clients"] == 1
    finally:
        assert client.close() == 1000  # the server completed the closing handshake
    wait_until(lambda: info(server.url)["clients"] == 0, what="WebSocket unsubscribe")
    server.stop(timeout=5)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors  # a client closing mid-stream is not an application error


def test_publisher_on_tcp_endpoint_reaches_both_feeds(serve: Serve) -> None:
    """Another program's PUB socket connects to the feed's tcp endpoint and publishes."""
    app = LiveFeed("tcp://127.0.0.1:*")
    server = serve(app)
    endpoint = info(server.url)["endpoint"]
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", endpoint)
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.connect(endpoint)
    client = WSClient(server.host, server.port, "/ws")
    try:
        with sse_events(server.url + "/events") as sse:
            msg = f"zmq-{uuid.uuid4()}"
            # A PUB drops messages until the SUB's subscription reached it: repeat.
            event = wait_for_message(ws_events(client), msg, between=lambda: pub.send_string(msg))
            assert event == {"kind": "message", "msg": msg, "via": "zmq"}
            wait_for_message(sse, msg)  # SSE saw the same publications
            # A JSON object is passed through as the event.
            pub.send_json({"kind": "message", "msg": msg + "-json", "via": "tester"})
            assert wait_for_message(sse, msg + "-json")["via"] == "tester"
    finally:
        client.close()
        pub.close()
        ctx.term()
    # Lifespan shutdown closed the feed's sockets: the endpoint can be bound again.
    server.stop(timeout=5)
    assert app.feed is None
    ctx = zmq.Context()
    try:
        ctx.socket(zmq.SUB).bind(endpoint)
    finally:
        ctx.destroy(linger=0)


def test_without_lifespan_the_feed_starts_on_first_request(serve: Serve) -> None:
    app = LiveFeed("inproc://livefeed-no-lifespan")
    server = serve(app, lifespan="off")
    assert app.feed is None
    with sse_events(server.url + "/events") as events:
        first_tick(events)
    # Nothing runs the shutdown for us: stop the feed on the server's loop.
    loop = server.call(asyncio.get_running_loop)
    asyncio.run_coroutine_threadsafe(app.stop(), loop).result(timeout=5)
    assert app.feed is None


def test_shutdown_closes_websocket_with_1012(serve: Serve) -> None:
    server = serve(LiveFeed())
    client = WSClient(server.host, server.port, "/ws")
    try:
        first_tick(ws_events(client))
        stopper = threading.Thread(target=server.stop, kwargs={"timeout": 5})
        stopper.start()
        with pytest.raises(ConnectionError, match="1012"):
            for _ in ws_events(client):
                pass
        client.sock.close()  # we answered the close; hang up so the server need not linger
        stopper.join(10)
        assert not stopper.is_alive()
    finally:
        client.sock.close()


# -- headless Chromium over the DevTools protocol ----------------------------------------------


class DevTools:
    """The Chrome DevTools Protocol on one page target."""

    def __init__(self, client: WSClient) -> None:
        self.client = client
        self._id = 0

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout: float = 10.0) -> dict[str, Any]:
        self._id += 1
        self.client.send_text(json.dumps({"id": self._id, "method": method,
                                          "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.client.recv(max(0.01, deadline - time.monotonic())))
            if message.get("id") == self._id:  # anything else is an event
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15.0,
                 between: Callable[[], object] | None = None) -> None:
        """Evaluate ``expression`` until it is true (an error, as while loading, is false)."""
        deadline = time.monotonic() + timeout
        guarded = ("(() => { try { return Boolean(" + expression + "); }"
                   " catch (e) { return false; } })()")
        while not self.evaluate(guarded):
            assert time.monotonic() < deadline, f"page never satisfied {expression}"
            if between is not None:
                between()
            time.sleep(0.1)


@contextmanager
def chromium(url: str, timeout: float = 20.0) -> Iterator[DevTools]:
    """Headless Chromium showing ``url``, driven over its DevTools WebSocket."""
    profile = Path(tempfile.mkdtemp(prefix="livefeed-chromium-"))
    log_path = profile / "chromium.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", url],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
        )
    client: WSClient | None = None
    try:
        deadline = time.monotonic() + timeout
        port_file = profile / "DevToolsActivePort"
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Chromium did not start: "
                                   + log_path.read_text(errors="replace")[-2000:])
            time.sleep(0.05)
        port = int(port_file.read_text().split("\n")[0])
        target: str | None = None
        while target is None:
            assert time.monotonic() < deadline, "Chromium did not open the page"
            pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            for page in pages:
                if page.get("type") == "page" and page.get("url", "").startswith(url):
                    target = page["webSocketDebuggerUrl"]
            time.sleep(0.05)
        path = "/" + target.split("/", 3)[3]  # ws://127.0.0.1:PORT/devtools/page/ID
        client = WSClient("127.0.0.1", port, path)
        yield DevTools(client)
    finally:
        if client is not None:
            client.sock.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


@contextmanager
def serve_subprocess(endpoint: str, timeout: float = 20.0) -> Iterator[str]:
    """``python -m zmqhttp serve zmqhttp.examples.livefeed:app`` on 127.0.0.1:random."""
    env = dict(os.environ, LIVEFEED_ENDPOINT=endpoint)
    proc = subprocess.Popen(
        [sys.executable, "-m", "zmqhttp", "serve", "zmqhttp.examples.livefeed:app",
         "--bind", "127.0.0.1:0", "--no-access-log", "--timeout-graceful-shutdown", "5"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    lines: list[str] = []
    listening = threading.Event()

    def read_log() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            lines.append(raw.decode(errors="replace"))
            if "Listening on" in lines[-1]:
                listening.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        if not listening.wait(timeout):
            raise RuntimeError("server did not start: " + "".join(lines))
        match = re.search(r"Listening on tcp://127\.0\.0\.1:(\d+)", "".join(lines))
        assert match is not None
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        reader.join(5)
    assert proc.returncode == 0, "".join(lines)
    assert "Application shutdown complete" in "".join(lines)


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed "
                    "(Debian package 'chromium'); the browser test needs it")
def test_browser_shows_messages_published_on_zeromq() -> None:
    with serve_subprocess("tcp://127.0.0.1:*") as url:
        endpoint = info(url)["endpoint"]
        ctx = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.linger = 0
        pub.connect(endpoint)
        try:
            with chromium(url + "/") as page:
                # Both transports open and live: ticks arrive over each.
                page.wait_for("document.getElementById('ws-state').textContent === 'open'"
                              " && document.getElementById('sse-state').textContent === 'open'"
                              " && document.getElementById('ws-tick').textContent !== '-'"
                              " && document.getElementById('sse-tick').textContent !== '-'")
                assert info(url)["clients"] == 2
                # Published on the ZeroMQ side while the page is live.
                msg = f"from-zeromq-{uuid.uuid4()}"
                shown = ("document.getElementById('ws-log').textContent.includes({0})"
                         " && document.getElementById('sse-log').textContent.includes({0})")
                page.wait_for(shown.format(json.dumps(msg)),
                              between=lambda: pub.send_string(msg))
                # And through the page's own form (POST /publish).
                typed = f"typed-{uuid.uuid4()}"
                page.evaluate(f"document.getElementById('msg').value = {json.dumps(typed)};"
                              " document.getElementById('publish-form').requestSubmit(); true")
                page.wait_for(shown.format(json.dumps(typed)))
            # Chromium is gone: its WebSocket and SSE subscriptions ended.
            wait_until(lambda: info(url)["clients"] == 0, what="browser clients leaving")
        finally:
            pub.close()
            ctx.term()
