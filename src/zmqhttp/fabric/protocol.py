"""The fabric wire protocol, version 1: messages between gateway and workers.

Strategy: sans-IO, like ``http/``. One frozen, slotted dataclass per message;
:func:`encode` turns a message into ZeroMQ frames and :func:`decode` turns
frames back into a message or raises :class:`FabricProtocolError`, never any
other exception (the fuzz invariant of h11). The specification, and the rules
for the dispatcher and worker built on top, are in ``docs/protocol.md``.

Every message is ``[SIGNATURE, metadata, *body]`` (a ROUTER socket adds the
peer's identity frame in front; that frame is not ours):

- frame 0 is ``b"ZHF" + bytes([VERSION])``, compared before anything is
  parsed, so a peer of another version is told apart from garbage cheaply;
- frame 1 is a msgpack map with one-letter keys; ``"t"`` is the message type;
- body bytes travel as one raw extra frame (only in :class:`RequestBody`,
  :class:`ResponseBody` and :class:`Response`), never inside msgpack, so they are never copied
  into or out of a msgpack buffer.

Decoding is strict about types (``bin`` is not ``str``, ``true`` is not
``1``) and ignores map keys it does not know: a later revision of version 1
may add optional keys without breaking older peers (see ``revision`` in
:class:`Ready`). Header lists are ``list[tuple[bytes, bytes]]``, the same
``Headers`` type the HTTP layer uses, so nothing is converted on either side.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NoReturn

import msgpack  # type: ignore[import-untyped]

from zmqhttp.errors import FabricProtocolError
from zmqhttp.http.events import Headers

__all__ = [
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_LIVENESS",
    "MAX_METADATA_SIZE",
    "REVISION",
    "SIGNATURE",
    "VERSION",
    "BodyCredit",
    "Cancel",
    "CancelReason",
    "Continue",
    "Credit",
    "Goodbye",
    "Heartbeat",
    "Message",
    "Ready",
    "RequestBody",
    "RequestEnd",
    "RequestHead",
    "Response",
    "ResponseBody",
    "ResponseCredit",
    "ResponseEnd",
    "ResponseHead",
    "Side",
    "decode",
    "encode",
]

#: Wire version. Any change an older peer would misread bumps it; peers of
#: different versions do not talk (the signature frame differs).
VERSION = 1
#: Revision within :data:`VERSION`: bumped when something older peers can
#: safely ignore is added (optional keys), or a message type that is only
#: sent to a peer that announced the revision knowing it. Revision 1 adds
#: :class:`Response` and ``RequestHead.revision`` (key ``V``) announcing it.
REVISION = 1
#: Frame 0 of every message: magic ``ZHF`` ("zmqhttp fabric") and the version.
SIGNATURE = b"ZHF" + bytes([VERSION])
#: Largest metadata frame, in bytes. A request head reaches 64 KiB by default
#: (``Limits.max_head``); its msgpack form adds 2-6 bytes per field, so 128 KiB
#: holds any default-sized head with room to spare. It is far above nginx's
#: 4-8 KiB ``proxy_buffer_size`` for upstream response heads, and it bounds
#: what a hostile peer can make us parse before we reject its message.
MAX_METADATA_SIZE = 128 * 1024
#: Seconds between heartbeats a peer sends while it has sent nothing else.
#: One second is ZeroMQ's Paranoid Pirate default: a lost worker is noticed
#: within seconds at a cost of one tiny message per second per idle link.
HEARTBEAT_INTERVAL = 1.0
#: A peer silent (no message at all) for this many intervals is lost.
HEARTBEAT_LIVENESS = 3

_UINT16_MAX = 0xFFFF


class Side(enum.Enum):
    """Which end of the fabric sent a message."""

    #: The HTTP edge: binds the ROUTER socket, owns client connections.
    GATEWAY = "gateway"
    #: A worker process: connects a DEALER socket, runs the application.
    WORKER = "worker"


class CancelReason(enum.IntEnum):
    """Why the gateway abandoned a request (:class:`Cancel`)."""

    #: The HTTP client disconnected.
    CLIENT_GONE = 1
    #: A gateway deadline expired (the response took too long).
    TIMEOUT = 2
    #: The gateway is shutting down and stopped waiting.
    SHUTDOWN = 3
    #: The worker broke the protocol for this request (e.g. sent more response
    #: body than its credit); the client got a 502 or a closed connection.
    PROTOCOL_ERROR = 4


class _Typed:
    """Base of every message: declares ``TYPE``, the message's type code.

    Each message sets ``X.TYPE = code`` after its class, not ``TYPE:
    ClassVar[int] = code`` in the body, because mypyc hands every class-body
    assignment of a compiled dataclass to ``dataclasses`` as an annotated field,
    ClassVar or not (mypyc/mypyc#1122): the code would become an ``__init__``
    argument with a default ("non-default argument 'id' follows default
    argument"). A ClassVar declared without a value on a plain base class is
    not a field of its dataclass subclasses, in either build.
    """

    __slots__ = ()

    TYPE: ClassVar[int]


# --- messages sent by both sides ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Heartbeat(_Typed):
    """"I am alive": sent when nothing else was sent for an interval."""


Heartbeat.TYPE = 1


@dataclass(frozen=True, slots=True)
class Goodbye(_Typed):
    """The link ends. From a worker: take no new requests for me; I finish the
    ones I have, then disconnect. From the gateway: I do not know you (or am
    stopping); forget my requests, reconnect with a new socket and send Ready.
    """


Goodbye.TYPE = 2


# --- gateway -> worker ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestHead(_Typed):
    """A new request, assigned to the receiving worker (it takes one credit).

    Attributes:
        id: request id, unique per gateway run, unsigned 64-bit.
        method: the method token, e.g. ``b"GET"``.
        target: the request-target exactly as received.
        path: the path part of the target, still percent-encoded.
        query: the query without ``?``, possibly empty.
        headers: (lower-cased name, value) pairs in the order received.
        http_version: ``"1.0"`` or ``"1.1"``.
        scheme: ``"http"`` or ``"https"`` (behind a TLS proxy).
        client: (address, port) of the client; port 0 when unknown.
        server: (host, port) the gateway accepted the request on.
        root_path: mount point of the app (ASGI root_path, WSGI SCRIPT_NAME).
        content_length: body length in bytes (0: no body); ``None``: chunked,
            length unknown until :class:`RequestEnd`.
        expect_continue: the client waits for ``100 Continue``; no body is sent
            before the worker sends :class:`Continue`.
        response_window: response body bytes the worker may send before it
            receives any :class:`ResponseCredit`.
        revision: the :data:`REVISION` of version 1 the gateway implements
            (optional key ``V``, absent for 0). From 1 on, the worker may
            answer with a single :class:`Response`.
    """

    id: int
    method: bytes
    target: bytes
    path: bytes
    query: bytes
    headers: Headers
    http_version: str
    scheme: str
    client: tuple[str, int]
    server: tuple[str, int]
    root_path: str
    content_length: int | None
    expect_continue: bool
    response_window: int
    revision: int = 0


RequestHead.TYPE = 10


@dataclass(frozen=True, slots=True)
class RequestBody(_Typed):
    """A piece of the request body; its bytes consume body credit."""

    id: int
    data: bytes


RequestBody.TYPE = 11


@dataclass(frozen=True, slots=True)
class RequestEnd(_Typed):
    """The request body is complete (chunked trailers, if any, included).

    Not sent for a request whose ``content_length`` is 0: its head was all.
    """

    id: int
    trailers: Headers = field(default_factory=list)


RequestEnd.TYPE = 12


@dataclass(frozen=True, slots=True)
class Cancel(_Typed):
    """The gateway abandoned the request; it ignores anything more about it."""

    id: int
    reason: CancelReason


Cancel.TYPE = 13


@dataclass(frozen=True, slots=True)
class ResponseCredit(_Typed):
    """The worker may send ``size`` more response body bytes for ``id``."""

    id: int
    size: int


ResponseCredit.TYPE = 14


# --- worker -> gateway ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready(_Typed):
    """The worker's first message: who it is and how much it takes.

    Attributes:
        name: a human-readable worker name for logs (e.g. ``host:pid``).
        pid: the worker's process id, for logs.
        capacity: requests it takes at once: the initial request credit.
        revision: the :data:`REVISION` of version 1 the worker implements.
        app: the application it serves (``module:attr``), for logs.
        body_window: request body bytes the gateway may send per request
            before it receives any :class:`BodyCredit`.
    """

    name: str
    pid: int
    capacity: int
    revision: int
    app: str
    body_window: int


Ready.TYPE = 20


@dataclass(frozen=True, slots=True)
class Credit(_Typed):
    """``slots`` more requests may be sent to the worker (freed or added)."""

    slots: int


Credit.TYPE = 21


@dataclass(frozen=True, slots=True)
class Continue(_Typed):
    """The app started reading the body: send ``100 Continue`` and the body."""

    id: int


Continue.TYPE = 22


@dataclass(frozen=True, slots=True)
class BodyCredit(_Typed):
    """The gateway may send ``size`` more request body bytes for ``id``."""

    id: int
    size: int


BodyCredit.TYPE = 23


@dataclass(frozen=True, slots=True)
class ResponseHead(_Typed):
    """The final response's status (200-999) and fields.

    ``reason`` ``b""`` means the standard reason phrase for the status.
    """

    id: int
    status: int
    headers: Headers
    reason: bytes = b""


ResponseHead.TYPE = 24


@dataclass(frozen=True, slots=True)
class ResponseBody(_Typed):
    """A piece of the response body; its bytes consume response credit."""

    id: int
    data: bytes


ResponseBody.TYPE = 25


@dataclass(frozen=True, slots=True)
class ResponseEnd(_Typed):
    """The response is over.

    Attributes:
        trailers: trailer fields (sent only on a chunked response).
        aborted: the app failed after the head was sent: the response is
            incomplete and the gateway must close the client connection
            instead of ending the response normally.
    """

    id: int
    trailers: Headers = field(default_factory=list)
    aborted: bool = False


ResponseEnd.TYPE = 26


@dataclass(frozen=True, slots=True)
class Response(_Typed):
    """A whole response in one message (revision 1): head, body and end.

    Means ``ResponseHead`` + ``ResponseBody`` + ``ResponseEnd(aborted=false,
    no trailers)``, and saves the gateway two messages. Sent only to a gateway
    whose ``RequestHead.revision`` is at least 1, only as the first response
    message for the request, and only when ``body`` fits the initial response
    window (``RequestHead.w``); larger or streamed responses use the others.

    Attributes:
        credit: request slots returned with it (``Credit`` folded in; ``0``:
            none). A worker returns this request's slot here when its app has
            already returned by the time the response goes out.
    """

    id: int
    status: int
    headers: Headers
    reason: bytes = b""
    data: bytes = b""
    credit: int = 0


Response.TYPE = 27


Message = (
    Heartbeat
    | Goodbye
    | RequestHead
    | RequestBody
    | RequestEnd
    | Cancel
    | ResponseCredit
    | Ready
    | Credit
    | Continue
    | BodyCredit
    | ResponseHead
    | ResponseBody
    | ResponseEnd
    | Response
)

# --- encoding ------------------------------------------------------------------


def encode(message: Message) -> list[bytes]:
    """Frames for ``message``: signature, metadata, then the body frame if any.

    Raises:
        FabricProtocolError: the metadata would exceed :data:`MAX_METADATA_SIZE`
            (a response head too large to send; answer 500 instead).
    """
    fields, body = _ENCODERS[type(message)](message)
    meta: bytes = msgpack.packb(fields)
    if len(meta) > MAX_METADATA_SIZE:
        raise FabricProtocolError(
            f"{type(message).__name__} metadata is {len(meta)} bytes, "
            f"over the {MAX_METADATA_SIZE}-byte bound")
    if body is None:
        return [SIGNATURE, meta]
    return [SIGNATURE, meta, body]


_Encoded = tuple[dict[str, object], bytes | None]


def _enc_bare(message: Heartbeat | Goodbye) -> _Encoded:
    return {"t": message.TYPE}, None


def _enc_request_head(m: RequestHead) -> _Encoded:
    fields: dict[str, object] = {
        "t": 10, "i": m.id, "m": m.method, "u": m.target, "p": m.path, "q": m.query,
        "h": m.headers, "v": m.http_version, "s": m.scheme, "c": m.client,
        "a": m.server, "r": m.root_path, "l": m.content_length, "x": m.expect_continue,
        "w": m.response_window}
    if m.revision:  # optional: absent means revision 0 (and keeps 0's bytes)
        fields["V"] = m.revision
    return fields, None


def _enc_request_end(m: RequestEnd) -> _Encoded:
    return {"t": 12, "i": m.id, "h": m.trailers}, None


def _enc_continue(m: Continue) -> _Encoded:
    return {"t": 22, "i": m.id}, None


def _enc_body(m: RequestBody | ResponseBody) -> _Encoded:
    return {"t": m.TYPE, "i": m.id}, m.data


def _enc_size(m: ResponseCredit | BodyCredit) -> _Encoded:
    return {"t": m.TYPE, "i": m.id, "n": m.size}, None


def _enc_cancel(m: Cancel) -> _Encoded:
    return {"t": 13, "i": m.id, "k": m.reason.value}, None


def _enc_ready(m: Ready) -> _Encoded:
    return {"t": 20, "n": m.name, "P": m.pid, "k": m.capacity, "V": m.revision,
            "a": m.app, "w": m.body_window}, None


def _enc_credit(m: Credit) -> _Encoded:
    return {"t": 21, "n": m.slots}, None


def _enc_response_head(m: ResponseHead) -> _Encoded:
    return {"t": 24, "i": m.id, "s": m.status, "h": m.headers, "r": m.reason}, None


def _enc_response_end(m: ResponseEnd) -> _Encoded:
    return {"t": 26, "i": m.id, "h": m.trailers, "a": m.aborted}, None


def _enc_response(m: Response) -> _Encoded:
    return {"t": 27, "i": m.id, "s": m.status, "h": m.headers, "r": m.reason,
            "c": m.credit}, m.data


# Each entry takes exactly its own message type, which a dict keyed by type
# cannot express: hence Callable[[Any], ...].
_ENCODERS: dict[type, Callable[[Any], _Encoded]] = {
    Heartbeat: _enc_bare,
    Goodbye: _enc_bare,
    RequestHead: _enc_request_head,
    RequestBody: _enc_body,
    RequestEnd: _enc_request_end,
    Cancel: _enc_cancel,
    ResponseCredit: _enc_size,
    Ready: _enc_ready,
    Credit: _enc_credit,
    Continue: _enc_continue,
    BodyCredit: _enc_size,
    ResponseHead: _enc_response_head,
    ResponseBody: _enc_body,
    ResponseEnd: _enc_response_end,
    Response: _enc_response,
}

# --- decoding ------------------------------------------------------------------

_Fields = dict[object, object]


def decode(frames: Sequence[bytes], sender: Side | None = None) -> Message:
    """The message ``frames`` carry (without the ROUTER identity frame).

    Args:
        frames: the message's frames, as ``recv_multipart`` returns them.
        sender: if given, only messages that side may send are accepted.

    Raises:
        FabricProtocolError: anything malformed: the wrong number of frames, a
            foreign signature or another version, metadata that is too large,
            not msgpack or not a map, an unknown type, a missing key, a value of
            the wrong type or out of range, or a type ``sender`` may not send.
    """
    if len(frames) < 2:
        _fail(f"{len(frames)} frame(s), a message has at least 2")
    if frames[0] != SIGNATURE:
        _bad_signature(frames[0])
    fields = _unpack(frames[1])
    code = fields.get("t")
    entry = _DECODERS.get(code) if type(code) is int else None
    if entry is None:
        _fail(f"unknown message type {code!r}")
    decoder, has_body, sides = entry
    if sender is not None and sender not in sides:
        _fail(f"message type {code} may not be sent by the {sender.value}")
    expected = 3 if has_body else 2
    if len(frames) != expected:
        _fail(f"message type {code} has {len(frames)} frames, expected {expected}")
    return decoder(fields, frames)


def _fail(reason: str) -> NoReturn:
    raise FabricProtocolError(reason)


def _bad_signature(frame: bytes) -> NoReturn:
    if len(frame) == len(SIGNATURE) and frame[:3] == SIGNATURE[:3]:
        _fail(f"peer speaks fabric protocol version {frame[3]}, we speak {VERSION}")
    _fail(f"not a zmqhttp fabric message (signature {bytes(frame[:8])!r})")


def _unpack(frame: bytes) -> _Fields:
    if len(frame) > MAX_METADATA_SIZE:
        _fail(f"metadata is {len(frame)} bytes, over the {MAX_METADATA_SIZE}-byte bound")
    try:
        # use_list=False: arrays come back as tuples, so a header pair is
        # already the (name, value) tuple Headers holds.
        fields: object = msgpack.unpackb(
            frame, raw=False, use_list=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise FabricProtocolError(f"metadata is not valid msgpack: {exc}") from exc
    if type(fields) is not dict:
        _fail(f"metadata is a msgpack {type(fields).__name__}, not a map")
    return fields


def _wrong(fields: _Fields, key: str, what: str) -> NoReturn:
    if key not in fields:
        _fail(f"type {fields['t']}: missing key {key!r}")
    _fail(f"type {fields['t']}: key {key!r} must be {what}, "
          f"not {type(fields[key]).__name__} {fields[key]!r:.40}")


def _uint(fields: _Fields, key: str) -> int:
    value = fields.get(key)
    if type(value) is int and value >= 0:
        return value
    _wrong(fields, key, "an unsigned integer")


def _positive(fields: _Fields, key: str) -> int:
    value = fields.get(key)
    if type(value) is int and value > 0:
        return value
    _wrong(fields, key, "a positive integer")


def _bin(fields: _Fields, key: str) -> bytes:
    value = fields.get(key)
    if type(value) is bytes:
        return value
    _wrong(fields, key, "bin")


def _str(fields: _Fields, key: str) -> str:
    value = fields.get(key)
    if type(value) is str:
        return value
    _wrong(fields, key, "str")


def _bool(fields: _Fields, key: str) -> bool:
    value = fields.get(key)
    if type(value) is bool:
        return value
    _wrong(fields, key, "a boolean")


def _headers(fields: _Fields, key: str) -> Headers:
    value = fields.get(key)
    if type(value) is tuple:
        for pair in value:
            if not (type(pair) is tuple and len(pair) == 2
                    and type(pair[0]) is bytes and type(pair[1]) is bytes):
                break
        else:
            return list(value)
    _wrong(fields, key, "an array of [bin, bin] pairs")


def _address(fields: _Fields, key: str) -> tuple[str, int]:
    value = fields.get(key)
    if (type(value) is tuple and len(value) == 2 and type(value[0]) is str
            and type(value[1]) is int and 0 <= value[1] <= _UINT16_MAX):
        return value
    _wrong(fields, key, "a [str, port] pair")


def _length(fields: _Fields, key: str) -> int | None:
    if fields.get(key, 0) is None:
        return None
    return _uint(fields, key)


def _dec_heartbeat(fields: _Fields, frames: Sequence[bytes]) -> Heartbeat:
    return Heartbeat()


def _dec_goodbye(fields: _Fields, frames: Sequence[bytes]) -> Goodbye:
    return Goodbye()


def _dec_request_head(f: _Fields, frames: Sequence[bytes]) -> RequestHead:
    return RequestHead(
        id=_uint(f, "i"), method=_bin(f, "m"), target=_bin(f, "u"), path=_bin(f, "p"),
        query=_bin(f, "q"), headers=_headers(f, "h"), http_version=_str(f, "v"),
        scheme=_str(f, "s"), client=_address(f, "c"), server=_address(f, "a"),
        root_path=_str(f, "r"), content_length=_length(f, "l"),
        expect_continue=_bool(f, "x"), response_window=_uint(f, "w"),
        revision=_uint(f, "V") if "V" in f else 0)


def _dec_request_body(f: _Fields, frames: Sequence[bytes]) -> RequestBody:
    return RequestBody(id=_uint(f, "i"), data=frames[2])


def _dec_request_end(f: _Fields, frames: Sequence[bytes]) -> RequestEnd:
    return RequestEnd(id=_uint(f, "i"), trailers=_headers(f, "h"))


_REASONS = {reason.value: reason for reason in CancelReason}


def _dec_cancel(f: _Fields, frames: Sequence[bytes]) -> Cancel:
    request_id = _uint(f, "i")
    code = f.get("k")
    reason = _REASONS.get(code) if type(code) is int else None
    if reason is None:
        _wrong(f, "k", f"a cancel reason code {sorted(_REASONS)}")
    return Cancel(id=request_id, reason=reason)


def _dec_response_credit(f: _Fields, frames: Sequence[bytes]) -> ResponseCredit:
    return ResponseCredit(id=_uint(f, "i"), size=_positive(f, "n"))


def _dec_ready(f: _Fields, frames: Sequence[bytes]) -> Ready:
    return Ready(name=_str(f, "n"), pid=_uint(f, "P"), capacity=_uint(f, "k"),
                 revision=_uint(f, "V"), app=_str(f, "a"), body_window=_uint(f, "w"))


def _dec_credit(f: _Fields, frames: Sequence[bytes]) -> Credit:
    return Credit(slots=_positive(f, "n"))


def _dec_continue(f: _Fields, frames: Sequence[bytes]) -> Continue:
    return Continue(id=_uint(f, "i"))


def _dec_body_credit(f: _Fields, frames: Sequence[bytes]) -> BodyCredit:
    return BodyCredit(id=_uint(f, "i"), size=_positive(f, "n"))


def _status(f: _Fields) -> int:
    status = f.get("s")
    # 1xx are not final responses; 100 is the gateway's, sent on Continue.
    if not (type(status) is int and 200 <= status <= 999):
        _wrong(f, "s", "a final status code (200-999)")
    return status


def _dec_response_head(f: _Fields, frames: Sequence[bytes]) -> ResponseHead:
    return ResponseHead(id=_uint(f, "i"), status=_status(f), headers=_headers(f, "h"),
                        reason=_bin(f, "r"))


def _dec_response(f: _Fields, frames: Sequence[bytes]) -> Response:
    return Response(id=_uint(f, "i"), status=_status(f), headers=_headers(f, "h"),
                    reason=_bin(f, "r"), data=frames[2], credit=_uint(f, "c"))


def _dec_response_body(f: _Fields, frames: Sequence[bytes]) -> ResponseBody:
    return ResponseBody(id=_uint(f, "i"), data=frames[2])


def _dec_response_end(f: _Fields, frames: Sequence[bytes]) -> ResponseEnd:
    return ResponseEnd(id=_uint(f, "i"), trailers=_headers(f, "h"), aborted=_bool(f, "a"))


_Decoder = Callable[[_Fields, Sequence[bytes]], Message]
_BOTH = frozenset(Side)
_GATEWAY = frozenset({Side.GATEWAY})
_WORKER = frozenset({Side.WORKER})

#: type code -> (decoder, carries a body frame, sides that may send it)
_DECODERS: dict[object, tuple[_Decoder, bool, frozenset[Side]]] = {
    Heartbeat.TYPE: (_dec_heartbeat, False, _BOTH),
    Goodbye.TYPE: (_dec_goodbye, False, _BOTH),
    RequestHead.TYPE: (_dec_request_head, False, _GATEWAY),
    RequestBody.TYPE: (_dec_request_body, True, _GATEWAY),
    RequestEnd.TYPE: (_dec_request_end, False, _GATEWAY),
    Cancel.TYPE: (_dec_cancel, False, _GATEWAY),
    ResponseCredit.TYPE: (_dec_response_credit, False, _GATEWAY),
    Ready.TYPE: (_dec_ready, False, _WORKER),
    Credit.TYPE: (_dec_credit, False, _WORKER),
    Continue.TYPE: (_dec_continue, False, _WORKER),
    BodyCredit.TYPE: (_dec_body_credit, False, _WORKER),
    ResponseHead.TYPE: (_dec_response_head, False, _WORKER),
    ResponseBody.TYPE: (_dec_response_body, True, _WORKER),
    ResponseEnd.TYPE: (_dec_response_end, False, _WORKER),
    Response.TYPE: (_dec_response, True, _WORKER),
}
