"""The gateway side of the fabric: HTTP requests handed to workers over a ROUTER socket.

Strategy: :class:`FabricAdapter` is an :class:`~zmqhttp.server.cycle.AppAdapter`
that runs on the server's event loop, like the ASGI adapter, but instead of
calling an app it forwards each :class:`~zmqhttp.server.cycle.RequestCycle` to a
worker process (``docs/protocol.md``). It owns one plain ``zmq.Socket``
(ROUTER, ``ROUTER_MANDATORY``, ``NOBLOCK`` sends only) registered with the
loop's ``add_reader`` (:mod:`zmqhttp.fabric.router`): the FD is edge-triggered,
so every wake-up drains until ``Again`` and any send schedules another look at
``EVENTS``.

Load is balanced by credit: a request goes to the worker with the most free
slots (least recently used among equals), never beyond its credit; when none
has credit it waits in a bounded queue. Request bodies stream within the
worker's body window; response bodies are credited back as the client's
output drains (the cycle's output waiter). One timer tick a tenth of a second
sends heartbeats, detects lost workers and expires queue and request
deadlines.

Here: the adapter's life cycle, the queue and dispatch, messages from
workers, worker loss and retries, the tick. Elsewhere: the records
(:mod:`~zmqhttp.fabric.jobs`), the socket (:mod:`~zmqhttp.fabric.router`),
bodies, responses and job endings (:mod:`~zmqhttp.fabric.relay`).
"""


from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
from collections import deque
from collections.abc import Collection
from typing import Any

import zmq
from zmq.auth.asyncio import AsyncioAuthenticator

from zmqhttp.config import Config
from zmqhttp.errors import (
    ConfigError,
    FabricProtocolError,
    NoWorker,
    WorkerLost,
    WorkerTimeout,
)
from zmqhttp.fabric.curve import server_security, stop_authenticator
from zmqhttp.fabric.jobs import AttachedWorker, Job, JobState, gone
from zmqhttp.fabric.metrics import FabricMetrics
from zmqhttp.fabric.protocol import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    REVISION,
    BodyCredit,
    CancelReason,
    Continue,
    Credit,
    Goodbye,
    Heartbeat,
    Ready,
    RequestHead,
    Response,
    ResponseBody,
    ResponseEnd,
    ResponseHead,
    Side,
    decode,
    encode,
)
from zmqhttp.fabric.relay import JobRelay, respond_text
from zmqhttp.fabric.router import Router, bind_router
from zmqhttp.http.events import Headers, Request
from zmqhttp.observability.metrics import Registry
from zmqhttp.server.clock import Clock, SystemClock
from zmqhttp.server.cycle import RequestCycle

__all__ = ["FabricAdapter"]

log = logging.getLogger("zmqhttp.fabric")

