"""Build script: the metadata is in pyproject.toml; this only adds the compiled modules.

``ZMQHTTP_COMPILE`` (read here and by ``buildsys/zmqhttp_build.py``):

* ``auto`` (default for wheels): compile the modules below with mypyc; if that
  is impossible (no C compiler, no Python headers) install pure Python and say so.
* ``1``: compile, and fail the build if it cannot be done.
* ``0``: pure Python (what editable installs get unless ``1`` is asked for).

The compiled and the pure build run the same source and pass the same test
suite (``.ci/run`` runs it on both); ``zmqhttp --version`` says which is installed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

# The per-request path: every module a request and its response pass through,
# in-process and in the fabric. The rest (CLI, config, supervisor, examples)
# runs at start-up or rarely and stays interpreted.
COMPILED = [
    "src/zmqhttp/apps/asgi.py",
    "src/zmqhttp/apps/wsgi.py",
    "src/zmqhttp/fabric/dispatcher.py",
    "src/zmqhttp/fabric/jobs.py",
    "src/zmqhttp/fabric/loopsocket.py",
    "src/zmqhttp/fabric/protocol.py",
    "src/zmqhttp/fabric/relay.py",
    "src/zmqhttp/fabric/remote.py",
    "src/zmqhttp/fabric/router.py",
    "src/zmqhttp/fabric/worker.py",
    "src/zmqhttp/http/connection.py",
    "src/zmqhttp/http/events.py",
    "src/zmqhttp/http/fields.py",
    "src/zmqhttp/http/limits.py",
    "src/zmqhttp/http/reader.py",
    "src/zmqhttp/http/writer.py",
    "src/zmqhttp/server/body.py",
    "src/zmqhttp/server/clock.py",
    "src/zmqhttp/server/connection.py",
    "src/zmqhttp/server/cycle.py",
    "src/zmqhttp/server/flow.py",
    "src/zmqhttp/server/server.py",
    "src/zmqhttp/server/threads.py",
    "src/zmqhttp/transport/stream.py",
]

MODE = os.environ.get("ZMQHTTP_COMPILE", "auto").strip().lower() or "auto"


def _warn(message: str) -> None:
    print(f"zmqhttp: {message}; installing pure Python (ZMQHTTP_COMPILE=1 makes this an error)",
          file=sys.stderr)


class OptionalBuildExt(build_ext):
    """In ``auto`` mode a failed compile falls back to the pure-Python package."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # distutils raises several unrelated types here
            if MODE == "1":
                raise
            _warn(f"compiling failed ({exc})")
            # All or nothing: a compiled module needs the shared mypyc library.
            for output in self.get_outputs():
                if os.path.exists(output):
                    os.remove(output)
            self.extensions = []


def _extensions() -> list[Any]:
    if MODE == "0":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        if MODE == "1":
            raise
        _warn("mypyc (mypy) is not available")
        return []
    return list(mypycify(COMPILED, opt_level="3", debug_level="0"))


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
