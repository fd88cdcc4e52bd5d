"""Listening sockets shared by several processes (SO_REUSEPORT), and leaving the group.

Strategy: each edge process binds its own TCP socket with SO_REUSEPORT and
hands it to its ZMQ_STREAM socket (ZMQ_USE_FD); the kernel spreads new
connections across the group. A process that stops must leave the group
without losing the connections libzmq already accepted. libzmq offers no way:
``zmq_unbind`` closes every accepted connection with the listener, and
``shutdown()`` on the listening fd makes libzmq's next accept fail, which it
treats as fatal (tcp_listener.cpp asserts). :func:`make_inert` therefore swaps
an unconnectable Unix socket onto the listener's fd number (Linux only, and it
leans on how libzmq 4.3 polls: see its docstring); where that is not possible
it returns False and the caller keeps today's behaviour.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from typing import Any

__all__ = ["make_inert", "reuse_port_socket"]


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEADDR and SO_REUSEPORT, not listening.

    ``*`` is the dual-stack wildcard, as on a ZMQ_STREAM socket with ZMQ_IPV6.
    A bound socket that does not listen receives no connections but keeps the
    port for the processes of the group (the supervisor holds one).

    Raises:
        OSError: e.g. EADDRINUSE when a socket without SO_REUSEPORT has the port.
    """
    if host == "*":
        try:
            return _bound(socket.AF_INET6, ("::", port))
        except OSError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                raise
            return _bound(socket.AF_INET, ("0.0.0.0", port))
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return _bound(family, address)


def _bound(family: int, address: Any) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:  # IPv4 peers too, like libzmq's IPv6 listeners
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _epolls_watching(fd: int) -> list[int]:
    """The epoll descriptors (libzmq's I/O threads) that watch ``fd`` (Linux /proc)."""
    inode = f"ino:{os.fstat(fd).st_ino:x}"
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    found: list[int] = []
    for name in names:
        try:
            if os.readlink(f"/proc/self/fd/{name}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/self/fdinfo/{name}") as info:
                for line in info:
                    parts = line.split()
                    if parts[:1] == ["tfd:"] and int(parts[1]) == fd and inode in parts:
                        found.append(int(name))
                        break
        except (OSError, ValueError):
            continue
    return found


def make_inert(fd: int) -> bool:
    """Put a listening Unix socket that nobody knows in place of listener ``fd``.

    ``dup2`` closes the TCP listener (its last reference), which takes it out
    of the kernel's group and out of libzmq's epoll set; libzmq may still call
    accept on ``fd`` once (EAGAIN, which it expects). The inert socket is then
    registered, with no events, in that epoll set: libzmq removes ``fd`` from it
    when the ZMQ socket closes and asserts that the removal succeeds.
    """
    epolls = _epolls_watching(fd)
    if len(epolls) != 1 or not hasattr(select, "epoll"):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as inert:
        inert.bind("")  # Linux autobind: an abstract address no one is told
        inert.listen(1)
        inert.setblocking(False)
        os.dup2(inert.fileno(), fd, inheritable=False)
    epoll = select.epoll.fromfd(os.dup(epolls[0]))
    try:
        epoll.register(fd, 0)
    finally:
        epoll.close()  # our duplicate only
    return True
