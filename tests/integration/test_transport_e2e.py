"""The ZMQ_STREAM edge end to end: backpressure, connection cap, addresses, binds."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import httpx
import pytest

from rawhttp import Environ, Reader, StartResponse, connect, simple_app, wait_for
from zmqhttp.testing import ServerThread

Serve = Callable[..., ServerThread]

CHUNK = 64 * 1024


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def test_slow_reader_does_not_stall_others_and_is_bounded(serve: Serve) -> None:
    produced = [0]
    closed = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/fast":
            start_response("200 OK", [("Content-Length", "4")])
            return [b"fast"]

        def stream() -> Iterator[bytes]:
            try:
                block = b"x" * CHUNK
                for _ in range(4096):  # 256 MiB if nobody pushed back
                    produced[0] += CHUNK
                    yield block
            finally:
                closed.set()

        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return stream()

    server = serve(app, sndhwm=4, output_high_water=256 * 1024, timeout_linger=0.2)
    rss_before = _rss_bytes()
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(5)
    slow.connect(("127.0.0.1", server.port))
    slow.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    # The producer stops once the queues are full: FlowControl makes write() wait.
    assert wait_for(lambda: produced[0] > 0)
    stable = produced[0]
    for _ in range(20):
        time.sleep(0.1)
        if produced[0] == stable:
            break
        stable = produced[0]
    time.sleep(0.3)
    assert produced[0] == stable, "the app kept producing for a client that never reads"
    # 256 KiB high water + 4 messages of <=64 KiB in libzmq + kernel buffers.
    assert produced[0] < 16 * 1024 * 1024
    assert _rss_bytes() - rss_before < 64 * 1024 * 1024
    # Other clients are not held up by the stuck one.
    for _ in range(20):
        started = time.monotonic()
        resp = httpx.get(f"{server.url}/fast", timeout=5)
        assert resp.content == b"fast"
        assert time.monotonic() - started < 0.5
    # The stuck client leaves: the generator is closed, the connection forgotten.
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    slow.close()
    assert closed.wait(5)
    assert wait_for(lambda: server.server.connection_count == 0)


def test_connection_cap_rejects_with_503(serve: Serve) -> None:
    server = serve(simple_app(b"ok"), limit_connections=2, timeout_linger=0.5)
    held = [connect(server.port) for _ in range(2)]
    readers = [Reader(s) for s in held]
    for sock, reader in zip(held, readers, strict=True):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reader.response().status == 200
    extra = connect(server.port)
    extra_reader = Reader(extra)
    resp = extra_reader.response()
    assert resp.status == 503
    assert resp.header("retry-after") == "1"
    assert resp.header("connection") == "close"
    assert extra_reader.at_eof(timeout=3)
    extra.close()
    # The held ones still work; once one leaves, a new client gets in.
    held[0].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert readers[0].response().body == b"ok"
    held[1].close()
    assert wait_for(lambda: server.server.connection_count == 1)
    again = connect(server.port)
    again.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert Reader(again).response().status == 200
    again.close()
    held[0].close()


def remote_addr_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    body = f"{environ['REMOTE_ADDR']}|{environ['SERVER_NAME']}|{environ['SERVER_PORT']}"
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body.encode()]


def test_remote_addr_from_peer_address(serve: Serve) -> None:
    server = serve(remote_addr_app)
    resp = httpx.get(server.url, timeout=5)
    assert resp.text == f"127.0.0.1|127.0.0.1|{server.port}"


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this host")
def test_ipv6_bind(serve: Serve) -> None:
    server = serve(remote_addr_app, bind=["tcp://[::1]:0"])
    assert server.server.endpoints[0].startswith("tcp://[::1]:")
    sock = connect(server.port, host="::1")
    sock.sendall(b"GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n")
    resp = Reader(sock).response()
    assert resp.body.decode() == f"::1|::1|{server.port}"
    sock.close()


def test_two_binds_both_serve(serve: Serve) -> None:
    server = serve(remote_addr_app, bind=["tcp://127.0.0.1:0", "127.0.0.1:0"])
    ports = [int(e.rsplit(":", 1)[1]) for e in server.server.endpoints]
    assert len(ports) == 2 and ports[0] != ports[1]
    for port in ports:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.read().startswith(b"127.0.0.1|")
        conn.close()


def test_connection_churn_does_not_wedge(serve: Serve) -> None:
    """Clients that connect and vanish at once (RST) never hang the server."""
    server = serve(simple_app(b"ok"))
    for i in range(300):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.connect(("127.0.0.1", server.port))
        if i % 2:
            sock.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.close()
    resp = httpx.get(server.url, timeout=5)
    assert resp.content == b"ok"
    assert wait_for(lambda: server.server.connection_count == 0)
