"""Field-value helpers: Connection tokens, Host syntax, transfer codings, targets."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmqhttp.errors import BadRequest, NotImplementedByServer
from zmqhttp.http.fields import (
    connection_tokens,
    get_header,
    parse_transfer_coding,
    split_target,
    valid_host,
)


def test_get_header_all_values_in_order() -> None:
    headers = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]
    assert get_header(headers, b"a") == [b"1", b"3"]
    assert get_header(headers, b"c") == []


@pytest.mark.parametrize(
    ("values", "tokens"),
    [
        ([b"close"], {b"close"}),
        ([b"Keep-Alive, Upgrade"], {b"keep-alive", b"upgrade"}),
        ([b" a ,\tb,, ", b"C"], {b"a", b"b", b"c"}),
        ([b""], set()),
        ([], set()),
    ],
)
def test_connection_tokens(values: list[bytes], tokens: set[bytes]) -> None:
    assert connection_tokens(values) == tokens


@pytest.mark.parametrize(
    "host",
    [
        b"example.com",
        b"example.com:8080",
        b"127.0.0.1",
        b"127.0.0.1:80",
        b"[::1]",
        b"[::1]:443",
        b"[2001:db8::1]",
        b"[v1.fe80::a+en1]",
        b"xn--bcher-kva.example",
        b"a_b-c~d.e",
        b"%41bc",
        b"",
        b"example.com:",
    ],
)
def test_valid_hosts(host: bytes) -> None:
    assert valid_host(host)


@pytest.mark.parametrize(
    "host",
    [
        b"a b",
        b"a/b",
        b"a?b",
        b"a#b",
        b"user@host",
        b"host:port",
        b"host:80:80",
        b"[::1",
        b"::1",
        b"[zz::1]",
        b"h\x00",
        b"h\xc3\xa9",
        b"\t",
    ],
)
def test_invalid_hosts(host: bytes) -> None:
    assert not valid_host(host)


@pytest.mark.parametrize(
    "values",
    [
        [b"chunked"],
        [b"Chunked"],
        [b" chunked "],
        [b"chunked;x=1"],
        [b"chunked", b""],
        [b",chunked,"],
    ],
)
def test_transfer_coding_chunked_accepted(values: list[bytes]) -> None:
    parse_transfer_coding(values)


@pytest.mark.parametrize(
    "values",
    [[b"gzip"], [b"xchunked"], [b"gzip, chunked"], [b"deflate", b"chunked"], [b"identity"],
     [b"chunked, gzip"]],
)
def test_transfer_coding_unknown_is_501(values: list[bytes]) -> None:
    with pytest.raises(NotImplementedByServer) as info:
        parse_transfer_coding(values)
    assert info.value.status == 501


@pytest.mark.parametrize(
    "values",
    [[b"chunked, chunked"], [b"chunked", b"chunked"], [b""], [b"chun ked"], [b"chunked\x01"],
     [b'"chunked"']],
)
def test_transfer_coding_malformed_is_400(values: list[bytes]) -> None:
    with pytest.raises(BadRequest) as info:
        parse_transfer_coding(values)
    assert info.value.status == 400


@given(st.lists(st.binary(max_size=20), max_size=3))
@settings(max_examples=100, deadline=None, database=None)
def test_transfer_coding_raises_only_400_or_501(values: list[bytes]) -> None:
    with contextlib.suppress(BadRequest, NotImplementedByServer):
        parse_transfer_coding(values)


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/", b"/", b""),
        (b"/a/b?x=1&y=2", b"/a/b", b"x=1&y=2"),
        (b"/a?", b"/a", b""),
        (b"/a#f", b"/a", b""),
        (b"/a?q#f", b"/a", b"q"),
        (b"/a?q?r", b"/a", b"q?r"),
        (b"/%2F?%3F", b"/%2F", b"%3F"),
    ],
)
def test_split_target(target: bytes, path: bytes, query: bytes) -> None:
    assert split_target(target) == (path, query)
