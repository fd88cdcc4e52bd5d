"""Summaries of the runs and the three outputs: results.md, results.json, results.png."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
from dataclasses import dataclass
from importlib import metadata

from runner import Outcome
from scenarios import MIB, Scenario
from servers import SERVERS

__all__ = ["Summary", "machine_info", "summarize", "write_all"]

#: Distributions whose versions the report names (when installed).
PACKAGES = ["zmqhttp", "pyzmq", "httptools", "uvicorn", "uvloop", "granian", "gunicorn",
            "waitress", "hypercorn", "aiohttp", "tornado"]
Results = dict[str, dict[str, list[Outcome]]]  # scenario key -> server name -> rounds


@dataclass(frozen=True, slots=True)
class Summary:
    #: "ok", "n/a" (the server cannot do the scenario) or "failed" (every round failed).
    status: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    #: Total over the rounds.
    errors: int = 0
    #: Highest over the rounds.
    peak_rss_mib: float = 0.0
    mib_per_s: float | None = None
    idle_kib_per_conn: float | None = None
    idle_open_end: int | None = None
    rounds_ok: int = 0
    rounds: int = 0
    failure: str | None = None


def summarize(scenario: Scenario, outcomes: list[Outcome]) -> Summary:
    runs = [o.run for o in outcomes if o.run is not None]
    failure = next((o.failure for o in outcomes if o.failure), None)
    if not runs:
        return Summary("failed" if outcomes else "n/a", failure=failure, rounds=len(outcomes))
    rps = statistics.median(r.rps for r in runs)
    idle = [r.idle_kib_per_conn for r in runs if r.idle_kib_per_conn is not None]
    ends = [r.idle_open_end for r in runs if r.idle_open_end is not None]
    return Summary(
        "ok", rps=rps,
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        errors=sum(r.errors for r in runs),
        peak_rss_mib=max(r.peak_rss_kib for r in runs) / 1024,
        mib_per_s=rps * scenario.bulk_bytes / MIB if scenario.bulk_bytes else None,
        idle_kib_per_conn=statistics.median(idle) if idle else None,
        idle_open_end=min(ends) if ends else None,
        rounds_ok=len(runs), rounds=len(outcomes), failure=failure)


def machine_info() -> dict[str, str]:
    info = {"cpu": _cpu_model(), "cores": str(os.cpu_count()), "memory": _memory(),
            "os": _os_name(), "kernel": platform.release(),
            "python": f"{platform.python_implementation()} {platform.python_version()}"}
    for name in PACKAGES:
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        import zmq

        info["libzmq"] = zmq.zmq_version()
    except ImportError:
        pass
    try:
        import zmqhttp

        info["zmqhttp build"] = "compiled (mypyc)" if zmqhttp.compiled() else "pure Python"
    except ImportError:
        pass
    return info


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory() -> str:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 1024**2:.0f} GiB"
    return "unknown"


def _os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.system()


# --- markdown ---------------------------------------------------------------------------

def _columns(scenario: Scenario, reference: str) -> list[str]:
    cols = ["server", "req/s (median)", f"ratio to {reference}", "p50 ms", "p99 ms", "errors",
            "peak RSS MiB"]
    if scenario.bulk_bytes:
        cols.append("MiB/s")
    if scenario.idle:
        cols += ["RSS KiB per idle conn", "idle conns open at end"]
    return cols


def _row(scenario: Scenario, name: str, s: Summary, ref_rps: float | None) -> list[str]:
    if s.status != "ok":
        cells = [name, s.status] + ["-"] * (len(_columns(scenario, "")) - 2)
        return cells
    ratio = f"{s.rps / ref_rps:.2f}" if ref_rps else "-"
    errors = str(s.errors) + (f" ({s.rounds - s.rounds_ok} runs failed)"
                              if s.rounds_ok < s.rounds else "")
    cells = [name, f"{s.rps:.0f}" if s.rps >= 100 else f"{s.rps:.1f}", ratio,
             f"{s.p50_ms:.2f}", f"{s.p99_ms:.2f}", errors, f"{s.peak_rss_mib:.1f}"]
    if scenario.bulk_bytes:
        cells.append(f"{s.mib_per_s:.0f}")
    if scenario.idle:
        cells += [f"{s.idle_kib_per_conn:.1f}" if s.idle_kib_per_conn is not None else "-",
                  f"{s.idle_open_end} of {scenario.idle}" if s.idle_open_end is not None
                  else "-"]
    return cells


def _table(scenario: Scenario, summaries: dict[str, Summary], reference: str) -> list[str]:
    ref = summaries.get(reference)
    ref_rps = ref.rps if ref and ref.status == "ok" and ref.rps > 0 else None
    cols = _columns(scenario, reference)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_row(scenario, n, s, ref_rps)) + " |"
              for n, s in summaries.items()]
    failures = [f"- {n}: {s.failure}" for n, s in summaries.items() if s.failure]
    return lines + (["", *failures] if failures else [])


def markdown(scenarios: list[Scenario], servers: list[str],
             table: dict[str, dict[str, Summary]], meta: dict[str, object]) -> str:
    info = meta["machine"]
    assert isinstance(info, dict)
    reference = str(meta["reference"])
    lines = ["# zmqhttp benchmark results", "",
             f"{meta['date']}; command: `{meta['command']}`; {meta['rounds']} round(s) of "
             f"{meta['duration']} s (after a {meta['warmup']} s warm-up), interleaved, median "
             f"reported; server on CPU {meta['server_core']}, wrk on CPU {meta['wrk_core']}.",
             "", "Machine: " + ", ".join(f"{k} {info[k]}" for k in
                                         ("cpu", "cores", "memory", "os", "kernel", "python")
                                         if k in info) + f", wrk {meta['wrk']}.",
             "", "Versions: " + ", ".join(f"{k} {v}" for k, v in info.items()
                                          if k in (*PACKAGES, "libzmq")) + ".", "",
             "Servers: " + "; ".join(f"{n} = {SERVERS[n].label}" for n in servers) + "."]
    for scenario in scenarios:
        lines += ["", f"## {scenario.label}", "", *_table(scenario, table[scenario.key],
                                                          reference)]
    return "\n".join(lines) + "\n"


# --- chart -------------------------------------------------------------------------------

def chart(path: str, scenarios: list[Scenario], table: dict[str, dict[str, Summary]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(scenarios))
    rows = (len(scenarios) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 0.35 * _height(table) * rows + 1.5),
                             squeeze=False)
    for ax in axes.flat[len(scenarios):]:
        ax.set_visible(False)
    for ax, scenario in zip(axes.flat, scenarios, strict=False):
        _bars(ax, scenario, table[scenario.key])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _height(table: dict[str, dict[str, Summary]]) -> int:
    return max((len(v) for v in table.values()), default=1) + 2


def _bars(ax: object, scenario: Scenario, summaries: dict[str, Summary]) -> None:
    names = list(summaries)[::-1]
    values = [summaries[n].rps for n in names]
    colors = ["tab:orange" if n.startswith("zmqhttp") else "tab:blue" for n in names]
    ax.barh(names, values, color=colors)  # type: ignore[attr-defined]
    for y, name in enumerate(names):
        s = summaries[name]
        text = f" {s.rps:.0f}" if s.status == "ok" else f" {s.status}"
        ax.text(s.rps, y, text, va="center", fontsize=8)  # type: ignore[attr-defined]
    ax.set_title(scenario.label, fontsize=9)  # type: ignore[attr-defined]
    ax.set_xlabel("requests/s (median)")  # type: ignore[attr-defined]
    ax.margins(x=0.2)  # type: ignore[attr-defined]


# --- all three ---------------------------------------------------------------------------

def write_all(out_dir: str, scenarios: list[Scenario], servers: list[str], results: Results,
              meta: dict[str, object]) -> None:
    table = {sc.key: {n: summarize(sc, results[sc.key].get(n, [])) for n in servers}
             for sc in scenarios}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown(scenarios, servers, table, meta))
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(_json(scenarios, table, results, meta), f, indent=1)
    chart(os.path.join(out_dir, "results.png"), scenarios, table)


def _json(scenarios: list[Scenario], table: dict[str, dict[str, Summary]], results: Results,
          meta: dict[str, object]) -> dict[str, object]:
    return {"meta": meta, "scenarios": {sc.key: {
        "name": sc.name, "title": sc.title, "connections": sc.connections, "idle": sc.idle,
        "servers": {n: {"summary": dataclasses.asdict(s),
                        "rounds": [dataclasses.asdict(o) for o in results[sc.key].get(n, [])]}
                    for n, s in table[sc.key].items()}} for sc in scenarios}}
