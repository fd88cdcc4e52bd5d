"""Soak test: a server under mixed abuse for a chosen time, its memory and errors sampled.

Not run in CI. Starts ``python -m zmqhttp serve`` (or ``gateway APP --workers N``
with ``--gateway``) on a random loopback port and runs, all at once:

* keep-alive load: pipelined GETs over a few connections (Python clients; add
  ``--wrk`` to run wrk alongside for the whole duration);
* an idle pool: many kept-alive connections, each asked for one response every
  few seconds (they must all stay usable);
* slowloris: connections dripping a request head one byte a second, replaced
  when the server cuts them off (each must be cut within the header timeout);
* disconnect-at-random: clients that send a random prefix of a request, or
  read a random part of a large response, and vanish (FIN or RST);
* with ``--gateway``: a fabric worker killed with SIGKILL every ``--kill-every`` s.

Every ``--interval`` seconds it samples the server's RSS (all its processes)
and the counters, and at the end writes ``soak.csv``, ``soak.png`` (memory,
throughput and errors over time; matplotlib with the Agg backend) and one
summary line into ``--out``.

    .venv/bin/pip install matplotlib     # in bench/requirements.txt; not a test dependency
    .venv/bin/python bench/soak.py --duration 240
    .venv/bin/python bench/soak.py --duration 240 --gateway --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

APP = '''
import os, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/big":
        start_response("200 OK", [("Content-Length", str(64 * 65536))])
        return (b"x" * 65536 for _ in range(64))
    if path == "/echo":
        body = str(len(environ["wsgi.input"].read())).encode()
    else:
        body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
'''

REQUEST = b"GET / HTTP/1.1\r\nHost: soak\r\nUser-Agent: soak\r\n\r\n"
STATUS_OK = b"HTTP/1.1 200 OK\r\n"
PARTIAL_REQUESTS = [
    REQUEST,
    b"POST /echo HTTP/1.1\r\nHost: soak\r\nContent-Length: 64\r\n\r\n" + b"p" * 64,
    b"POST /echo HTTP/1.1\r\nHost: soak\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"20\r\n" + b"c" * 32 + b"\r\n0\r\n\r\n",
]


@dataclass
class Stats:
    """Counters shared by the load threads (increments under the GIL are enough here)."""

    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: (monotonic time, key) of every error and worker kill, to relate them.
    events: list[tuple[float, str]] = field(default_factory=list)

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n
            if key in ERROR_KEYS or key == "worker_kills":
                self.events.append((time.monotonic(), key))

    def errors_after_kills(self, window: float = 3.0) -> int:
        """Errors within ``window`` s after a worker kill (its in-flight requests)."""
        with self.lock:
            kills = [t for t, key in self.events if key == "worker_kills"]
            return sum(1 for t, key in self.events if key in ERROR_KEYS
                       and any(0 <= t - k <= window for k in kills))

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.counts)


ERROR_KEYS = ("ka_errors", "idle_errors", "slowloris_overdue", "probe_errors", "wrk_errors")


# -- the server -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            kids = [int(p) for p in handle.read().split()]
    except OSError:
        return []
    out = []
    for kid in kids:
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as handle:
                if b"spawn_main" in handle.read():
                    out.append(kid)
        except OSError:
            continue
    return out


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def start_server(args: argparse.Namespace, workdir: Path, port: int) -> subprocess.Popen[str]:
    (workdir / "soakapp.py").write_text(APP)
    if args.gateway:
        cmd = ["gateway", "soakapp:app", "--app-dir", str(workdir), "--workers",
               str(args.workers)]
    else:
        cmd = ["serve", "soakapp:app", "--timeout-keep-alive", "60",
               "--timeout-request-header", str(args.header_timeout)]
        if args.workers > 1:
            cmd += ["--workers", str(args.workers)]
    cmd += ["--bind", f"127.0.0.1:{port}", "--no-access-log", "--log-level", "warning"]
    log = open(workdir / "server.log", "w")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([sys.executable, "-m", "zmqhttp", *cmd], cwd=workdir,
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {(workdir / 'server.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(REQUEST)
                sock.settimeout(5)
                if sock.recv(100).startswith(STATUS_OK) and (
                        not args.gateway or len(children(proc.pid)) >= args.workers):
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise SystemExit("server did not start")


def stop_server(proc: subprocess.Popen[str]) -> int | None:
    kids = children(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(40)
    except subprocess.TimeoutExpired:
        proc.kill()
        for kid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(kid, signal.SIGKILL)
        proc.wait(5)
        return None


# -- the load ---------------------------------------------------------------------------------

def keepalive_client(port: int, stats: Stats, stop: threading.Event, pipeline: int) -> None:
    """Pipelined GETs on one connection; a failed batch counts as errors and reconnects."""
    sock: socket.socket | None = None
    size = 0
    while not stop.is_set():
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.sendall(REQUEST)
                first = b""
                while not first.endswith(b"\r\n\r\nok"):
                    data = sock.recv(4096)
                    if not data:
                        raise ConnectionError("closed before the first response")
                    first += data
                size = len(first)
                stats.add("ka_ok")
            sock.sendall(REQUEST * pipeline)
            want, buf = size * pipeline, b""
            while len(buf) < want:
                data = sock.recv(want - len(buf))
                if not data:
                    raise ConnectionError("closed mid-batch")
                buf += data
            ok = buf.count(STATUS_OK)
            stats.add("ka_ok", ok)
            if ok != pipeline:
                stats.add("ka_errors", pipeline - ok)
                raise ConnectionError("bad responses")
        except (OSError, ConnectionError):
            stats.add("ka_errors", 1)
            if sock is not None:
                sock.close()
            sock = None
            stop.wait(0.1)
    if sock is not None:
        sock.close()


def idle_pool(port: int, count: int, stats: Stats, stop: threading.Event,
              period: float) -> None:
    """``count`` kept-alive connections, each asked for one response every ``period`` s."""
    socks: list[socket.socket | None] = [None] * count
    while not stop.is_set():
        started = time.monotonic()
        for i in range(count):
            if socks[i] is None:
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                    sock.setblocking(False)
                    socks[i] = sock
                except OSError:
                    stats.add("idle_errors")
            if i % 50 == 49:
                time.sleep(0.01)  # stay under the listen backlog
        answered = roundtrip([s for s in socks if s is not None], timeout=min(period, 10))
        for i, held in enumerate(socks):
            if held is None:
                continue
            if answered.get(held.fileno()):
                stats.add("idle_ok")
            else:
                stats.add("idle_errors")
                held.close()
                socks[i] = None
        stop.wait(max(0.0, period - (time.monotonic() - started)))
    for held in socks:
        if held is not None:
            held.close()


def roundtrip(socks: list[socket.socket], timeout: float) -> dict[int, bool]:
    """One GET on each socket; which fds got a whole ``ok`` response."""
    done: dict[int, bool] = {}
    bufs: dict[int, bytes] = {}
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            try:
                sock.send(REQUEST)
                sel.register(sock, selectors.EVENT_READ)
                bufs[sock.fileno()] = b""
            except OSError:
                done[sock.fileno()] = False
        deadline = time.monotonic() + timeout
        while len(done) < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                ready, data = _read_ready(key)
                if data is None:
                    continue
                fd = ready.fileno()
                bufs[fd] += data
                if not data or bufs[fd].endswith(b"\r\n\r\nok"):
                    done[fd] = bool(data) and bufs[fd].startswith(STATUS_OK)
                    sel.unregister(ready)
    return done


def _read_ready(key: selectors.SelectorKey) -> tuple[socket.socket, bytes | None]:
    """What a ready socket has: bytes, ``b""`` when closed or reset, None if nothing yet."""
    ready = key.fileobj
    assert isinstance(ready, socket.socket)
    try:
        return ready, ready.recv(4096)
    except BlockingIOError:
        return ready, None
    except OSError:
        return ready, b""


def slowloris(port: int, count: int, stats: Stats, stop: threading.Event,
              header_timeout: float) -> None:
    """``count`` connections dripping one header byte a second, replaced when cut off."""
    head = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 4096
    conns: dict[socket.socket, list[float]] = {}  # sock -> [opened, bytes sent]
    with selectors.DefaultSelector() as sel:
        next_drip = time.monotonic()
        while not stop.is_set():
            opened = 0
            while len(conns) < count and opened < 50:
                try:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                except OSError:
                    stats.add("slowloris_connect_errors")
                    break
                sock.setblocking(False)
                conns[sock] = [time.monotonic(), 0]
                sel.register(sock, selectors.EVENT_READ)
                opened += 1
            for key, _ in sel.select(timeout=0.1):
                ready, data = _read_ready(key)
                if data is None:
                    continue
                lived = time.monotonic() - conns[ready][0]
                stats.add("slowloris_408" if data.startswith(b"HTTP/1.1 408") else
                          "slowloris_closed")
                if os.environ.get("SOAK_DEBUG"):
                    print("slowloris closed", round(lived, 2), conns[ready][1], data[:40])
                if lived > header_timeout + 1.5:
                    stats.add("slowloris_overdue")
                sel.unregister(ready)
                ready.close()
                del conns[ready]
            now = time.monotonic()
            if now >= next_drip:
                next_drip = now + 1.0
                for sock, state in conns.items():
                    if now - state[0] > header_timeout + 1.5 and state[1] >= 0:
                        stats.add("slowloris_overdue")
                        state[1] = -1  # counted once
                    with contextlib.suppress(OSError):
                        pos = abs(int(state[1]))
                        sock.send(head[pos : pos + 1])
                        if state[1] >= 0:
                            state[1] += 1
        for sock in conns:
            sock.close()


def disconnector(port: int, stats: Stats, stop: threading.Event, rate: float,
                 seed: int) -> None:
    """Clients that vanish at a random byte of a request or of a 4 MiB response."""
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if rng.random() < 0.5:
                request = rng.choice(PARTIAL_REQUESTS)
                sock.sendall(request[: rng.randint(0, len(request))])
            else:
                sock.sendall(b"GET /big HTTP/1.1\r\nHost: soak\r\n\r\n")
                want = rng.randint(0, 64 * 65536)
                got = 0
                while got < want:
                    data = sock.recv(min(65536, want - got))
                    if not data:
                        break
                    got += len(data)
            if rng.random() < 0.5:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            stats.add("disconnects")
        except OSError:
            stats.add("disconnect_connect_errors")
        stop.wait(1.0 / rate)


def prober(port: int, stats: Stats, stop: threading.Event) -> None:
    """A fresh connection every 0.2 s: the latency an ordinary client sees."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
                data = b""
                while not data.endswith(b"\r\n\r\nok"):
                    piece = sock.recv(4096)
                    if not piece:
                        break
                    data += piece
            if data.startswith(STATUS_OK) and data.endswith(b"ok"):
                stats.add("probe_ok")
                stats.add("probe_ms_total", int((time.monotonic() - started) * 1000))
            else:
                stats.add("probe_errors")
        except OSError:
            stats.add("probe_errors")
        stop.wait(0.2)


