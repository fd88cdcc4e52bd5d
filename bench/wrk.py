"""Run wrk (bounded in time) and parse its report."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from scenarios import Scenario

__all__ = ["WrkResult", "parse", "run_wrk", "wrk_version"]

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_UNITS_BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}
#: wrk's per-request timeout: a 10 MiB download on a slow server takes seconds.
REQUEST_TIMEOUT = "10s"


@dataclass(frozen=True, slots=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    #: Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses.
    errors: int
    requests: int
    transfer_bps: float


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(match.group(1)) * _UNITS_MS[match.group(2)] if match else float("nan")


def _search(pattern: str, out: str) -> str:
    match = re.search(pattern, out)
    if match is None:
        raise ValueError(f"wrk output has no {pattern!r}: {out[-400:]!r}")
    return match.group(1)


def parse(out: str) -> WrkResult:
    socket_errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", out)
    return WrkResult(
        rps=float(_search(r"Requests/sec:\s+([\d.]+)", out)),
        p50_ms=_ms(_search(r"\n\s+50%\s+(\S+)", out)),
        p99_ms=_ms(_search(r"\n\s+99%\s+(\S+)", out)),
        errors=socket_errors + (int(non2xx.group(1)) if non2xx else 0),
        requests=int(_search(r"(\d+) requests in", out)),
        transfer_bps=float(transfer.group(1)) * _UNITS_BYTES[transfer.group(2)] if transfer
        else 0.0,
    )


def command(url: str, scenario: Scenario, duration: int, core: str | None) -> list[str]:
    cmd = ["wrk", "-t1", f"-c{scenario.connections}", f"-d{duration}s", "--latency",
           "--timeout", REQUEST_TIMEOUT]
    for header in scenario.headers:
        cmd += ["-H", header]
    if scenario.lua:
        cmd += ["-s", scenario.lua]
    cmd.append(url + scenario.path)
    return ["taskset", "-c", core, *cmd] if core else cmd


def run_wrk(port: int, scenario: Scenario, duration: int, core: str | None) -> WrkResult:
    """One wrk run against 127.0.0.1:port; raises on a wrk failure or timeout."""
    cmd = command(f"http://127.0.0.1:{port}", scenario, duration, core)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return parse(done.stdout)


def wrk_version() -> str:
    try:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return (done.stdout + done.stderr).split(" [")[0].removeprefix("wrk ").strip()
