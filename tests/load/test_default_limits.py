"""Header, body and time limits are on by default, at the values docs/security.md states.

The server is ``python -m zmqhttp serve`` with no limit flags at all, so this is
what a deployment that sets nothing gets.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest
from loadkit import ServerProc, running

from rawhttp import Reader, connect
from zmqhttp.config import Config

KIB, MIB, GIB = 2**10, 2**20, 2**30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    with running(tmp_path_factory.mktemp("limits")) as proc:
        yield proc


def test_documented_defaults() -> None:
    config = Config()
    assert config.limit_request_line == 8 * KIB
    assert config.limit_request_head == 64 * KIB
    assert config.limit_request_fields == 100
    assert config.limit_request_field_size == 8190
    assert config.limit_request_body == 1 * GIB
    assert config.limit_pipeline == 256 * KIB
    assert config.limit_connections is None
    assert config.body_buffer == 1 * MIB
    assert config.output_high_water == 256 * KIB
    assert (config.sndhwm, config.rcvhwm) == (64, 256)
    assert config.timeout_request_header == 10.0
    assert config.timeout_request_body == 30.0
    assert config.timeout_keep_alive == 5.0
    assert config.timeout_linger == 2.0
    assert config.timeout_graceful_shutdown == 30.0
    assert config.timeout_send == 60.0
    assert (config.ws_max_size, config.ws_max_queue) == (16 * MIB, 256)
    assert config.fabric_insecure is False


def answer(port: int, data: bytes) -> tuple[int, bool]:
    """Send ``data``; the status of the answer and whether it ends the connection.

    (Not waiting for the close itself: after an error to a request not read
    whole the server lingers for the client to close first, 2 s by default.)
    """
    sock = connect(port, timeout=10)
    try:
        # The server may answer and close while we are still sending.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        reader = Reader(sock)
        resp = reader.head()
        reader.body(resp)
        return resp.status, resp.header("connection") == "close"
    finally:
        sock.close()


def fields(count: int, size: int) -> bytes:
    """``count`` field lines of ``size`` bytes each (name, ": ", value, CRLF)."""
    return b"".join(b"X-F%03d: " % i + b"v" * (size - 9) + b"\r\n" for i in range(count))


def test_a_normal_request_passes(server: ServerProc) -> None:
    assert answer(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == (200, False)


def test_head_block_over_64_kib_is_431(server: ServerProc) -> None:
    # 9 fields of 8000 bytes: each under the field limit, 72,000 bytes in all.
    data = b"GET / HTTP/1.1\r\nHost: x\r\n" + fields(9, 8000) + b"\r\n"
    assert answer(server.port, data) == (431, True)


def test_head_just_under_64_kib_passes(server: ServerProc) -> None:
    data = (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fields(7, 8000) + b"\r\n")
    assert len(data) < 64 * KIB
    assert answer(server.port, data)[0] == 200


def test_field_over_8190_bytes_is_431(server: ServerProc) -> None:
    data = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 8200 + b"\r\n\r\n"
    assert answer(server.port, data) == (431, True)


def test_more_than_100_fields_is_431(server: ServerProc) -> None:
    data = b"GET / HTTP/1.1\r\nHost: x\r\n" + fields(100, 20) + b"\r\n"
    assert answer(server.port, data) == (431, True)


def test_target_over_8_kib_is_414(server: ServerProc) -> None:
    data = b"GET /" + b"a" * (8 * KIB) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert answer(server.port, data) == (414, True)


def test_declared_body_over_1_gib_is_413_at_once(server: ServerProc) -> None:
    data = (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (GIB + 1)
            + b"x" * 1000)
    started = time.monotonic()
    assert answer(server.port, data) == (413, True)
    assert time.monotonic() - started < 5  # not after reading a gibibyte


def test_body_of_1_gib_is_not_413_by_its_declaration(server: ServerProc) -> None:
    """At the limit the body is accepted (the server waits for it)."""
    sock = connect(server.port, timeout=10)
    try:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % GIB)
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            sock.recv(1024)
    finally:
        sock.close()

