"""What the worker fabric costs: hello-world req/s in-process vs through gateway and workers.

One command (from the repository root, with the project's venv; needs ``wrk``,
the Debian package):

    .venv/bin/python bench/fabric_hello.py                   (3 rounds of 5 s each)
    .venv/bin/python bench/fabric_hello.py --rounds 5 --app apps:asgi_app

Four configurations of the same app (``bench/apps.py``, ``GET /``), on loopback
and random free ports, each loaded with ``wrk -t1 -c50 -d5s``:

* ``serve``       ``zmqhttp serve APP`` (the app in the HTTP process: the reference)
* ``gateway-w1``  ``zmqhttp gateway APP --workers 1`` (one local worker over ipc://)
* ``gateway-w2``  ``zmqhttp gateway APP --workers 2``
* ``remote-tcp``  ``zmqhttp gateway --fabric tcp://...`` + one ``zmqhttp worker
  APP --connect tcp://...`` process
* ``remote-ipc``  (only with ``--configs``) the same over ``ipc://``: separates the
  cost of the transport from that of the process layout

in interleaved rounds (A B C D A B C D ...): each run starts fresh processes,
warms them with a 1 s wrk run, then measures. The report is the median req/s
of the rounds and its ratio to ``serve``, as a markdown table. Nothing is pinned
to a core: on a small machine wrk competes with the servers, and every figure
moves with whatever else runs (say so next to the numbers). Servers stay in
this script's session (one scheduling autogroup with wrk) and are stopped by
their PID (SIGINT, then SIGKILL after 10 s).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from procs import free_port, stop

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
CONFIGS = ("serve", "gateway-w1", "gateway-w2", "remote-tcp")
_QUIET = ["--log-level", "warning", "--no-access-log"]


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def commands(config: str, app: str, port: int) -> list[list[str]]:
    """The process(es) of one configuration, HTTP on ``port``."""
    zmqhttp = [sys.executable, "-m", "zmqhttp"]
    bind = ["--bind", f"127.0.0.1:{port}"]
    app_dir = ["--app-dir", BENCH_DIR]
    if config == "serve":
        return [[*zmqhttp, "serve", app, *bind, *app_dir, *_QUIET]]
    if config.startswith("gateway-w"):
        workers = config.removeprefix("gateway-w")
        return [[*zmqhttp, "gateway", app, "--workers", workers, *bind, *app_dir, *_QUIET]]
    if config in ("remote-tcp", "remote-ipc"):
        if config == "remote-tcp":
            fabric = f"tcp://127.0.0.1:{free_port()}"
        else:
            fabric = f"ipc://{tempfile.gettempdir()}/zmqhttp-fabric-hello-{port}.sock"
        return [[*zmqhttp, "gateway", *bind, "--fabric", fabric, *_QUIET],
                [*zmqhttp, "worker", app, "--connect", fabric, *app_dir,
                 "--log-level", "warning"]]
    raise ValueError(f"unknown configuration {config!r}")


def http_status(port: int, path: str) -> int:
    """Status of one GET, 0 if it fails."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
                         % path.encode())
            head = sock.recv(4096)
        return int(head.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return 0


def wait_serving(port: int, procs: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """Until ``GET /`` answers 200 (a gateway answers only once a worker attached)."""
    deadline = time.monotonic() + timeout
    while http_status(port, "/") != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing served 200 on port {port} in {timeout:.0f} s")
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with status {proc.returncode}")
        time.sleep(0.1)


def parse_ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if match is None:
        return float("nan")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(port: int, connections: int, duration: int) -> Result:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
           f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30,
                         check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    # Anchored: "90.50%" at the end of a Thread Stats line would match "50%" too.
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    if rps is None or p50 is None or p99 is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return Result(float(rps.group(1)), parse_ms(p50.group(1)), parse_ms(p99.group(1)), errors)


def bench_one(config: str, args: argparse.Namespace) -> Result:
    port = free_port()
    log = open(os.path.join(args.log_dir, f"{config}.log"), "ab")  # noqa: SIM115
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for argv in commands(config, args.app, port):
            # Not start_group: a session of its own is a scheduling group of its
            # own (autogroup), and a gateway and a worker in two groups measured
            # 30-60 % slower than in one on a loaded machine; so every server
            # stays in this session, like wrk.
            procs.append(subprocess.Popen(argv, cwd=BENCH_DIR, stdin=subprocess.DEVNULL,
                                          stdout=log, stderr=subprocess.STDOUT))
        wait_serving(port, procs)
        time.sleep(args.settle)  # e.g. the second local worker attaching
        run_wrk(port, args.connections, 1)  # warm-up
        return run_wrk(port, args.connections, args.duration)
    finally:
        for proc in reversed(procs):
            # By PID: SIGINT (graceful; a gateway stops its own local workers),
            # SIGKILL after 10 s (local workers then exit with their parent).
            stop(proc, signal.SIGINT)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--app", default="apps:wsgi_app", help="MODULE:ATTR in bench/")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds between the first 200 and the warm-up")
    parser.add_argument("--log-dir", default=None)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    args.log_dir = args.log_dir or f"/tmp/zmqhttp-fabric-hello-{os.getpid()}"
    os.makedirs(args.log_dir, exist_ok=True)
    configs = args.configs.split(",")
    results: dict[str, list[Result]] = {c: [] for c in configs}
    for round_no in range(args.rounds):
        for config in configs:
            result = bench_one(config, args)
            results[config].append(result)
            print(f"round {round_no + 1} {config}: {result.rps:.0f} req/s "
                  f"({result.errors} errors)", file=sys.stderr)
    reference = statistics.median(r.rps for r in results[configs[0]])
    print(f"\n{args.app}, wrk -t1 -c{args.connections} -d{args.duration}s, "
          f"{args.rounds} interleaved rounds, {os.cpu_count()} CPUs, nothing pinned\n")
    print(f"| configuration | req/s (median) | ratio to {configs[0]} |"
          " median of per-round ratios | all rounds | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for config in configs:
        rs = results[config]
        rps = statistics.median(r.rps for r in rs)
        # Within a round the configurations ran seconds apart: their ratio is
        # less exposed to load that drifts between rounds than the medians are.
        paired = statistics.median(r.rps / ref.rps for r, ref in zip(rs, results[configs[0]],
                                                                      strict=True))
        rounds = " ".join(f"{r.rps:.0f}" for r in rs)
        print(f"| {config} | {rps:.0f} | {rps / reference:.2f} | {paired:.2f} | {rounds} | "
              f"{statistics.median(r.p50_ms for r in rs):.2f} | "
              f"{statistics.median(r.p99_ms for r in rs):.2f} | "
              f"{sum(r.errors for r in rs)} |")
    print(f"\nserver logs: {args.log_dir}")


if __name__ == "__main__":
    main()
