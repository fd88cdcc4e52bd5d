"""A SIGHUP rolling restart under concurrent load fails no request.

tests/test_cli_workers.py and tests/test_cli_gateway_workers.py roll under one
sequential client. Here six clients run at once: keep-alive and fresh
connections, fast and slow requests, so old workers stop with requests in
flight and connections open.

One allowance, the one RFC 9112 §9.3.1 makes: when the server closes an idle
kept-alive connection just as the client reuses it, the client retries the
(idempotent) request once on a fresh connection, as browsers, urllib3 and
proxies do. Such retries are counted and printed; any other failure fails.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from faultkit import Load, managed, start, summary

from test_cli import free_port
from test_cli_workers import children, tcp_migrate_req, wait_for_count

COMMANDS = {
    "serve-workers": ["serve", "faultapp:app", "--workers", "2"],
    "gateway-workers": ["gateway", "faultapp:app", "--workers", "2"],
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_sighup_under_load_fails_no_request(tmp_path: Path, kind: str) -> None:
    args = COMMANDS[kind]
    port = free_port()
    extra = ["--app-dir", str(tmp_path)] if args[0] == "gateway" else []
    with managed() as procs:
        proc = start(tmp_path, [*args, *extra, "--bind", f"127.0.0.1:{port}",
                                "--no-access-log"], listen_port=port)
        procs.append(proc)
        wait_for_count(proc, r"worker \d+ ready", 2, timeout=20)
        before = set(children(proc.popen.pid))
        loads = [
            Load(port, paths=("/", "/slow?0.1"), clients=3, keep_alive=True, timeout=20),
            Load(port, paths=("/", "/slow?0.05", "/stream"), clients=3, keep_alive=False,
                 timeout=20),
        ]
        for load in loads:
            load.start()
        try:
            time.sleep(0.5)
            os.kill(proc.popen.pid, signal.SIGHUP)
            proc.wait_for_line(r"rolling restart done", timeout=30)
            wait_for_count(proc, r"worker \d+ stopped", 2, timeout=30)
            time.sleep(0.5)
        finally:
            outcomes = [o for load in loads for o in load.stop()]
        after = set(children(proc.popen.pid))
        print(f"\n{kind}: {summary(outcomes)}")
        assert len(after) == 2 and after.isdisjoint(before)
        failed = [o for o in outcomes if o.status != 200]
        # docs/deployment.md: with SO_REUSEPORT (serve --workers) a fresh connection
        # still in the old socket's accept queue when it leaves the group is reset
        # by the kernel unless net.ipv4.tcp_migrate_req=1; a microsecond window.
        resets = [o for o in failed if kind == "serve-workers" and not tcp_migrate_req()
                  and (o.error or "").startswith("ConnectionResetError")]
        assert len(resets) <= 1 and [o for o in failed if o not in resets] == [], \
            summary(outcomes)
        served_by = {int(o.body) for o in outcomes if o.body.isdigit()}
        assert before <= served_by and after <= served_by  # the load saw the roll
        os.kill(proc.popen.pid, signal.SIGTERM)
        assert proc.wait(timeout=40) == 0