#: How often heartbeats, liveness and deadlines are checked.
_TICK = 0.1
#: Malformed messages logged per second at most (the rest are counted).
_MALFORMED_LOGS_PER_SECOND = 5
#: RFC 9110 §9.2.2: may be sent again without changing the outcome.
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


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
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The server began a graceful stop (see draining()).
        self._draining = False
        self._tick_handle: asyncio.TimerHandle | None = None
        self._workers: dict[bytes, AttachedWorker] = {}
        self._queue: deque[Job] = deque()
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._malformed_window = 0.0
        self._malformed_count = 0
        self.endpoints: list[str] = []
        #: Always counted (rare events only); exposed by :meth:`register_metrics`.
        self.metrics = FabricMetrics()
        self._router = Router(self._workers, self.metrics, self.clock,
                              handle=self._received, lose=self._lose)
        # Shares the tables above: jobs end there, whoever ends them.
        self._relay = JobRelay(config, self.clock, self._workers, self._jobs, self._queue,
                               self._router)

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
        try:
            sock, self._authenticator, endpoints = bind_router(
                self._context, self.config.fabric, security)
        except (zmq.ZMQError, ConfigError):
            self._terminate_context()
            raise
        self.endpoints.extend(endpoints)
        for endpoint in self.endpoints:
            log.info("Fabric listening on %s", endpoint)
        self._tick_handle = self._loop.call_later(_TICK, self._tick)
        self._router.open(self._loop, sock)

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
            if job.state is JobState.QUEUED:
                self._relay.fail(job, NoWorker("gateway shutting down with no worker attached"))

    async def shutdown(self) -> None:
        """Cancel what is left (reason 3) and say Goodbye to every worker."""
        relay = self._relay
        for job in list(self._jobs.values()):
            if job.state is JobState.SENT:
                relay.cancel(job, CancelReason.SHUTDOWN)
            relay.fail(job, NoWorker("gateway shutting down"))
        for worker in list(self._workers.values()):
            self._router.send(worker, Goodbye())
        self._workers.clear()

    def close(self) -> None:
        """Close the socket (after a short linger for the last messages)."""
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        if not self._router.is_open:
            return
        if self._workers:  # closed without shutdown(): still tell the workers
            for worker in list(self._workers.values()):
                self._router.send(worker, Goodbye())
            self._workers.clear()
        self._router.close()
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
            respond_text(cycle, 200, b"ok\n")
            return
        if path == b"/readyz":
            if self.ready:
                respond_text(cycle, 200, b"ready\n")
            else:
                respond_text(cycle, 503, b"no worker attached\n", retry_after=True)
            return
        now = self.clock.monotonic()
        job = Job(next(self._ids), cycle, now + self.config.queue_timeout)
        self._jobs[job.id] = job
        relay = self._relay
        cycle.body.listener = lambda: relay.body_event(job)
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

    def _enqueue(self, job: Job, front: bool = False) -> None:
        # A non-empty queue means no worker had credit when it last changed
        # (_add_credit drains it), so only an empty queue is worth a pick.
        if not self._queue or front:
            worker = self._pick()
            if worker is not None:
                self._dispatch(job, worker)
                return
        if len(self._queue) >= self.config.queue_limit:
            self._relay.fail(job, NoWorker("request queue full"))
            return
        if front:
            self._queue.appendleft(job)
        else:
            self._queue.append(job)

    def _pick(self) -> AttachedWorker | None:
        best: AttachedWorker | None = None
        for worker in self._workers.values():
            if worker.credit <= 0 or worker.draining:
                continue
            if best is None or (worker.credit, -worker.last_used) > (best.credit, -best.last_used):
                best = worker
        return best

    def _dispatch(self, job: Job, worker: AttachedWorker) -> None:
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
            self._relay.fail(job, WorkerLost(str(error)))
            return
        worker.credit -= 1
        worker.last_used = now
        worker.jobs[job.id] = job
        job.worker = worker
        job.state = JobState.SENT
        job.deadline = now + self.config.request_timeout
        job.body_credit = worker.body_window
        job.resp_window = self.config.output_high_water
        job.head = frames
        if not self._router.send_frames(worker, frames):
            job.undelivered = True  # _lose (scheduled) sends it elsewhere
            return
        if job.has_body:
            self._relay.pump_body(job)

    def _drain_queue(self) -> None:
        queue = self._queue
        while queue:
            job = queue[0]
            if job.state is not JobState.QUEUED:
                queue.popleft()
                continue
            worker = self._pick()
            if worker is None:
                return
            queue.popleft()
            self._dispatch(job, worker)

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
                self._router.send_goodbye_to(identity)  # 9.4: I do not know you
            return
        worker.last_heard = now
        if isinstance(message, Response):  # the common case first
            self._relay.response(worker, message)
            # The slots come back even for a request cancelled or failed meanwhile.
            if message.credit:
                self._add_credit(worker, message.credit)
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
                self._relay.forget(worker)
            return
        job = worker.jobs.get(message.id)
        if job is None or job.state is not JobState.SENT:
            return  # crossed a Cancel or the end: normal
        if isinstance(message, ResponseBody):
            self._relay.response_body(job, message)
        elif isinstance(message, ResponseHead):
            self._relay.response_head(job, message)
        elif isinstance(message, ResponseEnd):
            self._relay.response_end(job, message)
        elif isinstance(message, BodyCredit):
            job.body_credit += message.size
            self._relay.pump_body(job)
        elif (isinstance(message, Continue) and job.expect_continue and not job.continued
              and not job.head_received):
            job.continued = True
            job.cycle.send_continue()
            self._relay.pump_body(job)

    def _add_credit(self, worker: AttachedWorker, slots: int) -> None:
        if not worker.draining:
            worker.credit += slots
            if self._queue:  # else nothing waits: the next handle() takes the credit
                self._drain_queue()

    def _ready(self, identity: bytes, ready: Ready, known: AttachedWorker | None,
               now: float) -> None:
        if known is not None:
            self._lose(known, "restarted (a second Ready)")
        worker = AttachedWorker(identity, ready, now)
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

    # -- worker loss ----------------------------------------------------------------------

    def _lose(self, worker: AttachedWorker, why: str) -> None:
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
            if job.state is not JobState.SENT:
                continue
            if ((job.undelivered or id(job.head) in unsent) and job.body_sent == 0
                    and not job.end_sent and not job.cycle.disconnected):
                # The worker never received the request: whatever its method,
                # sending it to another worker cannot run it twice.
                self._retry(job, counted=False)
            elif (not job.retried and not job.head_received and job.body_sent == 0
                    and not job.end_sent and job.cycle.request.method in _IDEMPOTENT
                    and not job.cycle.disconnected):
                self._retry(job)
            else:
                self._relay.fail(job, WorkerLost("worker lost"))

    def _retry(self, job: Job, counted: bool = True) -> None:
        """Queue ``job``'s request again, first in line; ``counted``: its one retry
        (False when its worker never received it, so it cannot have run)."""
        job.state = JobState.DONE
        self._jobs.pop(job.id, None)
        now = self.clock.monotonic()
        again = Job(next(self._ids), job.cycle, now + self.config.queue_timeout,
                     retried=job.retried or counted)
        if counted:
            self.metrics.retries.inc()
        self._jobs[again.id] = again
        relay = self._relay
        job.cycle.body.listener = lambda: relay.body_event(again)
        log.info("%s request %d as %d", "retrying" if counted else
                 "re-queueing (it never reached its worker)", job.id, again.id)
        self._enqueue(again, front=True)

    # -- timers ------------------------------------------------------------------------------

    def _tick(self) -> None:
        self._tick_handle = None
        try:
            self._check(self.clock.monotonic())
        except Exception:
            log.exception("internal error in the fabric timer")
        finally:
            if self._router.is_open and self._loop is not None:
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
                self._router.send(worker, Heartbeat())
        for job in list(self._jobs.values()):
            if job.state is JobState.DONE:
                continue
            if gone(job.cycle):
                self._relay.client_gone(job)
            elif job.state is JobState.QUEUED and now >= job.deadline:
                self._relay.fail(job, NoWorker("no worker became free in time"))
            elif job.state is JobState.SENT and not job.head_received and now >= job.deadline:
                self._relay.cancel(job, CancelReason.TIMEOUT)
                self._relay.fail(job, WorkerTimeout("the worker did not answer in time"))


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
