"""The gateway's ROUTER socket: binding, reading, and sends that never block.

Strategy: :func:`bind_router` makes the socket (``ROUTER_MANDATORY``, CURVE
behind ZAP when configured); :class:`Router` reads it on the loop through a
:class:`~zmqhttp.fabric.loopsocket.LoopSocket` and sends ``NOBLOCK`` only. A
worker's full pipe (``Again``) queues the message in that worker's outbox,
retried shortly in order; a vanished worker (``EHOSTUNREACH``) is reported
to the dispatcher, which loses it on the next loop turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import zmq
from zmq.auth.asyncio import AsyncioAuthenticator

from zmqhttp.errors import ConfigError
from zmqhttp.fabric.curve import (
    ServerSecurity,
    secure_server,
    start_authenticator,
    stop_authenticator,
)
from zmqhttp.fabric.jobs import AttachedWorker
from zmqhttp.fabric.loopsocket import LoopSocket, recv_routed, send_routed
from zmqhttp.fabric.metrics import FabricMetrics
from zmqhttp.fabric.protocol import Goodbye, Message, encode
from zmqhttp.server.clock import Clock

__all__ = ["Router", "SendResult", "bind_router"]

log = logging.getLogger("zmqhttp.fabric")

#: Messages handled per wake-up before yielding to other loop callbacks.
_DRAIN_BUDGET = 512
#: Retry delay for messages a full pipe to a worker refused (EAGAIN).
_RETRY_DELAY = 0.005
_LINGER_MS = 200


class SendResult(enum.Enum):
    SENT = 1
    FULL = 2  # queued in the worker's outbox
    UNREACHABLE = 3


def bind_router(context: zmq.Context[Any], endpoints: Sequence[str],
                security: ServerSecurity | None,
                ) -> tuple[zmq.Socket[bytes], AsyncioAuthenticator | None, list[str]]:
    """A ROUTER bound to every endpoint, CURVE-secured if ``security`` is given.

    Returns:
        the socket, its ZAP authenticator (None without CURVE) and the bound
        endpoints with wildcard ports resolved.

    Raises:
        zmq.ZMQError, ConfigError: nothing is left open.
    """
    sock: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.LINGER, _LINGER_MS)
    authenticator: AsyncioAuthenticator | None = None
    bound: list[str] = []
    try:
        if security is not None:
            # ZAP handler first: libzmq lets any CURVE client in while none is bound.
            authenticator = start_authenticator(context, security.allowed)
            secure_server(sock, security)
        for endpoint in endpoints:
            sock.bind(endpoint)
            last = sock.getsockopt(zmq.LAST_ENDPOINT)
            bound.append(last.decode() if isinstance(last, bytes) else str(last))
    except (zmq.ZMQError, ConfigError):
        sock.close(linger=0)
        if authenticator is not None:
            stop_authenticator(authenticator)
        raise
    return sock, authenticator, bound


class Router:
    """Sends to and reads from the workers on one bound ROUTER socket.

    Args:
        workers: the dispatcher's table of attached workers (read only here):
            whose outboxes to retry, and whether an unreachable one is current.
        metrics: counts sends a full pipe refused.
        clock: stamps each worker's ``last_sent``.
        handle: called with each message received, identity first.
        lose: called on a later loop turn with a worker found unreachable.
    """

    def __init__(self, workers: Mapping[bytes, AttachedWorker], metrics: FabricMetrics,
                 clock: Clock, *, handle: Callable[[list[bytes]], None],
                 lose: Callable[[AttachedWorker, str], None]) -> None:
        self._workers = workers
        self._metrics = metrics
        self._clock = clock
        self._handle = handle
        self._lose = lose
        self._socket: zmq.Socket[bytes] | None = None
        self._reader: LoopSocket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retry_handle: asyncio.TimerHandle | None = None

    @property
    def is_open(self) -> bool:
        return self._socket is not None

    def open(self, loop: asyncio.AbstractEventLoop, sock: zmq.Socket[bytes]) -> None:
        """Start reading ``sock`` (from :func:`bind_router`) and drain what waits."""
        self._loop = loop
        self._socket = sock
        self._reader = LoopSocket(loop, sock, recv_routed, self._handle,
                                  budget=_DRAIN_BUDGET, log=log, name="fabric gateway")
        self._reader.drain()

    def close(self) -> None:
        """Close the socket (after a short linger for the last messages)."""
        if self._retry_handle is not None:
            self._retry_handle.cancel()
            self._retry_handle = None
        sock, self._socket = self._socket, None
        if sock is None:
            return
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        sock.close()

    def send(self, worker: AttachedWorker, message: Message) -> None:
        self.send_frames(worker, encode(message))

    def send_frames(self, worker: AttachedWorker, frames: list[bytes]) -> bool:
        """Send or queue ``frames``; False if the worker is unreachable (they went nowhere)."""
        if worker.outbox:
            worker.outbox.append(frames)
            return True
        return self._try_send(worker, frames) is not SendResult.UNREACHABLE

    def send_goodbye_to(self, identity: bytes) -> None:
        """Tell an identity the gateway does not know (a worker it forgot) to go away."""
        sock = self._socket
        if sock is None:
            return
        with contextlib.suppress(zmq.ZMQError):
            send_routed(sock, identity, encode(Goodbye()))
        self._schedule_read()

    def _try_send(self, worker: AttachedWorker, frames: list[bytes]) -> SendResult:
        sock = self._socket
        if sock is None:
            return SendResult.SENT
        try:
            send_routed(sock, worker.identity, frames)
        except zmq.Again:
            self._metrics.send_full.inc()
            worker.outbox.append(frames)
            self._schedule_retry()
            return SendResult.FULL
        except zmq.ZMQError as error:
            if error.errno == zmq.EHOSTUNREACH:
                # ROUTER_MANDATORY: libzmq has no pipe for this identity any
                # more (the worker's connection died before a heartbeat told us).
                if self._workers.get(worker.identity) is worker and self._loop is not None:
                    self._loop.call_soon(self._lose, worker, "unreachable")
                return SendResult.UNREACHABLE
            raise
        finally:
            # A send may consume the FD's edge: look at EVENTS again soon.
            if self._reader is not None:
                self._reader.schedule_drain()
        worker.last_sent = self._clock.monotonic()
        return SendResult.SENT

    def _schedule_read(self) -> None:
        if self._reader is not None:
            self._reader.schedule_drain()

    def _schedule_retry(self) -> None:
        if self._retry_handle is None and self._loop is not None:
            self._retry_handle = self._loop.call_later(_RETRY_DELAY, self._retry_outboxes)

    def _retry_outboxes(self) -> None:
        self._retry_handle = None
        for worker in list(self._workers.values()):
            outbox = worker.outbox
            while outbox:
                frames = outbox.popleft()
                if self._try_send(worker, frames) is SendResult.FULL:
                    # _try_send put it at the back: restore the order.
                    outbox.appendleft(outbox.pop())
                    break
