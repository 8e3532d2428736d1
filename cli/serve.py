"""`volchain serve`: all of volchain on one machine, in one command, with no server to set up.

Its parts are the processes production runs, started with the same commands (so the same Celery
tasks and consumers, the same API):

    api        `volchain api --host H --port P`: uvicorn serving api.main:app
    steps      `volchain worker steps`: the chain's step and compensate queues
    scheduler  `volchain worker scheduler`
    volume     `volchain worker volume --host serve@file --path DIR`: the `file` driver, volumes in DIR/volumes
    sweeper    `volchain worker sweeper`

on VOLCHAIN_DATABASE_URL, else the embedded PostgreSQL in DIR/postgres, and on VOLCHAIN_BROKER_URL,
else a Redis server that serve starts itself with its data in DIR/broker (workers/embedded.py).
A configured database is migrated first, as the embedded one is.

The broker: processes on a Redis of serve's own, not threads on Celery's in-process `memory://`
transport, because a process is one service (the service a worker reports as, its volume driver
and its pool are settings of the process), so threads of one process could not be the scheduler
and a volume service at once without a second, serve-only way of running them. Redis is also
what production's API waits on (pub/sub), what `volchain status` and Flower read, and it keeps
its queues on disk: a message still queued at Ctrl-C is delivered after the next start. The price
is a `redis-server` (or `valkey-server`) binary on PATH.

serve is ready once the API answers, the three Celery workers answer a ping and the volume service
has reported; it then prints where the API listens, the data directory, and the commands and
variables that point `cinder`, `openstack` and other volchain commands at it (--json: one JSON
object). The token it prints is for a project kept in DIR/project, so a later start on DIR shows
the same volumes. Each part logs to DIR/logs/<part>.log.

SIGINT (Ctrl-C) or SIGTERM stops the API, then the other parts (Celery's warm shutdown: running
tasks finish), then the broker and PostgreSQL, and exits 0. A part that stops on its own stops the rest, and
serve exits 1 naming it and its log. Two serves cannot share one DIR (DIR/serve.lock).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from cli import render
from cli.parsing import UsageError, port_number, positive_int

DEFAULT_DATA = Path("volchain-serve")
DEFAULT_PORT = 8776
DEFAULT_CONCURRENCY = 2  # step worker pool children unless VOLCHAIN_WORKER_CONCURRENCY or --concurrency says
VOLUME_HOST = "serve@file"  # the backend is DIR, not the machine: a restart elsewhere on DIR keeps its volumes
USER = "admin"
ROLE = "admin"
START_SECONDS = 90.0
STOP_SECONDS = 30.0
POLL_SECONDS = 0.1
PROJECT_FILE = "project"
LOCK_FILE = "serve.lock"
LOG_LEVEL = "warning"


def register(sub) -> None:
    p = sub.add_parser(
        "serve", help="run everything on this machine: API, workers, scheduler, a file volume service, sweeper",
        description="Starts the REST API, a step worker, the scheduler, a `file` volume service and the sweeper as "
        "processes, on VOLCHAIN_DATABASE_URL (else an embedded PostgreSQL in DIR) and VOLCHAIN_BROKER_URL (else a "
        "Redis server it starts, with its data in DIR), and prints how to point cinder and openstack at it. "
        "Ctrl-C stops every part; a second start on DIR finds the volumes made before.")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, metavar="DIR",
                   help=f"where volumes, PostgreSQL, the broker's data and the logs are kept (made if missing; "
                   f"default ./{DEFAULT_DATA})")
    p.add_argument("--host", default="127.0.0.1", help="address the API listens on (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                   help=f"port the API listens on (default {DEFAULT_PORT})")
    p.add_argument("--concurrency", "-c", type=positive_int,
                   help=f"pool size of the step worker (default: VOLCHAIN_WORKER_CONCURRENCY, else "
                   f"{DEFAULT_CONCURRENCY})")
    p.add_argument("--json", action="store_true",
                   help="once ready, print what the text lists as one JSON object (progress stays on stderr)")
    p.set_defaults(handler=run)


@dataclass
class Part:
    """One process of serve: a `volchain` command, its log, and its Celery node name if it has one."""

    name: str
    args: list[str]
    log: Path
    node: str | None = None
    proc: subprocess.Popen | None = None
    failure: str | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", *self.args], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def stop_signal(self) -> int:
        """Celery's warm shutdown is SIGTERM (its SIGINT exits 1); uvicorn and the sweeper stop on SIGINT."""
        return signal.SIGTERM if self.node else signal.SIGINT

    def exited(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def died(self) -> str:
        return f"the {self.name} part stopped (exit {self.exited()}); its log: {self.log}"

    def stop(self, deadline: float) -> None:
        """Wait for the part to exit until `deadline`, then kill its process group; record a
        non-zero exit as `failure`."""
        if self.proc is None:
            return
        try:
            code = self.proc.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):  # the part and its pool children
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.failure = f"the {self.name} part did not stop within {STOP_SECONDS:.0f} s and was killed"
            return
        if code != 0:
            self.failure = f"the {self.name} part exited {code} while stopping; its log: {self.log}"


