"""Process helpers shared by the benchmark scripts: ports, readiness, stopping by PID,
and the resident memory of a process tree (Linux ``/proc``).

Servers are started in their own session (``start_group``) so that stopping one
signals its process group — the group we created — and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

__all__ = [
    "RssSampler",
    "free_port",
    "raise_nofile",
    "start_group",
    "stop",
    "stop_group",
    "tree_pids",
    "tree_rss_kib",
    "wait_listening",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float = 15.0,
                   proc: subprocess.Popen[Any] | None = None) -> None:
    """Return once 127.0.0.1:port accepts; raise TimeoutError, or RuntimeError
    at once if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"server on port {port} did not start in {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    """Graceful stop by PID, then kill if it does not exit in 10 s."""
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def raise_nofile(want: int = 65536) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``want`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def start_group(argv: Sequence[str], cwd: str | None = None,
                log: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new session and process group."""
    return subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=log or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                            start_new_session=True)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM,
               timeout: float = 5.0) -> None:
    """Signal the group ``start_group`` made, wait up to ``timeout``, then SIGKILL
    whatever is left of that group (forked workers included)."""
    pgid = proc.pid
    if proc.poll() is None:
        _signal_group(pgid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    _signal_group(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parens: fields follow the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(name))
    return children


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children = _ppid_map()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(pid: int, pids: Sequence[int] | None = None) -> int:
    """Summed VmRSS (KiB) of ``pid``'s tree (pages shared after fork count twice)."""
    return sum(_rss_kib(p) for p in (pids if pids is not None else tree_pids(pid)))


class RssSampler:
    """Samples a process tree's RSS every ``interval`` s in a thread; ``peak_kib``.

    The tree is re-discovered every ``rescan`` s (scanning /proc costs more
    than reading a few status files).
    """

    def __init__(self, pid: int, interval: float = 0.1, rescan: float = 1.0) -> None:
        self.pid, self.interval, self.rescan = pid, interval, rescan
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pids, scanned = tree_pids(self.pid), time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - scanned > self.rescan:
                pids, scanned = tree_pids(self.pid), time.monotonic()
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.pid, pids))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
