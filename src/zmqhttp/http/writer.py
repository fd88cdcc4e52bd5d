"""Response serialisation: the status line, fields and body framing.

Strategy: one small writer object per response body, picked once when the head
is sent (RFC 9112 §6.3 from the sender's side): Content-Length when the length
is known, chunked for a streamed body to an HTTP/1.1 client, close-delimited
for an HTTP/1.0 client, nothing for HEAD, 1xx, 204 and 304.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Final

from zmqhttp.errors import LocalProtocolError
from zmqhttp.http.events import Headers

__all__ = [
    "BodyWriter",
    "ChunkedWriter",
    "CloseDelimitedWriter",
    "LengthWriter",
    "NoBodyWriter",
    "field_line",
    "reason_phrase",
    "render_head",
    "status_line",
]

_REASONS: Final = {s.value: s.phrase.encode("ascii") for s in HTTPStatus} | {
    # RFC 9110 §15 names, which http.HTTPStatus adopted only in Python 3.13:
    # the same bytes on the wire whatever the Python version.
    413: b"Content Too Large",
    414: b"URI Too Long",
    416: b"Range Not Satisfiable",
    422: b"Unprocessable Content",
}
_TOKEN: Final = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# RFC 9110 §5.5: CR, LF and NUL are never allowed in a field value; letting
# an application put them there would allow response splitting.
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]")
# RFC 9112 §4: reason-phrase = *( HTAB / SP / VCHAR / obs-text ); a CR or LF
# there would split the response just as in a field value.
_BAD_REASON: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


# Status lines by code.
_STATUS_LINES: Final = {code: b"HTTP/1.1 %d %s\r\n" % (code, phrase)
                        for code, phrase in _REASONS.items()}
# Checked and rendered field lines by (name, value): applications send the same
# few fields again and again, and a regex search per field showed in profiles.
# Bounded, and only for short lines: values that change every response
# (cookies, request ids) simply stop being cached once it is full.
_LINES: dict[tuple[bytes, bytes], bytes] = {}
_LINES_MAX: Final = 4096
_LINE_CACHED_MAX: Final = 256


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"")


def status_line(status: int, reason: bytes = b"") -> bytes:
    """``HTTP/1.1 STATUS REASON CRLF``; always HTTP/1.1 (RFC 9110 §6.2).

    Raises:
        LocalProtocolError: an invalid status or reason phrase.
    """
    if not reason:
        line = _STATUS_LINES.get(status)
        if line is not None:
            return line
    if not 100 <= status <= 999:
        raise LocalProtocolError(f"invalid status code {status}")
    if not reason:
        return b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))
    if _BAD_REASON.search(reason) is not None:
        raise LocalProtocolError(f"invalid reason phrase {reason!r}")
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


def field_line(name: bytes, value: bytes) -> bytes:
    """``name: value CRLF``, checked: a token name, no CR, LF or NUL in the value.

    Raises:
        LocalProtocolError: an invalid field name or value.
    """
    pair = (name, value)
    try:
        line = _LINES.get(pair)
    except TypeError:  # not bytes (a bytearray): checked below, never cached
        line = None
    if line is not None:
        return line
    if _TOKEN.match(name) is None or _BAD_VALUE.search(value) is not None:
        raise LocalProtocolError(f"invalid response header {name!r}")
    line = b"%s: %s\r\n" % pair
    if (len(line) <= _LINE_CACHED_MAX and len(_LINES) < _LINES_MAX
            and type(name) is bytes and type(value) is bytes):
        _LINES[pair] = line
    return line


def render_head(status: int, reason: bytes, headers: Headers) -> bytes:
    """Serialise a response head; always HTTP/1.1 (RFC 9110 §6.2).

    Raises:
        LocalProtocolError: an invalid status, reason phrase, field name or
            field value.
    """
    parts = [status_line(status, reason)]
    parts += [field_line(name, value) for name, value in headers]
    parts.append(b"\r\n")
    return b"".join(parts)


class BodyWriter:
    """Frames response body bytes; ``end()`` returns the closing bytes."""

    __slots__ = ()

    def write(self, data: bytes) -> bytes:
        raise NotImplementedError

    def end(self) -> bytes:
        raise NotImplementedError


class LengthWriter(BodyWriter):
    """A body framed by Content-Length: exactly ``length`` bytes."""

    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    def write(self, data: bytes) -> bytes:
        if len(data) > self.remaining:
            raise LocalProtocolError("response body longer than its Content-Length")
        self.remaining -= len(data)
        return data

    def end(self) -> bytes:
        if self.remaining:
            raise LocalProtocolError("response body shorter than its Content-Length")
        return b""


class ChunkedWriter(BodyWriter):
    """RFC 9112 §7.1: chunked coding; an empty write sends nothing (it would end the body)."""

    __slots__ = ()

    def write(self, data: bytes) -> bytes:
        if not data:
            return b""
        return b"%x\r\n%s\r\n" % (len(data), data)

    def end(self) -> bytes:
        return b"0\r\n\r\n"


class CloseDelimitedWriter(BodyWriter):
    """RFC 9112 §6.3 rule 8: the body ends when we close the connection."""

    __slots__ = ()

    def write(self, data: bytes) -> bytes:
        return data

    def end(self) -> bytes:
        return b""


class NoBodyWriter(BodyWriter):
    """HEAD, 1xx, 204 and 304 responses carry no content (RFC 9110 §6.4.1)."""

    __slots__ = ()

    def write(self, data: bytes) -> bytes:
        return b""

    def end(self) -> bytes:
        return b""