class Signals:
    """SIGINT and SIGTERM ask serve to stop (a flag the loops look at); the old handlers come back on exit."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> "Signals":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


class Stopped(Exception):
    """A signal arrived before serve was ready: stop what started, exit 0."""


def run(args: argparse.Namespace) -> int:
    from workers.embedded import configured, is_embedded, postgres, redis_binary, redis_server
    from workers.settings import get_settings

    settings = get_settings()
    data = args.data.expanduser().resolve()
    embedded_db, embedded_broker = not settings.database_url, is_embedded(settings)
    _check_port(args.host, args.port)
    if embedded_broker:
        redis_binary()  # missing: say so before anything starts
    concurrency = args.concurrency or settings.worker_concurrency or DEFAULT_CONCURRENCY
    started = time.monotonic()
    with Signals() as signals, ExitStack() as stack:
        try:
            project = _claim(data, stack)
            if embedded_db:
                database_url = stack.enter_context(postgres(data / "postgres")).url
            else:
                from models.migrate import upgrade

                database_url = settings.database_url
                upgrade(database_url)
            _check_signal(signals)
            broker_url = stack.enter_context(redis_server(data / "broker")) if embedded_broker else settings.broker_url
            _say_embedded(data, embedded_db, embedded_broker, broker_url)
            _check_signal(signals)
            settings = stack.enter_context(configured(database_url, broker_url))
            parts = stack.enter_context(running(_parts(args, data, concurrency)))
            _wait_until_ready(parts, _api_url(args), signals)
            info = _info(args, data, settings, project, parts, embedded_db, embedded_broker)
        except Stopped:
            _say("stopped before it was ready")
            return 0
        print(render.to_json(info) if args.json else _text(info, time.monotonic() - started), flush=True)
        died = _supervise(parts, signals)
        _say(f"{died.died()}; stopping the rest" if died else f"stopping ({signal.Signals(signals.received).name})")
    failed = [part.failure for part in parts if part.failure and part is not died]
    for line in failed:
        _say(line)
    _say(f"stopped; the data is kept in {data}")
    return 1 if died or failed else 0


def _say(line: str) -> None:
    print(f"volchain serve: {line}", file=sys.stderr, flush=True)


def _check_signal(signals: Signals) -> None:
    if signals.received is not None:
        raise Stopped()


def _check_port(host: str, port: int) -> None:
    """Refuse at once a port something already listens on (rather than a dead API part later)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError("volchain serve", f"cannot listen on {host}:{port} ({exc.strerror}); "
                             "name another port with --port") from None


def _claim(data: Path, stack: ExitStack) -> str:
    """Make or reuse DIR (refusing a non-empty one serve did not make), hold its lock for this
    serve's lifetime, and return the project kept in it (made, under the lock, on the first start)."""
    import fcntl

    from tasks.errors import EmbeddedError

    project_file, lock_file = data / PROJECT_FILE, data / LOCK_FILE
    if data.is_dir() and any(data.iterdir()) and not (project_file.exists() or lock_file.exists()):
        raise EmbeddedError(f"{data} is not empty and not a directory of volchain serve; name another one with --data")
    try:
        data.mkdir(parents=True, exist_ok=True)
        lock = stack.enter_context(open(lock_file, "a"))
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (data / "logs").mkdir(exist_ok=True)
        project = project_file.read_text().strip() if project_file.exists() else ""
        if not re.fullmatch(r"[0-9a-f]{32}", project):
            project = uuid.uuid4().hex
            project_file.write_text(project + "\n")
    except BlockingIOError:
        raise EmbeddedError(f"another volchain serve is running on {data}") from None
    except OSError as exc:
        raise EmbeddedError(f"cannot use {data}: {exc.strerror}") from None
    return project


