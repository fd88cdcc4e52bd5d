"""WebSocket echo round trips per second: one client, one connection, on loopback.

The server is a separate process (``python -m zmqhttp serve ws_echo:app``, or
uvicorn with ``--server uvicorn`` if it is installed) so the client does not
share its GIL; the client is a bare wsproto loop over a blocking socket, which
sends one message and waits for its echo before the next (latency-bound, the
way a chat or RPC client uses a WebSocket).

    python bench/ws_echo.py                     (3 s, 16-byte text messages)
    python bench/ws_echo.py --duration 5 --size 1024 --binary
    python bench/ws_echo.py --server uvicorn

Every read has a timeout and the server is stopped by its PID.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from procs import free_port, stop
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Message, Request, TextMessage

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
              send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """Echoes every message back (ASGI websocket scope only)."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


def server_command(server: str, port: int) -> list[str]:
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "ws_echo:app", "--port", str(port),
                "--no-access-log", "--log-level", "warning", "--lifespan", "off",
                "--app-dir", BENCH_DIR]
    return [sys.executable, "-m", "zmqhttp", "serve", "ws_echo:app", "--bind",
            f"127.0.0.1:{port}", "--no-access-log", "--log-level", "warning",
            "--lifespan", "off", "--app-dir", BENCH_DIR]


def connect_when_listening(port: int, timeout: float = 15.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"server on port {port} did not start") from None
            time.sleep(0.1)
        else:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock


def next_message(sock: socket.socket, ws: WSConnection) -> Any:
    while True:
        for event in ws.events():
            if isinstance(event, (AcceptConnection, Message)):
                return event
            raise RuntimeError(f"unexpected event {event!r}")
        data = sock.recv(65536)
        if not data:
            raise EOFError("server closed the connection")
        ws.receive_data(data)


def echo_loop(port: int, duration: float, size: int, binary: bool) -> tuple[int, float]:
    """Round trips completed in ``duration`` seconds (after a short warm-up)."""
    sock = connect_when_listening(port)
    ws = WSConnection(ConnectionType.CLIENT)
    try:
        sock.sendall(ws.send(Request(host="127.0.0.1", target="/")))
        if not isinstance(next_message(sock, ws), AcceptConnection):
            raise RuntimeError("handshake failed")
        event: BytesMessage | TextMessage = (
            BytesMessage(data=b"x" * size) if binary else TextMessage(data="x" * size)
        )
        for _ in range(200):  # warm-up
            sock.sendall(ws.send(event))
            next_message(sock, ws)
        count = 0
        started = time.perf_counter()
        end = started + duration
        while True:
            sock.sendall(ws.send(event))
            reply = next_message(sock, ws)
            assert len(reply.data) == size
            count += 1
            if count % 64 == 0 and time.perf_counter() >= end:
                break
        return count, time.perf_counter() - started
    finally:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=16, help="message size in bytes")
    parser.add_argument("--binary", action="store_true", help="binary instead of text")
    parser.add_argument("--server", choices=["zmqhttp", "uvicorn"], default="zmqhttp")
    args = parser.parse_args()
    port = free_port()
    proc = subprocess.Popen(server_command(args.server, port), cwd=BENCH_DIR)
    try:
        count, elapsed = echo_loop(port, args.duration, args.size, args.binary)
    finally:
        stop(proc, signal.SIGTERM)
    kind = "binary" if args.binary else "text"
    print(f"{args.server}: {count / elapsed:,.0f} echo round trips/s "
          f"({count} in {elapsed:.2f} s, {args.size}-byte {kind} messages, one connection)")


if __name__ == "__main__":
    main()
