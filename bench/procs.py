"""Process helpers shared by the benchmark scripts: ports, readiness, stopping by PID."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

__all__ = ["free_port", "stop", "wait_listening"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"server on port {port} did not start")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    """Graceful stop by PID, then kill if it does not exit in 10 s."""
    proc.send_signal(sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
