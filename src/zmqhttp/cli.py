"""The ``zmqhttp`` command line.

Strategy: one table maps each flag to a :class:`~zmqhttp.config.Config` field,
its ``ZMQHTTP_*`` environment variable and its help; the options are generated
from it so flags, variables and the TOML file (``--config``) never disagree.
Precedence is click's: flag > environment > ``default_map`` (the TOML file) >
the Config default.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import tomllib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn

import click
import zmq

from zmqhttp import __version__, compiled
from zmqhttp.apps.lifespan import LifespanFailure
from zmqhttp.apps.loader import AppLoadError, load_app
from zmqhttp.config import Config
from zmqhttp.errors import ConfigError
from zmqhttp.observability.logs import configure_logging
from zmqhttp.server.run import run, run_server
from zmqhttp.server.server import Server
from zmqhttp.supervisor import BootFailed, Supervisor, WorkerSpec, run_supervisor
from zmqhttp.supervisor.edge import EdgeApp, reserve_ports, serve_edge

__all__ = ["main"]


@dataclass(frozen=True)
class _Flag:
    field: str
    type: Any
    help: str
    multiple: bool = False


_SERVE_FLAGS: list[_Flag] = [
    _Flag("bind", str, "Address to listen on, tcp://HOST:PORT or HOST:PORT; repeatable. "
          "[default: tcp://127.0.0.1:8000]", multiple=True),
    _Flag("interface", click.Choice(["auto", "wsgi", "asgi", "asgi3", "asgi2"]),
          "Application interface."),
    _Flag("lifespan", click.Choice(["auto", "on", "off"]), "ASGI lifespan protocol."),
    _Flag("loop", click.Choice(["auto", "asyncio", "uvloop"]),
          "Event loop; auto: uvloop if installed. [default: auto]"),
    _Flag("workers", click.IntRange(1), "Processes serving the app, sharing the port "
          "(SO_REUSEPORT). [default: 1]"),
    _Flag("threads", click.IntRange(1), "WSGI worker threads."),
    _Flag("root_path", str, "Mount point of the app (SCRIPT_NAME)."),
    _Flag("url_scheme", str, "wsgi.url_scheme to report (https behind a TLS proxy)."),
    _Flag("access_log_format", str, "Access log format, gunicorn atoms."),
    _Flag("server_header", str, "Server field value; empty for none."),
    _Flag("limit_connections", click.IntRange(1), "Most open connections; more get 503."),
    _Flag("backlog", click.IntRange(1), "Pending connections the kernel may queue."),
    _Flag("limit_request_line", click.IntRange(16), "Longest request-target (414)."),
    _Flag("limit_request_head", click.IntRange(256), "Largest request head (431)."),
    _Flag("limit_request_fields", click.IntRange(1), "Most header fields (431)."),
    _Flag("limit_request_field_size", click.IntRange(16), "Largest header field (431)."),
    _Flag("limit_request_body", click.IntRange(0), "Largest request body (413)."),
    _Flag("limit_pipeline", click.IntRange(1024), "Bytes of pipelined requests held."),
    _Flag("timeout_keep_alive", click.FloatRange(0), "Idle seconds between requests."),
    _Flag("timeout_request_header", click.FloatRange(0), "Seconds to receive a head (408)."),
    _Flag("timeout_request_body", click.FloatRange(0), "Seconds between body pieces (408)."),
    _Flag("timeout_linger", click.FloatRange(0), "Seconds to wait for the client to close."),
    _Flag("timeout_graceful_shutdown", click.FloatRange(0), "Seconds to finish on SIGTERM."),
    _Flag("timeout_send", click.FloatRange(0), "Seconds a client may leave data unread."),
    _Flag("ws_max_size", click.IntRange(1), "Largest WebSocket message (1009 above)."),
    _Flag("ws_max_queue", click.IntRange(1), "Unread WebSocket messages before 1008."),
    _Flag("ws_ping_interval", click.FloatRange(0), "Seconds between WebSocket pings; 0: off."),
    _Flag("ws_ping_timeout", click.FloatRange(0), "Seconds to wait for a WebSocket pong."),
    _Flag("io_thread_scheduling", click.Choice(["batch", "normal"]),
          "Kernel scheduling of libzmq's I/O thread. [default: batch]"),
    _Flag("sndhwm", click.IntRange(1), "libzmq outbound messages per connection."),
    _Flag("rcvhwm", click.IntRange(1), "libzmq inbound messages per connection."),
    _Flag("body_buffer", click.IntRange(0), "Request body bytes in memory before disk."),
    _Flag("output_high_water", click.IntRange(1024), "Unsent bytes before the app waits."),
    _Flag("metrics_bind", str, "Serve Prometheus /metrics (and /healthz, /readyz) on this "
          "HOST:PORT; repeatable. Needs --workers 1.", multiple=True),
]


def _flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _env_name(field: str) -> str:
    return "ZMQHTTP_" + field.upper()


def _load_toml(ctx: click.Context, _param: click.Parameter, path: str | None) -> str | None:
    """``--config FILE``: its keys (Config field names, - or _) become defaults."""
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}") from None
    data = data.get("zmqhttp", data)
    known = {p.name for p in ctx.command.params if p.name and p.name != "app"}
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise click.BadParameter(f"unknown setting {key!r} in {path}")
        if name in ("bind", "metrics_bind") and isinstance(value, str):
            value = [value]
        defaults[name] = value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return path


def _common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False), is_eager=True,
                     expose_value=False, callback=_load_toml, envvar="ZMQHTTP_CONFIG",
                     help="TOML file of settings (under [zmqhttp] or top level)."),
        click.option("--app-dir", envvar="ZMQHTTP_APP_DIR", default=None,
                     help="Directory to add to sys.path before importing the app."),
        click.option("--factory", is_flag=True, envvar="ZMQHTTP_FACTORY",
                     help="Treat MODULE:ATTR as a factory returning the app."),
        click.option("--log-level", envvar="ZMQHTTP_LOG_LEVEL", default="info",
                     type=click.Choice(["critical", "error", "warning", "info", "debug"],
                                       case_sensitive=False), help="Log level."),
        click.option("--access-log/--no-access-log", envvar="ZMQHTTP_ACCESS_LOG",
                     default=True, help="One line per request on stdout."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _serve_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--date-header/--no-date-header", "date_header", default=None,
                        envvar=_env_name("date_header"),
                        help="Send a Date field (RFC 9110 §6.6.1). [default: on]")(func)
    for flag in reversed(_SERVE_FLAGS):
        func = click.option(
            _flag_name(flag.field),
            flag.field,
            type=flag.type,
            multiple=flag.multiple,
            envvar=_env_name(flag.field),
            default=None,
            help=flag.help,
        )(func)
    return _common_options(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, prog_name="zmqhttp",
    message=f"%(prog)s %(version)s ({'compiled' if compiled() else 'pure Python'})")
def main() -> None:
    """zmqhttp: HTTP/1.1 for WSGI apps on a ZeroMQ ZMQ_STREAM socket."""


@main.command()
@click.argument("app")
@_serve_options
def serve(app: str, app_dir: str | None, factory: bool, log_level: str, access_log: bool,
          **settings: Any) -> None:
    """Serve the application APP, given as MODULE:ATTR."""
    values = {k: v for k, v in settings.items() if v is not None and v != ()}
    for name in ("bind", "metrics_bind"):
        if name in values:
            values[name] = list(values[name])
    config = Config(log_level=log_level, access_log=access_log, **values)
    try:
        config.binds()
        config.metrics_binds()
    except ValueError as exc:
        _fail(str(exc))
    configure_logging(log_level, access_log)
    if config.workers > 1:
        if config.metrics_bind:
            _fail("--metrics-bind would be bound by every process: use it with --workers 1")
        _serve_workers(EdgeApp(app, app_dir, factory, log_level, access_log), config)
        return
    try:
        application = load_app(app, app_dir=app_dir, factory=factory)
    except AppLoadError as exc:
        _fail(str(exc))
    _raise_file_limit()
    server = Server(application, config)
    _exit_if_forced(_run_main(run_server(server), f"cannot listen on {_listening(config)}",
                              config.loop))


@main.command()
@click.argument("app")
@click.option("--connect", default="tcp://127.0.0.1:5555", show_default=True,
              envvar="ZMQHTTP_CONNECT", help="The gateway's fabric endpoint.")
@click.option("--interface", type=click.Choice(["auto", "wsgi", "asgi", "asgi3", "asgi2"]),
              default="auto", envvar="ZMQHTTP_INTERFACE", help="Application interface.")
@click.option("--lifespan", type=click.Choice(["auto", "on", "off"]), default="auto",
              envvar="ZMQHTTP_LIFESPAN", help="ASGI lifespan protocol.")
@click.option("--threads", type=click.IntRange(1), default=None, envvar="ZMQHTTP_THREADS",
              help="WSGI worker threads. [default: 10]")
@click.option("--capacity", type=click.IntRange(1), default=None, envvar="ZMQHTTP_CAPACITY",
              help="Requests taken at once. [default: --threads]")
@click.option("--timeout-graceful-shutdown", type=click.FloatRange(0), default=None,
              envvar="ZMQHTTP_TIMEOUT_GRACEFUL_SHUTDOWN",
              help="Seconds to finish in-flight requests on SIGTERM.")
@click.option("--curve-secret-key", metavar="FILE", default=None,
              envvar="ZMQHTTP_CURVE_SECRET_KEY",
              help="CURVE: this worker's key pair (NAME.key_secret of 'zmqhttp keys generate').")
@click.option("--curve-server-key", metavar="FILE", default=None,
              envvar="ZMQHTTP_CURVE_SERVER_KEY",
              help="CURVE: the gateway's public key file (NAME.key).")
@click.option("--app-dir", envvar="ZMQHTTP_APP_DIR", default=None,
              help="Directory to add to sys.path before importing the app.")
@click.option("--factory", is_flag=True, envvar="ZMQHTTP_FACTORY",
              help="Treat MODULE:ATTR as a factory returning the app.")
@click.option("--log-level", envvar="ZMQHTTP_LOG_LEVEL", default="info",
              type=click.Choice(["critical", "error", "warning", "info", "debug"],
                                case_sensitive=False), help="Log level.")
def worker(app: str, connect: str, interface: str, lifespan: str, threads: int | None,
           capacity: int | None, timeout_graceful_shutdown: float | None,
           curve_secret_key: str | None, curve_server_key: str | None,
           app_dir: str | None, factory: bool, log_level: str) -> None:
    """Serve the application APP (MODULE:ATTR) for a fabric gateway at --connect."""
    values: dict[str, Any] = {"interface": interface, "lifespan": lifespan,
                              "log_level": log_level, "access_log": False,
                              "curve_secret_key": curve_secret_key,
                              "curve_server_key": curve_server_key}
    if threads is not None:
        values["threads"] = threads
    if timeout_graceful_shutdown is not None:
        values["timeout_graceful_shutdown"] = timeout_graceful_shutdown
    config = Config(**values)
    configure_logging(log_level, False)
    try:
        application = load_app(app, app_dir=app_dir, factory=factory)
    except AppLoadError as exc:
        _fail(str(exc))
    from zmqhttp.fabric.worker import Worker  # only this command needs it

    fabric_worker = Worker(application, config, connect, capacity, app_name=app)
    _exit_if_forced(_run_main(_run_fabric_worker(fabric_worker), f"cannot connect to {connect}"))


async def _run_fabric_worker(fabric_worker: Any) -> bool:
    """Run until SIGINT/SIGTERM, then stop gracefully; a second signal stops at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    await fabric_worker.start()
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
        stop.clear()
        stopping = loop.create_task(fabric_worker.stop())
        forced = loop.create_task(stop.wait())
        await asyncio.wait({stopping, forced}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            forced.cancel()
            stopping.result()
            return False
        return True  # application threads may still run: the caller exits at once
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def _serve_workers(app: EdgeApp, config: Config) -> None:
    """``--workers N``: a supervisor of N processes sharing the port."""
    if not hasattr(socket, "SO_REUSEPORT"):
        _fail("--workers needs SO_REUSEPORT, which this system lacks")
    try:
        held, config = reserve_ports(config)
    except OSError as exc:
        _fail(f"cannot listen on {', '.join(config.bind)}: {exc.strerror or exc}")
    _raise_file_limit()  # inherited by the workers
    spec = WorkerSpec(serve_edge, (app, config), name="worker")
    supervisor = Supervisor(spec, config.workers, stop_timeout=config.timeout_graceful_shutdown)
    try:
        run(run_supervisor(supervisor), config.loop)
    except BootFailed as exc:
        _fail(str(exc))
    finally:
        for sock in held:
            sock.close()


@main.command()
@click.argument("app", required=False)
@click.option("--bind", multiple=True, envvar="ZMQHTTP_BIND",
              help="HTTP address to listen on, tcp://HOST:PORT; repeatable. "
                   "[default: tcp://127.0.0.1:8000]")
@click.option("--fabric", multiple=True, envvar="ZMQHTTP_FABRIC",
              help="ZeroMQ endpoint the workers connect to, e.g. tcp://127.0.0.1:5555; "
                   "repeatable. Required unless APP is given.")
@click.option("--queue-limit", type=click.IntRange(0), default=None,
              envvar="ZMQHTTP_QUEUE_LIMIT", help="Requests waiting for a worker (503 above).")
@click.option("--queue-timeout", type=click.FloatRange(0), default=None,
              envvar="ZMQHTTP_QUEUE_TIMEOUT", help="Seconds to wait for a worker (503).")
@click.option("--request-timeout", type=click.FloatRange(0), default=None,
              envvar="ZMQHTTP_REQUEST_TIMEOUT",
              help="Seconds for a worker to start its response (504).")
@click.option("--metrics-bind", multiple=True, envvar="ZMQHTTP_METRICS_BIND",
              help="Serve Prometheus /metrics (and /healthz, /readyz) on this HOST:PORT, "
                   "apart from --bind; repeatable.")
@click.option("--insecure", is_flag=True, envvar="ZMQHTTP_FABRIC_INSECURE",
              help="Allow a non-loopback tcp:// fabric without CURVE (trusted networks only).")
@click.option("--curve-secret-key", metavar="FILE", default=None,
              envvar="ZMQHTTP_CURVE_SECRET_KEY",
              help="CURVE on the fabric: the gateway's key pair (NAME.key_secret of "
                   "'zmqhttp keys generate'). Needs --authorized-keys.")
@click.option("--authorized-keys", metavar="DIR", default=None,
              envvar="ZMQHTTP_AUTHORIZED_KEYS",
              help="CURVE: directory of the public key files (*.key) of the workers "
                   "allowed to connect.")
@click.option("--workers", type=click.IntRange(1), default=None, envvar="ZMQHTTP_WORKERS",
              help="With APP: local worker processes, over a private ipc:// endpoint. "
                   "[default: 1]")
@click.option("--interface", type=click.Choice(["auto", "wsgi", "asgi", "asgi3", "asgi2"]),
              default="auto", envvar="ZMQHTTP_INTERFACE",
              help="With APP: application interface.")
@click.option("--lifespan", type=click.Choice(["auto", "on", "off"]), default="auto",
              envvar="ZMQHTTP_LIFESPAN", help="With APP: ASGI lifespan protocol.")
@click.option("--threads", type=click.IntRange(1), default=None, envvar="ZMQHTTP_THREADS",
              help="With APP: WSGI threads per worker. [default: 10]")
@click.option("--app-dir", envvar="ZMQHTTP_APP_DIR", default=None,
              help="With APP: directory to add to sys.path before importing the app.")
@click.option("--factory", is_flag=True, envvar="ZMQHTTP_FACTORY",
              help="With APP: treat MODULE:ATTR as a factory returning the app.")
@click.option("--log-level", envvar="ZMQHTTP_LOG_LEVEL", default="info",
              type=click.Choice(["critical", "error", "warning", "info", "debug"],
                                case_sensitive=False), help="Log level.")
@click.option("--access-log/--no-access-log", envvar="ZMQHTTP_ACCESS_LOG", default=True,
              help="One line per request on stdout.")
def gateway(app: str | None, bind: tuple[str, ...], fabric: tuple[str, ...],
            metrics_bind: tuple[str, ...],
            queue_limit: int | None, queue_timeout: float | None,
            request_timeout: float | None, insecure: bool, curve_secret_key: str | None,
            authorized_keys: str | None, workers: int | None, interface: str, lifespan: str,
            threads: int | None, app_dir: str | None, factory: bool, log_level: str,
            access_log: bool) -> None:
    """Serve HTTP by handing requests to fabric workers (docs/protocol.md).

    With APP (MODULE:ATTR), also run --workers local worker processes serving
    it; remote workers may still connect on the --fabric endpoints.
    """
    from zmqhttp.fabric.dispatcher import FabricAdapter

    if app is None:
        if not fabric:
            raise click.UsageError("Missing option '--fabric' (or give APP).")
        if workers is not None:
            raise click.UsageError("--workers needs APP (MODULE:ATTR).")
    values: dict[str, Any] = {"queue_limit": queue_limit, "queue_timeout": queue_timeout,
                              "request_timeout": request_timeout}
    values = {k: v for k, v in values.items() if v is not None}
    if bind:
        values["bind"] = list(bind)
    if metrics_bind:
        values["metrics_bind"] = list(metrics_bind)
    config = Config(log_level=log_level, access_log=access_log, fabric=list(fabric),
                    fabric_insecure=insecure, curve_secret_key=curve_secret_key,
                    authorized_keys=authorized_keys, **values)
    try:
        config.binds()
        config.metrics_binds()
    except ValueError as exc:
        _fail(str(exc))
    configure_logging(log_level, access_log)
    _raise_file_limit()
    if app is not None:
        worker_values: dict[str, Any] = {"interface": interface, "lifespan": lifespan,
                                         "log_level": log_level, "access_log": False}
        if threads is not None:
            worker_values["threads"] = threads
        _gateway_with_workers(config, Config(**worker_values), app, workers or 1,
                              app_dir, factory)
        return
    server = Server(None, config, adapter=FabricAdapter(config))
    _exit_if_forced(_run_main(run_server(server),
                              f"cannot listen on {_listening(config)}", config.loop))


def _gateway_with_workers(config: Config, worker_config: Config, app: str, workers: int,
                          app_dir: str | None, factory: bool) -> None:
    """The gateway plus ``workers`` local fabric workers on a private ipc:// endpoint."""
    from zmqhttp.fabric.curve import local_worker_key
    from zmqhttp.fabric.dispatcher import FabricAdapter
    from zmqhttp.supervisor.fabric_worker import FabricApp, serve_fabric_worker
    from zmqhttp.supervisor.gateway import run_gateway

    private_dir = tempfile.mkdtemp(prefix="zmqhttp-gateway-")
    forced = False
    try:
        endpoint = f"ipc://{os.path.join(private_dir, 'fabric')}"
        config = config.replace(fabric=[*config.fabric, endpoint])
        worker_config = worker_config.replace(
            timeout_graceful_shutdown=config.timeout_graceful_shutdown)
        trusted: list[bytes] = []
        if config.curve_secret_key is not None:
            # CURVE is per socket, so the private ipc:// endpoint needs it too:
            # the local workers get a key of their own (docs/deployment.md).
            try:
                public, secret_file = local_worker_key(private_dir)
            except ConfigError as exc:
                _fail(str(exc))
            trusted.append(public)
            worker_config = worker_config.replace(curve_secret_key=secret_file,
                                                  curve_server_key=config.curve_secret_key)
        spec = WorkerSpec(serve_fabric_worker,
                          (FabricApp(app, endpoint, app_dir, factory), worker_config),
                          name="worker")
        supervisor = Supervisor(spec, workers, stop_timeout=config.timeout_graceful_shutdown)
        server = Server(None, config, adapter=FabricAdapter(config, trusted_keys=trusted))
        forced = _run_main(run_gateway(server, supervisor),
                           f"cannot listen on {_listening(config)}", config.loop)
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)
    _exit_if_forced(forced)


