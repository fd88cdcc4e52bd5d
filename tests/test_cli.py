"""The command line, run as a real process: ``python -m zmqhttp serve ...``."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

APP_SOURCE = '''
import time

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(float(environ["QUERY_STRING"] or "1"))
    body = b"Hello, world!\\n"
    if environ["PATH_INFO"] == "/env":
        body = environ["SCRIPT_NAME"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def make_app():
    def made(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"from the factory\\n"]
    return made


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi " + scope["method"].encode()})


async def loop_app(scope, receive, send):
    import asyncio
    if scope["type"] != "http":
        return
    loop = type(asyncio.get_running_loop())
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": loop.__module__.encode()})
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Proc:
    """A ``zmqhttp`` process with its output collected line by line."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, **(env or {})}
        full_env.pop("ZMQHTTP_CONFIG", None)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "zmqhttp", *args], cwd=cwd, env=full_env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._collect, args=(self.popen.stdout, self.stdout),
                             daemon=True),
            threading.Thread(target=self._collect, args=(self.popen.stderr, self.stderr),
                             daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line.rstrip("\n"))

    def wait_for_line(self, pattern: str, stream: str = "stderr", timeout: float = 10) -> str:
        lines = self.stderr if stream == "stderr" else self.stdout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(lines):
                if re.search(pattern, line):
                    return line
            if self.popen.poll() is not None:
                time.sleep(0.1)  # let the readers catch up with the last lines
                for line in list(lines):
                    if re.search(pattern, line):
                        return line
                break
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} in {stream}: {lines!r} (rc={self.popen.poll()})")

    def wait(self, timeout: float = 10) -> int:
        code = self.popen.wait(timeout)
        for reader in self._readers:
            reader.join(2)
        return code

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "cliapp.py").write_text(APP_SOURCE)
    return tmp_path


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


def serve(procs: list[Proc], cwd: Path, *extra: str, env: dict[str, str] | None = None,
          port: int | None = None) -> tuple[Proc, int]:
    port = port or free_port()
    proc = Proc(["serve", "cliapp:app", "--bind", f"127.0.0.1:{port}", *extra], cwd, env)
    procs.append(proc)
    return proc, port


def get(port: int, path: str = "/", timeout: float = 5) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


ACCESS_LINE = re.compile(
    r'^127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] '
    r'"GET /hello\?x=1 HTTP/1\.1" 200 14 "-" "curl/[\d.]+"$'
)


def test_listening_line_and_access_log(procs: list[Proc], app_dir: Path) -> None:
    proc, port = serve(procs, app_dir)
    line = proc.wait_for_line(r"Listening on")
    assert line.endswith(f"Listening on tcp://127.0.0.1:{port}")
    result = subprocess.run(["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{port}/hello?x=1"],
                            capture_output=True, timeout=10, check=True)
    assert result.stdout == b"Hello, world!\n"
    access = proc.wait_for_line(r"GET /hello", stream="stdout")
    assert ACCESS_LINE.match(access), access
    os.kill(proc.popen.pid, signal.SIGTERM)
    assert proc.wait() == 0
    assert all("Traceback" not in line for line in proc.stderr)


def test_no_access_log(procs: list[Proc], app_dir: Path) -> None:
    proc, port = serve(procs, app_dir, "--no-access-log")
    proc.wait_for_line(r"Listening on")
    assert get(port).status == 200
    os.kill(proc.popen.pid, signal.SIGTERM)
    assert proc.wait() == 0
    assert proc.stdout == []


def test_app_dir_option(procs: list[Proc], app_dir: Path, tmp_path_factory: pytest.TempPathFactory
                        ) -> None:
    elsewhere = tmp_path_factory.mktemp("cwd")
    proc, port = serve(procs, elsewhere, "--app-dir", str(app_dir))
    proc.wait_for_line(r"Listening on")
    assert get(port).status == 200


@pytest.mark.parametrize("spec", ["nosuchmodule:app", "cliapp:missing", "cliapp"])
def test_bad_app_path_is_one_line_error(app_dir: Path, spec: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "zmqhttp", "serve", spec, "--bind", f"127.0.0.1:{free_port()}"],
        cwd=app_dir, capture_output=True, text=True, timeout=20,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_one_line_error(app_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "zmqhttp", "serve", "cliapp:app", "--bind",
             f"127.0.0.1:{port}"], cwd=app_dir, capture_output=True, text=True, timeout=20,
        )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "Error" in line]
    assert len(errors) == 1 and errors[0].startswith("Error: "), result.stderr
    assert f"127.0.0.1:{port}" in errors[0]
    assert "Traceback" not in result.stderr


