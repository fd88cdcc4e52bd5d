"""One dispatched request's bytes both ways, under credit, and how its job ends.

Strategy: :class:`JobRelay` takes over a :class:`~zmqhttp.fabric.jobs.Job` once
the dispatcher has sent its ``RequestHead``. The request body goes out within
the worker's body window (``BodyCredit`` reopens it; with ``Expect:
100-continue`` not a byte before the worker's ``Continue``). The response
comes back either whole in one ``Response`` (the common case, revision 1) or
as ``ResponseHead``/``ResponseBody``/``ResponseEnd`` within the response
window, which is credited back (``ResponseCredit``) as the client's output
drains. Every way a job ends (answered, failed with a status, cancelled, the
client gone, a worker breaking the protocol) is here too, since each of these
steps can end it.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque

from zmqhttp.config import Config
from zmqhttp.errors import FabricError, NoWorker, WorkerLost
from zmqhttp.fabric.jobs import AttachedWorker, Job, JobState, gone
from zmqhttp.fabric.protocol import (
    Cancel,
    CancelReason,
    RequestBody,
    RequestEnd,
    Response,
    ResponseBody,
    ResponseCredit,
    ResponseEnd,
    ResponseHead,
)
from zmqhttp.fabric.router import Router
from zmqhttp.http.events import Headers
from zmqhttp.server.clock import Clock
from zmqhttp.server.cycle import RequestCycle

__all__ = ["JobRelay", "respond_text"]

log = logging.getLogger("zmqhttp.fabric")

#: Largest request body piece sent in one RequestBody.
_BODY_CHUNK = 64 * 1024
_TEXT = b"text/plain; charset=utf-8"


def respond_text(cycle: RequestCycle, status: int, body: bytes, *,
                 retry_after: bool = False) -> None:
    """Answer ``cycle`` from the gateway itself: a short plain-text response."""
    headers: Headers = [(b"content-type", _TEXT), (b"content-length", b"%d" % len(body))]
    if retry_after:
        headers.append((b"retry-after", b"1"))
    cycle.respond(status, headers, body)


class JobRelay:
    """Relays request bodies and responses for the dispatcher's jobs, and ends them.

    Args:
        config: ``request_timeout`` (renewed while the body goes out) and
            ``output_high_water`` (each request's response window).
        clock: the dispatcher's time source.
        workers, jobs, queue: the dispatcher's tables, shared: a job ending
            leaves them, and a leaving worker with no job left is forgotten.
        router: sends to the workers.
    """

    def __init__(self, config: Config, clock: Clock, workers: dict[bytes, AttachedWorker],
                 jobs: dict[int, Job], queue: deque[Job], router: Router) -> None:
        self.config = config
        self.clock = clock
        self._workers = workers
        self._jobs = jobs
        self._queue = queue
        self._router = router

    # -- request body -------------------------------------------------------------------

    def body_event(self, job: Job) -> None:
        """The cycle's body listener: bytes arrived, the body ended or failed."""
        if job.state is JobState.DONE:
            return
        if gone(job.cycle):
            self.client_gone(job)
            return
        if job.state is JobState.SENT:
            self.pump_body(job)

    def pump_body(self, job: Job) -> None:
        """Send what the body window allows now; renew the deadline if anything went."""
        sent, ended = job.body_sent, job.end_sent
        self._send_body(job)
        if (job.body_sent != sent or job.end_sent != ended) and not job.head_received:
            # request_timeout bounds the worker's silence, not the upload: while
            # the body still goes to the worker, it cannot be expected to answer.
            job.deadline = self.clock.monotonic() + self.config.request_timeout

    def _send_body(self, job: Job) -> None:
        """Send what the body window allows, and RequestEnd once the body is over."""
        if job.state is not JobState.SENT or job.end_sent or not job.has_body:
            return
        if job.undelivered:
            return  # kept for another worker (see FabricAdapter._lose)
        if job.expect_continue and not job.continued:
            return  # not a byte (nor a 100) before the worker's Continue
        worker = job.worker
        assert worker is not None
        body = job.cycle.body
        send = self._router.send
        while True:
            if body.exhausted:  # also when the window closed on the last byte
                job.end_sent = True
                send(worker, RequestEnd(job.id, []))
                return
            if job.body_credit <= 0:
                return
            try:
                data = body.read_nowait(min(job.body_credit, _BODY_CHUNK))
            except Exception:
                # The client left, or the connection gave up on the body (408).
                if gone(job.cycle):
                    self.client_gone(job)
                return
            if data is None:
                return
            if not data:
                job.end_sent = True
                send(worker, RequestEnd(job.id, []))
                return
            job.body_credit -= len(data)
            job.body_sent += len(data)
            send(worker, RequestBody(job.id, data))

    # -- responses ------------------------------------------------------------------------

    def response(self, worker: AttachedWorker, message: Response) -> None:
        """A whole response in one message (revision 1): head, body and end.

        Its ``credit`` is the caller's to apply: the slots come back even for
        a request cancelled or failed meanwhile (section 9.3: "the slot still
        comes back by Credit").
        """
        job = worker.jobs.get(message.id)
        if job is not None and job.state is JobState.SENT:
            if job.head_received:
                self.protocol_error(job, "a Response after ResponseHead")
            elif len(message.data) > job.resp_window:
                self.protocol_error(job, "a Response larger than the response window")
            else:
                job.head_received = True
                self.finish(job)  # before the cycle ends: it may start the next request
                self._respond_whole(job.cycle, message)

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

    def response_head(self, job: Job, message: ResponseHead) -> None:
        if job.head_received:
            self.protocol_error(job, "a second ResponseHead")
            return
        job.head_received = True
        cycle = job.cycle
        cycle.start_response(message.status, message.headers, message.reason)
        if not cycle.response_started or cycle.finished:
            # The head was refused (the connection answered 500) or the client left.
            self.cancel(job, CancelReason.CLIENT_GONE if cycle.disconnected
                        else CancelReason.PROTOCOL_ERROR)
            self.finish(job)

    def response_body(self, job: Job, message: ResponseBody) -> None:
        if not job.head_received:
            self.protocol_error(job, "ResponseBody before ResponseHead")
            return
        size = len(message.data)
        if size > job.resp_window:
            self.protocol_error(job, "more response body than its credit")
            return
        if not size:
            return
        job.resp_window -= size
        job.uncredited += size
        cycle = job.cycle
        if cycle.request.method != b"HEAD":
            cycle.send_data(message.data)
            if cycle.finished or cycle.disconnected:
                self.cancel(job, CancelReason.CLIENT_GONE if cycle.disconnected
                            else CancelReason.PROTOCOL_ERROR)
                self.finish(job)
                return
        self._grant_response_credit(job)

    def _grant_response_credit(self, job: Job) -> None:
        """Credit back what the client took; wait while its output is over high water."""
        if job.state is not JobState.SENT or job.waiting_output or not job.uncredited:
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
        self._router.send(job.worker, ResponseCredit(job.id, size))

    def _output_drained(self, job: Job) -> None:
        job.waiting_output = False
        if job.state is not JobState.SENT:
            return
        if gone(job.cycle):
            self.client_gone(job)
            return
        self._grant_response_credit(job)

    def response_end(self, job: Job, message: ResponseEnd) -> None:
        if not job.head_received:
            self.protocol_error(job, "ResponseEnd before ResponseHead")
            return
        self.finish(job)  # before the cycle ends: it may start the next request
        if message.aborted:
            job.cycle.abort()
        else:
            job.cycle.end_response()

    # -- endings ---------------------------------------------------------------------------

    def finish(self, job: Job) -> None:
        """Forget the job (its worker's slot returns by Credit, not here)."""
        if job.state is JobState.DONE:
            return
        if job.state is JobState.QUEUED:
            with contextlib.suppress(ValueError):
                self._queue.remove(job)
        job.state = JobState.DONE
        self._jobs.pop(job.id, None)
        if job.cycle.body.listener is not None:
            job.cycle.body.listener = None
        worker = job.worker
        if worker is not None:
            worker.jobs.pop(job.id, None)
            if worker.draining and not worker.jobs and self._workers.get(worker.identity) is worker:
                self.forget(worker)

    def fail(self, job: Job, error: FabricError) -> None:
        """End the job with ``error``'s status, or a closed connection once started."""
        self.finish(job)
        cycle = job.cycle
        if cycle.finished or cycle.disconnected:
            return
        if cycle.response_started:
            cycle.abort()
            return
        log.info("%s %r: %s", cycle.request.method.decode("ascii", "replace"),
                 cycle.request.target, error)
        respond_text(cycle, error.status, f"{error}\n".encode(),
                     retry_after=isinstance(error, NoWorker))

    def cancel(self, job: Job, reason: CancelReason) -> None:
        """Tell the job's worker to stop, if it has the request and is still attached."""
        worker = job.worker
        if (job.state is JobState.SENT and worker is not None
                and self._workers.get(worker.identity) is worker):
            self._router.send(worker, Cancel(job.id, reason))

    def client_gone(self, job: Job) -> None:
        self.cancel(job, CancelReason.CLIENT_GONE)
        self.finish(job)

    def protocol_error(self, job: Job, what: str) -> None:
        worker = job.worker
        log.warning("worker %s broke the protocol on request %d: %s",
                    worker.name if worker else "?", job.id, what)
        self.cancel(job, CancelReason.PROTOCOL_ERROR)
        self.fail(job, WorkerLost(f"worker protocol error: {what}"))

    def forget(self, worker: AttachedWorker) -> None:
        """Detach a worker that said Goodbye, once its last job is over."""
        if self._workers.get(worker.identity) is worker:
            del self._workers[worker.identity]
            log.info("worker %s detached", worker.name)
