"""CURVE security for the fabric: key files, socket options and the ZAP authenticator.

Strategy: CURVE (RFC 26/CurveZMQ) encrypts a link and proves both ends' keys;
who may connect is decided by ZAP (RFC 27), a handler that libzmq asks during
every handshake on a socket with ``CURVE_SERVER`` set. The handler here is
pyzmq's :class:`~zmq.auth.asyncio.AsyncioAuthenticator`, run on the gateway's
own event loop, with a credentials provider holding the allowed public keys:
the ``*.key`` files of ``--authorized-keys`` plus, when the gateway runs local
workers, their ephemeral key. A refused worker never completes the handshake,
so it cannot send ``Ready`` and receives no request.

Key files are the ZPL certificates of ``zmq.auth`` (``NAME.key`` holds the
public key, ``NAME.key_secret`` both keys), so pyzmq's and czmq's tools read
them too. Every problem with a file is a :class:`~zmqhttp.errors.ConfigError`
naming it: the CLI prints it as one ``Error:`` line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

from zmqhttp.config import Config
from zmqhttp.errors import ConfigError

__all__ = [
    "ClientSecurity",
    "KeyPair",
    "ServerSecurity",
    "client_security",
    "generate_keys",
    "load_authorized_keys",
    "load_key_pair",
    "load_public_key",
    "local_worker_key",
    "secure_client",
    "secure_server",
    "server_security",
    "start_authenticator",
    "stop_authenticator",
]

log = logging.getLogger("zmqhttp.fabric")

#: Length of a Z85-encoded CURVE key (32 bytes -> 40 characters).
_Z85_KEY_LENGTH = 40
#: Refused keys remembered to log each only once: a refused worker tries
#: again with a new socket every 3 s (its silence watchdog; libzmq 4.3.5 does
#: not retry a handshake ZAP refused on the same socket), forever.
_MAX_REFUSED_LOGGED = 1024
#: ZAP requests use the socket's ZAP_DOMAIN, empty here; pyzmq files an empty
#: domain under "*".
_ZAP_DOMAIN = "*"


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair, both keys Z85-encoded (40 ASCII bytes)."""

    public: bytes
    secret: bytes


@dataclass(frozen=True)
class ServerSecurity:
    """What the gateway's ROUTER needs for CURVE: its keys and who may connect."""

    keys: KeyPair
    #: Z85 public keys of the workers allowed to connect.
    allowed: frozenset[bytes]


@dataclass(frozen=True)
class ClientSecurity:
    """What a worker's DEALER needs for CURVE: its keys and the gateway's public key."""

    keys: KeyPair
    server_key: bytes


# -- key files ------------------------------------------------------------------------


def generate_keys(directory: str, name: str) -> tuple[str, str]:
    """Write a new key pair as ``DIRECTORY/NAME.key`` and ``NAME.key_secret``.

    The directory is created (mode 0700) if missing; the secret file is
    mode 0600, never readable by others even for a moment; the public one 0644.

    Returns:
        (public key file, secret key file).

    Raises:
        ConfigError: a file of that name exists, or the directory cannot be written.
    """
    base = os.path.join(directory, name)
    for path in (f"{base}.key", f"{base}.key_secret"):
        if os.path.lexists(path):
            raise ConfigError(f"{path} already exists; remove it or choose another --name")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with _private_umask():
            public_file, secret_file = zmq.auth.create_certificates(directory, name)
        os.chmod(secret_file, 0o600)
        os.chmod(public_file, 0o644)  # meant to be copied to the peers
    except OSError as exc:
        raise ConfigError(f"cannot write keys in {directory}: {exc.strerror or exc}") from None
    return public_file, secret_file


@contextlib.contextmanager
def _private_umask() -> Iterator[None]:
    # create_certificates opens its files with the process umask: with 077 the
    # secret file is 0600 from its creation, not only after the chmod.
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def load_public_key(path: str) -> bytes:
    """The public key of a key file (``.key``, or a ``.key_secret`` that holds it too)."""
    return _load(path)[0]


def load_key_pair(path: str) -> KeyPair:
    """Both keys of a ``.key_secret`` file.

    Raises:
        ConfigError: the file is missing, unreadable, malformed or has no secret key.
    """
    public, secret = _load(path)
    if secret is None:
        raise ConfigError(f"{path} holds no secret key: give the NAME.key_secret file")
    return KeyPair(public, secret)


def load_authorized_keys(directory: str) -> frozenset[bytes]:
    """The public keys of every ``*.key`` file in ``directory`` (as zmq.auth reads them).

    Raises:
        ConfigError: not a readable directory, or one of its key files is malformed.
    """
    if not os.path.isdir(directory):
        raise ConfigError(f"--authorized-keys {directory} is not a directory")
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise ConfigError(f"cannot read --authorized-keys {directory}: "
                          f"{exc.strerror or exc}") from None
    # The same selection as zmq.auth.load_certificates: public files only.
    files = [os.path.join(directory, n) for n in names if n.endswith(".key")]
    return frozenset(load_public_key(f) for f in files)


