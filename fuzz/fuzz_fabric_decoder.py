"""Coverage-guided fuzzing of the fabric wire decoder (atheris + libFuzzer).

Strategy: each input is a control byte and length-prefixed frames
(``layout.py``); the control byte picks the sender side ``decode`` checks
against and may put the valid signature frame in front, so mutations are
spent on the msgpack metadata rather than on guessing four magic bytes.

Invariant: :func:`zmqhttp.fabric.protocol.decode` returns a message or raises
:class:`FabricProtocolError`, never any other exception; metadata over
``MAX_METADATA_SIZE`` is refused. A message it accepts survives a round trip
(``decode(encode(m)) == m``), has the type the sender may send, and its
fields hold the values the wire spec allows (unsigned ids, 200-999 statuses,
ports that fit 16 bits, header pairs of bytes).

Usage::

    .venv/bin/python fuzz/fuzz_fabric_decoder.py -atheris_runs=N [corpus_dir ...]
    .venv/bin/python fuzz/fuzz_fabric_decoder.py fuzz/crashes/crash-...   # replay one

Not with ``python -O``: the invariants are ``assert`` statements.
"""

from __future__ import annotations

import sys

import atheris
from layout import fabric_input

with atheris.instrument_imports(include=["zmqhttp.fabric.protocol", "msgpack"]):
    from zmqhttp.errors import FabricProtocolError
    from zmqhttp.fabric.protocol import (
        _DECODERS,
        MAX_METADATA_SIZE,
        SIGNATURE,
        Message,
        RequestHead,
        ResponseHead,
        Side,
        decode,
        encode,
    )

SENDERS = (None, Side.GATEWAY, Side.WORKER)
UINT64_MAX = 2**64 - 1


def check_fields(message: Message) -> None:
    """The values a decoded message may hold (``docs/protocol.md``)."""
    for name in ("id", "size", "slots", "pid", "capacity", "revision", "body_window",
                 "response_window"):
        value = getattr(message, name, 0)
        assert type(value) is int and 0 <= value <= UINT64_MAX, (name, value)
    for name in ("headers", "trailers"):
        headers = getattr(message, name, [])
        assert type(headers) is list, (name, type(headers))
        for pair in headers:
            assert type(pair) is tuple and len(pair) == 2, pair
            assert type(pair[0]) is bytes and type(pair[1]) is bytes, pair
    if isinstance(message, ResponseHead):
        assert 200 <= message.status <= 999
    if isinstance(message, RequestHead):
        for host, port in (message.client, message.server):
            assert type(host) is str and 0 <= port <= 0xFFFF


def test_one_input(data: bytes) -> None:
    spec = fabric_input(data, SIGNATURE)
    sender = SENDERS[spec.sender]
    try:
        message = decode(spec.frames, sender)
    except FabricProtocolError:
        return
    assert len(spec.frames) in (2, 3)
    assert spec.frames[0] == SIGNATURE
    assert len(spec.frames[1]) <= MAX_METADATA_SIZE
    _, has_body, sides = _DECODERS[message.TYPE]
    assert len(spec.frames) == (3 if has_body else 2)
    assert sender is None or sender in sides
    check_fields(message)
    again = decode(encode(message), sender)
    assert again == message, (again, message)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
