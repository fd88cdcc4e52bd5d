"""Big bodies through the worker fabric: is each process's memory bounded?

One command (from the repository root, with the project's venv):

    .venv/bin/python bench/fabric_transfer.py                  (256 MiB and 1 GiB, WSGI)
    .venv/bin/python bench/fabric_transfer.py --sizes 64M,1G --interfaces wsgi,asgi
    .venv/bin/python bench/fabric_transfer.py --sizes 64M,256M --download-rate 50  (slow reader)

For each interface and size it starts, on loopback and random free ports, a
``zmqhttp gateway --fabric tcp://...`` process and one ``zmqhttp worker`` process
serving this file's app (separate processes), warms them up, then

* uploads SIZE bytes (``POST /upload``, Content-Length framing) which the app
  reads in pieces and counts, and
* downloads SIZE bytes (``GET /download?n=SIZE``) which the app produces in
  pieces,

with a client on a raw socket that only ever holds one 1 MiB buffer. A sampler
thread reads ``VmRSS`` of the gateway, the worker and the client from
``/proc/PID/status`` every 50 ms; the report gives, per process and direction,
the peak RSS above the RSS just before the transfer, the RSS when idle and the
``VmHWM`` at the end, the throughput, the bytes the gateway wrote to files
(``wchar``: its request-body spill) and the CPU seconds each server used. If
memory is bounded the peaks do not grow with SIZE (compare the rows of two
sizes); the bounds are worked out in docs/protocol.md, "Memory bounds". Linux
only (``/proc``); every wait has a timeout and every process is stopped by its
PID.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from procs import free_port, stop

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
MIB = 1024 * 1024
#: Piece size the app reads and writes, and the client's one buffer.
APP_PIECE = 64 * 1024
CLIENT_BUFFER = 1 * MIB
_PATTERN = bytes(range(256)) * (APP_PIECE // 256)


# -- the application (imported by the worker process as fabric_transfer:...) -----------


def _size(query: str) -> int:
    return int(parse_qs(query).get("n", ["0"])[0])


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``POST /upload``: count the body; ``GET /download?n=N``: N bytes in pieces."""
    if environ["PATH_INFO"] == "/upload":
        stream = environ["wsgi.input"]
        total = 0
        while piece := stream.read(APP_PIECE):
            total += len(piece)
        body = b"%d\n" % total
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    size = _size(environ.get("QUERY_STRING", ""))
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(size))])
    return _pieces(size)


def _pieces(size: int) -> Iterator[bytes]:
    while size > 0:
        piece = _PATTERN if size >= APP_PIECE else _PATTERN[:size]
        size -= len(piece)
        yield piece


async def asgi_app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                   send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """The same two endpoints in ASGI."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/upload":
        total = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            total += len(message.get("body", b""))
            more = bool(message.get("more_body"))
        body = b"%d\n" % total
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        return
    size = _size(scope["query_string"].decode())
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", b"%d" % size)]})
    for piece in _pieces(size):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


# -- memory sampling -------------------------------------------------------------------


def read_status(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as status:
        text = status.read()
    rss = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    hwm = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    if rss is None or hwm is None:
        raise RuntimeError(f"no VmRSS/VmHWM for pid {pid}")
    return int(rss.group(1)) * 1024, int(hwm.group(1)) * 1024


def written(pid: int) -> int:
    """Bytes ``pid`` passed to write() so far (``wchar``): here, what it spilled to disk."""
    with open(f"/proc/{pid}/io") as io:
        match = re.search(r"^wchar:\s+(\d+)", io.read(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """Samples VmRSS of some processes every ``interval`` s on a thread, keeping the peak."""

    def __init__(self, pids: dict[str, int], interval: float = 0.05) -> None:
        self.pids = pids
        self.interval = interval
        self.peaks: dict[str, int] = dict.fromkeys(pids, 0)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            rss, _ = read_status(pid)
            self.peaks[name] = max(self.peaks[name], rss)
        self.samples += 1


# -- the client -------------------------------------------------------------------------


def read_head(sock: socket.socket) -> tuple[int, int, bytes]:
    """(status, content-length, body bytes already read) of the next response."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before the response head: {data!r}")
        data += chunk
        if len(data) > 65536:
            raise ConnectionError("response head too long")
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
    if match is None:
        raise ConnectionError(f"no Content-Length in {head!r}")
    return status, int(match.group(1)), rest


