"""The fabric wire protocol: round trips, golden bytes, rejections, fuzz.

The invariant, h11's: ``decode`` returns a message or raises
FabricProtocolError, whatever the frames, never any other exception.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zmqhttp.fabric.protocol as protocol_module
from zmqhttp.errors import FabricError, FabricProtocolError
from zmqhttp.fabric import (
    MAX_METADATA_SIZE,
    REVISION,
    SIGNATURE,
    VERSION,
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
    Response,
    ResponseBody,
    ResponseCredit,
    ResponseEnd,
    ResponseHead,
    Side,
    decode,
    encode,
)

HEAD = RequestHead(
    id=7, method=b"POST", target=b"/upload?x=1", path=b"/upload", query=b"x=1",
    headers=[(b"host", b"a.test"), (b"content-length", b"5")], http_version="1.1",
    scheme="http", client=("10.0.0.2", 0), server=("127.0.0.1", 8000), root_path="",
    content_length=5, expect_continue=True, response_window=65536)

#: From a gateway of revision 1: it takes a whole Response (key V).
HEAD_R1 = replace(HEAD, revision=1)

READY = Ready(name="host-a:4242", pid=4242, capacity=8, revision=0, app="app:main",
              body_window=65536)

MESSAGES: list[Message] = [
    Heartbeat(),
    Goodbye(),
    HEAD,
    RequestHead(
        id=2**64 - 1, method=b"GET", target=b"*", path=b"*", query=b"", headers=[],
        http_version="1.0", scheme="https", client=("::1", 65535), server=("", 0),
        root_path="/api", content_length=None, expect_continue=False, response_window=0),
    RequestHead(
        id=3, method=b"GET", target=b"/", path=b"/", query=b"", headers=[],
        http_version="1.1", scheme="http", client=("10.0.0.2", 0), server=("", 80),
        root_path="", content_length=0, expect_continue=False, response_window=4096,
        revision=1),
    RequestBody(id=7, data=b"hello"),
    RequestBody(id=0, data=b""),
    RequestEnd(id=7, trailers=[]),
    RequestEnd(id=8, trailers=[(b"x-checksum", b"abc")]),
    Cancel(id=7, reason=CancelReason.CLIENT_GONE),
    Cancel(id=7, reason=CancelReason.TIMEOUT),
    Cancel(id=7, reason=CancelReason.SHUTDOWN),
    Cancel(id=7, reason=CancelReason.PROTOCOL_ERROR),
    ResponseCredit(id=7, size=65536),
    READY,
    Credit(slots=1),
    Continue(id=7),
    BodyCredit(id=7, size=1),
    ResponseHead(id=7, status=200, headers=[(b"Content-Type", b"text/plain")]),
    ResponseHead(id=7, status=599, headers=[], reason=b"Custom"),
    ResponseBody(id=7, data=bytes(range(256)) * 4),
    ResponseEnd(id=7, trailers=[]),
    ResponseEnd(id=7, trailers=[(b"grpc-status", b"0")], aborted=True),
    Response(id=7, status=200, headers=[(b"Content-Length", b"5")], data=b"hello"),
    Response(id=2**64 - 1, status=999, headers=[], reason=b"Custom", data=b"", credit=3),
]

WORKER_TYPES = (Ready, Credit, Continue, BodyCredit, ResponseHead, ResponseBody, ResponseEnd,
                Response)
#: Keys a message may leave out (added by a revision; absent means its default).
OPTIONAL_KEYS = {(RequestHead, "V")}
GATEWAY_TYPES = (RequestHead, RequestBody, RequestEnd, Cancel, ResponseCredit)


def frames_of(fields: dict[str, Any], *body: bytes) -> list[bytes]:
    return [SIGNATURE, msgpack.packb(fields), *body]


def fields_of(message: Message) -> dict[str, Any]:
    meta: dict[str, Any] = msgpack.unpackb(encode(message)[1])
    return meta


def rejected(frames: list[bytes], match: str = "") -> FabricProtocolError:
    with pytest.raises(FabricProtocolError, match=match) as info:
        decode(frames)
    return info.value


# --- round trips -----------------------------------------------------------------


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_is_exact(message: Message) -> None:
    decoded = decode(encode(message))
    assert decoded == message
    assert type(decoded) is type(message)


def test_every_message_type_is_covered() -> None:
    covered = {type(m) for m in MESSAGES}
    assert covered == set(GATEWAY_TYPES) | set(WORKER_TYPES) | {Heartbeat, Goodbye}


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_frame_count_is_two_or_three_with_a_body(message: Message) -> None:
    frames = encode(message)
    assert frames[0] == SIGNATURE
    if isinstance(message, RequestBody | ResponseBody | Response):
        assert frames[2] == message.data  # raw, never inside msgpack
        assert len(frames) == 3
    else:
        assert len(frames) == 2


def test_decoded_headers_are_the_http_layer_type() -> None:
    decoded = decode(encode(HEAD))
    assert isinstance(decoded, RequestHead)
    assert type(decoded.headers) is list
    assert all(type(pair) is tuple for pair in decoded.headers)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_sender_restriction(message: Message) -> None:
    frames = encode(message)
    if isinstance(message, Heartbeat | Goodbye):
        allowed = {Side.GATEWAY, Side.WORKER}
    elif isinstance(message, WORKER_TYPES):
        allowed = {Side.WORKER}
    else:
        allowed = {Side.GATEWAY}
    for side in Side:
        if side in allowed:
            assert decode(frames, sender=side) == message
        else:
            with pytest.raises(FabricProtocolError, match=f"by the {side.value}"):
                decode(frames, sender=side)


def test_unknown_keys_are_ignored() -> None:
    """Later revisions of version 1 may add optional keys."""
    fields = fields_of(HEAD)
    fields["zz"] = [1, {"nested": b"x"}]
    assert decode(frames_of(fields)) == HEAD


# --- golden encodings: the format cannot drift silently ---------------------------


def test_golden_request_head() -> None:
    assert [frame.hex() for frame in encode(HEAD)] == [
        "5a484601",
        "8fa1740aa16907a16dc404504f5354a175c40b2f75706c6f61643f783d31a170c4072f75706c"
        "6f6164a171c403783d31a1689292c404686f7374c406612e7465737492c40e636f6e74656e74"
        "2d6c656e677468c40135a176a3312e31a173a468747470a16392a831302e302e302e3200a161"
        "92a93132372e302e302e31cd1f40a172a0a16c05a178c3a177ce00010000",
    ]


def test_request_head_revision_is_optional_and_defaults_to_zero() -> None:
    """Revision 1 adds key V to RequestHead; a revision-0 gateway sends none."""
    assert "V" not in fields_of(HEAD)  # revision 0: the bytes of revision 0
    fields = fields_of(HEAD)
    fields["V"] = 1
    decoded = decode(frames_of(fields))
    assert isinstance(decoded, RequestHead)
    assert decoded.revision == 1
    assert decoded == HEAD_R1


def test_golden_response() -> None:
    frames = encode(Response(id=7, status=200, headers=[(b"a", b"b")], data=b"hi", credit=1))
    assert frames == [b"ZHF\x01",
                      bytes.fromhex("86a1741ba16907a173ccc8a1689192c40161c40162a172c400"
                                    "a16301"),
                      b"hi"]


def test_response_is_a_new_type_a_revision_0_peer_rejects() -> None:
    """An older decoder fails cleanly on type 27: why it is only sent to revision >= 1."""
    assert REVISION >= 1
    assert Response.TYPE == 27


def test_golden_response_body() -> None:
    frames = encode(ResponseBody(id=7, data=b"hello"))
    assert frames == [b"ZHF\x01", bytes.fromhex("82a17419a16907"), b"hello"]


def test_signature_is_magic_and_version() -> None:
    assert SIGNATURE == b"ZHF\x01"
    assert VERSION == 1


# --- rejections --------------------------------------------------------------------


def test_error_is_a_fabric_error() -> None:
    assert issubclass(FabricProtocolError, FabricError)


@pytest.mark.parametrize("frames", [[], [SIGNATURE]], ids=["none", "signature-only"])
def test_too_few_frames(frames: list[bytes]) -> None:
    rejected(frames, "at least 2")


@pytest.mark.parametrize("version", [0, 2, 255])
def test_other_version_is_named(version: int) -> None:
    frames = encode(Heartbeat())
    frames[0] = b"ZHF" + bytes([version])
    rejected(frames, f"version {version}")


@pytest.mark.parametrize(
    "signature", [b"", b"ZHF", b"ZHF\x01\x00", b"zhf\x01", b"HTTP", b"\x00\x00\x00\x01"])
def test_foreign_signature(signature: bytes) -> None:
    frames = encode(Heartbeat())
    frames[0] = signature
    rejected(frames, "not a zmqhttp fabric message")


def test_signature_is_checked_before_metadata() -> None:
    rejected([b"ZHF\x02", b"\xc1 not msgpack"], "version 2")


@pytest.mark.parametrize(
    "meta",
    [
        b"",
        b"\xc1",  # the one byte msgpack never uses
        bytes.fromhex("82a17419a169"),  # truncated
        bytes.fromhex("82a17419a16907") + b"\x00",  # trailing data
        b"\xa2\xff\xfe",  # str that is not UTF-8
        b"\x91" * 5000 + b"\x00",  # nesting deeper than the unpacker's stack
        b"\x81\x01\x02",  # map key that is an integer
        b"\x81\x91\x01\x02",  # map key that is an array
    ],
    ids=["empty", "c1", "truncated", "trailing", "bad-utf8", "deep", "int-key", "array-key"],
)
def test_not_msgpack(meta: bytes) -> None:
    rejected([SIGNATURE, meta], "not valid msgpack")


@pytest.mark.parametrize(
    "value", [[1, 2], "t", b"t", 1, None, True, 1.5], ids=repr)
def test_metadata_must_be_a_map(value: object) -> None:
    rejected([SIGNATURE, msgpack.packb(value)], "not a map")


@pytest.mark.parametrize("code", [0, 3, 9, 15, 19, 28, 127, -1, 2**64 - 1])
def test_unknown_type(code: int) -> None:
    rejected(frames_of({"t": code}), "unknown message type")


@pytest.mark.parametrize("code", ["1", b"\x01", True, 1.0, None, [1]], ids=repr)
def test_type_of_wrong_kind(code: object) -> None:
    rejected(frames_of({"t": code}), "unknown message type")


def test_missing_type() -> None:
    rejected(frames_of({"i": 1}), "unknown message type None")


@pytest.mark.parametrize(
    "message", [m for m in MESSAGES if not isinstance(m, Heartbeat | Goodbye)],
    ids=lambda m: type(m).__name__)
def test_every_missing_key_is_rejected(message: Message) -> None:
    fields = fields_of(message)
    body = encode(message)[2:]
    for key in fields.keys() - {"t"}:
        if (type(message), key) in OPTIONAL_KEYS:
            continue
        partial = {k: v for k, v in fields.items() if k != key}
        rejected(frames_of(partial, *body), f"missing key '{key}'")


# (message, key, a value of the wrong type or out of range)
WRONG_VALUES = [
    (HEAD, "i", -1),
    (HEAD, "i", 1.0),
    (HEAD, "i", True),
    (HEAD, "i", "7"),
    (HEAD, "m", "POST"),  # str, not bin
    (HEAD, "u", None),
    (HEAD, "p", 1),
    (HEAD, "q", ["x"]),
    (HEAD, "h", {}),
    (HEAD, "h", b"host: a"),
    (HEAD, "h", [[b"host"]]),
    (HEAD, "h", [[b"host", b"a", b"b"]]),
    (HEAD, "h", [["host", b"a"]]),
    (HEAD, "h", [[b"host", "a"]]),
    (HEAD, "h", [b"host", b"a"]),
    (HEAD, "h", [[b"a", b"b"], None]),
    (HEAD, "v", b"1.1"),
    (HEAD, "s", 1),
    (HEAD, "c", None),
    (HEAD, "c", ["10.0.0.2"]),
    (HEAD, "c", [b"10.0.0.2", 0]),
    (HEAD, "c", ["10.0.0.2", 65536]),
    (HEAD, "c", ["10.0.0.2", -1]),
    (HEAD, "c", ["10.0.0.2", 0, 0]),
    (HEAD, "a", "127.0.0.1:8000"),
    (HEAD, "r", None),
    (HEAD, "l", -5),
    (HEAD, "l", "5"),
    (HEAD, "l", False),
    (HEAD, "x", 1),
    (HEAD, "x", None),
    (HEAD, "w", -1),
    (RequestEnd(id=1, trailers=[]), "h", None),
    (Cancel(id=1, reason=CancelReason.TIMEOUT), "k", 0),
    (Cancel(id=1, reason=CancelReason.TIMEOUT), "k", 5),
    (Cancel(id=1, reason=CancelReason.TIMEOUT), "k", True),
    (Cancel(id=1, reason=CancelReason.TIMEOUT), "k", "timeout"),
    (ResponseCredit(id=1, size=1), "n", 0),
    (ResponseCredit(id=1, size=1), "n", -4),
    (BodyCredit(id=1, size=1), "n", 0),
    (Credit(slots=1), "n", 0),
    (Credit(slots=1), "n", True),
    (READY, "n", b"w1"),  # Ready name
    (READY, "P", -1),
    (READY, "k", None),
    (READY, "V", "0"),
    (READY, "a", None),
    (READY, "w", 1.5),
    (ResponseHead(id=1, status=200, headers=[]), "s", 100),
    (ResponseHead(id=1, status=200, headers=[]), "s", 199),
    (ResponseHead(id=1, status=200, headers=[]), "s", 1000),
    (ResponseHead(id=1, status=200, headers=[]), "s", "200"),
    (ResponseHead(id=1, status=200, headers=[]), "r", "OK"),
    (ResponseEnd(id=1, trailers=[]), "a", 0),
    (ResponseEnd(id=1, trailers=[]), "h", [[b"a"]]),
    (Response(id=1, status=200, headers=[]), "i", -1),
    (Response(id=1, status=200, headers=[]), "s", 100),
    (Response(id=1, status=200, headers=[]), "s", 1000),
    (Response(id=1, status=200, headers=[]), "s", True),
    (Response(id=1, status=200, headers=[]), "h", [[b"a", 1]]),
    (Response(id=1, status=200, headers=[]), "h", None),
    (Response(id=1, status=200, headers=[]), "r", "OK"),
    (Response(id=1, status=200, headers=[]), "c", -1),
    (Response(id=1, status=200, headers=[]), "c", True),
    (Response(id=1, status=200, headers=[]), "c", None),
    (Response(id=1, status=200, headers=[]), "c", 1.0),
    (HEAD_R1, "V", -1),
    (HEAD_R1, "V", "1"),
    (HEAD_R1, "V", None),
    (HEAD_R1, "V", True),
    (Continue(id=1), "i", None),
]


@pytest.mark.parametrize(
    ("message", "key", "value"), WRONG_VALUES,
    ids=[f"{type(m).__name__}-{k}-{v!r}" for m, k, v in WRONG_VALUES])
def test_wrong_value_is_rejected(message: Message, key: str, value: object) -> None:
    fields = fields_of(message)
    assert key in fields
    fields[key] = value
    rejected(frames_of(fields, *encode(message)[2:]), f"key '{key}' must be")


def test_ext_types_are_rejected() -> None:
    fields = fields_of(Continue(id=1))
    fields["i"] = msgpack.ExtType(1, b"\x07")
    rejected(frames_of(fields), "key 'i' must be")


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_extra_or_missing_body_frame(message: Message) -> None:
    frames = encode(message)
    rejected([*frames, b"extra"], "frames, expected")
    if len(frames) == 3:
        rejected(frames[:2], "frames, expected")


def test_huge_metadata_is_rejected_before_parsing() -> None:
    fields = fields_of(HEAD)
    fields["h"] = [[b"x-pad", b"p" * 1024]] * (MAX_METADATA_SIZE // 1024)
    frames = frames_of(fields)
    assert len(frames[1]) > MAX_METADATA_SIZE
    rejected(frames, "over the")
    # Garbage of that size is refused by its length alone, not by msgpack.
    rejected([SIGNATURE, b"\xc1" * (MAX_METADATA_SIZE + 1)], "over the")


def test_metadata_at_the_bound_is_accepted() -> None:
    fields = fields_of(Continue(id=1))
    fields["pad"] = b"p" * MAX_METADATA_SIZE
    overhead = len(msgpack.packb(fields)) - MAX_METADATA_SIZE  # same bin32 header
    fields["pad"] = b"p" * (MAX_METADATA_SIZE - overhead)
    frames = frames_of(fields)
    assert len(frames[1]) == MAX_METADATA_SIZE
    assert decode(frames) == Continue(id=1)


def test_encode_refuses_oversized_metadata() -> None:
    head = ResponseHead(id=1, status=200,
                        headers=[(b"set-cookie", b"c" * 4096)] * (MAX_METADATA_SIZE // 4096))
    with pytest.raises(FabricProtocolError, match="over the"):
        encode(head)


def test_protocol_module_is_sans_io() -> None:
    # The source beside the module: in the compiled build __file__ is the
    # mypyc extension (.so); the wheel ships protocol.py next to it.
    source = Path(protocol_module.__file__).parent / "protocol.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert not roots & {"zmq", "asyncio", "threading", "socket"}


# --- fuzz ------------------------------------------------------------------------

FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats() | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=3) | st.binary(max_size=3), children, max_size=4),
    max_leaves=20,
)
KEYS = sorted({key for m in MESSAGES for key in fields_of(m)})


def check_invariant(frames: list[bytes]) -> None:
    try:
        message = decode(frames)
    except FabricProtocolError:
        return
    assert decode(encode(message)) == message


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_fuzz_arbitrary_frames(frames: list[bytes]) -> None:
    check_invariant(frames)


@FUZZ
@given(st.binary(max_size=200), st.lists(st.binary(max_size=8), max_size=2))
def test_fuzz_arbitrary_metadata(meta: bytes, body: list[bytes]) -> None:
    check_invariant([SIGNATURE, meta, *body])


@FUZZ
@given(
    st.sampled_from([m.TYPE for m in MESSAGES]),
    st.dictionaries(st.sampled_from(KEYS), msgpack_values, max_size=16),
    st.lists(st.binary(max_size=8), max_size=2),
)
def test_fuzz_well_formed_maps_of_wrong_shapes(
        code: int, fields: dict[str, object], body: list[bytes]) -> None:
    check_invariant(frames_of({**fields, "t": code}, *body))


@FUZZ
@given(st.sampled_from(MESSAGES), st.data())
def test_fuzz_mutated_valid_messages(message: Message, data: st.DataObject) -> None:
    frames = encode(message)
    fields = fields_of(message)
    key = data.draw(st.sampled_from(sorted(fields)))
    fields[key] = data.draw(msgpack_values)
    check_invariant(frames_of(fields, *frames[2:]))
    meta = bytearray(frames[1])
    if meta:
        index = data.draw(st.integers(0, len(meta) - 1))
        meta[index] = data.draw(st.integers(0, 255))
        check_invariant([frames[0], bytes(meta), *frames[2:]])
        check_invariant([frames[0], frames[1][:index], *frames[2:]])


headers_strategy = st.lists(
    st.tuples(st.binary(max_size=16), st.binary(max_size=32)), max_size=8)
addresses = st.tuples(st.text(max_size=16), st.integers(0, 65535))
uint64 = st.integers(0, 2**64 - 1)
request_heads = st.builds(
    RequestHead, id=uint64, method=st.binary(max_size=8), target=st.binary(max_size=32),
    path=st.binary(max_size=16), query=st.binary(max_size=16), headers=headers_strategy,
    http_version=st.sampled_from(["1.0", "1.1"]), scheme=st.sampled_from(["http", "https"]),
    client=addresses, server=addresses, root_path=st.text(max_size=8),
    content_length=st.none() | uint64, expect_continue=st.booleans(), response_window=uint64,
    revision=uint64)
response_heads = st.builds(
    ResponseHead, id=uint64, status=st.integers(200, 999), headers=headers_strategy,
    reason=st.binary(max_size=16))
responses = st.builds(
    Response, id=uint64, status=st.integers(200, 999), headers=headers_strategy,
    reason=st.binary(max_size=16), data=st.binary(max_size=64), credit=uint64)


@FUZZ
@given(request_heads | response_heads | responses)
def test_round_trip_property(message: RequestHead | ResponseHead | Response) -> None:
    assert decode(encode(message)) == message
