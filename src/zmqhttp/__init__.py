"""zmqhttp: an HTTP/1.1 server for Python apps on a ZeroMQ ZMQ_STREAM socket.

Embedding::

    import zmqhttp
    zmqhttp.serve(app, bind="127.0.0.1:8000")          # blocks

    async with zmqhttp.Server(app, bind=["127.0.0.1:0"]) as server:
        print(server.endpoints)                          # from asyncio
"""

from __future__ import annotations

from zmqhttp.config import Config
from zmqhttp.server import Server, serve

__all__ = ["Config", "Server", "__version__", "serve"]

__version__ = "0.1.0"
