"""The live-feed ASGI app and its ZeroMQ side (plain ASGI 3, no framework).

Strategy: one SUB socket binds the feed endpoint and one task reads it and
fans every event out to the connected WebSocket and SSE clients, each of which
has its own small bounded queue. The producer's PUB socket (and ``/publish``)
connects to that SUB, and so can PUB sockets of other programs when the
endpoint is ``tcp://``. We chose a fan-out over one SUB socket per client
because:

* a client sees events from the moment it is registered: a fresh SUB socket
  would miss everything published before its subscription reached the PUB
  side (ZeroMQ's "slow joiner"), which makes a page or a test lose messages;
* the cost per client is a queue, not a socket with its own libzmq pipes, and
  a slow client only ever loses its own oldest events (its queue drops them),
  never blocks the others or the SUB socket;
* with the SUB side bound, any number of publishers can connect to it.

Everything runs on the server's event loop: the sockets are ``zmq.asyncio``
sockets used from that one thread. The ASGI lifespan startup creates the
sockets and tasks; shutdown cancels the tasks, ends the remaining streams and
closes the sockets (and the context, if the app created it). Without lifespan
(``--lifespan off``) the feed starts on the first request and runs until the
process exits, unless the embedding program awaits :meth:`LiveFeed.stop`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import zmq
import zmq.asyncio

from zmqhttp.examples.livefeed.page import PAGE

__all__ = ["DEFAULT_ENDPOINT", "ENDPOINT_VARIABLE", "Feed", "LiveFeed", "Subscriber"]

log = logging.getLogger("zmqhttp.examples.livefeed")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Where the feed's SUB socket binds unless told otherwise.
DEFAULT_ENDPOINT = "inproc://zmqhttp-livefeed"
#: The environment variable that overrides :data:`DEFAULT_ENDPOINT`.
ENDPOINT_VARIABLE = "LIVEFEED_ENDPOINT"
#: Events kept for one client that reads slowly; older ones are dropped.
CLIENT_QUEUE = 100
#: Largest ``/publish`` request body.
MAX_PUBLISH_BODY = 64 * 1024
#: Largest message accepted from the ZeroMQ side (bigger ones are dropped).
MAX_EVENT = 64 * 1024


class Subscriber:
    """One WebSocket or SSE client: a bounded queue of JSON texts.

    ``None`` in the queue means the feed closed and the stream should end.
    """

    def __init__(self, maxsize: int = CLIENT_QUEUE) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize)
        #: Events this client lost because it did not keep up.
        self.dropped = 0

    def offer(self, event: str | None) -> None:
        """Queue ``event``, dropping the oldest one if the client is behind."""
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    async def next_batch(self) -> list[str | None]:
        """Wait for at least one event; return it with any others already queued."""
        batch = [await self.queue.get()]
        while not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch


def normalise(frame: bytes) -> str:
    """One event as compact JSON text: a JSON object as is, anything else as a message."""
    text = frame.decode("utf-8", "replace")
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        value = {"kind": "message", "msg": text, "via": "zmq"}
    return json.dumps(value, separators=(",", ":"))


class Feed:
    """The ZeroMQ side: a PUB producer, one bound SUB socket, and the fan-out.

    Args:
        endpoint: where the SUB socket binds (``inproc://...`` or
            ``tcp://HOST:PORT``; ``tcp://127.0.0.1:*`` picks a free port).
        context: a ``zmq.asyncio`` context to use; one is created (and
            terminated on :meth:`close`) if not given.
        interval: seconds between two ticks of the producer.
    """

    def __init__(self, endpoint: str, context: zmq.asyncio.Context | None = None,
                 interval: float = 0.2) -> None:
        self._own_context = context is None
        self._context = context or zmq.asyncio.Context()
        self._interval = interval
        self._subscribers: set[Subscriber] = set()
        self._sub = self._context.socket(zmq.SUB)
        self._pub = self._context.socket(zmq.PUB)
        try:
            for sock in (self._sub, self._pub):
                sock.setsockopt(zmq.LINGER, 0)
            self._sub.setsockopt(zmq.SUBSCRIBE, b"")
            self._sub.setsockopt(zmq.MAXMSGSIZE, MAX_EVENT)
            self._sub.bind(endpoint)
            #: The bound endpoint, with the real port when ``*`` was asked for.
            self.endpoint: str = self._sub.getsockopt_string(zmq.LAST_ENDPOINT)
            self._pub.connect(self.endpoint)
        except zmq.ZMQError:
            self._close_sockets()
            raise
        #: Events read from the SUB socket / published by this app.
        self.received = 0
        self.published = 0
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._fan_out(), name="livefeed-fan-out"),
                       loop.create_task(self._produce(), name="livefeed-producer")]

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber()
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    async def publish(self, event: dict[str, Any]) -> None:
        """Publish ``event`` on the PUB socket (it reaches every client through the SUB)."""
        await self._pub.send(json.dumps(event, separators=(",", ":")).encode("utf-8"))
        self.published += 1

    async def close(self) -> None:
        """Stop the tasks, end every client's stream, close the sockets."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for subscriber in list(self._subscribers):
            subscriber.offer(None)
        self._subscribers.clear()
        self._close_sockets()

    def _close_sockets(self) -> None:
        self._sub.close(linger=0)
        self._pub.close(linger=0)
        if self._own_context:
            self._context.term()

    async def _fan_out(self) -> None:
        while True:
            frames = await self._sub.recv_multipart()
            self.received += 1
            event = normalise(frames[-1])  # a topic frame before it is ignored
            for subscriber in list(self._subscribers):
                subscriber.offer(event)

    async def _produce(self) -> None:
        count = 0
        while True:
            count += 1
            await self.publish({"kind": "tick", "n": count, "time": time.time()})
            await asyncio.sleep(self._interval)


class LiveFeed:
    """The ASGI 3 application.

    Args:
        endpoint: the feed endpoint; default ``$LIVEFEED_ENDPOINT`` or
            :data:`DEFAULT_ENDPOINT`, read when the feed starts.
        context: a ``zmq.asyncio`` context to share (an embedding program's);
            the app then leaves it open on shutdown.
        interval: seconds between producer ticks.
    """

    def __init__(self, endpoint: str | None = None, *,
                 context: zmq.asyncio.Context | None = None, interval: float = 0.2) -> None:
        self._endpoint = endpoint
        self._context = context
        self._interval = interval
        #: The running feed, between startup and shutdown.
        self.feed: Feed | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(self.start(), scope, receive, send)
        elif kind == "websocket":
            await self._websocket(self.start(), scope, receive, send)

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Feed:
        """Create the sockets and tasks if they are not running (on the server's loop)."""
        if self.feed is None:
            endpoint = self._endpoint or os.environ.get(ENDPOINT_VARIABLE) or DEFAULT_ENDPOINT
            self.feed = Feed(endpoint, self._context, self._interval)
            log.info("live feed on %s", self.feed.endpoint)
        return self.feed

    async def stop(self) -> None:
        feed, self.feed = self.feed, None
        if feed is not None:
            await feed.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.start()
                except zmq.ZMQError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- HTTP ------------------------------------------------------------------------

    async def _http(self, feed: Feed, scope: Scope, receive: Receive, send: Send) -> None:
        path = _route(scope)
        method = scope["method"]
        if path == "/events" and method == "GET":
            await self._events(feed, receive, send)
        elif path == "/publish" and method in ("GET", "POST"):
            await self._publish(feed, scope, receive, send)
        elif path == "/" and method in ("GET", "HEAD"):
            await _respond(send, 200, PAGE.encode("utf-8"), b"text/html; charset=utf-8")
        elif path == "/info" and method in ("GET", "HEAD"):
            info = {"endpoint": feed.endpoint, "clients": feed.clients,
                    "received": feed.received, "published": feed.published}
            await _respond(send, 200, json.dumps(info).encode(), b"application/json")
        elif path in ("/", "/info", "/events", "/publish"):
            allow = b"GET, POST" if path == "/publish" else b"GET, HEAD"
            await _respond(send, 405, b"405 Method Not Allowed\n", extra=[(b"allow", allow)])
        else:
            await _respond(send, 404, b"404 Not Found\n")

    async def _events(self, feed: Feed, receive: Receive, send: Send) -> None:
        """Server-sent events: one ``data:`` line of JSON per event, until the client leaves."""
        subscriber = feed.subscribe()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),  # proxies: do not buffer the stream
            ]})
            # A first piece at once: the head goes out with it, so EventSource opens now.
            await send({"type": "http.response.body", "body": b"retry: 1000\n: connected\n\n",
                        "more_body": True})
            ended = await _until_disconnect(receive, _sse_pump(subscriber, send))
            if ended:  # the feed closed (shutdown): end the response properly
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            feed.unsubscribe(subscriber)

    async def _publish(self, feed: Feed, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qs(scope["query_string"].decode("latin-1"))
        values = query.get("msg")
        msg = values[0] if values else None
        if scope["method"] == "POST":
            body = await _read_body(receive, MAX_PUBLISH_BODY)
            if body is None:
                await _respond(send, 413, b"413 Content Too Large\n")
                return
            if msg is None and body:
                content_type = dict(scope["headers"]).get(b"content-type", b"")
                if content_type.startswith(b"application/x-www-form-urlencoded"):
                    values = parse_qs(body.decode("utf-8", "replace")).get("msg")
                    msg = values[0] if values else None
                else:
                    msg = body.decode("utf-8", "replace")
        if msg is None:
            await _respond(send, 400, b"400 Bad Request: give msg=...\n")
            return
        event = {"kind": "message", "msg": msg, "time": time.time(), "via": "http"}
        await feed.publish(event)
        await _respond(send, 200, json.dumps({"published": event}).encode(), b"application/json")

    # -- WebSocket -------------------------------------------------------------------

    async def _websocket(self, feed: Feed, scope: Scope, receive: Receive, send: Send) -> None:
        """Every event as a text message; text the client sends is published."""
        if (await receive())["type"] != "websocket.connect":
            return
        if _route(scope) != "/ws":
            await send({"type": "websocket.close", "code": 1008})  # the server answers 403
            return
        subscriber = feed.subscribe()
        try:
            await send({"type": "websocket.accept"})
            ended = await _until_disconnect(receive, _ws_pump(subscriber, send),
                                            on_text=lambda text: feed.publish(
                                                {"kind": "message", "msg": text,
                                                 "time": time.time(), "via": "websocket"}))
            if ended:  # the feed closed (shutdown): 1001 going away
                await send({"type": "websocket.close", "code": 1001})
        finally:
            feed.unsubscribe(subscriber)


# -- helpers ---------------------------------------------------------------------------


def _route(scope: Scope) -> str:
    """The path below the app's mount point (``root_path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


async def _sse_pump(subscriber: Subscriber, send: Send) -> None:
    while True:
        batch = await subscriber.next_batch()
        events = [e for e in batch if e is not None]
        if events:
            body = "".join(f"data: {e}\n\n" for e in events).encode("utf-8")
            await send({"type": "http.response.body", "body": body, "more_body": True})
        if len(events) < len(batch):
            return  # the feed closed


async def _ws_pump(subscriber: Subscriber, send: Send) -> None:
    while True:
        for event in await subscriber.next_batch():
            if event is None:
                return  # the feed closed
            await send({"type": "websocket.send", "text": event})


async def _until_disconnect(receive: Receive, pump: Awaitable[None], *,
                            on_text: Callable[[str], Awaitable[None]] | None = None) -> bool:
    """Run ``pump`` until the client disconnects; True if the pump ended first.

    The pump only sends; this reads, so ``http.disconnect`` or
    ``websocket.disconnect`` is noticed at once and the subscription ends.
    """

    async def read() -> None:
        while True:
            message = await receive()
            if message["type"] in ("http.disconnect", "websocket.disconnect"):
                return
            text = message.get("text")
            if message["type"] == "websocket.receive" and text is not None and on_text:
                await on_text(text)

    pumping = asyncio.ensure_future(pump)
    reading = asyncio.ensure_future(read())
    try:
        done, _ = await asyncio.wait({pumping, reading}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, reading):
            task.cancel()
        await asyncio.gather(pumping, reading, return_exceptions=True)
    if reading in done:
        reading.result()
        return False  # the client left; whatever the pump did last does not matter
    if isinstance(pumping.exception(), OSError):
        return False  # a send after the client closed (ASGI 2.4: an OSError)
    pumping.result()  # an error in the app's own code propagates
    return True


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None if it is larger than ``limit``."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(parts)
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _respond(send: Send, status: int, body: bytes,
                   content_type: bytes = b"text/plain; charset=utf-8",
                   extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", content_type), (b"cache-control", b"no-store"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