def upload(port: int, size: int, buffer: memoryview) -> int:
    """POST ``size`` bytes from ``buffer`` over and over; returns the count the app saw."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: bench\r\n"
                     b"Content-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\n\r\n" % size)
        left = size
        while left:
            piece = buffer[:min(left, len(buffer))]
            sock.sendall(piece)
            left -= len(piece)
        status, length, rest = read_head(sock)
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    if status != 200:
        raise RuntimeError(f"upload answered {status}: {rest!r}")
    return int(rest)


def download(port: int, size: int, buffer: memoryview, rate: float = 0.0) -> int:
    """GET ``size`` bytes into ``buffer`` over and over; returns the count received.

    Args:
        rate: read at most this many bytes per second (0: as fast as possible),
            to make the client the bottleneck, so that output queues fill.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.sendall(b"GET /download?n=%d HTTP/1.1\r\nHost: bench\r\n\r\n" % size)
        status, length, rest = read_head(sock)
        if status != 200 or length != size:
            raise RuntimeError(f"download answered {status} with length {length}")
        got = len(rest)
        started = time.monotonic()
        step = min(len(buffer), 64 * 1024) if rate else len(buffer)
        while got < length:
            n = sock.recv_into(buffer, min(step, length - got))
            if not n:
                raise ConnectionError(f"connection closed after {got} of {length} bytes")
            got += n
            if rate:
                ahead = got / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    return got


def get_status(port: int, path: str) -> int:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
                         % path.encode())
            return read_head(sock)[0]
    except (OSError, ValueError):
        return 0


# -- one run ----------------------------------------------------------------------------


@dataclass
class Phase:
    seconds: float
    baseline: dict[str, int]
    peak: dict[str, int]
    #: Bytes each process wrote to files during the phase (the body spill).
    spilled: dict[str, int]
    #: CPU seconds each process used during the phase.
    cpu: dict[str, float]

    def above(self, name: str) -> int:
        return self.peak[name] - self.baseline[name]


@dataclass
class Run:
    interface: str
    size: int
    phases: dict[str, Phase] = field(default_factory=dict)
    #: RSS once ready, before the warm-up; VmHWM at the end.
    idle: dict[str, int] = field(default_factory=dict)
    hwm: dict[str, int] = field(default_factory=dict)


def start_processes(interface: str, log_dir: str) -> tuple[int, list[subprocess.Popen[bytes]]]:
    port, fabric_port = free_port(), free_port()
    fabric = f"tcp://127.0.0.1:{fabric_port}"
    common = ["--log-level", "warning"]
    gateway_log = open(os.path.join(log_dir, "gateway.log"), "ab")  # noqa: SIM115
    worker_log = open(os.path.join(log_dir, "worker.log"), "ab")  # noqa: SIM115
    gateway = subprocess.Popen(
        [sys.executable, "-m", "zmqhttp", "gateway", "--bind", f"127.0.0.1:{port}",
         "--fabric", fabric, "--no-access-log", *common],
        stdout=gateway_log, stderr=gateway_log)
    worker = subprocess.Popen(
        [sys.executable, "-m", "zmqhttp", "worker", f"fabric_transfer:{interface}_app",
         "--connect", fabric, "--app-dir", BENCH_DIR, "--interface", interface, *common],
        stdout=worker_log, stderr=worker_log)
    gateway_log.close()
    worker_log.close()
    procs = [gateway, worker]
    deadline = time.monotonic() + 20
    while get_status(port, "/readyz") != 200:
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            for proc in procs:
                if proc.poll() is None:
                    stop(proc)
            raise RuntimeError(f"gateway and worker did not become ready (logs in {log_dir})")
        time.sleep(0.1)
    return port, procs