@main.group()
def keys() -> None:
    """CURVE keys for the fabric (docs/deployment.md, "Security (CURVE)")."""


@keys.command("generate")
@click.argument("directory", metavar="DIR")
@click.option("--name", default=None, help="File name stem. [default: the host name]")
def keys_generate(directory: str, name: str | None) -> None:
    """Write a new key pair: DIR/NAME.key (public) and DIR/NAME.key_secret (mode 0600).

    Prints the two paths, the public one first. Give NAME.key_secret to the
    process that owns the key (--curve-secret-key); copy NAME.key to its
    peers (--authorized-keys DIR on the gateway, --curve-server-key on workers).
    """
    from zmqhttp.fabric.curve import generate_keys

    stem = name or socket.gethostname()
    if not stem or os.sep in stem or stem in (".", ".."):
        _fail(f"--name must be a plain file name, not {stem!r}")
    try:
        public_file, secret_file = generate_keys(directory, stem)
    except ConfigError as exc:
        _fail(str(exc))
    click.echo(public_file)
    click.echo(secret_file)


def _run_main(main: Coroutine[Any, Any, bool | None], zmq_failure: str,
              loop: str = "auto") -> bool:
    """Run a command's main coroutine; True if it was stopped by force.

    Failures the user can act on (an app that cannot load or start, a worker
    that cannot boot, a refused setting, a socket that cannot bind) become one
    ``Error:`` line and exit status 1, never a traceback.
    """
    try:
        return bool(run(main, loop))
    except (AppLoadError, LifespanFailure, BootFailed, ConfigError) as exc:
        _fail(str(exc))
    except zmq.ZMQError as exc:
        _fail(f"{zmq_failure}: {exc}")
    except KeyboardInterrupt:  # pragma: no cover - a signal before handlers were set
        sys.exit(130)


def _exit_if_forced(forced: bool) -> None:
    """After a forced stop, exit now: busy application threads would keep the
    interpreter alive at exit (thread pools are joined then)."""
    if forced:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _listening(config: Config) -> str:
    """Every address a command binds, for the one-line error when one is taken."""
    return ", ".join([*config.bind, *config.fabric, *config.metrics_bind])


def _fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def _raise_file_limit() -> None:
    """Each connection is a file descriptor: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
