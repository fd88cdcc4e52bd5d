"""A live feed: ZeroMQ PUB/SUB events shown in a browser over WebSocket and SSE.

Run it and open http://127.0.0.1:8000/ ::

    zmqhttp serve zmqhttp.examples.livefeed:app

A producer publishes a counter and a timestamp every 200 ms on a ZeroMQ PUB
socket; the page shows every event twice, as received over a WebSocket
(``/ws``) and over server-sent events (``/events``). ``/publish?msg=hello``
(GET or POST) publishes your own message; ``/info`` reports the ZeroMQ endpoint
and the number of connected clients.

``LIVEFEED_ENDPOINT`` (default ``inproc://zmqhttp-livefeed``) is where the
app's SUB socket binds. With a ``tcp://`` endpoint any other program can
publish onto the feed by connecting a PUB socket to it::

    LIVEFEED_ENDPOINT=tcp://127.0.0.1:5556 zmqhttp serve zmqhttp.examples.livefeed:app
    python -c "import zmq, time; s = zmq.Context().socket(zmq.PUB); \\
        s.connect('tcp://127.0.0.1:5556'); time.sleep(0.5); s.send(b'hello from zmq')"

Use ``LiveFeed(endpoint=..., context=...)`` to make another instance, for
example one that shares an embedding program's ``zmq.asyncio`` context.
"""

from __future__ import annotations

from zmqhttp.examples.livefeed.app import (
    DEFAULT_ENDPOINT,
    ENDPOINT_VARIABLE,
    Feed,
    LiveFeed,
    Subscriber,
)

__all__ = ["DEFAULT_ENDPOINT", "ENDPOINT_VARIABLE", "Feed", "LiveFeed", "Subscriber", "app"]

#: The app ``zmqhttp serve zmqhttp.examples.livefeed:app`` runs.
app = LiveFeed()
