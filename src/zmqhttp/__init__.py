"""zmqhttp: an HTTP/1.1 server for Python apps on a ZeroMQ ZMQ_STREAM socket.

Embedding::

    import zmqhttp
    zmqhttp.serve(app, bind="127.0.0.1:8000")          # blocks

    async with zmqhttp.Server(app, bind=["127.0.0.1:0"]) as server:
        print(server.endpoints)                          # from asyncio
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES

from zmqhttp.config import Config
from zmqhttp.server import Server, serve
from zmqhttp.server import connection as _connection

__all__ = ["Config", "Server", "__version__", "compiled", "serve"]

__version__ = "0.1.0"


def compiled() -> bool:
    """True when the per-request modules are the mypyc-compiled build (see setup.py)."""
    return (_connection.__file__ or "").endswith(tuple(EXTENSION_SUFFIXES))
