"""Helpers for the sans-IO HTTP tests: splitters, a driver, canned requests.

Every rule is fed whole, one byte at a time and in hypothesis-chosen splits:
:func:`all_splits` turns a test taking ``split: Split`` into exactly that (the
first two as explicit ``@example``s, so they run on every test run).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import cycle
from typing import Any, TypeVar, cast

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from zmqhttp.errors import ProtocolError
from zmqhttp.http import (
    PAUSED,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Headers,
    Request,
    Response,
    Sentinel,
    ServerConnection,
)

__all__ = [
    "BYTEWISE",
    "WHOLE",
    "Outcome",
    "Split",
    "all_splits",
    "drive",
    "feed",
    "get",
    "merge_data",
    "respond",
    "split_strategy",
]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Split:
    """Cut a byte string into chunks of ``sizes`` (cycled); ``()`` means whole."""

    sizes: tuple[int, ...]

    def apply(self, data: bytes) -> list[bytes]:
        if not self.sizes:
            return [data]
        chunks: list[bytes] = []
        pos = 0
        for size in cycle(self.sizes):
            if pos >= len(data):
                return chunks
            chunks.append(data[pos : pos + size])
            pos += size
        raise AssertionError("unreachable")  # pragma: no cover


WHOLE = Split(())
BYTEWISE = Split((1,))

#: Chunk-size patterns: mostly small pieces, sometimes large ones.
split_strategy = st.builds(
    Split,
    st.lists(
        st.one_of(st.integers(1, 16), st.integers(1, 4096)), min_size=1, max_size=8
    ).map(tuple),
)


def all_splits(max_examples: int = 25) -> Callable[[F], F]:
    """Run a test taking ``split`` whole, byte by byte and in random splits."""

    def decorate(test: F) -> F:
        wrapped = given(split=split_strategy)(test)
        wrapped = example(split=BYTEWISE)(wrapped)
        wrapped = example(split=WHOLE)(wrapped)
        configured = settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )(wrapped)
        return cast(F, configured)

    return decorate


def merge_data(events: Iterable[Event]) -> list[Event]:
    """Join consecutive :class:`Data` events, whose boundaries depend on the split."""
    merged: list[Event] = []
    for event in events:
        if isinstance(event, Data) and merged and isinstance(merged[-1], Data):
            merged[-1] = Data(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


def _pull(conn: ServerConnection, into: list[Event]) -> Event | Sentinel:
    """Events until NEED_DATA, PAUSED or ConnectionClosed; returns that last one."""
    while True:
        event = conn.next_event()
        if isinstance(event, Sentinel):
            return event
        into.append(event)
        if isinstance(event, ConnectionClosed):
            return event


def feed(conn: ServerConnection, chunks: Iterable[bytes]) -> list[Event]:
    """Feed ``chunks`` one by one, pulling events after each; Data merged.

    With no chunks, only pulls the events already due. Raises whatever
    :meth:`ServerConnection.next_event` raises.
    """
    events: list[Event] = []
    pieces = list(chunks)
    for chunk in pieces:
        conn.receive_data(chunk)
        _pull(conn, events)
    if not pieces:
        _pull(conn, events)
    return merge_data(events)


def respond(
    conn: ServerConnection,
    status: int = 200,
    headers: Headers | None = None,
    body: bytes = b"",
) -> bytes:
    """Send a whole response with a Content-Length unless ``headers`` are given."""
    if headers is None:
        headers = [(b"Content-Length", b"%d" % len(body))]
    out = conn.send(Response(status, headers))
    if body:
        out += conn.send(Data(body))
    return out + conn.send(EndOfMessage())


@dataclass
class Outcome:
    """What a client's bytes produced, answering every complete request."""

    events: list[Event] = field(default_factory=list)
    error: ProtocolError | None = None
    output: bytes = b""

    @property
    def requests(self) -> list[Request]:
        return [e for e in self.events if isinstance(e, Request)]


def drive(chunks: Iterable[bytes], conn: ServerConnection | None = None) -> Outcome:
    """Feed ``chunks``, answering each request with an empty 200 when it is PAUSED.

    Stops at the first :class:`ProtocolError` (kept in the outcome).
    """
    conn = conn or ServerConnection()
    outcome = Outcome()
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            while _pull(conn, outcome.events) is PAUSED:
                outcome.output += respond(conn)
    except ProtocolError as error:
        outcome.error = error
    outcome.events = merge_data(outcome.events)
    return outcome


def get(path: bytes = b"/", *extra: bytes, version: bytes = b"1.1") -> bytes:
    """A GET request with ``Host: example.com`` and extra raw field lines."""
    fields = b"".join(line + b"\r\n" for line in (b"Host: example.com", *extra))
    return b"GET %s HTTP/%s\r\n%s\r\n" % (path, version, fields)
