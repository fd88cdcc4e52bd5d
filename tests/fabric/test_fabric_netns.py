"""The fabric across hosts for real: gateway and workers in their own network namespaces.

Strategy: three namespaces stand for three machines: the gateway's and one per
worker, each worker joined to the gateway by its own veth pair and subnet
(10.213.1.0/24, 10.213.2.0/24: private addresses, and only inside namespaces
this test creates, so nothing on the host can collide or see them). The
gateway binds its fabric on its two non-loopback addresses with CURVE, which
is the realistic setup and needs no --insecure. HTTP traffic comes from a
client process run inside the gateway's namespace. Cutting a worker's link
(``ip link set DEV down`` in its namespace) is an unplugged cable: no FIN, no
RST, so only the heartbeats can tell (docs/protocol.md section 8).

Everything created is removed in the fixture's teardown: processes stopped by
PID (ours, then whatever ``ip netns pids`` still lists), then the namespaces,
which takes their veths along.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zmqhttp.fabric.curve import generate_keys
from zmqhttp.fabric.protocol import HEARTBEAT_INTERVAL, HEARTBEAT_LIVENESS

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

#: How long after the cut a request in flight on the lost worker may take to
#: fail: the liveness bound, the gateway's 0.1 s timer tick, and slack for a
#: loaded 2-core machine.
LOSS_BOUND = HEARTBEAT_INTERVAL * HEARTBEAT_LIVENESS + 0.1 + 1.5
#: Seconds the slow requests take: well past LOSS_BOUND.
SLOW = 10

APP = """
import os, time

NAME = os.environ["ZH_NETNS_WORKER"].encode()

