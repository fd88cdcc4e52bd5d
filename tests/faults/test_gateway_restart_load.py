"""The gateway dies under load and comes back on the same ports; remote workers rejoin.

Two ``zmqhttp worker`` processes connect over tcp:// to a ``zmqhttp gateway``.
Under a steady request load the gateway is killed (SIGKILL, or SIGTERM) and a
new one started on the same HTTP and fabric ports. Requests fail only while no
gateway listens; within ``RECOVERY`` seconds of the restart both workers answer
again and no request fails from then on.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from faultkit import Load, free_ports, managed, start, summary

from test_cli import Proc
from test_cli_gateway_workers import get

#: From the new gateway's Listening line to both workers serving. Workers find
#: a silent gateway after 3 missed 1 s heartbeats and reconnect (protocol §8).
RECOVERY = 10.0


def wait_workers(port: int, pids: set[int], timeout: float) -> float:
    """Seconds until every worker in ``pids`` has answered a request."""
    started = time.monotonic()
    seen: set[int] = set()
    while time.monotonic() - started < timeout:
        try:
            status, body = get(port, timeout=2)
        except OSError:
            status, body = 0, b""
        if status == 200:
            seen.add(int(body))
            if pids <= seen:
                return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"only {seen} of {pids} answered within {timeout} s")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "term"])
def test_gateway_restart_under_load_workers_rejoin(tmp_path: Path, sig: int) -> None:
    http_port, fabric_port = free_ports(2)
    gateway_args = ["gateway", "--bind", f"127.0.0.1:{http_port}",
                    "--fabric", f"tcp://127.0.0.1:{fabric_port}", "--no-access-log"]
    with managed() as procs:
        gateway = start(tmp_path, gateway_args, listen_port=http_port)
        procs.append(gateway)
        workers = [Proc(["worker", "faultapp:app", "--app-dir", str(tmp_path),
                         "--connect", f"tcp://127.0.0.1:{fabric_port}"], tmp_path)
                   for _ in range(2)]
        procs += workers
        pids = {w.popen.pid for w in workers}
        wait_workers(http_port, pids, timeout=20)

        load = Load(http_port, paths=("/", "/slow?0.05"), clients=4, timeout=5).start()
        try:
            time.sleep(0.5)
            down_at = time.monotonic()
            os.kill(gateway.popen.pid, sig)
            gateway.wait(timeout=40)
            gateway = start(tmp_path, gateway_args, listen_port=http_port)
            procs.append(gateway)
            up_at = time.monotonic()
            rejoined = wait_workers(http_port, pids, timeout=RECOVERY)
            settled = time.monotonic()
            time.sleep(1.0)  # the load runs on the new gateway
        finally:
            outcomes = load.stop()
        print(f"\n{summary(outcomes)}; gateway down {up_at - down_at:.2f} s, "
              f"both workers back {rejoined:.2f} s after the restart")
        assert all(w.popen.poll() is None for w in workers), "a worker exited"
        before = [o for o in outcomes if o.ended < down_at]
        after = [o for o in outcomes if o.started > settled]
        assert before and all(o.status == 200 for o in before), summary(before)
        assert after and all(o.status == 200 for o in after), summary(after)
        # Failures only while the gateway was away or its workers rejoining.
        assert all(o.status in (200, 503) or o.error is not None for o in outcomes), \
            summary(outcomes)
        assert all(o.started < settled and o.ended > down_at
                   for o in outcomes if o.status != 200)
        assert {int(o.body) for o in after} == pids
        for worker in workers:
            os.kill(worker.popen.pid, signal.SIGTERM)
        os.kill(gateway.popen.pid, signal.SIGTERM)
        assert gateway.wait(timeout=40) == 0
        assert all(w.wait(timeout=20) == 0 for w in workers)
