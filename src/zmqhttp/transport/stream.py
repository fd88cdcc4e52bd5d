"""The ZMQ_STREAM socket: the only code in zmqhttp that touches it.

Strategy: a thin, synchronous wrapper that knows libzmq's rules for raw TCP
peers and nothing of HTTP. Every inbound message is ``[routing_id, data]``; an
empty ``data`` is a connect notification for an unknown routing id and a
disconnect notification for a known one (ZMQ_STREAM_NOTIFY, on by default).
Closing a peer ourselves (``[routing_id, b""]``) produces no notification, so
the peer is forgotten here at once.

Every send is ``NOBLOCK``: with libzmq 4.3.5 a blocking send to a peer that has
just gone never returns. A full per-peer pipe (``SNDHWM``) surfaces as
:attr:`SendResult.FULL` so the caller keeps its output queued and retries.

Several processes can serve one port: :meth:`StreamTransport.bind_reuseport`
listens on our own ``SO_REUSEPORT`` socket and hands it to libzmq
(``ZMQ_USE_FD``). To stop gracefully such a process must leave the kernel's
group before draining, or the kernel keeps sending it new connections. libzmq
cannot close a listener without dropping the connections it accepted
(``zmq_unbind`` ends them too), and ``shutdown()`` on the listening socket makes
its accept fail with EINVAL, which libzmq asserts on.
:meth:`StreamTransport.detach_listeners` therefore swaps the TCP listener for an
inert one under the same descriptor (``dup2``): the kernel closes the TCP
listener, libzmq's connections live on, and the inert socket is registered in
libzmq's epoll so that libzmq's own removal at close still succeeds.
"""

from __future__ import annotations

import enum
import errno
import os
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

import zmq

from zmqhttp.transport.reuseport import make_inert, reuse_port_socket

__all__ = [
    "SendResult",
    "StreamHandler",
    "StreamTransport",
    "configure_io_thread",
    "format_endpoint",
]

# Every frame is copied into libzmq, even the 64 KiB ones (we never send
# larger): pyzmq's zero-copy sends release their buffer through its garbage
# collector thread, one inproc message and a wake-up per frame, which cost more
# than the copy (10 MiB download: 134 -> 154 responses a second with copies).
# pyzmq's flags are enum.Flag members: `|` on them runs Python code (enum
# __or__), and every use converts them. Plain ints for the per-frame calls.
_NOBLOCK: Final = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK: Final = int(zmq.SNDMORE | zmq.NOBLOCK)
_EVENTS: Final = int(zmq.EVENTS)
_POLLIN: Final = int(zmq.POLLIN)
# How many routing ids we closed ourselves to remember, to drop their stale
# queued frames instead of taking a late empty frame for a new connection.
_CLOSED_MEMORY: Final = 4096


class SendResult(enum.Enum):
    #: libzmq took the frame.
    SENT = "SENT"
    #: The peer's pipe is at SNDHWM: keep the data and retry later.
    FULL = "FULL"
    #: The peer is gone (EHOSTUNREACH): drop its state.
    GONE = "GONE"


class StreamHandler(Protocol):
    """What the transport calls while draining inbound messages."""

    def connection_made(self, rid: bytes, peer: str) -> None: ...

    def data_received(self, rid: bytes, data: bytes | list[bytes]) -> None:
        """``data``: one message's bytes, or the messages of one drain in order."""
        ...

    def connection_lost(self, rid: bytes) -> None: ...


def configure_io_thread(context: zmq.Context[Any], scheduling: str) -> None:
    """Set how the kernel schedules ``context``'s I/O thread (before its first socket).

    ``batch`` is SCHED_BATCH: on Linux a woken SCHED_BATCH thread does not
    preempt the running one. Every send that finds a peer's pipe idle wakes
    the I/O thread (libzmq's activate_read command); when that thread shares a
    core with ours it would otherwise take the CPU at each response. libzmq
    applies the policy when it starts the thread, i.e. at the first socket.
    """
    policy = getattr(os, "SCHED_BATCH", None)
    if scheduling == "batch" and policy is not None:
        context.set(zmq.THREAD_SCHED_POLICY, policy)