def _load(path: str) -> tuple[bytes, bytes | None]:
    if not os.path.exists(path):
        raise ConfigError(f"CURVE key file {path} does not exist")
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise ConfigError(f"CURVE key file {path} is not a regular file")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise ConfigError(f"cannot read CURVE key file {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ConfigError(f"{path} is not a CURVE key file (no public-key line)") from None
    _check_key(path, public)
    if secret is not None:
        _check_key(path, secret)
    return public, secret


def _check_key(path: str, key: bytes) -> None:
    # libzmq would refuse a bad key only at setsockopt (EINVAL), with no file name.
    try:
        valid = len(key) == _Z85_KEY_LENGTH and len(z85.decode(key)) == 32
    except (ValueError, KeyError, struct.error):
        valid = False
    if not valid:
        raise ConfigError(f"{path} holds a malformed CURVE key (40 Z85 characters expected)")


# -- settings -----------------------------------------------------------------------------


def server_security(config: Config, trusted: Collection[bytes] = ()) -> ServerSecurity | None:
    """The gateway's CURVE settings from ``config``; None when CURVE is off.

    Args:
        config: ``curve_secret_key`` turns CURVE on; ``authorized_keys`` is
            then required.
        trusted: public keys allowed besides the directory's (the gateway's
            own local workers).

    Raises:
        ConfigError: a setting is missing, or a key file is bad.
    """
    if config.curve_secret_key is None:
        if config.authorized_keys is not None:
            raise ConfigError("--authorized-keys needs --curve-secret-key (the gateway's key)")
        return None
    if config.authorized_keys is None:
        raise ConfigError("--curve-secret-key needs --authorized-keys DIR "
                          "(the public keys of the workers allowed to connect)")
    keys = load_key_pair(config.curve_secret_key)
    allowed = load_authorized_keys(config.authorized_keys) | frozenset(trusted)
    if not allowed:
        log.warning("no *.key file in %s: no worker can connect", config.authorized_keys)
    return ServerSecurity(keys, allowed)


def client_security(config: Config) -> ClientSecurity | None:
    """A worker's CURVE settings from ``config``; None when CURVE is off.

    Raises:
        ConfigError: only one of the two key files is given, or one is bad.
    """
    secret_file, server_file = config.curve_secret_key, config.curve_server_key
    if secret_file is None and server_file is None:
        return None
    if secret_file is None or server_file is None:
        raise ConfigError("CURVE needs both --curve-secret-key (this worker's key pair) "
                          "and --curve-server-key (the gateway's public key)")
    return ClientSecurity(load_key_pair(secret_file), load_public_key(server_file))


# -- sockets ------------------------------------------------------------------------------


def secure_server(sock: zmq.Socket[Any], security: ServerSecurity) -> None:
    """Make ``sock`` a CURVE server; before ``bind``, which is when libzmq reads them."""
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, security.keys.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, security.keys.public)


def secure_client(sock: zmq.Socket[Any], security: ClientSecurity) -> None:
    """Make ``sock`` a CURVE client of the gateway; before ``connect``."""
    sock.setsockopt(zmq.CURVE_SECRETKEY, security.keys.secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, security.keys.public)
    sock.setsockopt(zmq.CURVE_SERVERKEY, security.server_key)


class _KeyRing:
    """The pyzmq credentials provider: is this worker key allowed?

    A provider rather than ``configure_curve(location=DIR)``: that one only
    logs a directory it cannot read (and then refuses everyone silently), and
    it cannot also allow the local workers' key without writing it into the
    operator's directory.
    """

    def __init__(self, allowed: frozenset[bytes]) -> None:
        self.allowed = allowed
        self._refused: set[bytes] = set()

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.allowed:
            return True
        if key not in self._refused and len(self._refused) < _MAX_REFUSED_LOGGED:
            self._refused.add(key)
            log.warning("refused a fabric worker whose CURVE key %s is not authorized",
                        key.decode("ascii", "replace"))
        return False


def start_authenticator(context: zmq.Context[Any], allowed: frozenset[bytes]
                        ) -> AsyncioAuthenticator:
    """Start the ZAP handler for ``context`` on the running loop; stop it before term().

    It must run before the CURVE socket binds: libzmq 4.3 lets every CURVE
    client in when no handler is bound at ``inproc://zeromq.zap.01`` (ZAP is
    optional unless ZMQ_ZAP_ENFORCE_DOMAIN, a draft option, is set).
    """
    auth = AsyncioAuthenticator(context, log=logging.getLogger("zmqhttp.fabric.zap"))
    try:
        auth.start()
    except zmq.ZMQError as exc:
        if exc.errno != zmq.EADDRINUSE:
            raise
        # One ZAP handler per context (libzmq asks the one at a fixed address).
        auth.zap_socket.close(linger=0)
        raise ConfigError("another ZAP handler already runs on this ZeroMQ context; "
                          "give the gateway a context of its own") from None
    auth.configure_curve_callback(_ZAP_DOMAIN, _KeyRing(allowed))
    log.info("Fabric CURVE on: %d worker key(s) authorized", len(allowed))
    return auth


def stop_authenticator(auth: AsyncioAuthenticator) -> None:
    """Stop ``auth`` and close its ZAP socket, even if its event loop is closed already."""
    try:
        auth.stop()
    except RuntimeError:
        # A closed loop cannot cancel the handler task (it went with the loop):
        # close the ZAP socket ourselves, or the context's term() waits forever.
        if auth.zap_socket is not None:
            auth.zap_socket.close(linger=0)


def local_worker_key(private_dir: str) -> tuple[bytes, str]:
    """An ephemeral key pair for the gateway's own local workers.

    ZeroMQ security is per socket: the ROUTER that requires CURVE of remote
    workers on tcp:// requires it on its private ipc:// endpoint too. So the
    gateway makes a key pair in its private directory (mode 0700, the secret
    file 0600, removed with the directory), allows its public key besides
    ``--authorized-keys``, and hands the secret file to its local workers.

    Returns:
        (the Z85 public key to trust, the secret key file for the workers).
    """
    public_file, secret_file = generate_keys(private_dir, "local-workers")
    return load_public_key(public_file), secret_file
