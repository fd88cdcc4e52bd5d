"""CURVE on the fabric: key files, ZAP refusing unknown workers, the exposure rule, errors."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
from click.testing import CliRunner
from zmq.auth.asyncio import AsyncioAuthenticator

# tests/ is on sys.path (its conftest.py): the CLI process helpers.
from test_cli import Proc, free_port
from test_cli_workers import stop_all
from zmqhttp.cli import main
from zmqhttp.config import Config
from zmqhttp.errors import ConfigError
from zmqhttp.fabric.curve import generate_keys, start_authenticator, stop_authenticator
from zmqhttp.fabric.dispatcher import FabricAdapter
from zmqhttp.testing import ServerThread, WorkerThread

pytestmark = pytest.mark.timeout(60)


class Keys:
    """A gateway key pair, two worker key pairs, and an authorized dir with only ``good``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.gateway_public, self.gateway_secret = generate_keys(str(root / "gateway"), "gateway")
        _, self.good = generate_keys(str(root / "workers"), "good")
        _, self.rogue = generate_keys(str(root / "workers"), "rogue")
        _, self.other_gateway = generate_keys(str(root / "impostor"), "impostor")
        self.authorized = root / "authorized"
        self.authorized.mkdir()
        shutil.copy(root / "workers" / "good.key", self.authorized / "good.key")


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