def _say_embedded(data: Path, embedded_db: bool, embedded_broker: bool, broker_url: str) -> None:
    """The one stderr line naming the embedded servers in use (none when both are configured)."""
    from workers.embedded import DATABASE

    notes = []
    if embedded_db:
        notes.append(f"no VOLCHAIN_DATABASE_URL: embedded PostgreSQL in {data / 'postgres'} (database {DATABASE})")
    if embedded_broker:
        notes.append(f"no VOLCHAIN_BROKER_URL: a Redis server of its own on {broker_url}, its data in "
                     f"{data / 'broker'}")
    if notes:
        _say("; ".join(notes))


def _parts(args: argparse.Namespace, data: Path, concurrency: int) -> list[Part]:
    host = socket.gethostname()
    logs = data / "logs"
    worker = ["worker", "--loglevel", LOG_LEVEL]

    def node(name: str) -> str:
        return f"serve-{name}@{host}"

    return [
        Part("api", ["api", "--host", args.host, "--port", str(args.port), "--log-level", LOG_LEVEL], logs / "api.log"),
        Part("steps", [*worker, "steps", "--concurrency", str(concurrency), "--hostname", node("steps")],
             logs / "steps.log", node("steps")),
        Part("scheduler", [*worker, "scheduler", "--hostname", node("scheduler")], logs / "scheduler.log",
             node("scheduler")),
        Part("volume", [*worker, "volume", "--host", VOLUME_HOST, "--path", str(data), "--hostname", node("volume")],
             logs / "volume.log", node("volume")),
        Part("sweeper", ["worker", "sweeper"], logs / "sweeper.log"),
    ]


@contextlib.contextmanager
def running(parts: list[Part]) -> Iterator[list[Part]]:
    """The parts started; on the way out stopped: the API first (no new requests), then the rest
    together. Each gets its stop signal (a graceful or warm shutdown) and STOP_SECONDS, after which
    its process group is killed. A part that exits non-zero gets a `failure`."""
    try:
        for part in parts:
            part.start()
        yield parts
    finally:
        api, rest = parts[:1], parts[1:]
        for group in (api, rest):
            for part in group:
                if part.proc is not None and part.proc.poll() is None:
                    part.proc.send_signal(part.stop_signal)
            deadline = time.monotonic() + STOP_SECONDS
            for part in group:
                part.stop(deadline)


def _node_answers(nodes: list[str]) -> set[str]:
    from workers.app import app

    replies = app.control.ping(destination=nodes, timeout=0.5) or []
    return {name for reply in replies for name in reply}


def _volume_service_reported(since) -> bool:
    from sqlalchemy import select

    from models.service import VOLUME_BINARY, Service
    from workers.runtime import get_runtime

    with get_runtime().factory() as session:
        seen = session.scalar(select(Service.updated_at).where(Service.host == VOLUME_HOST,
                                                               Service.binary == VOLUME_BINARY))
    return seen is not None and seen >= since


def _wait_until_ready(parts: list[Part], url: str, signals: Signals) -> None:
    """Until the API answers, every Celery part answers a ping and the volume service reported;
    a part that exits, or START_SECONDS, is an error naming it."""
    from models import utcnow
    from tasks.errors import EmbeddedError

    since = utcnow()
    nodes = {part.node for part in parts if part.node}
    answered: set[str] = set()
    api_up = workers_up = volume_up = False
    deadline = time.monotonic() + START_SECONDS
    while not (api_up and workers_up and volume_up):
        _check_signal(signals)
        for part in parts:
            if part.exited() is not None:
                raise EmbeddedError(part.died().replace("stopped", "stopped at start", 1))
        if time.monotonic() > deadline:
            missing = [what for what, up in (("the API", api_up), ("pings of the workers", workers_up),
                                             ("a report of the volume service", volume_up)) if not up]
            raise EmbeddedError(f"not ready after {START_SECONDS:.0f} s (no answer yet from {' or '.join(missing)}); "
                                f"the logs are in {parts[0].log.parent}")
        api_up = api_up or _answers(url + "/")
        if not workers_up:
            answered |= _node_answers(sorted(nodes - answered))
            workers_up = answered >= nodes
        volume_up = volume_up or (workers_up and _volume_service_reported(since))
        time.sleep(POLL_SECONDS)


