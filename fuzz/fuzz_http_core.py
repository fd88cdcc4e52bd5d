"""Coverage-guided fuzzing of the sans-IO HTTP core (atheris + libFuzzer).

Strategy: each input is a few control bytes and the bytes a client sends
(``layout.py``). The harness feeds them to a :class:`ServerConnection` in the
chunks the control bytes choose, drains events after every chunk and plays the
server and the application the way ``server/connection.py`` does: it answers
each request (early, before its body, or after it; 100 Continue; every framing
of response; application mistakes), sends the error response for a
:class:`ProtocolError`, may refuse keep-alive mid-stream (shutdown), and
accepts WebSocket upgrades with a 101, after which the rest of the bytes go to
a :class:`WebSocketSession`.

Invariant (h11's): the input is accepted, or ``next_event()`` raises a
:class:`ProtocolError` carrying a 4xx/5xx status and the connection then
closes; never any other exception. Application mistakes surface as
:class:`LocalProtocolError` only from ``send()``. Memory stays bounded: after
every step, the bytes the connection holds (pending input, queued events,
bytes held after an upgrade request, the parser's open head) stay under
bounds derived from :class:`Limits` and the largest chunk received, not from
the amount of input. The connection also always comes to an end: after EOF
the events end with :class:`ConnectionClosed` (or an error, or a 101).

Usage::

    .venv/bin/python fuzz/fuzz_http_core.py -atheris_runs=N [corpus_dir ...]
    .venv/bin/python fuzz/fuzz_http_core.py fuzz/crashes/crash-...   # replay one input

Not with ``python -O``: the invariants are ``assert`` statements.
"""

from __future__ import annotations

import sys
from collections import deque

import atheris
from layout import (
    POLICY_CONTINUE,
    POLICY_EARLY,
    POLICY_READ_WEBSOCKET,
    HttpInput,
    http_input,
)

with atheris.instrument_imports(include=["zmqhttp", "wsproto"]):
    from zmqhttp.errors import LocalProtocolError, ProtocolError
    from zmqhttp.http import (
        NEED_DATA,
        PAUSED,
        ConnectionClosed,
        Data,
        EndOfMessage,
        InformationalResponse,
        Limits,
        Request,
        RequestState,
        Response,
        ResponseState,
        ServerConnection,
    )
    from zmqhttp.http.reader import ParseError
    from zmqhttp.http.websocket import accept_headers, check_handshake
    from zmqhttp.server.websocket import WebSocketSession

PROFILES = (
    Limits(),
    Limits(max_request_line=256, max_head=1024, max_fields=16, max_field_size=512,
           max_body=4096, max_pipeline_bytes=2048, max_drain=512),
    Limits(max_request_line=64, max_head=512, max_field_size=128, max_fields=10,
           max_body=256, max_pipeline_bytes=512, max_drain=64),
)
WS_MAX_SIZE = (16 * 1024, 1024, 256)
WS_MAX_QUEUE = 4
DATE = b"Mon, 01 Jan 2024 00:00:00 GMT"
# No input can need this many events per chunk; more means the loop is stuck.
MAX_STEPS = 100_000


class Listener:
    """The application side of a WebSocket session: reads, or lets messages pile up."""

    def __init__(self, reads: bool, max_size: int) -> None:
        self.reads = reads
        self.max_size = max_size
        self.unread: deque[str | bytes] = deque()
        self.closed_with: tuple[int, str] | None = None

    def on_message(self, data: str | bytes) -> None:
        assert self.closed_with is None, "message after the session ended"
        size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8"))
        assert size <= self.max_size, "message over ws max_size delivered"
        if not self.reads:
            self.unread.append(data)

    def on_close(self, code: int, reason: str) -> None:
        assert self.closed_with is None, "session ended twice"
        self.closed_with = (code, reason)

    def pending(self) -> tuple[int, int]:
        return len(self.unread), sum(len(m) for m in self.unread)


