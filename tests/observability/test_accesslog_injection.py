"""Log injection: nothing a client sends can forge or break an access log line.

Every client-controlled atom (request line, path, query, any request header)
is escaped: control characters (C0, DEL and C1, which includes NEL, U+0085, a
line break to some log viewers), ``"`` and ``\\`` become ``\\xNN``. So a line is
one line, and the quotes in the format are the only quotes in it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawhttp import Reader, connect, simple_app
from zmqhttp.config import DEFAULT_ACCESS_LOG_FORMAT
from zmqhttp.observability.accesslog import escape
from zmqhttp.testing import ServerThread

UNSAFE = re.compile(r'[\x00-\x1f\x7f-\x9f]')
FORMAT = DEFAULT_ACCESS_LOG_FORMAT + ' "%(U)s" "%(q)s" "%({x-evil}i)s"'
QUOTES = FORMAT.count('"')

VECTORS = [
    b'User-Agent: evil" 200 "forged\\\r\n',
    b"User-Agent: tab\there\r\n",
    b"Referer: nel\x85csi\x9b[31mred\xa0nbsp\xff\r\n",
    b"X-Evil: \x1b[2J\x1b]0;title\x07\r\n",
    b"X-Evil: del\x7fnul\x00\r\n",
    b"X-Evil: cr\rlf\r\n",
    b"X-Evil: " + bytes(range(0x20, 0x7f)) + bytes(range(0x80, 0x100)) + b"\r\n",
]
TARGETS = [
    b'/path"quote?q="x"',
    b"/a\\b?c=\\d",
    b"/%0d%0aInjected:%20yes?x=%0a",
    b"/nel\x85?q=\x9b",
    b"/esc\x1b[0m",
]


@pytest.fixture
def server(caplog: pytest.LogCaptureFixture) -> Iterator[ServerThread]:
    caplog.set_level(logging.INFO, logger="zmqhttp.access")
    with ServerThread(simple_app(b"ok"), access_log=True, access_log_format=FORMAT,
                      timeout_linger=0.2) as thread:
        yield thread


def exchange(port: int, data: bytes) -> int:
    sock = connect(port, timeout=5)
    try:
        sock.sendall(data)
        return Reader(sock).response().status
    except (TimeoutError, EOFError, ConnectionResetError):
        return 0
    finally:
        sock.close()


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "zmqhttp.access"]


def assert_safe(line: str) -> None:
    assert not UNSAFE.search(line), repr(line)
    assert "\n" not in line and "\r" not in line
    assert line.count('"') == QUOTES, repr(line)


@pytest.mark.parametrize("field", VECTORS, ids=range(len(VECTORS)))
def test_header_values_are_escaped(server: ServerThread, caplog: pytest.LogCaptureFixture,
                                   field: bytes) -> None:
    request = b"GET /x HTTP/1.1\r\nHost: h\r\n" + field + b"Connection: close\r\n\r\n"
    status = exchange(server.port, request)
    lines = access_lines(caplog)
    if status != 200:  # refused by the parser: whatever was logged is still safe
        assert all(UNSAFE.search(line) is None for line in lines)
        return
    assert len(lines) == 1
    assert_safe(lines[0])


@pytest.mark.parametrize("target", TARGETS, ids=range(len(TARGETS)))
def test_request_targets_are_escaped(server: ServerThread, caplog: pytest.LogCaptureFixture,
                                     target: bytes) -> None:
    request = b"GET " + target + b" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    status = exchange(server.port, request)
    lines = access_lines(caplog)
    if status != 200:
        assert all(UNSAFE.search(line) is None for line in lines)
        return
    assert len(lines) == 1
    assert_safe(lines[0])


def test_a_forged_line_stays_inside_its_quotes(server: ServerThread,
                                               caplog: pytest.LogCaptureFixture) -> None:
    forged = b'x" 200 2 "-" "-"\n127.0.0.1 - - [01/Jan/2000:00:00:00 +0000] "GET /admin'
    request = (b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: " + forged.replace(b"\n", b" ")
               + b"\r\nConnection: close\r\n\r\n")
    assert exchange(server.port, request) == 200
    [line] = access_lines(caplog)
    assert_safe(line)
    assert '\\x22 200 2 \\x22-\\x22' in line


@given(st.text(alphabet=st.characters(max_codepoint=0xFF)))
def test_escape_leaves_no_control_quote_or_lone_backslash(text: str) -> None:
    escaped = escape(text)
    assert not UNSAFE.search(escaped)
    assert '"' not in escaped
    # Every backslash starts an \xNN escape, so the original is recoverable.
    assert re.fullmatch(r'(?:[^\\]|\\x[0-9a-f]{2})*', escaped)
    unescaped = re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), escaped)
    assert unescaped == text