def measure(interface: str, size: int, warmup: int, log_dir: str, rate: float) -> Run:
    port, procs = start_processes(interface, log_dir)
    pids = {"gateway": procs[0].pid, "worker": procs[1].pid, "client": os.getpid()}
    buffer = memoryview(bytearray(_PATTERN * (CLIENT_BUFFER // len(_PATTERN))))
    run = Run(interface, size)
    try:
        run.idle = {n: read_status(p)[0] for n, p in pids.items()}
        # Warm-up: thread pools, allocator arenas, libzmq pipes reach their working size.
        if upload(port, warmup, buffer) != warmup or download(port, warmup, buffer) != warmup:
            raise RuntimeError("warm-up transfer incomplete")
        transfers: dict[str, Callable[[int, int, memoryview], int]] = {
            "upload": upload,
            "download": lambda p, n, b: download(p, n, b, rate),
        }
        for name, transfer in transfers.items():
            baseline = {n: read_status(p)[0] for n, p in pids.items()}
            wrote = {n: written(p) for n, p in pids.items()}
            cpu = {n: cpu_seconds(p) for n, p in pids.items()}
            started = time.perf_counter()
            with Sampler(pids) as sampler:
                count = transfer(port, size, buffer)
            elapsed = time.perf_counter() - started
            if count != size:
                raise RuntimeError(f"{name}: {count} of {size} bytes")
            spilled = {n: written(p) - wrote[n] for n, p in pids.items()}
            used = {n: cpu_seconds(p) - cpu[n] for n, p in pids.items()}
            run.phases[name] = Phase(elapsed, baseline, dict(sampler.peaks), spilled, used)
        run.hwm = {n: read_status(p)[1] for n, p in pids.items()}
    finally:
        for proc in procs:
            stop(proc)
    return run


# -- report -----------------------------------------------------------------------------


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if match is None:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 256M, 1G)")
    number, unit = match.groups()
    return int(number) * {"": 1, "K": 1024, "M": MIB, "G": 1024 * MIB}[unit]


def mib(value: float) -> str:
    return f"{value / MIB:.1f}"


def report(runs: list[Run]) -> None:
    print("\nPeak RSS above the RSS just before each transfer (MiB), sampled every 50 ms;"
          " RSS when idle (before the warm-up) -> VmHWM at the end of the run (MiB).\n")
    print("| app | size | direction | MiB/s | gateway peak | worker peak | client peak |"
          " gateway idle -> HWM | worker idle -> HWM | gateway wrote to disk |"
          " CPU s gateway/worker |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for run in runs:
        for name, phase in run.phases.items():
            print(f"| {run.interface} | {mib(run.size)} MiB | {name} | "
                  f"{run.size / MIB / phase.seconds:.0f} | "
                  f"{mib(phase.above('gateway'))} | {mib(phase.above('worker'))} | "
                  f"{mib(phase.above('client'))} | "
                  f"{mib(run.idle['gateway'])} -> {mib(run.hwm['gateway'])} | "
                  f"{mib(run.idle['worker'])} -> {mib(run.hwm['worker'])} | "
                  f"{mib(phase.spilled['gateway'])} | "
                  f"{phase.cpu['gateway']:.1f} / {phase.cpu['worker']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="256M,1G",
                        help="comma-separated transfer sizes (K, M, G suffixes)")
    parser.add_argument("--interfaces", default="wsgi", help="wsgi, asgi or wsgi,asgi")
    parser.add_argument("--warmup", type=parse_size, default=parse_size("16M"))
    parser.add_argument("--log-dir", default=None, help="where the servers' logs go")
    parser.add_argument("--download-rate", type=float, default=0.0,
                        help="MiB/s the client reads downloads at (default: unlimited); a "
                             "slow reader makes the gateway's output queue the bottleneck")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    log_dir = args.log_dir or os.path.join("/tmp", f"zmqhttp-fabric-transfer-{os.getpid()}")
    os.makedirs(log_dir, exist_ok=True)
    runs: list[Run] = []
    for interface in args.interfaces.split(","):
        for size in sizes:
            run = measure(interface, size, args.warmup, log_dir, args.download_rate * MIB)
            runs.append(run)
            for name, phase in run.phases.items():
                print(f"{interface} {mib(size)} MiB {name}: {phase.seconds:.1f} s, "
                      f"gateway +{mib(phase.above('gateway'))} MiB, "
                      f"worker +{mib(phase.above('worker'))} MiB", file=sys.stderr)
    report(runs)
    print(f"\nserver logs: {log_dir}")


if __name__ == "__main__":
    main()