def format_endpoint(host: str, port: int) -> str:
    """``tcp://HOST:PORT`` with IPv6 literals in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"tcp://{host}:{port}"


def _normalise_peer(address: str) -> str:
    # With ZMQ_IPV6 on, IPv4 peers show as IPv4-mapped IPv6 addresses.
    return address[7:] if address.startswith("::ffff:") and "." in address else address


class StreamTransport:
    """A bound ZMQ_STREAM socket with non-blocking sends.

    Args:
        context: the ZeroMQ context to create the socket in.
        sndhwm: messages queued per peer inside libzmq before sends report FULL.
        rcvhwm: messages queued per peer inbound before libzmq stops reading it.
        send_timeout: seconds a peer may leave our data unacknowledged (or its
            window closed) before the kernel drops it (ZMQ_TCP_MAXRT, i.e.
            TCP_USER_TIMEOUT). It is the only way to get rid of a peer whose pipe
            is full, since a close is itself a message on that pipe.
        ipv6: enable IPv6 (needed for ``[::1]`` and dual-stack ``*`` binds).
        backlog: the listen(2) backlog of every bind (ZMQ_BACKLOG). libzmq's
            default of 100 overflows in a burst of new connections, and each
            dropped SYN costs its client a 1 s retransmit.
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        *,
        sndhwm: int,
        rcvhwm: int,
        send_timeout: float,
        ipv6: bool,
        backlog: int = 2048,
    ) -> None:
        # Always a plain, synchronous socket, even in a zmq.asyncio context an
        # embedding program shares with us: its sockets return futures.
        sock: zmq.Socket[bytes] = zmq.Socket(context, zmq.STREAM)
        sock.setsockopt(zmq.LINGER, 0)  # never hang on close with slow peers
        sock.setsockopt(zmq.SNDHWM, sndhwm)
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
        sock.setsockopt(zmq.TCP_MAXRT, max(0, int(send_timeout * 1000)))
        sock.setsockopt(zmq.BACKLOG, backlog)  # read by bind(); the kernel caps it (somaxconn)
        if ipv6:
            sock.setsockopt(zmq.IPV6, 1)
        self._sock = sock
        # pyzmq's Python-level Socket.send only adds routing_id/group options
        # (DRAFT sockets) before calling the Cython send: calling that directly
        # saves about half a microsecond per frame, two frames per message.
        self._send: Callable[..., Any] = super(zmq.Socket, sock).send
        # Likewise pyzmq's getsockopt wraps ZMQ_EVENTS in an enum.Flag (and
        # `& zmq.POLLIN` is then Python code): read twice per wake-up.
        self._get: Callable[[int], Any] = super(zmq.Socket, sock).get
        self._listeners: list[int] = []  # our SO_REUSEPORT descriptors, owned by libzmq
        self._peers: set[bytes] = set()
        self._closed: set[bytes] = set()
        self._closed_order: deque[bytes] = deque()
        #: Sends refused by a full per-peer pipe so far (a metric: slow clients).
        self.full_sends = 0

    @property
    def fd(self) -> int:
        fd = self._sock.getsockopt(zmq.FD)
        assert isinstance(fd, int)
        return fd

    @property
    def peer_count(self) -> int:
        return len(self._peers)

    def bind(self, host: str, port: int) -> tuple[str, int]:
        """Bind ``host:port`` (port 0 picks one); return the (host, port) bound.

        Raises:
            zmq.ZMQError: e.g. EADDRINUSE.
        """
        self._sock.bind(format_endpoint(host, port))
        last = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return host, int(last.rsplit(":", 1)[1])

    def bind_fd(self, fd: int) -> None:
        """Serve an already listening TCP socket (ZMQ_USE_FD), e.g. SO_REUSEPORT.

        libzmq owns ``fd`` from then on: it closes it with the socket.
        """
        self._sock.setsockopt(zmq.USE_FD, fd)
        try:
            self._sock.bind("tcp://0.0.0.0:0")  # the address is ignored with USE_FD
        finally:
            self._sock.setsockopt(zmq.USE_FD, -1)

    def bind_reuseport(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` with SO_REUSEPORT, shared with other processes.

        Raises:
            zmq.ZMQError: e.g. EADDRINUSE (a socket without SO_REUSEPORT has it).
        """
        try:
            sock = reuse_port_socket(host, port)
            sock.listen(int(self._sock.getsockopt(zmq.BACKLOG)))
            sock.setblocking(False)  # libzmq's I/O thread must never block in accept
        except OSError as exc:
            raise zmq.ZMQError(exc.errno or errno.EINVAL, exc.strerror or str(exc)) from None
        port = sock.getsockname()[1]
        fd = sock.detach()
        try:
            self.bind_fd(fd)
        except zmq.ZMQError:
            os.close(fd)
            raise
        self._listeners.append(fd)
        return host, port

    def detach_listeners(self) -> bool:
        """Leave the SO_REUSEPORT group: no new connections, the open ones live on.

        Returns:
            False if a listener could not be detached (not Linux, or there
            were none): it keeps taking connections until the socket closes.
        """
        detached = bool(self._listeners)
        for fd in self._listeners:
            detached = make_inert(fd) and detached
        self._listeners = []
        return detached

    def has_input(self) -> bool:
        """Re-check readiness: the FD is edge-triggered (see pyzmq zmqstream)."""
        events: int = self._get(_EVENTS)
        return bool(events & _POLLIN)

    def drain(self, handler: StreamHandler, budget: int) -> bool:
        """Dispatch up to ``budget`` inbound messages; True if more may wait.

        The data messages of one peer received in this call are delivered
        together, once, after the receiving (a list when there are several,
        not joined): libzmq reads TCP in pieces of at most 8 KiB, and a 1 MiB
        body would otherwise cost 128 trips through the HTTP layer. Per peer
        the order of data and disconnect is kept.
        """
        recv = self._sock.recv
        peers = self._peers
        # rid -> the data received in this call: bytes, or a list once two.
        pending: dict[bytes, Any] = {}
        more = True
        for _ in range(budget):
            try:
                rid = recv(_NOBLOCK)
            except zmq.Again:
                more = False
                break
            if rid in peers:
                data = recv()  # the second frame of a message is already here
                if data:
                    held = pending.get(rid)
                    if held is None:
                        pending[rid] = data
                    elif type(held) is list:
                        held.append(data)
                    else:
                        pending[rid] = [held, data]
                else:
                    peers.discard(rid)
                    held = pending.pop(rid, None)
                    if held is not None:
                        handler.data_received(rid, held)
                    handler.connection_lost(rid)
            else:
                self._unknown_peer(handler, rid)
        for rid, held in pending.items():
            handler.data_received(rid, held)
        return more

    def _unknown_peer(self, handler: StreamHandler, rid: bytes) -> None:
        frame = self._sock.recv(copy=False)
        if len(frame) or rid in self._closed:
            return  # a frame queued before we closed this peer
        try:
            peer = _normalise_peer(str(frame.get("Peer-Address")))
        except zmq.ZMQError:
            peer = ""
        self._peers.add(rid)
        handler.connection_made(rid, peer)

    def send(self, rid: bytes, data: bytes | memoryview) -> SendResult:
        """Queue ``data`` for peer ``rid`` without blocking."""
        if rid not in self._peers:
            # Gone (notified or closed by us). libzmq may still hold the
            # terminating pipe and answer EAGAIN, which would look like FULL.
            return SendResult.GONE
        try:
            self._send(rid, _SNDMORE_NOBLOCK)
        except zmq.Again:
            self.full_sends += 1
            return SendResult.FULL
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            self._forget(rid)
            return SendResult.GONE
        # Once the routing id is accepted libzmq takes the data frame as is.
        self._send(data, _NOBLOCK)
        return SendResult.SENT

    def close_peer(self, rid: bytes) -> SendResult:
        """Close the TCP connection of ``rid``; FULL means try again later."""
        result = self.send(rid, b"")
        if result is not SendResult.FULL:
            self._forget(rid)
        return result

    def _forget(self, rid: bytes) -> None:
        if rid in self._peers:
            self._peers.discard(rid)
            self._closed.add(rid)
            self._closed_order.append(rid)
            if len(self._closed_order) > _CLOSED_MEMORY:
                self._closed.discard(self._closed_order.popleft())

    def close(self) -> None:
        self._sock.close(linger=0)