class CountingApp:
    """A WSGI app that says who it is and counts its calls."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.calls += 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [self.name.encode()]


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], None]]]:
    steps: list[Callable[[], None]] = []
    yield steps
    for step in reversed(steps):
        with contextlib.suppress(Exception):
            step()


def secured_gateway(keys: Keys, cleanup: list[Callable[[], None]],
                    fabric: str = "tcp://127.0.0.1:*") -> ServerThread:
    gateway = ServerThread(None, adapter=FabricAdapter, fabric=[fabric], queue_timeout=1.0,
                           curve_secret_key=keys.gateway_secret,
                           authorized_keys=str(keys.authorized),
                           timeout_graceful_shutdown=2).start()
    cleanup.append(lambda: gateway.stop(timeout=5))
    return gateway


def get(gateway: ServerThread, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start_worker(cleanup: list[Callable[[], None]], gateway: ServerThread, app: CountingApp,
                 secret: str, server: str) -> WorkerThread:
    assert isinstance(gateway.adapter, FabricAdapter)
    config = Config(threads=2, access_log=False, curve_secret_key=secret,
                    curve_server_key=server)
    worker = WorkerThread(app, gateway.adapter.endpoints[0], config).start()
    cleanup.append(worker.stop)
    return worker


def wait_ready(gateway: ServerThread, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while get(gateway, "/readyz")[0] != 200:
        assert time.monotonic() < deadline, "no worker became ready"
        time.sleep(0.05)


def test_keys_generate_writes_certificates_zmq_auth_loads(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["keys", "generate", str(tmp_path / "k"), "--name", "w1"])
    assert result.exit_code == 0, result.output
    public_file, secret_file = result.output.split()
    assert (public_file, secret_file) == (str(tmp_path / "k" / "w1.key"),
                                          str(tmp_path / "k" / "w1.key_secret"))
    public, no_secret = zmq.auth.load_certificate(public_file)
    assert no_secret is None
    assert zmq.auth.load_certificate(secret_file)[0] == public
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    assert list(zmq.auth.load_certificates(str(tmp_path / "k"))) == [public]
    again = runner.invoke(main, ["keys", "generate", str(tmp_path / "k"), "--name", "w1"])
    assert again.exit_code != 0
    assert "already exists" in again.output
    assert zmq.auth.load_certificate(public_file)[0] == public  # not overwritten


@pytest.mark.parametrize("rogue", ["unknown key", "wrong gateway key"])
def test_a_worker_the_gateway_does_not_know_never_gets_a_request(
    keys: Keys, cleanup: list[Callable[[], None]], rogue: str,
) -> None:
    gateway = secured_gateway(keys, cleanup)
    rogue_app = CountingApp("rogue")
    if rogue == "unknown key":
        start_worker(cleanup, gateway, rogue_app, keys.rogue, keys.gateway_public)
    else:  # its own key is authorized, but it expects another gateway: no handshake
        start_worker(cleanup, gateway, rogue_app, keys.good, keys.other_gateway)
    time.sleep(1.0)  # the handshake is over (refused) well before this
    assert get(gateway, "/readyz")[0] == 503
    assert get(gateway, "/")[0] == 503  # queued for queue_timeout, then 503
    good_app = CountingApp("good")
    start_worker(cleanup, gateway, good_app, keys.good, keys.gateway_public)
    wait_ready(gateway)
    assert [get(gateway) for _ in range(5)] == [(200, b"good")] * 5
    assert good_app.calls == 5
    assert rogue_app.calls == 0


def test_the_exposure_rule_applies_only_without_curve(
    keys: Keys, cleanup: list[Callable[[], None]],
) -> None:
    # "lo" is an interface name: libzmq binds it on 127.0.0.1, but the rule
    # cannot prove it loopback, so it stands for any non-loopback address
    # without exposing a port beyond this machine.
    with pytest.raises(ConfigError, match="refusing to bind the fabric on tcp://lo"):
        ServerThread(None, adapter=FabricAdapter, fabric=["tcp://lo:*"]).start()
    gateway = secured_gateway(keys, cleanup, fabric="tcp://lo:*")
    assert isinstance(gateway.adapter, FabricAdapter)
    assert gateway.adapter.endpoints[0].startswith("tcp://127.0.0.1:")
    good_app = CountingApp("good")
    start_worker(cleanup, gateway, good_app, keys.good, keys.gateway_public)
    wait_ready(gateway)
    assert get(gateway) == (200, b"good")


def run_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQHTTP_")}
    return subprocess.run([sys.executable, "-m", "zmqhttp", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["gateway", "--fabric", "tcp://127.0.0.1:0", "--curve-secret-key", "{missing}",
          "--authorized-keys", "{authorized}"], "CURVE key file {missing} does not exist"),
        (["gateway", "--fabric", "tcp://127.0.0.1:0", "--curve-secret-key", "{public}",
          "--authorized-keys", "{authorized}"], "{public} holds no secret key"),
        (["gateway", "--fabric", "tcp://127.0.0.1:0", "--curve-secret-key", "{secret}"],
         "--curve-secret-key needs --authorized-keys"),
        (["gateway", "--fabric", "tcp://127.0.0.1:0", "--curve-secret-key", "{secret}",
          "--authorized-keys", "{missing}"], "--authorized-keys {missing} is not a directory"),
        (["gateway", "--fabric", "tcp://127.0.0.1:0", "--curve-secret-key", "{garbage}",
          "--authorized-keys", "{authorized}"], "{garbage} is not a CURVE key file"),
        (["worker", "zmqhttp.examples.hello:app", "--connect", "tcp://127.0.0.1:9",
          "--curve-secret-key", "{secret}"], "CURVE needs both --curve-secret-key"),
        (["worker", "zmqhttp.examples.hello:app", "--connect", "tcp://127.0.0.1:9",
          "--curve-secret-key", "{public}", "--curve-server-key", "{public}"],
         "{public} holds no secret key"),
    ],
    ids=["missing", "public-as-secret", "no-authorized", "authorized-missing", "garbage",
         "worker-half", "worker-public-as-secret"],
)
def test_key_problems_are_one_line_errors(keys: Keys, tmp_path: Path, command: list[str],
                                          message: str) -> None:
    garbage = tmp_path / "garbage.key_secret"
    garbage.write_text("not a certificate\n")
    names = {"missing": str(tmp_path / "nope.key_secret"), "public": keys.gateway_public,
             "secret": keys.gateway_secret, "authorized": str(keys.authorized),
             "garbage": str(garbage)}
    result = run_cli(*[part.format(**names) for part in command],
                     *(["--bind", "127.0.0.1:0"] if command[0] == "gateway" else []))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: "), result.stderr
    assert message.format(**names) in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


def test_local_workers_connect_to_a_curve_gateway(keys: Keys, tmp_path: Path) -> None:
    """CURVE is per socket: the private ipc:// endpoint needs it too (an ephemeral key)."""
    port = free_port()
    proc = Proc(["gateway", "zmqhttp.examples.hello:app", "--workers", "1", "--bind",
                 f"127.0.0.1:{port}", "--curve-secret-key", keys.gateway_secret,
                 "--authorized-keys", str(keys.authorized), "--no-access-log"], tmp_path)
    try:
        line = proc.wait_for_line(r"Fabric listening on ipc://", timeout=20)
        found = re.search(r"ipc://(\S+)", line)
        assert found is not None
        private = Path(found.group(1)).parent
        secret = private / "local-workers.key_secret"
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o700
        deadline = time.monotonic() + 20
        status = 0
        while status != 200 and time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            with contextlib.suppress(OSError):
                conn.request("GET", "/")
                status = conn.getresponse().status
            conn.close()
            time.sleep(0.05)
        assert status == 200, proc.stderr
        assert not any("refused a fabric worker" in line for line in proc.stderr)
        os.kill(proc.popen.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
        assert not private.exists()  # the ephemeral key went with the directory
    finally:
        stop_all(proc)


def test_the_zap_handler_never_blocks_context_term() -> None:
    """One handler per context, and stopping it works even after its loop closed."""
    context: zmq.Context[Any] = zmq.Context()
    loop = asyncio.new_event_loop()

    async def start_two() -> AsyncioAuthenticator:
        first = start_authenticator(context, frozenset())
        with pytest.raises(ConfigError, match="another ZAP handler"):
            start_authenticator(context, frozenset())
        return first

    auth = loop.run_until_complete(start_two())
    loop.close()
    stop_authenticator(auth)
    done = threading.Event()
    threading.Thread(target=lambda: (context.term(), done.set()), daemon=True).start()
    assert done.wait(5), "context.term() blocked on the ZAP socket"
