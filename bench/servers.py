"""The servers compared: how to start each one on a port, serving the app of ``apps.py``.

Every server runs one serving process (some add a supervising parent: granian,
gunicorn, hypercorn; the RSS figures count the whole tree). Settings are each
server's defaults except where the defaults would make a scenario meaningless:

* keep-alive idle timeout 60 s where it is settable (uvicorn's and hypercorn's
  5 s, gunicorn's 2 s would close the idle connections of scenario (f));
* WSGI thread pools of 10 threads (zmqhttp's default; gunicorn gthread's 1 and
  waitress's 4 are below the 50 connections of the load);
* connection caps raised above the 2,050 connections of scenario (f)
  (waitress 100, gunicorn 1,000), and waitress on poll() instead of select(),
  which cannot watch descriptors above 1,024;
* access logs off, log level warning.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["BENCH_DIR", "DEFAULT_SERVERS", "REFERENCE", "SERVERS", "Server"]

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
KEEP_ALIVE = "60"
THREADS = "10"
REFERENCE = "uvicorn"


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    #: What the name stands for, for the report.
    label: str
    #: (python executable, port) -> argv; runs with cwd=BENCH_DIR.
    argv: Callable[[str, int], list[str]]
    #: Scenario keys this server cannot run (reported as n/a).
    unsupported: frozenset[str] = frozenset()


def _zmqhttp(app: str) -> Callable[[str, int], list[str]]:
    return lambda py, port: [
        py, "-m", "zmqhttp", "serve", app, "--bind", f"127.0.0.1:{port}",
        "--no-access-log", "--log-level", "warning", "--timeout-keep-alive", KEEP_ALIVE,
        "--app-dir", BENCH_DIR]


def _uvicorn(*extra: str) -> Callable[[str, int], list[str]]:
    return lambda py, port: [
        py, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        "--log-level", "warning", "--timeout-keep-alive", KEEP_ALIVE, "--app-dir", BENCH_DIR,
        *extra]


def _granian(interface: str, app: str) -> Callable[[str, int], list[str]]:
    return lambda py, port: [
        py, "-m", "granian", "--interface", interface, "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--no-ws", "--log-level", "warning",
        "--working-dir", BENCH_DIR, app]


def _gunicorn(py: str, port: int) -> list[str]:
    return [py, "-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads", THREADS,
            "--worker-connections", "4000", "--keep-alive", KEEP_ALIVE,
            "-b", f"127.0.0.1:{port}", "--chdir", BENCH_DIR, "--log-level", "warning",
            "apps:wsgi_app"]


def _waitress(py: str, port: int) -> list[str]:
    return [py, "-m", "waitress", f"--listen=127.0.0.1:{port}", f"--threads={THREADS}",
            "--connection-limit=4000", "--asyncore-use-poll", "--channel-timeout=60",
            "apps:wsgi_app"]


def _hypercorn(py: str, port: int) -> list[str]:
    return [py, "-m", "hypercorn", "-b", f"127.0.0.1:{port}", "-w", "1", "-k", "uvloop",
            "--keep-alive", KEEP_ALIVE, "--log-level", "warning", "apps:asgi_app"]


def _script(name: str) -> Callable[[str, int], list[str]]:
    return lambda py, port: [py, os.path.join(BENCH_DIR, name), "--port", str(port)]


_ALL = [
    Server("zmqhttp-asgi", "zmqhttp, ASGI", _zmqhttp("apps:asgi_app")),
    Server("zmqhttp-wsgi", "zmqhttp, WSGI (10 threads)", _zmqhttp("apps:wsgi_app")),
    Server(REFERENCE, "uvicorn, ASGI (httptools, uvloop)",
           _uvicorn("--http", "httptools", "--loop", "uvloop", "apps:asgi_app")),
    Server("granian-asgi", "granian, ASGI", _granian("asgi", "apps:asgi_app")),
    Server("granian-wsgi", "granian, WSGI", _granian("wsgi", "apps:wsgi_app")),
    Server("gunicorn", "gunicorn gthread, 1 worker, 10 threads", _gunicorn),
    Server("waitress", "waitress, 10 threads", _waitress),
    Server("hypercorn", "hypercorn, ASGI (uvloop)", _hypercorn),
    Server("aiohttp", "aiohttp web app (uvloop)", _script("aiohttp_app.py")),
    Server("tornado", "tornado app (uvloop)", _script("tornado_app.py")),
    # Not in the default set: uvicorn's WSGI adapter (deprecated upstream).
    Server("uvicorn-wsgi", "uvicorn, --interface wsgi",
           _uvicorn("--http", "httptools", "--interface", "wsgi", "apps:wsgi_app")),
]
SERVERS: dict[str, Server] = {s.name: s for s in _ALL}
DEFAULT_SERVERS = [s.name for s in _ALL if s.name != "uvicorn-wsgi"]
