"""The gateway side of the fabric: HTTP requests handed to workers over a ROUTER socket.

Strategy: :class:`FabricAdapter` is an :class:`~zmqhttp.server.cycle.AppAdapter`
that runs on the server's event loop, like the ASGI adapter, but instead of
calling an app it forwards each :class:`~zmqhttp.server.cycle.RequestCycle` to a
worker process (``docs/protocol.md``). It owns one plain ``zmq.Socket``
(ROUTER, ``ROUTER_MANDATORY``, ``NOBLOCK`` sends only) registered with the
loop's ``add_reader``: the FD is edge-triggered, so every wake-up drains until
``Again`` and any send schedules another look at ``EVENTS``.

Load is balanced by credit: a request goes to the worker with the most free
slots (least recently used among equals), never beyond its credit; when none
has credit it waits in a bounded queue. Request bodies stream within the
worker's body window; response bodies are credited back as the client's
output drains (the cycle's output waiter). One timer tick a tenth of a second
sends heartbeats, detects lost workers and expires queue and request
deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import itertools
import logging
from collections import deque
from collections.abc import Collection
from typing import Any

import zmq
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.backend import Socket as _BackendSocket

from zmqhttp.config import Config
from zmqhttp.errors import (
    ConfigError,
    FabricError,
    FabricProtocolError,
    NoWorker,
    WorkerLost,
    WorkerTimeout,
)
from zmqhttp.fabric.curve import (
    secure_server,
    server_security,
    start_authenticator,
    stop_authenticator,
)
from zmqhttp.fabric.metrics import FabricMetrics
from zmqhttp.fabric.protocol import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    REVISION,
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
from zmqhttp.http.events import Headers, Request
from zmqhttp.observability.metrics import Registry
from zmqhttp.server.clock import Clock, SystemClock
from zmqhttp.server.cycle import RequestCycle

__all__ = ["FabricAdapter"]

log = logging.getLogger("zmqhttp.fabric")

#: Messages handled per wake-up before yielding to other loop callbacks.
_DRAIN_BUDGET = 512
#: How often heartbeats, liveness and deadlines are checked.
_TICK = 0.1
#: Largest request body piece sent in one RequestBody.
_BODY_CHUNK = 64 * 1024
#: Retry delay for messages a full pipe to a worker refused (EAGAIN).
_RETRY_DELAY = 0.005
#: Malformed messages logged per second at most (the rest are counted).
_MALFORMED_LOGS_PER_SECOND = 5
#: RFC 9110 §9.2.2: may be sent again without changing the outcome.
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
_TEXT = b"text/plain; charset=utf-8"
_LINGER_MS = 200
# The sugar ``send_multipart``/``recv_multipart`` of pyzmq cost 4-5 us a
# message more than the backend's per-frame calls (measured: 4.3 us against
# 0.5 us to send three frames, 4.8 against 2.3 to receive them): IntFlag
# arithmetic and per-frame keyword handling. A request crosses the ROUTER at
# least twice, so the gateway calls the backend directly, with plain ints.
_send_frame = _BackendSocket.send
_recv_frame = _BackendSocket.recv
_get_option = _BackendSocket.get
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
# An IntEnum member: the backend's option lookup is faster with it than with an int.
_RCVMORE = zmq.RCVMORE
# Frames at least this long go zero-copy (pyzmq's own COPY_THRESHOLD); below
# it a copy is cheaper than the Frame and its release callback.
_ZERO_COPY_MIN = zmq.COPY_THRESHOLD


def _gone(cycle: RequestCycle) -> bool:
    """The client left, or the connection ended the exchange on its own (408, 500)."""
    return cycle.disconnected or cycle.finished


class _State(enum.Enum):
    #: Waiting in the queue for a worker with credit.
    QUEUED = "queued"
    #: RequestHead sent; the worker has it.
    SENT = "sent"
    #: Answered, cancelled or failed: nothing more happens.
    DONE = "done"


class _SendResult(enum.Enum):
    SENT = 1
    FULL = 2  # queued in the worker's outbox
    UNREACHABLE = 3


class _Worker:
    """What the gateway knows about one worker (one ROUTER identity)."""

    __slots__ = ("body_window", "capacity", "credit", "draining", "identity", "jobs",
                 "last_heard", "last_sent", "last_used", "name", "outbox")

    def __init__(self, identity: bytes, ready: Ready, now: float) -> None:
        self.identity = identity
        self.name = ready.name
        self.capacity = ready.capacity
        self.credit = ready.capacity
        self.body_window = ready.body_window
        self.draining = False
        self.jobs: dict[int, _Job] = {}
        self.last_heard = now
        self.last_sent = now
        self.last_used = 0.0
        #: Frames a full pipe refused, sent again in order before anything new.
        self.outbox: deque[list[bytes]] = deque()

    def __repr__(self) -> str:
        return f"<worker {self.name} {self.identity.hex()}>"


class _Job:
    """One attempt at forwarding a cycle (a retry is a new job)."""

    __slots__ = ("body_credit", "body_sent", "continued", "cycle", "deadline", "end_sent",
                 "head", "head_received", "id", "resp_window", "retried", "state",
                 "uncredited", "undelivered", "waiting_output", "worker")

    def __init__(self, request_id: int, cycle: RequestCycle, deadline: float,
                 retried: bool = False) -> None:
        self.id = request_id
        self.cycle = cycle
        self.state = _State.QUEUED
        self.worker: _Worker | None = None
        #: Queue deadline while queued; response-head deadline once sent.
        self.deadline = deadline
        self.retried = retried
        #: The encoded RequestHead once dispatched (found in a lost worker's outbox).
        self.head: list[bytes] | None = None
        #: The head's send met EHOSTUNREACH: the worker is gone and never saw it.
        self.undelivered = False
        self.body_credit = 0
        self.body_sent = 0
        self.end_sent = False
        self.continued = False
        self.head_received = False
        self.resp_window = 0
        self.uncredited = 0
        self.waiting_output = False

    @property
    def expect_continue(self) -> bool:
        return self.cycle.request.expect_continue

    @property
    def has_body(self) -> bool:
        request = self.cycle.request
        return request.chunked or bool(request.content_length)


class FabricAdapter:
    """Serves every request through the workers connected to the fabric.

    Args:
        config: the server's settings: ``fabric`` (endpoints to bind),
            ``queue_limit``, ``queue_timeout``, ``request_timeout``;
            ``output_high_water`` is also each request's response window.
        context: a ZeroMQ context to use; one is created (and terminated) if
            not given.
        clock: time source, injectable for tests.
        trusted_keys: with CURVE on (``config.curve_secret_key``), Z85 public
            keys allowed besides ``config.authorized_keys``: the ephemeral key
            of the gateway's own local workers.

    Use ``Server(None, config, adapter=FabricAdapter(config))``. The fabric
    sockets bind in :meth:`startup`; :attr:`endpoints` then lists them with
    wildcard ports resolved.
    """

    def __init__(self, config: Config, *, context: zmq.Context[Any] | None = None,
                 clock: Clock | None = None, trusted_keys: Collection[bytes] = ()) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._trusted_keys = frozenset(trusted_keys)
        self._authenticator: AsyncioAuthenticator | None = None
        self._context = context
        self._own_context = context is None
        self._socket: zmq.Socket[bytes] | None = None
        self._fd: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The server began a graceful stop (see draining()).
        self._draining = False
        self._tick_handle: asyncio.TimerHandle | None = None
        self._retry_handle: asyncio.TimerHandle | None = None
        self._read_scheduled = False
        self._workers: dict[bytes, _Worker] = {}
        self._queue: deque[_Job] = deque()
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count(1)
        self._malformed_window = 0.0
        self._malformed_count = 0
        self.endpoints: list[str] = []
        #: Always counted (rare events only); exposed by :meth:`register_metrics`.
        self.metrics = FabricMetrics()

    # -- AppAdapter ------------------------------------------------------------------

    async def startup(self) -> None:
        """Bind the ROUTER socket to every ``config.fabric`` endpoint."""
        if not self.config.fabric:
            raise ConfigError("the gateway needs at least one --fabric endpoint")
        security = server_security(self.config, self._trusted_keys)  # raises ConfigError
        if security is None and not self.config.fabric_insecure:
            _refuse_exposed(self.config.fabric)
        self._loop = asyncio.get_running_loop()
        if self._context is None:
            self._context = zmq.Context()
        sock: zmq.Socket[bytes] = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.LINGER, _LINGER_MS)
        try:
            if security is not None:
                # ZAP handler first: libzmq lets any CURVE client in while none is bound.
                self._authenticator = start_authenticator(self._context, security.allowed)
                secure_server(sock, security)
            for endpoint in self.config.fabric:
                sock.bind(endpoint)
                last = sock.getsockopt(zmq.LAST_ENDPOINT)
                self.endpoints.append(last.decode() if isinstance(last, bytes) else str(last))
        except (zmq.ZMQError, ConfigError):
            sock.close(linger=0)
            self._stop_authenticator()
            self._terminate_context()
            raise
        self._socket = sock
        self._fd = sock.getsockopt(zmq.FD)
        for endpoint in self.endpoints:
            log.info("Fabric listening on %s", endpoint)
        self._loop.add_reader(self._fd, self._on_readable)
        self._tick_handle = self._loop.call_later(_TICK, self._tick)
        self._on_readable()

    def draining(self) -> None:
        """The server began a graceful stop: queued requests no worker can take get 503 now.

        Otherwise they would hold the stop until their queue deadline; with a
        worker attached they are still served, as the graceful stop promises.
        """
        self._draining = True
        self._fail_queued_if_workerless()

    def _fail_queued_if_workerless(self) -> None:
        if self._workers:
            return
        for job in list(self._jobs.values()):
            if job.state is _State.QUEUED:
                self._fail(job, NoWorker("gateway shutting down with no worker attached"))

    async def shutdown(self) -> None:
        """Cancel what is left (reason 3) and say Goodbye to every worker."""
        for job in list(self._jobs.values()):
            if job.state is _State.SENT:
                self._cancel(job, CancelReason.SHUTDOWN)
            self._fail(job, NoWorker("gateway shutting down"))
        for worker in list(self._workers.values()):
            self._send(worker, Goodbye())
        self._workers.clear()

    def close(self) -> None:
        """Close the socket (after a short linger for the last messages)."""
        for handle in (self._tick_handle, self._retry_handle):
            if handle is not None:
                handle.cancel()
        self._tick_handle = self._retry_handle = None
        sock = self._socket
        if sock is None:
            return
        if self._workers:  # closed without shutdown(): still tell the workers
            for worker in list(self._workers.values()):
                self._send(worker, Goodbye())
            self._workers.clear()
        self._socket = None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        sock.close()
        self._stop_authenticator()
        self._terminate_context()

    def _stop_authenticator(self) -> None:
        # Its ZAP socket lives in our context: term() would wait for it forever.
        if self._authenticator is not None:
            stop_authenticator(self._authenticator)
            self._authenticator = None

    def _terminate_context(self) -> None:
        if self._own_context and self._context is not None:
            self._context.term()
            self._context = None

    def handle(self, cycle: RequestCycle) -> None:
        path = cycle.request.path
        if path == b"/healthz":
            self._respond(cycle, 200, b"ok\n")
            return
        if path == b"/readyz":
            if self.ready:
                self._respond(cycle, 200, b"ready\n")
            else:
                self._respond(cycle, 503, b"no worker attached\n", retry_after=True)
            return
        now = self.clock.monotonic()
        job = _Job(next(self._ids), cycle, now + self.config.queue_timeout)
        self._jobs[job.id] = job
        cycle.body.listener = lambda: self._body_event(job)
        self._enqueue(job)

    # -- public state ------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """At least one worker is attached (and not leaving)."""
        return any(not w.draining for w in self._workers.values())

    def register_metrics(self, registry: Registry) -> None:
        """Expose the fabric metrics on ``registry`` (the server's ``--metrics-bind``)."""
        self.metrics.register(registry)
        registry.add_collector(self._collect_metrics)

    def _collect_metrics(self) -> None:
        queued = len(self._queue)
        self.metrics.collect(self._workers.values(), queued=queued,
                             in_flight=len(self._jobs) - queued,
                             queue_limit=self.config.queue_limit, now=self.clock.monotonic())

    @property
    def worker_count(self) -> int:
        return len(self._workers)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # -- dispatching --------------------------------------------------------------------

    def _enqueue(self, job: _Job, front: bool = False) -> None:
        # A non-empty queue means no worker had credit when it last changed
        # (_add_credit drains it), so only an empty queue is worth a pick.
        if not self._queue or front:
            worker = self._pick()
            if worker is not None:
                self._dispatch(job, worker)
                return
        if len(self._queue) >= self.config.queue_limit:
            self._fail(job, NoWorker("request queue full"))
            return
        if front:
            self._queue.appendleft(job)
        else:
            self._queue.append(job)

    def _pick(self) -> _Worker | None:
        best: _Worker | None = None
        for worker in self._workers.values():
            if worker.credit <= 0 or worker.draining:
                continue
            if best is None or (worker.credit, -worker.last_used) > (best.credit, -best.last_used):
                best = worker
        return best

    def _dispatch(self, job: _Job, worker: _Worker) -> None:
        """Send the job's head to ``worker``, which has credit."""
        cycle = job.cycle
        request = cycle.request
        now = self.clock.monotonic()
        head = RequestHead(
            id=job.id, method=request.method, target=request.target, path=request.path,
            query=request.query, headers=_forwarded_headers(request),
            http_version=request.http_version,
            scheme=cycle.scheme, client=cycle.client, server=cycle.server,
            root_path=cycle.root_path,
            content_length=None if request.chunked else (request.content_length or 0),
            expect_continue=request.expect_continue,
            response_window=self.config.output_high_water, revision=REVISION)
        try:
            frames = encode(head)
        except FabricProtocolError as error:  # pragma: no cover - heads are bounded
            log.error("cannot forward %r: %s", request.target, error)
            self._fail(job, WorkerLost(str(error)))
            return
        worker.credit -= 1
        worker.last_used = now
        worker.jobs[job.id] = job
        job.worker = worker
        job.state = _State.SENT
        job.deadline = now + self.config.request_timeout
        job.body_credit = worker.body_window
        job.resp_window = self.config.output_high_water
        job.head = frames
        if not self._send_frames(worker, frames):
            job.undelivered = True  # _lose (scheduled) sends it elsewhere
            return
        if job.has_body:
            self._pump_body(job)

    def _drain_queue(self) -> None:
        queue = self._queue
        while queue:
            job = queue[0]
            if job.state is not _State.QUEUED:
                queue.popleft()
                continue
            worker = self._pick()
            if worker is None:
                return
            queue.popleft()
            self._dispatch(job, worker)

    # -- request body -------------------------------------------------------------------

    def _body_event(self, job: _Job) -> None:
        """The cycle's body listener: bytes arrived, the body ended or failed."""
        if job.state is _State.DONE:
            return
        if _gone(job.cycle):
            self._client_gone(job)
            return
        if job.state is _State.SENT:
            self._pump_body(job)

    def _pump_body(self, job: _Job) -> None:
        sent, ended = job.body_sent, job.end_sent
        self._send_body(job)
        if (job.body_sent != sent or job.end_sent != ended) and not job.head_received:
            # request_timeout bounds the worker's silence, not the upload: while
            # the body still goes to the worker, it cannot be expected to answer.
            job.deadline = self.clock.monotonic() + self.config.request_timeout

    def _send_body(self, job: _Job) -> None:
        """Send what the body window allows, and RequestEnd once the body is over."""
        if job.state is not _State.SENT or job.end_sent or not job.has_body:
            return
        if job.undelivered:
            return  # kept for another worker (see _lose)
        if job.expect_continue and not job.continued:
            return  # not a byte (nor a 100) before the worker's Continue
        worker = job.worker
        assert worker is not None
        body = job.cycle.body
        while True:
            if body.exhausted:  # also when the window closed on the last byte
                job.end_sent = True
                self._send(worker, RequestEnd(job.id, []))
                return
            if job.body_credit <= 0:
                return
            try:
                data = body.read_nowait(min(job.body_credit, _BODY_CHUNK))
            except Exception:
                # The client left, or the connection gave up on the body (408).
                if _gone(job.cycle):
                    self._client_gone(job)
                return
            if data is None:
                return
            if not data:
                job.end_sent = True
                self._send(worker, RequestEnd(job.id, []))
                return
            job.body_credit -= len(data)
            job.body_sent += len(data)
            self._send(worker, RequestBody(job.id, data))

    # -- the socket -------------------------------------------------------------------

    def _on_readable(self) -> None:
        self._read_scheduled = False
        sock = self._socket
        if sock is None:
            return
        for _ in range(_DRAIN_BUDGET):
            try:
                frames = _recv_message(sock)
            except zmq.Again:
                return
            except zmq.ZMQError:  # pragma: no cover - the socket is closing
                return
            try:
                self._received(frames)
            except Exception:
                log.exception("internal error handling a fabric message")
            if self._socket is None:
                return
        self._schedule_read()  # budget used: the rest after other callbacks

    def _schedule_read(self) -> None:
        if not self._read_scheduled and self._loop is not None:
            self._read_scheduled = True
            self._loop.call_soon(self._on_readable)

    def _send(self, worker: _Worker, message: Message) -> None:
        self._send_frames(worker, encode(message))

    def _send_frames(self, worker: _Worker, frames: list[bytes]) -> bool:
        """Send or queue ``frames``; False if the worker is unreachable (they went nowhere)."""
        if worker.outbox:
            worker.outbox.append(frames)
            return True
        return self._try_send(worker, frames) is not _SendResult.UNREACHABLE

    def _try_send(self, worker: _Worker, frames: list[bytes]) -> _SendResult:
        sock = self._socket
        if sock is None:
            return _SendResult.SENT
        try:
            _send_message(sock, worker.identity, frames)
        except zmq.Again:
            self.metrics.send_full.inc()
            worker.outbox.append(frames)
            self._schedule_retry()
            return _SendResult.FULL
        except zmq.ZMQError as error:
            if error.errno == zmq.EHOSTUNREACH:
                # ROUTER_MANDATORY: libzmq has no pipe for this identity any
                # more (the worker's connection died before a heartbeat told us).
                if self._workers.get(worker.identity) is worker and self._loop is not None:
                    self._loop.call_soon(self._lose, worker, "unreachable")
                return _SendResult.UNREACHABLE
            raise
        finally:
            # A send may consume the FD's edge: look at EVENTS again soon.
            self._schedule_read()
        worker.last_sent = self.clock.monotonic()
        return _SendResult.SENT

    def _schedule_retry(self) -> None:
        if self._retry_handle is None and self._loop is not None:
            self._retry_handle = self._loop.call_later(_RETRY_DELAY, self._retry_outboxes)

    def _retry_outboxes(self) -> None:
        self._retry_handle = None
        for worker in list(self._workers.values()):
            outbox = worker.outbox
            while outbox:
                frames = outbox.popleft()
                if self._try_send(worker, frames) is _SendResult.FULL:
                    # _try_send put it at the back: restore the order.
                    outbox.appendleft(outbox.pop())
                    break

    def _send_raw_goodbye(self, identity: bytes) -> None:
        sock = self._socket
        if sock is None:
            return
        with contextlib.suppress(zmq.ZMQError):
            _send_message(sock, identity, encode(Goodbye()))
        self._schedule_read()

    # -- messages from workers ------------------------------------------------------------

    def _received(self, frames: list[bytes]) -> None:
        identity = frames[0]
        try:
            message = decode(frames[1:], Side.WORKER)
        except FabricProtocolError as error:
            self._malformed(identity, error)
            return
        now = self.clock.monotonic()
        worker = self._workers.get(identity)
        if isinstance(message, Ready):
            self._ready(identity, message, worker, now)
            return
        if worker is None:
            if not isinstance(message, Goodbye):
                self._send_raw_goodbye(identity)  # 9.4: I do not know you
            return
        worker.last_heard = now
        if isinstance(message, Response):  # the common case first
            self._response(worker, message)
            return
        if isinstance(message, Heartbeat):
            return
        if isinstance(message, Credit):
            self._add_credit(worker, message.slots)
            return
        if isinstance(message, Goodbye):
            log.info("worker %s is leaving (%d in flight)", worker.name, len(worker.jobs))
            worker.draining = True
            worker.credit = 0
            if not worker.jobs:
                self._forget(worker)
            return
        job = worker.jobs.get(message.id)
        if job is None or job.state is not _State.SENT:
            return  # crossed a Cancel or the end: normal
        if isinstance(message, ResponseBody):
            self._response_body(job, message)
        elif isinstance(message, ResponseHead):
            self._response_head(job, message)
        elif isinstance(message, ResponseEnd):
            self._response_end(job, message)
        elif isinstance(message, BodyCredit):
            job.body_credit += message.size
            self._pump_body(job)
        elif (isinstance(message, Continue) and job.expect_continue and not job.continued
              and not job.head_received):
            job.continued = True
            job.cycle.send_continue()
            self._pump_body(job)

    def _add_credit(self, worker: _Worker, slots: int) -> None:
        if not worker.draining:
            worker.credit += slots
            if self._queue:  # else nothing waits: the next handle() takes the credit
                self._drain_queue()

    def _ready(self, identity: bytes, ready: Ready, known: _Worker | None, now: float) -> None:
        if known is not None:
            self._lose(known, "restarted (a second Ready)")
        worker = _Worker(identity, ready, now)
        self._workers[identity] = worker
        self.metrics.worker_attachments.inc()
        log.info("worker %s (pid %d, %s) attached with capacity %d",
                 ready.name, ready.pid, ready.app, ready.capacity)
        self._drain_queue()

    def _malformed(self, identity: bytes, error: FabricProtocolError) -> None:
        now = self.clock.monotonic()
        if now - self._malformed_window >= 1.0:
            if self._malformed_count > _MALFORMED_LOGS_PER_SECOND:
                log.warning("%d more malformed fabric messages dropped",
                            self._malformed_count - _MALFORMED_LOGS_PER_SECOND)
            self._malformed_window = now
            self._malformed_count = 0
        self._malformed_count += 1
        if self._malformed_count <= _MALFORMED_LOGS_PER_SECOND:
            log.warning("malformed fabric message from %s dropped: %s", identity.hex(), error)

    # -- responses ------------------------------------------------------------------------

    def _response_head(self, job: _Job, message: ResponseHead) -> None:
        if job.head_received:
            self._protocol_error(job, "a second ResponseHead")
            return
        job.head_received = True
        cycle = job.cycle
        cycle.start_response(message.status, message.headers, message.reason)
        if not cycle.response_started or cycle.finished:
            # The head was refused (the connection answered 500) or the client left.
            self._cancel(job, CancelReason.CLIENT_GONE if cycle.disconnected
                         else CancelReason.PROTOCOL_ERROR)
            self._finish(job)

    def _response(self, worker: _Worker, message: Response) -> None:
        """A whole response in one message (revision 1): head, body and end."""
        job = worker.jobs.get(message.id)
        if job is not None and job.state is _State.SENT:
            if job.head_received:
                self._protocol_error(job, "a Response after ResponseHead")
            elif len(message.data) > job.resp_window:
                self._protocol_error(job, "a Response larger than the response window")
            else:
                job.head_received = True
                self._finish(job)  # before the cycle ends: it may start the next request
                self._respond_whole(job.cycle, message)
        # The slots come back even for a request cancelled or failed meanwhile
        # (section 9.3: "the slot still comes back by Credit").
        if message.credit:
            self._add_credit(worker, message.credit)

    @staticmethod
    def _respond_whole(cycle: RequestCycle, message: Response) -> None:
        # A HEAD response's body is discarded here, as ResponseBody's is.
        body = b"" if cycle.request.method == b"HEAD" else message.data
        if not message.reason:
            cycle.respond(message.status, message.headers, body)
            return
        cycle.start_response(message.status, message.headers, message.reason)
        if cycle.response_started and not cycle.finished:
            if body:
                cycle.send_data(body)
            cycle.end_response()

    def _response_body(self, job: _Job, message: ResponseBody) -> None:
        if not job.head_received:
            self._protocol_error(job, "ResponseBody before ResponseHead")
            return
        size = len(message.data)
        if size > job.resp_window:
            self._protocol_error(job, "more response body than its credit")
            return
        if not size:
            return
        job.resp_window -= size
        job.uncredited += size
        cycle = job.cycle
        if cycle.request.method != b"HEAD":
            cycle.send_data(message.data)
            if cycle.finished or cycle.disconnected:
                self._cancel(job, CancelReason.CLIENT_GONE if cycle.disconnected
                             else CancelReason.PROTOCOL_ERROR)
                self._finish(job)
                return
        self._grant_response_credit(job)

    def _grant_response_credit(self, job: _Job) -> None:
        """Credit back what the client took; wait while its output is over high water."""
        if job.state is not _State.SENT or job.waiting_output or not job.uncredited:
            return
        # Batch: credit once half the window is used (the worker stalls only
        # on a closed window, which is always more than half used).
        if job.uncredited * 2 < self.config.output_high_water and job.resp_window > 0:
            return
        waiter = job.cycle.output_waiter()
        if waiter is not None:
            job.waiting_output = True
            waiter.add_done_callback(lambda _f: self._output_drained(job))
            return
        size, job.uncredited = job.uncredited, 0
        job.resp_window += size
        assert job.worker is not None
        self._send(job.worker, ResponseCredit(job.id, size))

    def _output_drained(self, job: _Job) -> None:
        job.waiting_output = False
        if job.state is not _State.SENT:
            return
        if _gone(job.cycle):
            self._client_gone(job)
            return
        self._grant_response_credit(job)

    def _response_end(self, job: _Job, message: ResponseEnd) -> None:
        if not job.head_received:
            self._protocol_error(job, "ResponseEnd before ResponseHead")
            return
        self._finish(job)  # before the cycle ends: it may start the next request
        if message.aborted:
            job.cycle.abort()
        else:
            job.cycle.end_response()

    # -- endings ---------------------------------------------------------------------------

    def _finish(self, job: _Job) -> None:
        """Forget the job (its worker's slot returns by Credit, not here)."""
        if job.state is _State.DONE:
            return
        if job.state is _State.QUEUED:
            with contextlib.suppress(ValueError):
                self._queue.remove(job)
        job.state = _State.DONE
        self._jobs.pop(job.id, None)
        if job.cycle.body.listener is not None:
            job.cycle.body.listener = None
        worker = job.worker
        if worker is not None:
            worker.jobs.pop(job.id, None)
            if worker.draining and not worker.jobs and self._workers.get(worker.identity) is worker:
                self._forget(worker)

    def _fail(self, job: _Job, error: FabricError) -> None:
        """End the job with ``error``'s status, or a closed connection once started."""
        self._finish(job)
        cycle = job.cycle
        if cycle.finished or cycle.disconnected:
            return
        if cycle.response_started:
            cycle.abort()
            return
        log.info("%s %r: %s", cycle.request.method.decode("ascii", "replace"),
                 cycle.request.target, error)
        self._respond(cycle, error.status, f"{error}\n".encode(),
                      retry_after=isinstance(error, NoWorker))

    def _cancel(self, job: _Job, reason: CancelReason) -> None:
        worker = job.worker
        if (job.state is _State.SENT and worker is not None
                and self._workers.get(worker.identity) is worker):
            self._send(worker, Cancel(job.id, reason))

    def _client_gone(self, job: _Job) -> None:
        self._cancel(job, CancelReason.CLIENT_GONE)
        self._finish(job)

    def _protocol_error(self, job: _Job, what: str) -> None:
        worker = job.worker
        log.warning("worker %s broke the protocol on request %d: %s",
                    worker.name if worker else "?", job.id, what)
        self._cancel(job, CancelReason.PROTOCOL_ERROR)
        self._fail(job, WorkerLost(f"worker protocol error: {what}"))

    def _lose(self, worker: _Worker, why: str) -> None:
        """Forget ``worker``; its requests fail (502 / abort) or are retried once."""
        if self._workers.get(worker.identity) is not worker:
            return
        del self._workers[worker.identity]
        self.metrics.worker_losses.inc()
        log.warning("worker %s lost (%s); %d request(s) in flight", worker.name, why,
                    len(worker.jobs))
        jobs, worker.jobs = list(worker.jobs.values()), {}
        unsent = {id(frames) for frames in worker.outbox}
        worker.outbox.clear()
        for job in jobs:
            if job.state is not _State.SENT:
                continue
            if ((job.undelivered or id(job.head) in unsent) and job.body_sent == 0
                    and not job.end_sent and not job.cycle.disconnected):
                # The worker never received the request: whatever its method,
                # sending it to another worker cannot run it twice.
                self._requeue(job)
            elif (not job.retried and not job.head_received and job.body_sent == 0
                    and not job.end_sent and job.cycle.request.method in _IDEMPOTENT
                    and not job.cycle.disconnected):
                self._retry(job)
            else:
                self._fail(job, WorkerLost("worker lost"))

    def _requeue(self, job: _Job) -> None:
        log.info("request %d never reached its worker; queued again", job.id)
        self._retry(job, counted=False)

    def _retry(self, job: _Job, counted: bool = True) -> None:
        job.state = _State.DONE
        self._jobs.pop(job.id, None)
        now = self.clock.monotonic()
        again = _Job(next(self._ids), job.cycle, now + self.config.queue_timeout,
                     retried=job.retried or counted)
        if counted:
            self.metrics.retries.inc()
        self._jobs[again.id] = again
        job.cycle.body.listener = lambda: self._body_event(again)
        log.info("retrying request %d as %d", job.id, again.id)
        self._enqueue(again, front=True)

    def _forget(self, worker: _Worker) -> None:
        if self._workers.get(worker.identity) is worker:
            del self._workers[worker.identity]
            log.info("worker %s detached", worker.name)

    # -- timers ------------------------------------------------------------------------------

    def _tick(self) -> None:
        self._tick_handle = None
        try:
            self._check(self.clock.monotonic())
        except Exception:
            log.exception("internal error in the fabric timer")
        finally:
            if self._socket is not None and self._loop is not None:
                self._tick_handle = self._loop.call_later(_TICK, self._tick)

    def _check(self, now: float) -> None:
        if self._draining:
            self._fail_queued_if_workerless()
        if self._queue:  # a safety net: credit always drains it where it arrives
            self._drain_queue()
        lost_after = HEARTBEAT_INTERVAL * HEARTBEAT_LIVENESS
        for worker in list(self._workers.values()):
            if now - worker.last_heard > lost_after:
                self._lose(worker, f"silent for {now - worker.last_heard:.1f} s")
            elif now - worker.last_sent >= HEARTBEAT_INTERVAL and not worker.outbox:
                self._send(worker, Heartbeat())
        for job in list(self._jobs.values()):
            if job.state is _State.DONE:
                continue
            if _gone(job.cycle):
                self._client_gone(job)
            elif job.state is _State.QUEUED and now >= job.deadline:
                self._fail(job, NoWorker("no worker became free in time"))
            elif job.state is _State.SENT and not job.head_received and now >= job.deadline:
                self._cancel(job, CancelReason.TIMEOUT)
                self._fail(job, WorkerTimeout("the worker did not answer in time"))

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _respond(cycle: RequestCycle, status: int, body: bytes, *,
                 retry_after: bool = False) -> None:
        headers: Headers = [(b"content-type", _TEXT), (b"content-length", b"%d" % len(body))]
        if retry_after:
            headers.append((b"retry-after", b"1"))
        cycle.respond(status, headers, body)


def _refuse_exposed(endpoints: list[str]) -> None:
    """Raise unless every endpoint is provably local (the fabric without CURVE)."""
    for endpoint in endpoints:
        if not _private_endpoint(endpoint):
            # Whoever connects gets requests, cookies included: without CURVE
            # only loopback and ipc:// are safe.
            raise ConfigError(f"refusing to bind the fabric on {endpoint} without CURVE "
                              "(--curve-secret-key, --authorized-keys); use a loopback or "
                              "ipc:// endpoint, or --insecure")


def _forwarded_headers(request: Request) -> Headers:
    """The header list as the worker must see it.

    RFC 9112 §3.2.2: with an absolute-form target the server ignores Host and
    uses the target's authority, and a forwarder replaces Host with it. The
    worker learns the authority only from Host, so the gateway rewrites it.
    """
    host = request.host
    headers = request.headers
    if not host:
        return headers
    for name, value in headers:
        if name == b"host":
            if value == host:
                return headers  # the usual case: origin-form, nothing to copy
            break
    return [(b"host", host), *((n, v) for n, v in headers if n != b"host")]


def _private_endpoint(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on a loopback address."""
    if not endpoint.startswith("tcp://"):
        return endpoint.startswith(("ipc://", "inproc://"))
    host = endpoint[len("tcp://"):].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name, a DNS name: not provably loopback



def _send_message(sock: zmq.Socket[bytes], identity: bytes, frames: list[bytes]) -> None:
    """``[identity, *frames]`` as one message, ``NOBLOCK``.

    Only the identity frame can fail (``Again``: the worker's pipe is full;
    ``EHOSTUNREACH``: it is gone): libzmq's ROUTER checks the pipe on the first
    part and takes the rest of a started message whole.
    """
    _send_frame(sock, identity, _NOBLOCK_MORE)
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        flags = _NOBLOCK if index == last else _NOBLOCK_MORE
        if len(frame) < _ZERO_COPY_MIN:
            _send_frame(sock, frame, flags)
        else:
            _send_frame(sock, frame, flags, False)


def _recv_message(sock: zmq.Socket[bytes]) -> list[bytes]:
    """The next whole message (identity first), ``NOBLOCK``.

    Raises:
        zmq.Again: no message is waiting.
    """
    # A ROUTER always delivers the identity and at least one more part, and
    # the parts of a message arrive together: only the first recv can be Again.
    frames: list[bytes] = [_recv_frame(sock, _NOBLOCK), _recv_frame(sock, _NOBLOCK)]
    while _get_option(sock, _RCVMORE):
        frames.append(_recv_frame(sock, _NOBLOCK))
    return frames
