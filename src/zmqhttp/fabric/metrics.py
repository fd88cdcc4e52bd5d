"""The gateway's fabric metrics: workers, their credit, the queue, losses and retries.

Strategy: events the gateway cannot recount later (a retry, a lost worker, a
send that met a full pipe) are counters the dispatcher increments where they
happen, rare paths all. Everything that is state (queue length, requests at
workers, each worker's credit and heartbeat age) is read from the dispatcher
at scrape time by :meth:`FabricMetrics.collect`, so dispatching a request costs
nothing extra. Per-worker gauges are rebuilt on each scrape: a worker that
left disappears from the output instead of lingering with stale values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sized
from typing import Protocol

from zmqhttp.observability.metrics import Counter, Gauge, Registry

__all__ = ["FabricMetrics", "WorkerView"]


class WorkerView(Protocol):
    """What the metrics read of a worker (the dispatcher's ``_Worker``)."""

    identity: bytes
    name: str
    credit: int
    capacity: int
    last_heard: float

    @property
    def jobs(self) -> Sized: ...


class FabricMetrics:
    """The gateway's metric objects; the dispatcher owns one."""

    def __init__(self) -> None:
        self.send_full = Counter(
            "zmqhttp_gateway_send_full_total",
            "Messages to a worker that met a full ROUTER pipe (EAGAIN) and were queued "
            "for a retry.")
        self.retries = Counter(
            "zmqhttp_gateway_retries_total",
            "Requests sent again to another worker after theirs was lost before answering.")
        self.worker_losses = Counter(
            "zmqhttp_gateway_worker_losses_total",
            "Workers given up on: silent past the heartbeat liveness, unreachable or restarted.")
        self.worker_attachments = Counter(
            "zmqhttp_gateway_worker_attachments_total",
            "Workers that announced themselves (Ready), restarts included.")
        self.workers = Gauge(
            "zmqhttp_gateway_workers", "Workers attached now (leaving ones included).")
        self.queue_length = Gauge(
            "zmqhttp_gateway_queue_length", "Requests waiting for a worker with free credit.")
        self.queue_limit = Gauge(
            "zmqhttp_gateway_queue_limit", "Most requests that may wait; more get 503.")
        self.in_flight = Gauge(
            "zmqhttp_gateway_requests_in_flight",
            "Requests handed to a worker and not finished yet.")
        labels = ("worker", "name")
        self.worker_credit = Gauge(
            "zmqhttp_gateway_worker_credit",
            "Free request slots of each worker (its credit).", labels)
        self.worker_capacity = Gauge(
            "zmqhttp_gateway_worker_capacity",
            "Requests each worker takes at once (announced in Ready).", labels)
        self.worker_in_flight = Gauge(
            "zmqhttp_gateway_worker_requests_in_flight",
            "Requests at each worker.", labels)
        self.worker_heartbeat_age = Gauge(
            "zmqhttp_gateway_worker_heartbeat_age_seconds",
            "Seconds since each worker was last heard from.", labels)

    def register(self, registry: Registry) -> None:
        registry.register(
            self.workers, self.worker_attachments, self.worker_losses, self.queue_length,
            self.queue_limit, self.in_flight, self.retries, self.send_full,
            self.worker_credit, self.worker_capacity, self.worker_in_flight,
            self.worker_heartbeat_age)

    def collect(self, workers: Iterable[WorkerView], *, queued: int, in_flight: int,
                queue_limit: int, now: float) -> None:
        """Set the gauges from the dispatcher's state (at scrape time)."""
        self.queue_length.set(queued)
        self.queue_limit.set(queue_limit)
        self.in_flight.set(in_flight)
        per_worker = (self.worker_credit, self.worker_capacity, self.worker_in_flight,
                      self.worker_heartbeat_age)
        for gauge in per_worker:
            gauge.clear()
        count = 0
        for worker in workers:
            count += 1
            # The ROUTER identity is unique per connection, the name (host:pid)
            # is what an operator recognises: label with both.
            labels = (worker.identity.hex(), worker.name)
            self.worker_credit.labels(*labels).set(worker.credit)
            self.worker_capacity.labels(*labels).set(worker.capacity)
            self.worker_in_flight.labels(*labels).set(len(worker.jobs))
            self.worker_heartbeat_age.labels(*labels).set(round(now - worker.last_heard, 3))
        self.workers.set(count)
