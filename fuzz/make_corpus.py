"""Write the seed corpora in ``fuzz/corpus/http`` and ``fuzz/corpus/fabric``.

Strategy: seeds are what the fuzzer mutates first, so they cover every path
by construction: plain, chunked, pipelined and upgrade requests (fed whole,
byte by byte and in odd splits, under each limits profile) for the HTTP core,
and one valid encoded message of every type (from ``encode``) for the fabric
decoder. File names are stable, so running this again rewrites the same files.

Usage: ``.venv/bin/python fuzz/make_corpus.py``
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from layout import (
    FLAG_ACCEPT_WEBSOCKET,
    FLAG_SHUTDOWN,
    POLICY_CONTINUE,
    POLICY_EARLY,
    POLICY_READ_WEBSOCKET,
    pack_fabric,
    pack_http,
)

from zmqhttp.fabric.protocol import (
    BodyCredit,
    Cancel,
    CancelReason,
    Continue,
    Credit,
    Goodbye,
    Heartbeat,
    Message,
    Ready,
    RequestBody,
    RequestEnd,
    RequestHead,
    ResponseBody,
    ResponseCredit,
    ResponseEnd,
    ResponseHead,
    encode,
)

HERE = Path(__file__).resolve().parent

GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
REQUESTS: dict[str, bytes] = {
    "get": GET,
    "get-1.0-keep-alive": b"GET /a?b=c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "head-close": b"HEAD /h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "post-length": b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "post-expect": b"POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                   b"Content-Length: 3\r\n\r\nabc",
    "chunked-trailers": b"PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n",
    "options-asterisk": b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "absolute-form": b"GET http://example.com:81/p?q HTTP/1.1\r\nHost: b\r\n\r\n",
    "upgrade-h2c-body": b"POST /u HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n"
                        b"Upgrade: h2c\r\nContent-Length: 2\r\n\r\nhi",
    "pipelined": GET + b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok"
                 + b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "pipelined-chunked": b"POST /1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3\r\nabc\r\n0\r\n\r\n" + GET + GET,
    "close-then-more": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + GET,
    "many-fields": b"GET / HTTP/1.1\r\nHost: a\r\n"
                   + b"".join(b"X-%d: %s\r\n" % (i, b"v" * i) for i in range(12)) + b"\r\n",
    # Requests the server must refuse, and smuggling shapes.
    "missing-host": b"GET / HTTP/1.1\r\n\r\n",
    "te-in-1.0": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl-and-te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "double-cl": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "te-gzip": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "connect": b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    "http2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "long-target": b"GET /" + b"x" * 300 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    "endless-field": b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 1500,
}


def ws_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (RFC 6455 §5.2), payload under 126 bytes."""
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + mask + masked


WS_HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)
WS_FRAMES = (
    ws_frame(1, b"hello") + ws_frame(2, b"\x00\xff", fin=False) + ws_frame(0, b"more")
    + ws_frame(9, b"ping") + ws_frame(8, b"\x03\xe8bye")
)
UPGRADES: dict[str, bytes] = {
    "websocket": WS_HANDSHAKE + WS_FRAMES,
    "websocket-bad-version": WS_HANDSHAKE.replace(b"Version: 13", b"Version: 8"),
    "websocket-then-http": WS_HANDSHAKE + GET,
}

# (name, flags, split, policies)
VARIANTS = [
    ("whole", 0, (0, 0), b"\x00\x00\x00"),
    ("bytewise", 0, (1, 1), bytes([0, 1, 2])),
    ("split-7-3-small", 1, (7, 3), bytes([3, 4, 7])),
    ("tiny-early", 2, (16, 5), bytes([POLICY_EARLY, POLICY_CONTINUE | 5, 6])),
    ("shutdown", FLAG_SHUTDOWN, (0, 0), bytes([1, 0, 0])),
]


def http_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    for name, payload in REQUESTS.items():
        for variant, flags, split, policies in VARIANTS:
            seeds[f"{name}-{variant}"] = pack_http(
                payload, flags=flags, split=split, policies=policies)
    read = bytes([POLICY_READ_WEBSOCKET] * 3)
    for name, payload in UPGRADES.items():
        for variant, flags, split in (("whole", 0, (0, 0)), ("split", 1, (9, 2))):
            seeds[f"{name}-{variant}"] = pack_http(
                payload, flags=flags | FLAG_ACCEPT_WEBSOCKET, split=split, policies=read)
        seeds[f"{name}-refused"] = pack_http(payload)
    return seeds


MESSAGES: list[Message] = [
    Heartbeat(),
    Goodbye(),
    RequestHead(id=1, method=b"POST", target=b"/p?q=1", path=b"/p", query=b"q=1",
                headers=[(b"host", b"a"), (b"content-length", b"5")], http_version="1.1",
                scheme="http", client=("127.0.0.1", 50000), server=("0.0.0.0", 8000),
                root_path="", content_length=5, expect_continue=True,
                response_window=65536),
    RequestHead(id=2**64 - 1, method=b"GET", target=b"/", path=b"/", query=b"", headers=[],
                http_version="1.0", scheme="https", client=("::1", 0), server=("h", 65535),
                root_path="/app", content_length=None, expect_continue=False,
                response_window=0),
    RequestBody(id=1, data=b"hello"),
    RequestEnd(id=1, trailers=[(b"t", b"1")]),
    Cancel(id=1, reason=CancelReason.CLIENT_GONE),
    Cancel(id=7, reason=CancelReason.PROTOCOL_ERROR),
    ResponseCredit(id=1, size=4096),
    Ready(name="host:123", pid=123, capacity=4, revision=0, app="app:app", body_window=65536),
    Credit(slots=1),
    Continue(id=1),
    BodyCredit(id=1, size=1),
    ResponseHead(id=1, status=200, headers=[(b"Content-Type", b"text/plain")], reason=b""),
    ResponseHead(id=3, status=999, headers=[], reason=b"Odd"),
    ResponseBody(id=1, data=b"ok"),
    ResponseEnd(id=1, trailers=[], aborted=False),
    ResponseEnd(id=2, trailers=[(b"x", b"y")], aborted=True),
]


def fabric_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    for index, message in enumerate(MESSAGES):
        frames = encode(message)
        name = f"{index:02d}-{type(message).__name__}"
        for sender in (0, 1, 2):
            seeds[f"{name}-s{sender}"] = pack_fabric(frames, sender=sender)
        seeds[f"{name}-raw"] = pack_fabric(frames, with_signature=False)
    return seeds


def write(directory: Path, seeds: dict[str, bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (directory / f"{name}.bin").write_bytes(data)
    print(f"{directory.relative_to(HERE.parent)}: {len(seeds)} seeds, "
          f"digest {hashlib.sha256(b''.join(sorted(seeds.values()))).hexdigest()[:12]}")


def main() -> None:
    os.chdir(HERE)
    write(HERE / "corpus" / "http", http_seeds())
    write(HERE / "corpus" / "fabric", fabric_seeds())


if __name__ == "__main__":
    main()
