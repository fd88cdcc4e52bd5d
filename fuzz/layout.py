"""How a fuzz input is cut up: shared by the harnesses and the corpus generator.

Strategy: a few leading control bytes steer the harness (limits, how the
bytes are split, how the simulated application answers); the rest is the
payload. Control bytes sit at fixed offsets so that libFuzzer's mutations of
one of them change one decision, and a seed is just ``control + payload``.
No atheris import here: ``make_corpus.py`` and the tests use it without it.

HTTP core input::

    byte 0   flags: bits 0-1 limits profile (0 default, 1 small, 2-3 tiny),
             bit 2 accept WebSocket upgrades with a 101,
             bit 3 refuse keep-alive (server shutdown) after the first response
    byte 1   first chunk size (0: the payload is fed whole)
    byte 2   second chunk size (chunks alternate the two sizes; 0 counts as 1)
    byte 3-5 one policy byte per request, cycled (see POLICY_* below)
    rest     the bytes the client sends

Fabric decoder input::

    byte 0   sender: 0 any, 1 gateway, 2 worker (mod 3); bit 7: the harness
             puts the valid signature frame in front (so mutations are spent
             on the metadata, not on guessing four magic bytes)
    rest     frames, each a 2-byte big-endian length and that many bytes; a
             last frame shorter than its length takes what is left
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FLAG_ACCEPT_WEBSOCKET",
    "FLAG_SHUTDOWN",
    "HTTP_CONTROL",
    "POLICY_CONTINUE",
    "POLICY_EARLY",
    "POLICY_KINDS",
    "POLICY_READ_WEBSOCKET",
    "FabricInput",
    "HttpInput",
    "fabric_input",
    "http_input",
    "pack_fabric",
    "pack_http",
]

HTTP_CONTROL = 6
FLAG_ACCEPT_WEBSOCKET = 0x04
FLAG_SHUTDOWN = 0x08
#: Policy bits 0-2: the kind of response (see the HTTP harness's ``respond``).
POLICY_KINDS = 8
#: Policy bit 3: answer as soon as the request head arrives, before its body.
POLICY_EARLY = 0x08
#: Policy bit 4: send ``100 Continue`` first (it goes out only if awaited).
POLICY_CONTINUE = 0x10
#: Policy bit 5: after a 101 the application reads its messages (else they pile up).
POLICY_READ_WEBSOCKET = 0x20

FABRIC_SIGNATURE_FLAG = 0x80


@dataclass(frozen=True, slots=True)
class HttpInput:
    profile: int
    accept_websocket: bool
    shutdown: bool
    chunks: list[bytes]
    policies: bytes


def http_input(data: bytes) -> HttpInput:
    """Decode a fuzz input for the HTTP core harness."""
    control = data[:HTTP_CONTROL].ljust(HTTP_CONTROL, b"\0")
    payload = data[HTTP_CONTROL:]
    flags, first, second = control[0], control[1], control[2]
    return HttpInput(
        profile=min(flags & 0x03, 2),
        accept_websocket=bool(flags & FLAG_ACCEPT_WEBSOCKET),
        shutdown=bool(flags & FLAG_SHUTDOWN),
        chunks=_split(payload, first, second),
        policies=bytes(control[3:HTTP_CONTROL]),
    )


def _split(payload: bytes, first: int, second: int) -> list[bytes]:
    if first == 0 or not payload:
        return [payload] if payload else []
    sizes = (first, max(second, 1))
    chunks: list[bytes] = []
    pos = turn = 0
    while pos < len(payload):
        size = sizes[turn % 2]
        chunks.append(payload[pos : pos + size])
        pos += size
        turn += 1
    return chunks


def pack_http(payload: bytes, *, flags: int = 0, split: tuple[int, int] = (0, 0),
              policies: bytes = b"\0\0\0") -> bytes:
    """A seed: the control bytes, then ``payload``."""
    assert len(policies) == HTTP_CONTROL - 3
    return bytes([flags, split[0], split[1]]) + policies + payload


@dataclass(frozen=True, slots=True)
class FabricInput:
    sender: int  # 0 any, 1 gateway, 2 worker
    frames: list[bytes]


def fabric_input(data: bytes, signature: bytes) -> FabricInput:
    """Decode a fuzz input for the fabric decoder harness."""
    if not data:
        return FabricInput(0, [])
    control, rest = data[0], memoryview(data)[1:]
    frames: list[bytes] = [signature] if control & FABRIC_SIGNATURE_FLAG else []
    while len(rest) >= 2:
        size = int.from_bytes(rest[:2], "big")
        frames.append(bytes(rest[2 : 2 + size]))
        rest = rest[2 + size :]
    if len(rest):
        frames.append(bytes(rest))
    return FabricInput((control & 0x7F) % 3, frames)


def pack_fabric(frames: list[bytes], *, sender: int = 0, with_signature: bool = True) -> bytes:
    """A seed: ``frames`` (the first one dropped if the harness adds it back)."""
    if with_signature:
        frames = frames[1:]
    control = sender | (FABRIC_SIGNATURE_FLAG if with_signature else 0)
    return bytes([control]) + b"".join(len(f).to_bytes(2, "big") + f for f in frames)