class Harness:
    """One connection driven by one fuzz input."""

    def __init__(self, spec: HttpInput) -> None:
        self.spec = spec
        self.limits = PROFILES[spec.profile]
        self.conn = ServerConnection(self.limits, date=lambda: DATE)
        self.largest = max((len(c) for c in spec.chunks), default=0)
        self.turn = 0
        self.responses = 0
        self.finished = False  # closed, aborted or switched away from HTTP
        self.lingering = False  # an error response or Connection: close went out
        self.saw_closed = False
        self.ws: WebSocketSession | None = None
        self.listener: Listener | None = None
        self.ws_done = False
        self.ws_key: bytes | None = None
        self.early = False
        self.body = 0

    # -- driving -----------------------------------------------------------------

    def run(self) -> None:
        for chunk in [*self.spec.chunks, b""]:
            if self.ws is not None:
                self.feed_websocket(chunk)
                continue
            if self.lingering:
                # The server keeps reading (and dropping) until the client closes.
                self.conn.receive_data(chunk)
                self.check_bounded()
                continue
            if self.finished:
                break
            self.conn.receive_data(chunk)
            self.pump()
        if not self.finished and self.ws is None:
            # EOF was fed: the connection must come to an end.
            assert self.saw_closed, "no ConnectionClosed after EOF"

    def policy(self) -> int:
        return self.spec.policies[self.turn % len(self.spec.policies)]

    def pump(self) -> None:
        conn = self.conn
        for _ in range(MAX_STEPS):
            if self.finished or self.ws is not None:
                return
            try:
                event = conn.next_event()
            except ProtocolError as error:
                self.protocol_error(error)
                return
            self.check_bounded()
            if event is NEED_DATA:
                return
            if event is PAUSED:
                assert conn.request_state is RequestState.DONE
                assert conn.response_state is not ResponseState.DONE
                assert not self.lingering, "a request handed out after the close decision"
                self.answer()
            elif isinstance(event, ConnectionClosed):
                assert conn.must_close
                self.saw_closed = True
                return
            elif isinstance(event, Request):
                self.on_request(event)
            elif isinstance(event, Data):
                self.on_data(event)
            else:
                assert isinstance(event, EndOfMessage), event
                self.on_end()
        raise AssertionError("next_event() did not settle")

    # -- request events ----------------------------------------------------------

    def on_request(self, request: Request) -> None:
        conn = self.conn
        assert not self.lingering, "a request handed out after the close decision"
        assert conn.request_state is RequestState.BODY
        assert conn.response_state is ResponseState.IDLE
        assert request.http_version in ("1.0", "1.1")
        assert request.method and request.method != b"CONNECT"
        assert len(request.target) <= self.limits.max_request_line
        assert len(request.headers) <= self.limits.max_fields
        assert request.content_length is None or request.content_length <= self.limits.max_body
        assert request.chunked == (request.content_length is None)
        self.body = 0
        self.early = False
        self.ws_key = None
        if request.upgrade == b"websocket" and self.spec.accept_websocket:
            try:
                self.ws_key = check_handshake(request)
            except ProtocolError as error:
                self.error_response(error)  # never reaches the app (RFC 6455 §4.2.1)
                return
        policy = self.policy()
        if policy & POLICY_CONTINUE:
            assert conn.send(InformationalResponse(100)) in (b"", b"HTTP/1.1 100 Continue\r\n\r\n")
        if policy & POLICY_EARLY and self.ws_key is None:
            self.early = True
            self.answer()

    def on_data(self, event: Data) -> None:
        request = self.conn.request
        assert request is not None and event.data
        self.body += len(event.data)
        assert self.body <= self.limits.max_body
        if request.content_length is not None:
            assert self.body <= request.content_length

    def on_end(self) -> None:
        request = self.conn.request
        assert request is not None
        if request.content_length is not None and not self.early:
            assert self.body == request.content_length, "body shorter than its Content-Length"

    # -- the server's and the application's side ----------------------------------

    def protocol_error(self, error: ProtocolError) -> None:
        assert 400 <= error.status < 600, error.status
        assert self.conn.must_close
        if self.conn.response_state is ResponseState.IDLE:
            self.error_response(error)
        else:
            self.finished = True  # a response is under way: the server aborts
        # Nothing more comes out of a failed connection, and nothing raises.
        event = self.conn.next_event()
        assert event is NEED_DATA or isinstance(event, ConnectionClosed), event

    def error_response(self, error: ProtocolError | LocalProtocolError) -> None:
        data = self.conn.send_error(error)
        assert data.startswith(b"HTTP/1.1 %d " % error.status), data[:40]
        self.responses += 1
        self.close_decided()

    def close_decided(self) -> None:
        """The server stops handing requests to the app; it lingers, then closes."""
        self.lingering = True
        self.finished = True

    def answer(self) -> None:
        """The application's response to the current request."""
        conn = self.conn
        if self.ws_key is not None and conn.request_state is RequestState.DONE:
            self.switch()
            return
        policy = self.policy()
        self.turn += 1
        try:
            self.respond(policy & 7)
        except LocalProtocolError as error:
            # The server's _app_error: a 500 if nothing went out, else abort.
            if conn.response_state is ResponseState.IDLE:
                self.error_response(error)
            else:
                self.finished = True
            return
        self.responses += 1
        if self.spec.shutdown and self.responses == 1:
            conn.allow_keep_alive(False)
        if conn.must_close:
            self.close_decided()

    def respond(self, kind: int) -> None:
        send = self.conn.send
        if kind == 0:
            head = send(Response(200, [(b"Content-Length", b"2")]))
            body = send(Data(b"ok"))
        elif kind == 1:  # unknown length: chunked (1.1) or close-delimited (1.0)
            head = send(Response(200, [(b"Content-Type", b"text/plain")]))
            body = send(Data(b"he")) + send(Data(b"")) + send(Data(b"llo"))
        elif kind == 2:
            head = send(Response(204, [(b"Content-Length", b"7")]))
            body = b""
        elif kind == 3:
            head = send(Response(304, [(b"ETag", b'"x"')]))
            body = b""
        elif kind == 4:
            head = send(Response(200, [(b"Connection", b"close"), (b"content-length", b"0")]))
            body = b""
        elif kind == 5:  # an application bug: more body than its Content-Length
            head = send(Response(200, [(b"Content-Length", b"1")]))
            body = send(Data(b"too long"))
        elif kind == 6:  # an application exception before its response
            raise LocalProtocolError("the application failed")
        else:
            head = send(Response(404, [(b"Content-Length", b"5"), (b"Date", DATE)], b"Gone"))
            body = send(Data(b"hel")) + send(Data(b"lo"))
        assert head.startswith(b"HTTP/1.1 ") and head.endswith(b"\r\n\r\n")
        assert len(body) <= 64
        send(EndOfMessage())
        # DONE, or IDLE when the cycle already restarted for the next request.
        assert self.conn.response_state is not ResponseState.BODY

    # -- WebSocket ---------------------------------------------------------------------

    def switch(self) -> None:
        conn = self.conn
        assert self.ws_key is not None
        head = conn.send(InformationalResponse(101, accept_headers(self.ws_key, None, [])))
        assert head.startswith(b"HTTP/1.1 101 ")
        assert conn.request_state is RequestState.SWITCHED
        trailing = conn.trailing_data()
        assert len(trailing) <= self.limits.max_pipeline_bytes + self.largest
        max_size = WS_MAX_SIZE[self.spec.profile]
        self.listener = Listener(bool(self.policy() & POLICY_READ_WEBSOCKET), max_size)
        self.ws = WebSocketSession(
            self.ws_write, self.ws_closed, self.listener,
            max_size=max_size, max_queue=WS_MAX_QUEUE, trailing=trailing,
        )
        self.check_websocket()

    def feed_websocket(self, chunk: bytes) -> None:
        assert self.ws is not None
        if self.ws_done:
            return  # the server closed TCP: nothing more is read
        self.ws.receive_data(chunk or None)
        self.check_websocket()
        if self.listener is not None and self.listener.unread and self.turn % 2:
            self.ws.send_message(self.listener.unread.popleft())  # an echoing app
        self.turn += 1

    def ws_write(self, data: bytes) -> None:
        assert isinstance(data, bytes)

    def ws_closed(self, handshake_done: bool) -> None:
        if handshake_done:
            self.ws_done = True

    def check_websocket(self) -> None:
        ws, listener = self.ws, self.listener
        assert ws is not None and listener is not None
        max_size = WS_MAX_SIZE[self.spec.profile]
        # The parts of a message being reassembled; the running count may pass
        # max_size once, on the piece that closes the session with 1009.
        held = sum(len(p) if isinstance(p, bytes) else len(p.encode()) for p in ws._parts)
        assert held <= max_size, ("ws parts", held)
        assert ws._size <= max_size or ws.closed, ("ws size", ws._size)
        count, size = listener.pending()
        assert count <= WS_MAX_QUEUE and size <= max_size, (count, size)

    # -- memory bound ----------------------------------------------------------------

    def check_bounded(self) -> None:
        """What the connection holds is bounded by the limits, not by the input."""
        conn, limits = self.conn, self.limits
        reader = conn._reader
        queued = 0
        for item in conn._queue:
            if isinstance(item, Data):
                queued += len(item.data)
            elif isinstance(item, Request):
                queued += len(item.target) + sum(len(n) + len(v) for n, v in item.headers)
            else:
                assert isinstance(item, EndOfMessage | ParseError)
        pipeline = limits.max_pipeline_bytes + self.largest
        assert conn._pending_bytes <= pipeline, ("pending", conn._pending_bytes)
        assert reader._held_bytes <= limits.max_pipeline_bytes, ("held", reader._held_bytes)
        total = conn._pending_bytes + queued + reader._held_bytes
        assert total <= 2 * pipeline, ("held in total", total)
        if not reader.broken:
            url = _url_length(reader)
            assert url <= limits.max_request_line, ("url", url)
            assert reader._head_size <= limits.max_head, ("head", reader._head_size)
            assert reader._section_raw <= limits.max_head, ("section", reader._section_raw)
            assert reader._field_count <= limits.max_fields, ("fields", reader._field_count)


def _url_length(reader: object) -> int:
    """Bytes of the request-target gathered so far (private; two spellings known)."""
    url = getattr(reader, "_url", None)
    if isinstance(url, bytes):
        return len(url)
    if isinstance(url, list):
        return sum(len(piece) for piece in url)
    raise AssertionError("harness: RequestReader internals changed; update check_bounded")


def test_one_input(data: bytes) -> None:
    Harness(http_input(data)).run()


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
