"""Side-by-side hello-world benchmark: zmqhttp against peers, with wrk, on loopback.

Each server runs pinned to one core and wrk to the other; configurations are run
in interleaved rounds (A B A B ...) and the median of the rounds is reported,
with each server's ratio to the reference (the first server listed).

    bench/run.sh --rounds 3 --duration 5          (venv with the peers, then this)
    python bench/compare.py --servers zmqhttp-wsgi,uvicorn-wsgi,uvicorn-asgi

Needs `wrk` (Debian package) and the peers installed (`pip install uvicorn`).
Every load run is bounded by --duration; servers are stopped by their PID.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass

from procs import free_port, stop, wait_listening

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))

SERVERS: dict[str, list[str]] = {
    "zmqhttp-wsgi": [sys.executable, "-m", "zmqhttp", "serve", "apps:wsgi_app", "--bind",
                     "127.0.0.1:{port}", "--no-access-log", "--log-level", "warning",
                     "--app-dir", BENCH_DIR],
    "zmqhttp-asgi": [sys.executable, "-m", "zmqhttp", "serve", "apps:asgi_app", "--bind",
                     "127.0.0.1:{port}", "--no-access-log", "--log-level", "warning",
                     "--app-dir", BENCH_DIR],
    "uvicorn-wsgi": [sys.executable, "-m", "uvicorn", "apps:wsgi_app", "--interface", "wsgi",
                     "--port", "{port}", "--no-access-log", "--log-level", "warning",
                     "--app-dir", BENCH_DIR],
    "uvicorn-asgi": [sys.executable, "-m", "uvicorn", "apps:asgi_app", "--http", "httptools",
                     "--port", "{port}", "--no-access-log", "--log-level", "warning",
                     "--app-dir", BENCH_DIR],
}


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def parse_ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if match is None:
        return float("nan")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, connections: int, duration: int, core: str, close: bool) -> Result:
    cmd = ["taskset", "-c", core, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
           "--latency", url]
    if close:
        cmd[4:4] = ["-H", "Connection: close"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = parse_ms(re.search(r"50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = parse_ms(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Result(rps, p50, p99, errors + (int(non2xx.group(1)) if non2xx else 0))


def bench_one(name: str, args: argparse.Namespace) -> Result:
    port = free_port()
    cmd = ["taskset", "-c", args.server_core] + [a.format(port=port) for a in SERVERS[name]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        run_wrk(f"http://127.0.0.1:{port}/", args.connections, 1, args.wrk_core, args.close)
        return run_wrk(f"http://127.0.0.1:{port}/", args.connections, args.duration,
                       args.wrk_core, args.close)
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="uvicorn-asgi,zmqhttp-asgi,zmqhttp-wsgi,uvicorn-wsgi")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--close", action="store_true", help="send Connection: close")
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--wrk-core", default="1")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    names = args.servers.split(",")
    results: dict[str, list[Result]] = {n: [] for n in names}
    for round_no in range(args.rounds):
        for name in names:
            result = bench_one(name, args)
            results[name].append(result)
            print(f"round {round_no + 1} {name}: {result.rps:.0f} req/s", file=sys.stderr)
    reference = statistics.median(r.rps for r in results[names[0]])
    print(f"\n{args.connections} connections, {args.duration}s x {args.rounds} rounds, "
          f"{'Connection: close' if args.close else 'keep-alive'}, cpu {os.cpu_count()}\n")
    print("| server | req/s (median) | ratio | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for name in names:
        rs = results[name]
        rps = statistics.median(r.rps for r in rs)
        print(f"| {name} | {rps:.0f} | {rps / reference:.2f} | "
              f"{statistics.median(r.p50_ms for r in rs):.2f} | "
              f"{statistics.median(r.p99_ms for r in rs):.2f} | {sum(r.errors for r in rs)} |")


if __name__ == "__main__":
    main()
