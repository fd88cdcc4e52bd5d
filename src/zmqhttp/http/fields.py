"""Field-value checks the server owns (RFC 9110 §5, RFC 9112 §3.2, §6.1, §9.3).

httptools (llhttp) checks the byte grammar of every line; these helpers only
interpret already-tokenised field values: comma-separated lists, the Host
authority, the transfer codings of a request.
"""

from __future__ import annotations

import re
from typing import Final

from zmqhttp.errors import BadRequest, NotImplementedByServer

__all__ = [
    "connection_tokens",
    "get_header",
    "parse_transfer_coding",
    "split_target",
    "valid_host",
]

# RFC 9110 §5.6.2: token = 1*tchar.
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# RFC 9112 §3.2 / RFC 3986 §3.2.2: uri-host [ ":" port ], where uri-host is an
# IP-literal in brackets or a reg-name / IPv4address (unreserved, pct-encoded,
# sub-delims). Empty is allowed when the target has no authority.
_HOST = re.compile(rb"^(?:\[[0-9A-Fa-f:.]+\]|\[v[0-9A-Fa-f]+\.[!$&'()*+,;=\-._~:0-9A-Za-z]+\]|"
                   rb"[!$&'()*+,;=\-._~%0-9A-Za-z]*)(?::[0-9]*)?$")
# Host values found valid: clients send the same one on every request, and
# the regex showed in profiles. Bounded: later values are checked each time.
_GOOD_HOSTS: set[bytes] = set()
_GOOD_HOSTS_MAX = 1024
# Codings RFC 9110 §8.4.1 registers that we know but do not decode: 501.
_KNOWN_UNSUPPORTED = frozenset({b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress"})


def get_header(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """All values of the (lower-case) field ``name``, in order."""
    return [value for key, value in headers if key == name]


def connection_tokens(values: list[bytes]) -> set[bytes]:
    """The lower-cased options of one or more Connection fields (RFC 9110 §7.6.1)."""
    tokens: set[bytes] = set()
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t").lower()
            if item:
                tokens.add(item)
    return tokens


def valid_host(value: bytes) -> bool:
    """True if ``value`` is a syntactically valid Host field value."""
    if value in _GOOD_HOSTS:
        return True
    if _HOST.match(value) is None:
        return False
    if len(_GOOD_HOSTS) < _GOOD_HOSTS_MAX:
        _GOOD_HOSTS.add(value)
    return True


def parse_transfer_coding(values: list[bytes]) -> None:
    """Accept exactly one final ``chunked`` coding, as RFC 9112 §6.1 requires.

    Raises:
        NotImplementedByServer: a coding we do not implement (501).
        BadRequest: malformed list, or chunked missing, repeated or not final.
    """
    codings: list[bytes] = []
    for value in values:
        for item in value.split(b","):
            name = item.split(b";", 1)[0].strip(b" \t").lower()
            if not name:
                continue
            if _TOKEN.match(name) is None:
                raise BadRequest("invalid Transfer-Encoding")
            codings.append(name)
    unknown = [c for c in codings if c != b"chunked"]
    if unknown:
        if all(c in _KNOWN_UNSUPPORTED or _TOKEN.match(c) for c in unknown):
            raise NotImplementedByServer(f"transfer coding {unknown[0].decode()!r} not implemented")
        raise BadRequest("invalid Transfer-Encoding")  # pragma: no cover - tokens checked above
    if codings != [b"chunked"]:
        raise BadRequest("chunked must be the only and final transfer coding")


# ``int in bytes`` is a memchr; a one-byte ``bytes`` needle first tries the int
# path, fails with a TypeError and formats its message: about six times slower.
_QUESTION: Final = ord("?")
_HASH: Final = ord("#")


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """Split an origin-form target into (path, query); a fragment is dropped."""
    if _QUESTION not in target:
        if _HASH in target:
            return target.split(b"#", 1)[0], b""
        return target, b""  # most requests: no query, no fragment
    path, _, query = target.partition(b"?")
    if _HASH in path:
        path = path.split(b"#", 1)[0]
    elif _HASH in query:
        query = query.split(b"#", 1)[0]
    return path, query
