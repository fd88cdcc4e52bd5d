"""zmqhttp against its peers, with wrk on loopback: six scenarios, interleaved rounds.

Each measurement starts a fresh server process pinned to one core (taskset) with
wrk pinned to another, checks one answer, warms up, runs wrk while sampling the
server's RSS, and stops the server by its process group. Rounds interleave the
servers (A B C A B C ...) and the report gives medians, each server's ratio to
uvicorn, and writes results.md, results.json and results.png.

    bench/run.sh                                  (venv with the peers, then this)
    bench/run.sh --rounds 1 --duration 3 --servers zmqhttp-asgi,uvicorn --scenarios a,b
    python bench/compare.py --list

A server that fails to start or to answer is reported as failed and the run goes on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import report
from procs import raise_nofile
from runner import Outcome, Settings, run_one
from scenarios import SCENARIOS, Scenario, select
from servers import BENCH_DIR, DEFAULT_SERVERS, REFERENCE, SERVERS
from wrk import wrk_version


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                        help="comma list (default: all but uvicorn-wsgi); see --list")
    parser.add_argument("--scenarios", default="a,b,c,d,e,f", help="comma list of a..f")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of wrk before each run")
    parser.add_argument("--idle", type=int, default=None,
                        help="idle connections in scenario f (default 2000)")
    parser.add_argument("--server-core", default="0", help="taskset CPU; '' for none")
    parser.add_argument("--wrk-core", default="1", help="taskset CPU; '' for none")
    parser.add_argument("--out", default=os.path.join(BENCH_DIR, "results"))
    parser.add_argument("--list", action="store_true", help="list servers and scenarios")
    return parser.parse_args(argv)


def list_all() -> None:
    for server in SERVERS.values():
        print(f"server   {server.name:14} {server.label}")
    for scenario in SCENARIOS.values():
        print(f"scenario {scenario.key} {scenario.name:13} {scenario.title}")


def server_names(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        sys.exit(f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    return names


def settings_from(args: argparse.Namespace, log_dir: str) -> Settings:
    return Settings(duration=args.duration, warmup=args.warmup,
                    server_core=args.server_core or None, wrk_core=args.wrk_core or None,
                    python=sys.executable, log_dir=log_dir)


def pin_self(core: str | None) -> None:
    """Keep this driver (and its RSS sampler) off the server's core."""
    if core and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in core.split(",")})


def one_round(names: list[str], scenarios: list[Scenario], settings: Settings,
              results: report.Results, round_no: int) -> None:
    for scenario in scenarios:
        for name in names:
            server = SERVERS[name]
            if scenario.key in server.unsupported:
                continue
            outcome = run_one(server, scenario, settings, tag=f"-r{round_no}")
            results[scenario.key].setdefault(name, []).append(outcome)
            _progress(round_no, scenario, name, outcome)


def _progress(round_no: int, scenario: Scenario, name: str, outcome: Outcome) -> None:
    if outcome.run is None:
        text = f"FAILED {outcome.failure}"
    else:
        text = (f"{outcome.run.rps:.0f} req/s, p99 {outcome.run.p99_ms:.1f} ms, "
                f"{outcome.run.errors} errors, {outcome.run.peak_rss_kib / 1024:.0f} MiB")
    print(f"round {round_no} ({scenario.key}) {name}: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.list:
        list_all()
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install wrk")
    names = server_names(args.servers)
    try:
        scenarios = select(args.scenarios, args.idle)
    except ValueError as exc:
        sys.exit(str(exc))
    log_dir = os.path.join(args.out, "logs")
    os.makedirs(log_dir, exist_ok=True)
    settings = settings_from(args, log_dir)
    raise_nofile()
    pin_self(settings.wrk_core)
    meta: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "command": "bench/run.sh " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "rounds": args.rounds, "duration": args.duration, "warmup": args.warmup,
        "server_core": settings.server_core or "any", "wrk_core": settings.wrk_core or "any",
        "reference": REFERENCE, "servers": names, "wrk": wrk_version(),
        "machine": report.machine_info()}
    results: report.Results = {s.key: {} for s in scenarios}
    for round_no in range(1, args.rounds + 1):
        one_round(names, scenarios, settings, results, round_no)
        report.write_all(args.out, scenarios, names, results, meta)
    print(f"wrote {args.out}/results.md, results.json, results.png", file=sys.stderr)


if __name__ == "__main__":
    main()
