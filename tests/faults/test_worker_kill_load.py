"""``kill -9`` of a fabric worker under concurrent load costs only its in-flight requests.

tests/test_cli_gateway_workers.py kills a worker under one sequential client;
here eight clients keep slow and fast requests in flight on both workers, so
the victim certainly dies holding some. What the gateway may do with those
(docs/protocol.md): a GET whose response has not started is retried once on
another worker (the client sees a 200); a POST gets 502; a response already
streaming is cut off (the client sees it incomplete). Nothing that started
after the kill fails, and nothing fails once the replacement is up.
"""

from __future__ import annotations

import http.client
import os
import signal
import time
from pathlib import Path

import pytest
from faultkit import Load, kill_tree, start, summary

from test_cli import free_port
from test_cli_gateway_workers import wait_until_serving
from test_cli_workers import children, wait_for_count

CLIENTS = 8
PATHS = ("/slow?0.2", "POST /slow?0.2", "/stream", "/", "POST /slow?0.05", "/slow?0.05")


@pytest.mark.timeout(60)
def test_kill_9_of_a_worker_under_load_loses_only_its_in_flight_requests(tmp_path: Path
                                                                          ) -> None:
    port = free_port()
    proc = start(tmp_path, ["gateway", "faultapp:app", "--app-dir", str(tmp_path),
                            "--workers", "2", "--bind", f"127.0.0.1:{port}",
                            "--no-access-log"], listen_port=port)
    try:
        wait_until_serving(proc, port, 2)
        workers = set(children(proc.popen.pid))
        load = Load(port, paths=PATHS, clients=CLIENTS).start()
        try:
            time.sleep(1.0)
            victim = min(workers)
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            proc.wait_for_line(rf"worker {victim} died.*killed by SIGKILL", timeout=15)
            wait_for_count(proc, r"worker \d+ ready", 3, timeout=20)
            replaced_at = time.monotonic()
            time.sleep(1.5)  # load on the replacement
        finally:
            outcomes = load.stop()
        print(f"\n{summary(outcomes)}; replaced in {replaced_at - killed_at:.2f} s")
        after = set(children(proc.popen.pid))
        assert victim not in after and len(after) == 2

        failed = [o for o in outcomes if o.status != 200]
        for o in failed:  # what a lost worker may cost, by kind of request
            if o.path.startswith("POST"):
                assert o.status == 502, o
            else:
                assert o.path == "/stream" and o.error is not None, o
                assert "IncompleteRead" in o.error, o
        # Only what the victim held: requests already under way when it died,
        # at most one per client.
        assert len(failed) <= CLIENTS
        # A POST routed to the victim after it died but before the gateway
        # noticed is lost too: a known bug, pinned down by
        # test_a_post_sent_after_a_worker_died_is_not_lost. Tolerated here only
        # within the heartbeat that would notice the death (1 s).
        late_failures = [o for o in failed if o.started > killed_at]
        assert all(o.path.startswith("POST") and o.started < killed_at + 1.0
                   for o in late_failures), \
            ([(round(o.started - killed_at, 3), o.path) for o in failed],
             [line for line in proc.stderr if "lost" in line or "died" in line])
        assert all(o.status == 200 for o in outcomes if not o.path.startswith("POST")
                   and o.path != "/stream"), summary(outcomes)
        retried = [o for o in outcomes if o.status == 200 and o.path.startswith("/slow")
                   and o.started < killed_at < o.ended]
        assert retried, "no GET was in flight at the kill"
        assert all(int(o.body) != victim for o in outcomes
                   if o.started > killed_at and o.path != "/stream")
        # The replacement serves, and nothing fails once it is there.
        late = [o for o in outcomes if o.started > replaced_at]
        assert late and all(o.status == 200 for o in late)
        answered = {int(o.body) for o in late if o.path != "/stream"}
        assert after <= answered | set(wait_until_serving(proc, port, 2))
        os.kill(proc.popen.pid, signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
    finally:
        kill_tree(proc)



def post_statuses(port: int, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            conn.request("POST", "/", body=b"payload")
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
        finally:
            conn.close()
    return statuses


@pytest.mark.timeout(60)
def test_a_post_sent_after_a_worker_died_is_not_lost(tmp_path: Path) -> None:
    """A worker killed while idle holds no request: POSTs sent after its death
    (before the gateway's next heartbeat finds it gone) must all succeed.

    Two workers are killed in turn (of three), so that a heartbeat that
    happens to notice a death first does not hide the failure.
    """
    port = free_port()
    proc = start(tmp_path, ["gateway", "faultapp:app", "--app-dir", str(tmp_path),
                            "--workers", "3", "--bind", f"127.0.0.1:{port}",
                            "--no-access-log"], listen_port=port)
    try:
        originals = sorted(wait_until_serving(proc, port, 3))
        statuses: list[int] = []
        for victim in originals[:2]:
            os.kill(victim, signal.SIGKILL)
            time.sleep(0.02)  # dead before the requests; libzmq has seen its pipe go
            statuses += post_statuses(port, 4)
        assert statuses == [200] * len(statuses), \
            (statuses, [line for line in proc.stderr if "lost" in line])
    finally:
        kill_tree(proc)
