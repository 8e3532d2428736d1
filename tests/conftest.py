"""Fixtures: a fresh PostgreSQL database and a Redis db for the session, real worker processes.

Servers: PostgreSQL at VOLCHAIN_TEST_PG (default postgresql+psycopg://postgres@127.0.0.1:5432)
and Redis at VOLCHAIN_TEST_REDIS (default redis://127.0.0.1:6379/13). A missing server fails
the run; it never skips (CI must not pass on a machine without them).

Tests isolate themselves by project id (`project` fixture), so the database is not wiped
between tests and the workers keep running for the whole session.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

PG_BASE = os.environ.get("VOLCHAIN_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("VOLCHAIN_TEST_REDIS", "redis://127.0.0.1:6379/13")
TEST_DB = f"volchain_test_{uuid.uuid4().hex[:10]}"
DATABASE_URL = f"{PG_BASE}/{TEST_DB}"
REPO = Path(__file__).resolve().parent.parent

# Settings are read from the environment when workers.* is first imported: set them first.
WORKER_ENV = {
    "VOLCHAIN_DATABASE_URL": DATABASE_URL,
    "VOLCHAIN_BROKER_URL": REDIS_URL,
    "VOLCHAIN_FAILURE_INJECTION": "true",
    "VOLCHAIN_VISIBILITY_TIMEOUT": "30",
    "VOLCHAIN_TASK_EVENTS": "true",
}
os.environ.update(WORKER_ENV)

from sqlalchemy import create_engine, text  # noqa: E402

from models.db import engine_of, session_factory  # noqa: E402
from tests.invariant import assert_quota_consistent  # noqa: E402


def _admin_engine():
    return create_engine(f"{PG_BASE}/postgres", isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def database_url():
    """A new PostgreSQL database with every migration applied; dropped at the end."""
    from models.migrate import upgrade

    engine = _admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{TEST_DB}"'))
    except Exception as exc:  # no server: fail loudly, never skip
        pytest.fail(f"PostgreSQL is not reachable at {PG_BASE}: {exc}", pytrace=False)
    upgrade(DATABASE_URL)
    yield DATABASE_URL
    from workers.runtime import reset_runtime

    reset_runtime()
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{TEST_DB}" WITH (FORCE)'))
    engine.dispose()


# Keys the suite's processes make (queues, kombu's bindings and unacked sets, Celery's events and
# pidboxes). A db holding anything else belongs to someone else: the suite refuses to empty it.
OUR_KEYS = ("_kombu.", "unacked", "volchain", "scheduler", "volume.", "celery", "test-")


def claim_redis(client, url: str) -> None:
    """Fail (never skip) unless the db at `url` is reachable and holds only keys this suite makes;
    then empty it (what is there was left by an earlier run of the suite)."""
    try:
        client.ping()
    except Exception as exc:
        pytest.fail(f"Redis is not reachable at {url}: {exc}", pytrace=False)
    foreign = [k.decode(errors="replace") for k in client.scan_iter(count=1000)
               if not k.decode(errors="replace").startswith(OUR_KEYS)]
    if foreign:
        pytest.fail(f"Redis db {url} holds keys the tests did not make (e.g. {foreign[:3]}); the suite empties "
                    "its db, so give it one of its own (VOLCHAIN_TEST_REDIS)", pytrace=False)
    client.flushdb()


@pytest.fixture(scope="module")
def own_database(database_url):
    """A database of the module's own, migrated, dropped at the end: for a stack whose sweeper
    (with short deadlines) must not act on the rest of the suite's flows (bench/stack.py)."""
    from bench.harness import create_database, drop_database
    from models.migrate import upgrade

    name, admin = create_database(PG_BASE)
    try:
        upgrade(f"{PG_BASE}/{name}")
        yield f"{PG_BASE}/{name}"
    finally:
        drop_database(admin, name)


@contextmanager
def sessions_of(database_url: str):
    """A session factory on a test module's own database (its stack's), disposed of afterwards."""
    factory = session_factory(database_url)
    try:
        yield factory
    finally:
        engine_of(factory).dispose()


@pytest.fixture(scope="session")
def redis_client():
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    claim_redis(client, REDIS_URL)
    yield client
    client.flushdb()


