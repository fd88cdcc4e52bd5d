"""What the gateway knows: one record per attached worker, one per forwarded request.

Strategy: plain slotted records, no behaviour beyond two derived properties.
:mod:`zmqhttp.fabric.dispatcher` creates and moves them (queue, dispatch,
loss, retry), :mod:`zmqhttp.fabric.relay` carries their bytes and ends them,
:mod:`zmqhttp.fabric.router` sends to an :class:`AttachedWorker` through its
outbox.
"""

from __future__ import annotations

import enum
from collections import deque

from zmqhttp.fabric.protocol import Ready
from zmqhttp.server.cycle import RequestCycle

__all__ = ["AttachedWorker", "Job", "JobState", "gone"]


def gone(cycle: RequestCycle) -> bool:
    """The client left, or the connection ended the exchange on its own (408, 500)."""
    return cycle.disconnected or cycle.finished


class JobState(enum.Enum):
    #: Waiting in the queue for a worker with credit.
    QUEUED = "queued"
    #: RequestHead sent; the worker has it.
    SENT = "sent"
    #: Answered, cancelled or failed: nothing more happens.
    DONE = "done"


class AttachedWorker:
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
        self.jobs: dict[int, Job] = {}
        self.last_heard = now
        self.last_sent = now
        self.last_used = 0.0
        #: Frames a full pipe refused, sent again in order before anything new.
        self.outbox: deque[list[bytes]] = deque()

    def __repr__(self) -> str:
        return f"<worker {self.name} {self.identity.hex()}>"


class Job:
    """One attempt at forwarding a cycle (a retry is a new job)."""

    __slots__ = ("body_credit", "body_sent", "continued", "cycle", "deadline", "end_sent",
                 "head", "head_received", "id", "resp_window", "retried", "state",
                 "uncredited", "undelivered", "waiting_output", "worker")

    def __init__(self, request_id: int, cycle: RequestCycle, deadline: float,
                 retried: bool = False) -> None:
        self.id = request_id
        self.cycle = cycle
        self.state = JobState.QUEUED
        self.worker: AttachedWorker | None = None
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
