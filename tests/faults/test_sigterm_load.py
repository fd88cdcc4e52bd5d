"""SIGTERM under load: every request accepted before the signal is answered in full.

For ``serve``, ``serve --workers 2`` and ``gateway APP --workers 2``: a steady
keep-alive load runs, and a burst of slow and streaming requests is in the
application when SIGTERM arrives. Every burst request gets its whole response,
every load request that started well before the signal succeeds, and the
process exits 0 within the graceful deadline.
tests/test_cli_workers.py covers one slow request; this is the same under load.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from faultkit import STREAM_BODY, Load, managed, start, summary

from rawhttp import Reader
from test_cli import free_port
from test_cli_workers import wait_for_count

BURST = 12
#: A load request that started this long before the signal was read by the
#: server before it (the rest race with the signal and may be refused).
ACCEPT_MARGIN = 0.2
COMMANDS = {
    "serve": (["serve", "faultapp:app", "--timeout-graceful-shutdown", "5"], 0, 5.0),
    "serve-workers": (["serve", "faultapp:app", "--workers", "2",
                       "--timeout-graceful-shutdown", "5"], 2, 5.0),
    # The gateway's graceful deadline is the default 30 s (it has no flag).
    "gateway-workers": (["gateway", "faultapp:app", "--workers", "2"], 2, 30.0),
}


class BurstClient(threading.Thread):
    """One connection: sends ``path`` and reads the whole response."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self.port, self.path = port, path
        self.sent = threading.Event()
        self.status = 0
        self.body = b""
        self.complete = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=20) as sock:
                sock.sendall(f"GET {self.path} HTTP/1.1\r\nHost: burst\r\n\r\n".encode())
                self.sent.set()
                resp = Reader(sock).response()
                self.status, self.body, self.complete = resp.status, resp.body, resp.complete
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.sent.set()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_sigterm_under_load_finishes_every_accepted_request(tmp_path: Path, kind: str
                                                            ) -> None:
    args, workers, deadline = COMMANDS[kind]
    port = free_port()
    extra = ["--app-dir", str(tmp_path)] if args[0] == "gateway" else []
    with managed() as procs:
        proc = start(tmp_path, [*args, *extra, "--bind", f"127.0.0.1:{port}",
                                "--no-access-log"], listen_port=port)
        procs.append(proc)
        if workers:
            wait_for_count(proc, r"worker \d+ ready", workers, timeout=20)
        load = Load(port, paths=("/", "/slow?0.05"), clients=4, timeout=20).start()
        time.sleep(0.5)
        burst = [BurstClient(port, "/slow?0.8" if i % 2 else "/stream") for i in range(BURST)]
        for client in burst:
            client.start()
        for client in burst:
            assert client.sent.wait(10)
        time.sleep(0.3)  # the burst is in the application now
        signalled = time.monotonic()
        os.kill(proc.popen.pid, signal.SIGTERM)
        code = proc.wait(timeout=deadline + 15)
        exited = time.monotonic() - signalled
        for client in burst:
            client.join(10)
        outcomes = load.stop()
        print(f"\n{kind}: exit {code} {exited:.2f} s after SIGTERM; load {summary(outcomes)}")
        assert code == 0
        assert exited < deadline + 5
        for client in burst:
            assert client.error is None, (client.path, client.error)
            assert client.status == 200 and client.complete, client.path
            if client.path == "/stream":
                assert client.body == STREAM_BODY
            else:
                assert client.body.isdigit()
        accepted = [o for o in outcomes if o.started < signalled - ACCEPT_MARGIN]
        assert accepted and all(o.status == 200 for o in accepted), summary(accepted)
        assert all("Traceback" not in line for line in proc.stderr), proc.stderr