@pytest.fixture
def db(database_url):
    """A session factory on the test database."""
    return session_factory(database_url)


def start_worker(concurrency: int = 4, queues: str = "volchain.steps,volchain.compensate",
                 extra_env: dict | None = None, log_path: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, **WORKER_ENV, **(extra_env or {})}
    log = open(log_path or os.devnull, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", queues, "-c", str(concurrency),
         "-P", "prefork", "-E", "-l", "warning", "--without-gossip", "--without-mingle",
         "-n", f"test-{uuid.uuid4().hex[:6]}@%h"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def wait_for_workers(count: int = 1, timeout: float = 30.0) -> None:
    from workers.app import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=0.5) or []
        if len(replies) >= count:
            return
    pytest.fail(f"{count} worker(s) did not answer a ping within {timeout}s", pytrace=False)


def stop_worker(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def workers(database_url, redis_client, tmp_path_factory):
    """Two real Celery worker processes (prefork, 4 children in all) for the whole session."""
    logs = tmp_path_factory.mktemp("workers")
    procs = [start_worker(2, log_path=logs / f"worker{i}.log") for i in range(2)]
    try:
        wait_for_workers(2)
        yield procs
    finally:
        for proc in procs:
            stop_worker(proc)


@pytest.fixture
def project():
    """A fresh project id: tests isolate their rows and quota by project."""
    return uuid.uuid4().hex


@pytest.fixture
def check_invariant(db):
    """Call with a project id: asserts quota in_use/reserved equal what the rows say."""

    def check(project_id: str) -> None:
        with db() as session:
            assert_quota_consistent(session, project_id)

    return check


from bench.harness import free_port  # noqa: E402,F401  (tests import it from here)


def start_api(port: int, auth_strategy: str, extra_env: dict | None = None,
              log_path: Path | None = None, workers: int = 1) -> subprocess.Popen:
    """`volchain api` as a subprocess, on the session's database and broker."""
    env = {**os.environ, **WORKER_ENV, "VOLCHAIN_AUTH_STRATEGY": auth_strategy, **(extra_env or {})}
    log = open(log_path or os.devnull, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "api", "--port", str(port), "--workers", str(workers),
         "--log-level", "warning"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def wait_for_http(url: str, timeout: float = 30.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {timeout}s", pytrace=False)


def _api_server(auth_strategy: str, logs: Path):
    port = free_port()
    proc = start_api(port, auth_strategy, log_path=logs / f"api-{auth_strategy}.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/")
        yield base
    finally:
        stop_worker(proc)


@pytest.fixture(scope="session")
def api_url(workers, tmp_path_factory):
    """A live `volchain api` (token auth, the default) on the session's database and workers."""
    yield from _api_server("token", tmp_path_factory.mktemp("api"))


@pytest.fixture(scope="session")
def noauth_api_url(workers, tmp_path_factory):
    """A live `volchain api` in Cinder's noauth mode (X-Auth-Token user:project, every caller admin)."""
    yield from _api_server("noauth", tmp_path_factory.mktemp("api-noauth"))


@pytest.fixture
def issue_token(db):
    """issue_token(project, user="u1", role="member", ttl=3600) -> a token signed like `volchain token issue`."""
    from api.auth import TokenSigner, database_secret

    with db() as session:
        signer = TokenSigner(database_secret(session))

    def issue(project: str, user: str = "u1", role: str = "member", ttl: int = 3600) -> str:
        return signer.issue(project, user, role, ttl)

    return issue


# --- The whole lifecycle: step workers, the scheduler, volume services and an API, on a broker db of their own.

def _next_db(url: str) -> str:
    base, _, db = url.rpartition("/")
    return f"{base}/{(int(db or 0) + 1) % 16}"


LIFECYCLE_REDIS = os.environ.get("VOLCHAIN_TEST_REDIS_LIFECYCLE", _next_db(REDIS_URL))
LIFECYCLE_ENV = {
    **WORKER_ENV,
    "VOLCHAIN_BROKER_URL": LIFECYCLE_REDIS,
    "VOLCHAIN_FAILURE_INJECTION": "false",
    "VOLCHAIN_STORAGE_AVAILABILITY_ZONE": "az1",
    "VOLCHAIN_REPORT_INTERVAL": "1",
    "VOLCHAIN_SERVICE_DOWN_TIME": "4",
    "VOLCHAIN_AZ_CACHE_SECONDS": "0",
}


class Lifecycle:
    """The running lifecycle: its API, its volume services (host -> (zone, path)) and how to run more."""

    def __init__(self, api_url: str, redis_client, logs: Path, run_id: str) -> None:
        self.api_url = api_url
        self.redis = redis_client
        self.logs = logs
        self.run_id = run_id
        self.volume_services: dict[str, tuple[str, Path, subprocess.Popen]] = {}

    def start_volume_service(self, name: str, zone: str, capacity_gb: int = 50) -> str:
        host = f"{name}-{self.run_id}@file"
        path = self.logs / host
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "volume", "--host", host, "--path", str(path),
             "--availability-zone", zone, "--capacity-gb", str(capacity_gb), "-c", "2", "-l", "warning"],
            cwd=REPO, env={**os.environ, **LIFECYCLE_ENV}, stdout=open(self.logs / f"{host}.log", "ab"),
            stderr=subprocess.STDOUT)
        self.volume_services[host] = (zone, path, proc)
        return host

    def stop_volume_service(self, host: str) -> None:
        stop_worker(self.volume_services[host][2])

    def restart_volume_service(self, host: str) -> None:
        zone, path, _ = self.volume_services[host]
        name = host.split(f"-{self.run_id}@", 1)[0]
        self.start_volume_service(name, zone)

    def path_of(self, host: str) -> Path:
        return self.volume_services[host.split("#", 1)[0]][1]


def wait_until(check, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Poll `check()` until it returns something truthy; fail the test with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"{what} did not happen within {timeout}s", pytrace=False)


def services_up(db, hosts: list[str], down_time: float = 4.0) -> bool:
    from models.service import Service
    from tasks.services import is_up

    with db() as session:
        rows = {s.host: s for s in session.query(Service).filter(Service.host.in_(hosts))}
    return all(h in rows and is_up(rows[h], down_time) for h in hosts)


@pytest.fixture(scope="session")
def lifecycle(database_url, tmp_path_factory):
    """Real processes for the whole lifecycle on a Redis db of its own: two step workers, the
    scheduler, two volume services (`az1` and `az2`, file driver) and `volchain api` (token
    auth). `VOLCHAIN_STORAGE_AVAILABILITY_ZONE` is `az1`, so a create naming no zone goes there."""
    import redis

    client = redis.Redis.from_url(LIFECYCLE_REDIS)
    claim_redis(client, LIFECYCLE_REDIS)
    logs = tmp_path_factory.mktemp("lifecycle")
    env = {**os.environ, **LIFECYCLE_ENV}
    run_id = uuid.uuid4().hex[:6]
    procs = [
        subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "-c", "2", "-l", "warning",
                          "-n", f"lc-steps{i}-{run_id}@%h"], cwd=REPO, env=env,
                         stdout=open(logs / f"steps{i}.log", "ab"), stderr=subprocess.STDOUT)
        for i in range(2)
    ]
    procs.append(subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "scheduler", "-c", "2", "-l",
                                   "warning", "-n", f"lc-scheduler-{run_id}@%h"], cwd=REPO, env=env,
                                  stdout=open(logs / "scheduler.log", "ab"), stderr=subprocess.STDOUT))
    port = free_port()
    procs.append(start_api(port, "token", extra_env=LIFECYCLE_ENV, log_path=logs / "api.log"))
    lc = Lifecycle(f"http://127.0.0.1:{port}", client, logs, run_id)
    lc.host1 = lc.start_volume_service("node1", "az1")
    lc.host2 = lc.start_volume_service("node2", "az2")
    try:
        wait_for_http(lc.api_url + "/", 90)
        from models.db import session_factory as factory

        db = factory(database_url)
        wait_until(lambda: services_up(db, [lc.host1, lc.host2]), 60, what="two volume services up")
        yield lc
    finally:
        for _zone, _path, proc in lc.volume_services.values():
            stop_worker(proc)
        for proc in procs:
            stop_worker(proc)
        client.flushdb()