def _answers(url: str) -> bool:
    """Whether an HTTP server answers at `url` (the API's root answers 300, its version list)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def _api_url(args: argparse.Namespace) -> str:
    """Where a client on this machine reaches the API."""
    host = "127.0.0.1" if args.host in ("0.0.0.0", "", "::") else args.host
    return f"http://{host}:{args.port}"


def _supervise(parts: list[Part], signals: Signals) -> Part | None:
    """Until a signal (None) or a part exits on its own (that part)."""
    while signals.received is None:
        for part in parts:
            if part.exited() is not None:
                return part
        time.sleep(POLL_SECONDS * 2)
    return None


def _info(args: argparse.Namespace, data: Path, settings, project: str, parts: list[Part], embedded_db: bool,
          embedded_broker: bool) -> dict[str, Any]:
    """Everything serve prints once ready: where things are, and how to reach them."""
    from kombu.utils.url import maybe_sanitize_url

    url = _api_url(args)
    auth = settings.auth_strategy
    if auth == "noauth":
        token, ttl = f"{USER}:{project}", None
        cinder = ["cinder", "--os-auth-type", "noauth", "--os-user-id", USER, "--os-project-id", project,
                  "--os-endpoint", f"{url}/v3"]
        client_env = {}
    else:
        from api.deps import token_signer
        from workers.runtime import get_runtime

        rt = get_runtime()
        ttl = rt.settings.token_ttl_seconds
        token = token_signer(rt).issue(project, USER, ROLE, ttl)
        cinder = ["cinder", "--os-auth-type", "admin_token", "--os-project-id", project, "--os-endpoint", f"{url}/v3"]
        client_env = {"OS_TOKEN": token}
    openstack = ["openstack", "--os-auth-type", "admin_token", "--os-token", token, "--os-endpoint",
                 f"{url}/v3/{project}"]
    # Other volchain commands reach the servers serve started through these (configured ones are the caller's own).
    volchain_env = {**({"VOLCHAIN_DATABASE_URL": settings.database_url} if embedded_db else {}),
                    **({"VOLCHAIN_BROKER_URL": settings.broker_url} if embedded_broker else {})}
    return {
        "api_url": url, "auth_strategy": auth, "data_dir": str(data), "logs": str(data / "logs"),
        "project_id": project, "user_id": USER, "role": ROLE, "token": token, "token_ttl_seconds": ttl,
        "database": {"url": _hidden(settings.database_url), "embedded": embedded_db},
        "broker": {"url": maybe_sanitize_url(settings.broker_url), "embedded": embedded_broker},
        "volume_host": VOLUME_HOST, "client_env": client_env, "cinder": cinder, "openstack": openstack,
        "parts": {part.name: {"pid": part.proc.pid, "node": part.node, "log": str(part.log)} for part in parts},
        "volchain_env": volchain_env,
    }


def _hidden(database_url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(database_url).render_as_string(hide_password=True)


def _shell(argv: list[str], env: dict[str, str]) -> str:
    """A command line to paste into a shell; a value exported in `env` is named, not repeated."""
    import shlex

    named = {value: f'"${name}"' for name, value in env.items()}
    return " ".join(named.get(arg) or shlex.quote(arg) for arg in argv)


def _origin(server: dict[str, Any]) -> str:
    return "embedded, started by serve" if server["embedded"] else "configured"


def _text(info: dict[str, Any], seconds: float) -> str:
    import shlex

    data = info["data_dir"]
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in info["client_env"].items())
    volchain_env = " ".join(f"{k}={shlex.quote(v)}" for k, v in info["volchain_env"].items())
    ttl = f"; the token is valid {info['token_ttl_seconds']} s" if info["token_ttl_seconds"] else ""
    lines = [
        f"volchain serve: ready in {seconds:.1f} s",
        "",
        render.fields([
            ("API", f"{info['api_url']}  (auth {info['auth_strategy']})"),
            ("data", f"{data}  (volumes in volumes/, logs in logs/)"),
            ("database", f"{info['database']['url']}  ({_origin(info['database'])})"),
            ("broker", f"{info['broker']['url']}  ({_origin(info['broker'])})"),
            ("parts", f"api, step worker, scheduler, volume service {info['volume_host']} (file driver), sweeper"),
        ]),
        "",
        f"cinder and openstack, as {info['user_id']} ({info['role']}) of project {info['project_id']}{ttl}:",
        *([f"  export {exports}"] if exports else []),
        f"  {_shell(info['cinder'], info['client_env'])} create --name v1 1",
        f"  {_shell(info['cinder'], info['client_env'])} list",
        f"  {_shell(info['openstack'], info['client_env'])} volume list",
        "",
        *(["other volchain commands (status, volume list, token issue, ...) while it runs:",
           f"  export {volchain_env}", ""] if volchain_env else []),
        "Ctrl-C stops every part.",
    ]
    return "\n".join(lines)