def worker_killer(server: subprocess.Popen[str], stats: Stats, stop: threading.Event,
                  every: float, seed: int) -> None:
    rng = random.Random(seed)
    while not stop.wait(every):
        kids = children(server.pid)
        if kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rng.choice(kids), signal.SIGKILL)
                stats.add("worker_kills")


def run_wrk(port: int, duration: int, out: dict[str, str]) -> None:
    result = subprocess.run(["wrk", "-t1", "-c32", f"-d{duration}s",
                             f"http://127.0.0.1:{port}/"],
                            capture_output=True, text=True, timeout=duration + 60)
    out["stdout"] = result.stdout


def wrk_summary(text: str) -> tuple[int, int]:
    """(requests, errors) from wrk's output."""
    found = re.search(r"(\d+) requests in", text)
    requests = int(found.group(1)) if found else 0
    errors = 0
    sock_err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                         text)
    if sock_err:
        errors += sum(int(g) for g in sock_err.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        errors += int(non2xx.group(1))
    return requests, errors


# -- sampling and the report ------------------------------------------------------------------

def plot(rows: list[dict[str, float]], path: Path, title: str, summary: str) -> None:
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    axes[0].plot(t, [r["rss_mib"] for r in rows], color="tab:blue")
    axes[0].set_ylabel("server RSS (MiB)")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(t, [r["ka_rps"] for r in rows], label="keep-alive req/s")
    axes[1].plot(t, [r["idle_rps"] for r in rows], label="idle-pool req/s")
    axes[1].set_ylabel("requests/s")
    axes[1].legend(loc="lower right")
    for key in ERROR_KEYS:
        axes[2].plot(t, [r[key] for r in rows], label=key)
    axes[2].plot(t, [r["worker_kills"] for r in rows], label="worker kills", linestyle=":")
    axes[2].set_ylabel("cumulative count")
    axes[2].set_xlabel("seconds")
    axes[2].legend(loc="upper left", fontsize="small")
    fig.suptitle(title)
    fig.text(0.01, 0.005, textwrap.fill(summary, 150), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=240, help="seconds of load")
    parser.add_argument("--interval", type=float, default=5, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=Path("bench/results/soak"))
    parser.add_argument("--gateway", action="store_true", help="gateway APP --workers N")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--keepalive-clients", type=int, default=4)
    parser.add_argument("--pipeline", type=int, default=16)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--idle-period", type=float, default=3.0)
    parser.add_argument("--slowloris", type=int, default=1000)
    parser.add_argument("--header-timeout", type=float, default=10.0,
                        help="--timeout-request-header (serve; the gateway uses 10 s)")
    parser.add_argument("--disconnect-rate", type=float, default=20, help="per second")
    parser.add_argument("--kill-every", type=float, default=30, help="seconds (--gateway)")
    parser.add_argument("--wrk", action="store_true", help="also run wrk -c32 throughout")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.gateway and args.workers < 2:
        args.workers = 2
    if args.gateway:
        args.header_timeout = 10.0

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="zmqhttp-soak-"))
    port = free_port()
    server = start_server(args, workdir, port)
    stats, stop = Stats(), threading.Event()
    threads = [threading.Thread(target=keepalive_client, args=(port, stats, stop, args.pipeline),
                                daemon=True) for _ in range(args.keepalive_clients)]
    threads += [
        threading.Thread(target=idle_pool, args=(port, args.idle, stats, stop, args.idle_period),
                         daemon=True),
        threading.Thread(target=slowloris,
                         args=(port, args.slowloris, stats, stop, args.header_timeout),
                         daemon=True),
        threading.Thread(target=disconnector,
                         args=(port, stats, stop, args.disconnect_rate, args.seed), daemon=True),
        threading.Thread(target=prober, args=(port, stats, stop), daemon=True),
    ]
    if args.gateway:
        threads.append(threading.Thread(target=worker_killer, daemon=True,
                                        args=(server, stats, stop, args.kill_every, args.seed)))
    wrk_out: dict[str, str] = {}
    if args.wrk:
        threads.append(threading.Thread(target=run_wrk, daemon=True,
                                        args=(port, int(args.duration), wrk_out)))
    rows: list[dict[str, float]] = []
    started = time.monotonic()
    for thread in threads:
        thread.start()
    previous = stats.snapshot()
    try:
        while time.monotonic() - started < args.duration:
            time.sleep(min(args.interval, max(0.0, args.duration - (time.monotonic() - started))))
            now = stats.snapshot()
            memory = rss(server.pid) + sum(rss(kid) for kid in children(server.pid))
            row: dict[str, float] = {"t": round(time.monotonic() - started, 1),
                                     "rss_mib": round(memory / 2**20, 2),
                                     "ka_rps": (now["ka_ok"] - previous["ka_ok"]) / args.interval,
                                     "idle_rps": (now["idle_ok"] - previous["idle_ok"])
                                     / args.interval}
            for key in (*ERROR_KEYS, "ka_ok", "idle_ok", "probe_ok", "slowloris_408",
                        "slowloris_closed", "disconnects", "worker_kills"):
                row[key] = now[key]
            rows.append(row)
            previous = now
            print(f"t={row['t']:6.1f}s rss={row['rss_mib']:7.1f} MiB "
                  f"ka={row['ka_rps']:7.0f}/s idle_ok={now['idle_ok']} "
                  f"slow_cut={now['slowloris_408'] + now['slowloris_closed']} "
                  f"disc={now['disconnects']} kills={now['worker_kills']} "
                  f"errors={ {k: now[k] for k in ERROR_KEYS if now[k]} }", flush=True)
    finally:
        stop.set()
        for thread in threads:
            thread.join(70 if thread.name and args.wrk else 20)
        exit_code = stop_server(server)
        with contextlib.suppress(OSError):
            shutil.copy(workdir / "server.log", args.out / "server.log")
        shutil.rmtree(workdir, ignore_errors=True)

    final = stats.snapshot()
    wrk_requests, wrk_errors = wrk_summary(wrk_out.get("stdout", ""))
    if args.wrk:
        final["wrk_errors"] = wrk_errors
        (args.out / "wrk.txt").write_text(wrk_out.get("stdout", ""))
    with open(args.out / "soak.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["t"])
        writer.writeheader()
        writer.writerows(rows)
    warm = [r["rss_mib"] for r in rows if r["t"] >= min(60.0, args.duration / 4)]
    errors = {k: final[k] for k in ERROR_KEYS if final[k]}
    probe_avg = final["probe_ms_total"] / max(1, final["probe_ok"])
    mode = f"gateway --workers {args.workers}" if args.gateway else (
        f"serve --workers {args.workers}")
    summary = (
        f"soak {mode} {args.duration:.0f} s: keep-alive {final['ka_ok']} ok, "
        f"idle pool {args.idle} conns {final['idle_ok']} ok, "
        f"slowloris {args.slowloris} conns cut {final['slowloris_408']} x 408 + "
        f"{final['slowloris_closed']} closes, {final['disconnects']} random disconnects, "
        f"{final['worker_kills']} worker kills, probe {final['probe_ok']} ok avg "
        f"{probe_avg:.1f} ms"
        + (f", wrk {wrk_requests} requests" if args.wrk else "")
        + f"; errors {errors or 0}"
        + (f" ({stats.errors_after_kills()} within 3 s after a worker kill)" if errors else "")
        + "; RSS after warm-up "
        f"{min(warm, default=0):.1f}-{max(warm, default=0):.1f} MiB; server exit {exit_code}"
    )
    (args.out / "summary.txt").write_text(summary + "\n")
    try:
        plot(rows, args.out / "soak.png", f"zmqhttp soak: {mode}, {args.duration:.0f} s", summary)
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
    print(summary)
    return 1 if errors or exit_code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