def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(float(environ["QUERY_STRING"] or "1"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [NAME]
"""

# Runs inside the gateway's namespace: one JSON line per request as it ends.
CLIENT = """
import http.client, json, sys, threading, time

port, mode, specs = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
lock = threading.Lock()

def one(spec):
    method, path = spec.split(" ", 1)
    result = {"spec": spec, "started": time.time()}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(method, path)
        response = conn.getresponse()
        result.update(status=response.status, body=response.read().decode("latin-1"))
        conn.close()
    except Exception as exc:
        result.update(status=0, body=repr(exc))
    result["done"] = time.time()
    with lock:
        print(json.dumps(result), flush=True)

if mode == "seq":
    for spec in specs:
        one(spec)
else:
    threads = [threading.Thread(target=one, args=(spec,)) for spec in specs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
"""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


class Hosts:
    """The namespaces, links and processes of one test; :meth:`remove` undoes all."""

    def __init__(self, root: Path) -> None:
        suffix = secrets.token_hex(3)
        self.root = root
        self.gateway_ns = f"zh-gw-{suffix}"
        self.worker_ns = [f"zh-w1-{suffix}", f"zh-w2-{suffix}"]
        # Interface names: at most 15 characters (IFNAMSIZ).
        self.gateway_dev = [f"zg1{suffix}", f"zg2{suffix}"]
        self.worker_dev = [f"zw1{suffix}", f"zw2{suffix}"]
        self.created: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def namespaces(self) -> list[str]:
        return [self.gateway_ns, *self.worker_ns]

    def create(self) -> None:
        for ns in self.namespaces:
            result = ip("netns", "add", ns, check=False)
            if result.returncode != 0:
                pytest.skip(f"the kernel refused a network namespace: {result.stderr.strip()}")
            self.created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        for index in range(2):
            self._link(index)

    def _link(self, index: int) -> None:
        gw_dev, w_dev, w_ns = self.gateway_dev[index], self.worker_dev[index], self.worker_ns[index]
        # Made inside the gateway's namespace, so nothing ever appears on the host.
        result = ip("-n", self.gateway_ns, "link", "add", gw_dev, "type", "veth",
                    "peer", "name", w_dev, check=False)
        if result.returncode != 0:
            pytest.skip(f"the kernel refused a veth pair: {result.stderr.strip()}")
        ip("-n", self.gateway_ns, "link", "set", w_dev, "netns", w_ns)
        ip("-n", self.gateway_ns, "addr", "add", f"{self.gateway_ip(index)}/24", "dev", gw_dev)
        ip("-n", w_ns, "addr", "add", f"10.213.{index + 1}.2/24", "dev", w_dev)
        ip("-n", self.gateway_ns, "link", "set", gw_dev, "up")
        ip("-n", w_ns, "link", "set", w_dev, "up")

    @staticmethod
    def gateway_ip(index: int) -> str:
        return f"10.213.{index + 1}.1"

    def start(self, ns: str, log_name: str, args: list[str],
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """``ip netns exec NS python -m zmqhttp ARGS``; ``ip`` execs, so the PID is python's."""
        log = open(self.root / log_name, "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "zmqhttp",
                                 *args], cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                env={**_clean_env(), **(env or {})})
        log.close()  # the child has its own descriptor
        self.procs.append(proc)
        return proc

    def client(self, port: int, mode: str, specs: list[str],
               timeout: float = 40) -> list[dict[str, Any]]:
        result = subprocess.run(self._client_args(port, mode, specs), capture_output=True,
                                text=True, timeout=timeout)
        return [json.loads(line) for line in result.stdout.splitlines()]

    def client_in_background(self, port: int, specs: list[str],
                             output: Path) -> subprocess.Popen[bytes]:
        with open(output, "wb") as out:
            proc = subprocess.Popen(self._client_args(port, "par", specs), stdout=out)
        self.procs.append(proc)
        return proc

    def _client_args(self, port: int, mode: str, specs: list[str]) -> list[str]:
        script = self.root / "client.py"
        if not script.exists():
            script.write_text(CLIENT)
        return ["ip", "netns", "exec", self.gateway_ns, sys.executable, str(script),
                str(port), mode, *specs]

    def log(self, name: str) -> str:
        path = self.root / name
        return path.read_text(errors="replace") if path.exists() else ""

    def remove(self) -> None:
        for proc in self.procs:
            _stop(proc.pid, proc)
        for ns in self.created:
            listed = ip("netns", "pids", ns, check=False).stdout.split()
            for pid in listed:
                _stop(int(pid), None)
        for ns in self.created:
            ip("netns", "del", ns, check=False)


def _stop(pid: int, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, a short wait, then SIGKILL: by PID, never by name."""
    for signum, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        if proc is None:
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
                time.sleep(0.05)
            if not os.path.exists(f"/proc/{pid}"):
                return
            continue
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ZMQHTTP_")}


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    if not sys.platform.startswith("linux"):
        pytest.skip("network namespaces are a Linux feature")
    if shutil.which("ip") is None:
        pytest.skip("iproute2's ip command is not installed")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
    made = Hosts(tmp_path)
    try:
        made.create()
        yield made
    finally:
        made.remove()


def wait_for(predicate: Any, timeout: float, what: str, hosts: Hosts) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}\n--- gateway ---\n{hosts.log('gateway.log')}"
                                 f"\n--- w1 ---\n{hosts.log('w1.log')}"
                                 f"\n--- w2 ---\n{hosts.log('w2.log')}")
        time.sleep(0.1)


def serve(hosts: Hosts) -> int:
    """Start the gateway and both workers with CURVE keys; return the HTTP port."""
    root = hosts.root
    (root / "netnsapp.py").write_text(APP)
    _, gateway_secret = generate_keys(str(root / "gateway"), "gateway")
    authorized = root / "authorized"
    authorized.mkdir()
    worker_secrets = []
    for name in ("w1", "w2"):
        public, secret = generate_keys(str(root / name), name)
        shutil.copy(public, authorized / f"{name}.key")
        worker_secrets.append(secret)
    # Fresh namespaces: nothing else listens there, any port is free.
    http_port, fabric_port = secrets.randbelow(20000) + 20000, secrets.randbelow(20000) + 40000
    hosts.start(hosts.gateway_ns, "gateway.log", [
        "gateway", "--bind", f"127.0.0.1:{http_port}",
        "--fabric", f"tcp://{hosts.gateway_ip(0)}:{fabric_port}",
        "--fabric", f"tcp://{hosts.gateway_ip(1)}:{fabric_port}",
        "--curve-secret-key", gateway_secret, "--authorized-keys", str(authorized),
        "--queue-timeout", "20", "--no-access-log"])
    for index, name in enumerate(("w1", "w2")):
        hosts.start(hosts.worker_ns[index], f"{name}.log", [
            "worker", "netnsapp:app", "--app-dir", str(root), "--threads", "4",
            "--connect", f"tcp://{hosts.gateway_ip(index)}:{fabric_port}",
            "--curve-secret-key", worker_secrets[index],
            "--curve-server-key", str(root / "gateway" / "gateway.key"),
            "--timeout-graceful-shutdown", "2"], env={"ZH_NETNS_WORKER": name})
    wait_for(lambda: f"Listening on tcp://127.0.0.1:{http_port}" in hosts.log("gateway.log"),
             20, "the gateway did not start", hosts)
    return http_port


def bodies(results: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(r["status"], r["body"]) for r in results]


def test_gateway_and_workers_on_separate_hosts(hosts: Hosts) -> None:
    port = serve(hosts)
    seen: set[str] = set()

    def both_serve() -> bool:
        seen.update(r["body"] for r in hosts.client(port, "seq", ["GET /"] * 6)
                    if r["status"] == 200)
        return seen >= {"w1", "w2"}

    wait_for(both_serve, 30, f"not both workers served (seen {seen})", hosts)

    # Two slow requests on each worker (4 slots each, dispatched to the most
    # free slots), then the cable to w1 is cut. POST: never retried (9.1).
    slow_out = hosts.root / "slow.jsonl"
    slow = hosts.client_in_background(port, [f"POST /slow?{SLOW}"] * 4, slow_out)
    time.sleep(1.0)
    cut_at = time.time()
    ip("-n", hosts.worker_ns[0], "link", "set", hosts.worker_dev[0], "down")

    # The rest is served by w2 meanwhile (a GET sent to w1 before the gateway
    # noticed is retried on w2: idempotent, nothing received yet).
    during = hosts.client(port, "seq", ["GET /"] * 10)
    assert bodies(during) == [(200, "w2")] * 10, hosts.log("gateway.log")

    slow.wait(SLOW + 15)
    results = [json.loads(line) for line in slow_out.read_text().splitlines()]
    print("cut at", cut_at, "slow requests:", results)  # shown when the test fails
    lost = [r for r in results if r["status"] == 502]
    finished = [r for r in results if r["status"] != 502]
    assert lost, f"nothing was in flight on w1: {results}"
    for r in lost:
        assert r["done"] - cut_at <= LOSS_BOUND, (r, cut_at, hosts.log("gateway.log"))
    assert bodies(finished) == [(200, "w2")] * len(finished), results
    assert "lost" in hosts.log("gateway.log")

    # Cable back: ZeroMQ reconnects and w1 serves again (a new identity, a new Ready).
    ip("-n", hosts.worker_ns[0], "link", "set", hosts.worker_dev[0], "up")
    seen.clear()
    wait_for(both_serve, 30, f"w1 did not come back (seen {seen})", hosts)