def test_sigterm_lets_in_flight_request_finish(procs: list[Proc], app_dir: Path) -> None:
    proc, port = serve(procs, app_dir)
    proc.wait_for_line(r"Listening on")
    results: list[tuple[int, bytes]] = []

    def slow_request() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/slow?1")
        resp = conn.getresponse()
        results.append((resp.status, resp.read()))
        conn.close()

    client = threading.Thread(target=slow_request)
    client.start()
    time.sleep(0.4)  # the request is in the app now
    started = time.monotonic()
    os.kill(proc.popen.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    client.join(5)
    assert results == [(200, b"Hello, world!\n")]
    assert time.monotonic() - started < 5


def test_second_sigint_forces_exit(procs: list[Proc], app_dir: Path) -> None:
    proc, port = serve(procs, app_dir)
    proc.wait_for_line(r"Listening on")
    failures: list[BaseException] = []

    def stuck_request() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            conn.request("GET", "/slow?30")
            conn.getresponse().read()
        except (OSError, http.client.HTTPException) as exc:
            failures.append(exc)
        finally:
            conn.close()

    client = threading.Thread(target=stuck_request, daemon=True)
    client.start()
    time.sleep(0.4)
    os.kill(proc.popen.pid, signal.SIGINT)
    proc.wait_for_line(r"shutting down gracefully")
    time.sleep(0.3)
    assert proc.popen.poll() is None  # still waiting for the slow request
    started = time.monotonic()
    os.kill(proc.popen.pid, signal.SIGINT)
    proc.wait(timeout=5)
    assert time.monotonic() - started < 3
    client.join(5)
    assert failures, "the stuck request should have been cut off"
    assert all("Traceback" not in line for line in proc.stderr), proc.stderr


def test_env_var_setting(procs: list[Proc], app_dir: Path) -> None:
    proc, port = serve(procs, app_dir, env={"ZMQHTTP_TIMEOUT_KEEP_ALIVE": "0.5",
                                           "ZMQHTTP_SERVER_HEADER": "from-env"})
    proc.wait_for_line(r"Listening on")
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    started = time.monotonic()
    while chunk := sock.recv(4096):
        data += chunk
    elapsed = time.monotonic() - started
    sock.close()
    assert b"\r\nServer: from-env\r\n" in data
    assert data.endswith(b"Hello, world!\n")
    assert elapsed < 2  # closed by the 0.5 s keep-alive timeout, not the 5 s default


def test_toml_config_and_precedence(procs: list[Proc], app_dir: Path) -> None:
    config = app_dir / "zmqhttp.toml"
    config.write_text('[zmqhttp]\nroot-path = "/from-toml"\nserver_header = "toml"\n'
                      'access_log = false\n')
    proc, port = serve(procs, app_dir, "--config", str(config),
                       env={"ZMQHTTP_SERVER_HEADER": "env-wins"})
    proc.wait_for_line(r"Listening on")
    resp = get(port, "/from-toml/env")
    assert resp.status == 200
    assert resp.getheader("Server") == "env-wins"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/from-toml/env")
    assert conn.getresponse().read() == b"/from-toml"
    conn.close()
    os.kill(proc.popen.pid, signal.SIGTERM)
    assert proc.wait() == 0
    assert proc.stdout == []  # access_log = false from the file


def test_toml_unknown_key_is_an_error(app_dir: Path) -> None:
    config = app_dir / "bad.toml"
    config.write_text("no_such_setting = 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "zmqhttp", "serve", "cliapp:app", "--config", str(config)],
        cwd=app_dir, capture_output=True, text=True, timeout=20,
    )
    assert result.returncode != 0
    assert "no_such_setting" in result.stderr
    assert "Traceback" not in result.stderr


def read(port: int, path: str = "/") -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return body


def test_factory_calls_the_app_factory(procs: list[Proc], app_dir: Path) -> None:
    port = free_port()
    proc = Proc(["serve", "cliapp:make_app", "--factory", "--bind", f"127.0.0.1:{port}"],
                app_dir, None)
    procs.append(proc)
    proc.wait_for_line(r"Listening on")
    assert read(port) == b"from the factory\n"


@pytest.mark.parametrize("interface", ["auto", "asgi", "asgi3"])
def test_interface_runs_an_asgi_app(procs: list[Proc], app_dir: Path, interface: str) -> None:
    port = free_port()
    proc = Proc(["serve", "cliapp:asgi_app", "--interface", interface,
                 "--bind", f"127.0.0.1:{port}"], app_dir, None)
    procs.append(proc)
    proc.wait_for_line(r"Listening on")
    assert read(port) == b"asgi GET"


@pytest.mark.parametrize(("loop", "module"), [("auto", b"uvloop"), ("uvloop", b"uvloop"),
                                              ("asyncio", b"asyncio.unix_events")])
def test_loop_option_picks_the_event_loop(procs: list[Proc], app_dir: Path, loop: str,
                                          module: bytes) -> None:
    """--loop: uvloop when installed (auto), or asyncio's own loop."""
    port = free_port()
    proc = Proc(["serve", "cliapp:loop_app", "--loop", loop, "--bind", f"127.0.0.1:{port}"],
                app_dir, None)
    procs.append(proc)
    proc.wait_for_line(r"Listening on")
    assert read(port) == module


def io_thread_policies(pid: int) -> list[int]:
    """Scheduling policy of each libzmq I/O thread of process ``pid``."""
    policies = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().startswith("ZMQbg/IO"):
            policies.append(os.sched_getscheduler(int(task.name)))
    return policies


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
@pytest.mark.parametrize(("flag", "policy"), [
    ((), "SCHED_BATCH"),
    (("--io-thread-scheduling", "normal"), "SCHED_OTHER"),
])
def test_io_thread_scheduling(procs: list[Proc], app_dir: Path, flag: tuple[str, ...],
                              policy: str) -> None:
    """libzmq's I/O thread runs SCHED_BATCH by default (ZMQ_THREAD_SCHED_POLICY)."""
    proc, port = serve(procs, app_dir, *flag)
    proc.wait_for_line(r"Listening on")
    assert io_thread_policies(proc.popen.pid) == [getattr(os, policy)]
    assert get(port).status == 200
