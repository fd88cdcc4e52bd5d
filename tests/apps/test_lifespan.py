"""The ASGI lifespan protocol, through a real server and through the CLI."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from rawhttp import wait_for
from zmqhttp.apps import LifespanFailure
from zmqhttp.testing import ServerThread

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Serve = Callable[..., ServerThread]


async def ok(send: Send, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


def recording_app(events: list[str], *, startup: str = "complete",
                  raise_on_lifespan: bool = False) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            events.append("lifespan-called")
            if raise_on_lifespan:
                raise RuntimeError("no lifespan here")
            message = await receive()
            events.append(message["type"])
            if startup == "failed":
                await send({"type": "lifespan.startup.failed", "message": "database down"})
                return
            scope["state"]["started"] = "yes"
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            events.append(message["type"])
            await send({"type": "lifespan.shutdown.complete"})
            return
        events.append("request")
        await ok(send, repr(sorted(scope["state"].items())).encode())

    return app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


# -- in-process -----------------------------------------------------------------------------


def test_startup_and_shutdown_run_in_order_and_state_is_shared() -> None:
    events: list[str] = []
    server = ServerThread(recording_app(events)).start()
    try:
        assert events == ["lifespan-called", "lifespan.startup"]
        resp = httpx.get(server.url, timeout=5)
        assert resp.content == b"[('started', 'yes')]"
        assert events[-1] == "request"
    finally:
        server.stop(timeout=5)
    assert events == ["lifespan-called", "lifespan.startup", "request", "lifespan.shutdown"]


def test_shutdown_waits_for_in_flight_requests() -> None:
    events: list[str] = []
    release = threading.Event()
    inner = recording_app(events)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await asyncio.to_thread(release.wait, 5)
        await inner(scope, receive, send)

    server = ServerThread(app).start()
    result: list[httpx.Response] = []
    client = threading.Thread(target=lambda: result.append(httpx.get(server.url, timeout=5)))
    client.start()
    assert wait_for(lambda: server.server.connection_count == 1)
    stopper = threading.Thread(target=server.stop, kwargs={"timeout": 5})
    stopper.start()
    time.sleep(0.2)
    assert "lifespan.shutdown" not in events  # not while a request is in flight
    release.set()
    client.join(5)
    stopper.join(10)
    assert result and result[0].status_code == 200
    assert events[-2:] == ["request", "lifespan.shutdown"]


def test_startup_failed_aborts_start_before_binding() -> None:
    events: list[str] = []
    port = free_port()
    server = ServerThread(recording_app(events, startup="failed"), bind=[f"127.0.0.1:{port}"])
    with pytest.raises(LifespanFailure, match="database down"):
        server.start()
    assert events == ["lifespan-called", "lifespan.startup"]
    assert refused(port)


def test_multi_line_failure_message_becomes_one_line() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed",
                    "message": "Traceback (most recent call last):\n  File x\nValueError: bad\n"})

    with pytest.raises(LifespanFailure) as info:
        ServerThread(app).start()
    assert str(info.value) == "application startup failed: ValueError: bad"


def test_app_raising_on_lifespan_is_tolerated_in_auto_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    with caplog.at_level(logging.INFO, logger="zmqhttp.error"):
        server = ServerThread(recording_app(events, raise_on_lifespan=True)).start()
        try:
            resp = httpx.get(server.url, timeout=5)
            assert (resp.status_code, resp.content) == (200, b"[]")
        finally:
            server.stop(timeout=5)
    assert events == ["lifespan-called", "request"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("unsupported" in r.getMessage() for r in caplog.records)


def test_app_raising_on_lifespan_fails_in_on_mode() -> None:
    events: list[str] = []
    port = free_port()
    server = ServerThread(recording_app(events, raise_on_lifespan=True), lifespan="on",
                          bind=[f"127.0.0.1:{port}"])
    with pytest.raises(LifespanFailure, match="no lifespan here"):
        server.start()
    assert refused(port)


def test_lifespan_off_never_calls_the_app() -> None:
    events: list[str] = []
    server = ServerThread(recording_app(events), lifespan="off").start()
    try:
        assert httpx.get(server.url, timeout=5).content == b"[]"
    finally:
        server.stop(timeout=5)
    assert events == ["request"]


def test_app_returning_from_lifespan_without_answer_still_serves() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await ok(send, b"served")

    server = ServerThread(app, lifespan="on").start()
    try:
        assert httpx.get(server.url, timeout=5).content == b"served"
    finally:
        server.stop(timeout=5)


def test_forced_close_cancels_the_lifespan_task() -> None:
    cancelled = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            try:
                await receive()
            except asyncio.CancelledError:
                cancelled.set()
                raise

    server = ServerThread(app).start()
    server.call(server.server.close)
    assert cancelled.wait(5)
    assert wait_for(lambda: not server._thread.is_alive())
    server.stop()


# -- through the CLI ------------------------------------------------------------------------

CLI_APP = '''
import os
import sys

LOG = os.environ["LIFESPAN_LOG"]
MODE = os.environ.get("LIFESPAN_MODE", "ok")


def note(text):
    with open(LOG, "a") as handle:
        handle.write(text + "\\n")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        note("lifespan")
        if MODE == "raise":
            raise RuntimeError("lifespan not supported by this app")
        await receive()
        if MODE == "fail":
            await send({"type": "lifespan.startup.failed", "message": "cache unreachable"})
            return
        note("startup")
        await send({"type": "lifespan.startup.complete"})
        await receive()
        note("shutdown")
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"cli ok"})
'''


class CLI:
    """``python -m zmqhttp serve lifespan_app:app`` with a log file of lifespan events."""

    def __init__(self, tmp_path: Path, mode: str, *flags: str) -> None:
        (tmp_path / "lifespan_app.py").write_text(CLI_APP)
        self.log = tmp_path / "events.log"
        self.port = free_port()
        env = {**os.environ, "LIFESPAN_LOG": str(self.log), "LIFESPAN_MODE": mode}
        env.pop("ZMQHTTP_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zmqhttp", "serve", "lifespan_app:app", "--app-dir",
             str(tmp_path), "--bind", f"127.0.0.1:{self.port}", "--no-access-log", *flags],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def events(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def finish(self, timeout: float = 10) -> tuple[int, str]:
        try:
            _, stderr = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate(timeout=5)
        return self.proc.returncode, stderr


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    started: list[CLI] = []

    def start(mode: str, *flags: str) -> CLI:
        proc = CLI(tmp_path, mode, *flags)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.communicate(timeout=5)


def test_cli_startup_failure_is_one_line_error_and_nonzero_exit(cli: Any) -> None:
    proc = cli("fail")
    code, stderr = proc.finish()
    assert code != 0
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: application startup failed: cache unreachable"]
    assert "Traceback" not in stderr
    assert "Listening on" not in stderr
    assert proc.events() == ["lifespan"]


def test_cli_lifespan_on_with_raising_app_fails(cli: Any) -> None:
    code, stderr = cli("raise", "--lifespan", "on").finish()
    assert code != 0
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "lifespan not supported by this app" in errors[0]


def test_cli_lifespan_off_never_calls_it(cli: Any) -> None:
    proc = cli("fail", "--lifespan", "off")  # would fail startup if it were called
    assert wait_for(lambda: not refused(proc.port), timeout=10)
    assert httpx.get(f"http://127.0.0.1:{proc.port}/", timeout=5).content == b"cli ok"
    proc.proc.send_signal(signal.SIGTERM)
    code, _ = proc.finish()
    assert code == 0
    assert proc.events() == []


def test_cli_shutdown_runs_on_sigterm(cli: Any) -> None:
    proc = cli("ok")
    assert wait_for(lambda: not refused(proc.port), timeout=10)
    assert proc.events() == ["lifespan", "startup"]
    assert httpx.get(f"http://127.0.0.1:{proc.port}/", timeout=5).content == b"cli ok"
    proc.proc.send_signal(signal.SIGTERM)
    code, stderr = proc.finish()
    assert code == 0, stderr
    assert proc.events() == ["lifespan", "startup", "shutdown"]
    assert "Application startup complete" in stderr
    assert "Application shutdown complete" in stderr
