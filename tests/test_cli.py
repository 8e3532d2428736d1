"""The `volchain` command line, run as a subprocess against real PostgreSQL, Redis and workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import create_engine, select, text

from models.volume import Volume
from tests import factories
from tests.conftest import DATABASE_URL, PG_BASE, REPO, WORKER_ENV

CLI_TIMEOUT = 60


def volchain(*args: str, env: dict | None = None, cwd=REPO, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
    """Run `python -m cli.main ARGS` with the test servers' settings (or `env`, as given)."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env={**os.environ, **WORKER_ENV} if env is None else env,
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


def ok(*args: str, **kwargs) -> subprocess.CompletedProcess:
    proc = volchain(*args, **kwargs)
    assert proc.returncode == 0, f"volchain {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def ok_json(*args: str, **kwargs):
    return json.loads(ok(*args, "--json", **kwargs).stdout)


def field(stdout: str, name: str) -> str:
    """The value of a `name  value` line of the text output."""
    for line in stdout.splitlines():
        key, _, value = line.partition("  ")
        if key == name:
            return value.strip()
    raise AssertionError(f"no {name!r} line in:\n{stdout}")


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.endswith("\n") and proc.stderr.count("\n") == 1, proc.stderr
    assert fragment in proc.stderr
    assert proc.stdout == ""


@pytest.fixture
def fresh_database_url():
    """An empty PostgreSQL database (no schema at all), dropped afterwards."""
    name = f"volchain_cli_{uuid.uuid4().hex[:10]}"
    admin = create_engine(f"{PG_BASE}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_BASE}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_db_upgrade_migrates_an_empty_database(fresh_database_url):
    env = {**os.environ, **WORKER_ENV, "VOLCHAIN_DATABASE_URL": fresh_database_url}
    from alembic.script import ScriptDirectory

    from models.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config(fresh_database_url)).get_current_head()
    proc = ok("db", "upgrade", env=env)
    assert f"revision {head}" in proc.stdout
    engine = create_engine(fresh_database_url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head
            assert conn.scalar(text("SELECT count(*) FROM volume_types WHERE name = '__DEFAULT__'")) == 1
    finally:
        engine.dispose()
    # A second upgrade is a no-op; the default class now applies to every project without its own row.
    ok("db", "upgrade", env=env)
    ok("quota", "set", "--class", "default", "volumes=5", "gigabytes=50", env=env)
    usage = ok_json("quota", "show", "--project", "anyone", env=env)
    assert (usage["volumes"]["limit"], usage["gigabytes"]["limit"], usage["snapshots"]["limit"]) == (5, 50, 10)


def test_the_migrations_build_exactly_the_schema_the_models_declare(fresh_database_url):
    """Alembic's autogenerate, run against a freshly migrated database, finds nothing to change."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from models import Base
    from models.migrate import upgrade

    upgrade(fresh_database_url)
    engine = create_engine(fresh_database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_quota_set_is_what_quota_show_reports(database_url, project):
    ok("quota", "set", "--project", project, "volumes=7", "gigabytes=70", "per_volume_gigabytes=-1")
    usage = ok_json("quota", "show", "--project", project)
    assert usage["volumes"] == {"limit": 7, "in_use": 0, "reserved": 0}
    assert usage["gigabytes"]["limit"] == 70
    assert usage["per_volume_gigabytes"]["limit"] == -1
    table = ok("quota", "show", "--project", project).stdout.splitlines()
    assert table[0].split() == ["RESOURCE", "LIMIT", "IN_USE", "RESERVED"]
    assert "volumes 7 0 0" in [" ".join(line.split()) for line in table]


def test_type_create_then_list_shows_specs_and_access(database_url, project):
    name = f"gold-{uuid.uuid4().hex[:8]}"
    created = ok_json("type", "create", name, "--extra-spec", "volume_backend_name=lvm",
                      "--extra-spec", "provisioning:max_vol_size=5", "--private", "--project", project)
    listed = {t["name"]: t for t in ok_json("type", "list")}
    assert listed[name] == created
    assert created["is_public"] is False and created["projects"] == [project]
    assert created["extra_specs"] == {"volume_backend_name": "lvm", "provisioning:max_vol_size": "5"}
    assert "__DEFAULT__" in listed
    assert_one_line_error(volchain("type", "create", name), f"Volume Type {name} already exists.")


def test_image_add_then_list(database_url):
    name = f"cirros-{uuid.uuid4().hex[:8]}"
    added = ok_json("image", "add", "--name", name, "--size-gb", "0.5", "--min-disk", "2",
                    "--visibility", "private", "--owner", "p1", "--property", "os_type=linux")
    [listed] = [i for i in ok_json("image", "list") if i["id"] == added["id"]]
    assert listed == added
    assert (listed["size"], listed["min_disk"], listed["status"]) == (512 * 1024**2, 2, "active")
    assert (listed["visibility"], listed["owner"], listed["properties"]) == ("private", "p1", {"os_type": "linux"})


def test_create_waits_for_success_and_reports_cinders_error_over_quota(workers, db, project, check_invariant):
    ok("quota", "set", "--project", project, "volumes=1")
    out = ok_json("create", "--project", project, "--size", "2", "--name", "v1", "--metadata", "k=v", "--wait")
    assert (out["state"], out["error"], out["cast"]["queue"]) == ("succeeded", None, "scheduler")
    with db() as s:
        vol = s.get(Volume, out["volume_id"])
    assert (vol.project_id, vol.size, vol.display_name, vol.status) == (project, 2, "v1", "creating")

    over = volchain("create", "--project", project, "--size", "1", "--wait")
    assert over.returncode == 1, (over.stdout, over.stderr)
    assert over.stderr.strip() == "VolumeLimitExceeded: Maximum number of volumes allowed (1) exceeded for quota 'volumes'."
    assert "Traceback" not in over.stderr
    assert field(over.stdout, "state") == "reverted"
    with db() as s:
        assert s.scalar(select(Volume.id).where(Volume.id == field(over.stdout, "volume"))) is None
    usage = ok_json("quota", "show", "--project", project)
    assert usage["volumes"] == {"limit": 1, "in_use": 1, "reserved": 0}
    assert usage["gigabytes"]["in_use"] == 2
    check_invariant(project)


def test_create_from_a_snapshot_is_cast_to_the_snapshots_backend(workers, db, project, check_invariant):
    source = factories.volume(db, project, size=3, host="node7@lvm#fast")
    snap = factories.snapshot(db, project, source)
    out = ok_json("create", "--project", project, "--snapshot-id", snap.id, "--wait", "--timeout", "30")
    assert out["state"] == "succeeded", out["error"]
    assert out["cast"]["queue"] == "volume.node7@lvm"
    with db() as s:
        assert s.get(Volume, out["volume_id"]).size == 3
    check_invariant(project)


def test_flow_show_lists_each_step_with_its_state(workers, project):
    done = ok_json("create", "--project", project, "--size", "1", "--wait")
    shown = ok_json("flow", "show", done["flow_id"])
    assert (shown["state"], shown["volume_id"], shown["project_id"]) == ("succeeded", done["volume_id"], project)
    assert [(s["step"], s["state"]) for s in shown["steps"]] == [
        ("extract_volume_request", "done"), ("quota_reserve", "done"), ("entry_create", "done"),
        ("quota_commit", "done"), ("volume_cast", "done"),
    ]
    assert all(s["done_at"] and s["reverted_at"] is None for s in shown["steps"])

    failed = volchain("create", "--project", project, "--size", "1", "--volume-type", "no-such-type", "--wait")
    assert failed.returncode == 1
    text_out = ok("flow", "show", field(failed.stdout, "flow")).stdout
    assert field(text_out, "state") == "reverted"
    assert field(text_out, "error") == "VolumeTypeNotFoundByName: Volume type with name no-such-type could not be found."
    steps = {line.split()[0]: " ".join(line.split()[1:-2]) for line in text_out.splitlines()[-5:]}
    assert steps == {"extract_volume_request": "failed", "quota_reserve": "not run", "entry_create": "not run",
                     "quota_commit": "not run", "volume_cast": "not run"}
    listed = ok("flow", "list", "--project", project, "--state", "reverted").stdout
    assert field(failed.stdout, "flow") in listed and done["flow_id"] not in listed


@pytest.mark.parametrize("args, fragment", [
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["create", "--project", "p", "--size", "ten"], "argument --size: invalid int value: 'ten'"),
    (["create", "--project", "p", "--size", "1", "--metadata", "novalue"], "expected KEY=VALUE, got 'novalue'"),
    (["quota", "set", "--project", "p", "volumes"], "expected KEY=VALUE, got 'volumes'"),
    (["quota", "set", "--project", "p", "volumes=many"], "limit of volumes must be an integer"),
    (["quota", "set", "--project", "p", "nonsense=1"], "QuotaResourceUnknown: Unknown quota resources ['nonsense']."),
    (["flow", "show", "00000000-0000-0000-0000-000000000000"],
     "FlowNotFound: Flow 00000000-0000-0000-0000-000000000000 could not be found."),
    (["flow", "list", "--state", "lost"], "argument --state: invalid choice: 'lost'"),
    (["type", "create", "t", "--project", "p"], "Type access modification is not applicable to public volume type."),
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(database_url, args, fragment):
    assert_one_line_error(volchain(*args), fragment)


def test_a_database_without_schema_is_reported_without_traceback(fresh_database_url):
    proc = volchain("quota", "show", "--project", "p",
                    env={**os.environ, **WORKER_ENV, "VOLCHAIN_DATABASE_URL": fresh_database_url})
    assert_one_line_error(proc, "volchain db upgrade")


def test_worker_consumes_the_step_and_compensate_queues(database_url, redis_client):
    from workers.app import app

    name = f"cli-{uuid.uuid4().hex[:6]}@test"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--pool", "solo", "--loglevel", "warning", "--hostname", name],
        env={**os.environ, **WORKER_ENV}, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline, queues = time.monotonic() + 30, None
        while queues is None and time.monotonic() < deadline:
            assert proc.poll() is None, "volchain worker exited"
            queues = (app.control.inspect(destination=[name], timeout=0.5).active_queues() or {}).get(name)
        assert queues is not None, "volchain worker did not answer within 30 s"
        assert sorted(q["name"] for q in queues) == ["volchain.compensate", "volchain.steps"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_step_workers_default_to_four_children_per_cpu():
    from workers.app import celery_config
    from workers.settings import Settings, cpu_count

    assert celery_config(Settings(worker_concurrency=None))["worker_concurrency"] == min(4 * cpu_count(), 16)
    assert celery_config(Settings(worker_concurrency=3))["worker_concurrency"] == 3


def test_worker_pool_size_comes_from_the_setting(database_url, redis_client):
    from workers.app import app

    name = f"cli-{uuid.uuid4().hex[:6]}@test"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--loglevel", "warning", "--hostname", name],
        env={**os.environ, **WORKER_ENV, "VOLCHAIN_WORKER_CONCURRENCY": "3"}, cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline, stats = time.monotonic() + 30, None
        while stats is None and time.monotonic() < deadline:
            assert proc.poll() is None, "volchain worker exited"
            stats = (app.control.inspect(destination=[name], timeout=0.5).stats() or {}).get(name)
        assert stats is not None, "volchain worker did not answer within 30 s"
        assert stats["pool"]["max-concurrency"] == 3
        assert len(stats["pool"]["processes"]) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def no_servers_env(**settings: str) -> dict[str, str]:
    """The environment with no VOLCHAIN_ setting but `settings`: the embedded default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLCHAIN_")}
    return {**env, **{f"VOLCHAIN_{k.upper()}": v for k, v in settings.items()}}


@pytest.mark.parametrize("args, settings, fragment", [
    (["worker"], {}, "volchain worker: error: needs servers other processes can reach"),
    (["worker", "sweeper"], {}, "volchain worker: error: needs servers other processes can reach"),
    (["api"], {}, "volchain api: error: needs servers other processes can reach"),
    (["worker"], {"database_url": DATABASE_URL}, "exists only inside one process"),
    (["quota", "show", "--project", "p"], {"broker_url": "redis://127.0.0.1:6379/13"},
     "VOLCHAIN_BROKER_URL is set but VOLCHAIN_DATABASE_URL is not"),
])
def test_commands_that_cannot_run_embedded_say_what_to_set(tmp_path, args, settings, fragment):
    assert_one_line_error(volchain(*args, env=no_servers_env(**settings), cwd=tmp_path), fragment)
    assert list(tmp_path.iterdir()) == []  # no data directory, no database file


def test_without_a_database_url_a_command_runs_on_the_embedded_postgresql_in_volchain_data(tmp_path):
    proc = ok("db", "upgrade", env=no_servers_env(), cwd=tmp_path)
    data = tmp_path / "volchain-data"
    assert proc.stderr == (f"volchain: no VOLCHAIN_DATABASE_URL: embedded PostgreSQL in {data} (database volchain), "
                           "broker memory://localhost/ in this process\n")
    assert "/volchain?host=" in proc.stdout and "is at revision" in proc.stdout
    assert (data / "PG_VERSION").exists() and not (data / "postmaster.pid").exists()  # kept, and stopped
    assert [p.name for p in tmp_path.iterdir()] == ["volchain-data"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One `volchain demo --data DIR` with no servers configured: (DIR, the finished process)."""
    cwd = tmp_path_factory.mktemp("demo")
    data = cwd / "pg"
    return data, volchain("demo", "--data", str(data), env=no_servers_env(), cwd=cwd, timeout=60)


def demo_project(stdout: str) -> str:
    """The project id the demo seeded (`project demo-1a2b3c4d: seeded ...`)."""
    return next(line.split()[1].rstrip(":") for line in stdout.splitlines() if line.startswith("project "))


def assert_demo_behaved(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    creates = [line.split() for line in out.splitlines() if line.startswith("create ")]
    assert [c[1] for c in creates] == ["1", "2", "3", "4"]
    assert out.count(" succeeded  queue ") == 3
    assert "succeeded  queue scheduler" in out
    assert "succeeded  queue volume.node1@lvm" in out
    assert "reverted   VolumeLimitExceeded: Maximum number of volumes allowed (3) exceeded for quota 'volumes'." in out
    assert "compensation: extract_volume_request reverted, quota_reserve failed" in out
    usage = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("volumes ", "gigabytes "))}
    assert usage["volumes"] == ["3", "3", "0", "3", "0"]
    assert usage["gigabytes"] == ["1000", "4", "0", "4", "0"]
    assert "quota usage equals the rows: yes" in out


def test_demo_runs_the_whole_chain_on_an_embedded_postgresql(demo_run):
    data, proc = demo_run
    assert_demo_behaved(proc)
    assert proc.stdout.startswith(f"volchain demo: PostgreSQL in {data} (kept), broker memory://localhost/")
    assert (data / "PG_VERSION").exists()  # the data directory is kept
    assert not (data / "postmaster.pid").exists()  # and the server stopped
    assert sorted(p.name for p in data.parent.iterdir()) == ["pg"]  # nothing else in the working directory


def test_a_second_demo_on_the_same_data_directory_runs_with_a_project_of_its_own(demo_run):
    data, first = demo_run
    second = volchain("demo", "--data", str(data), env=no_servers_env(), cwd=data.parent, timeout=60)
    assert_demo_behaved(second)
    assert demo_project(second.stdout) != demo_project(first.stdout)
    assert not (data / "postmaster.pid").exists()


def test_other_commands_read_the_demos_data_through_volchain_data_dir(demo_run):
    data, first = demo_run
    proc = ok("quota", "show", "--project", demo_project(first.stdout), "--json",
              env=no_servers_env(data_dir=str(data)), cwd=data.parent)
    usage = json.loads(proc.stdout)
    assert usage["volumes"] == {"limit": 3, "in_use": 3, "reserved": 0}
    assert usage["gigabytes"]["in_use"] == 4
    assert f"embedded PostgreSQL in {data} " in proc.stderr


def test_demo_refuses_a_data_directory_that_is_not_postgresqls(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    proc = volchain("demo", "--data", str(tmp_path), env=no_servers_env(), cwd=tmp_path)
    assert_one_line_error(proc, f"{tmp_path} is not empty and not a PostgreSQL data directory")


def test_upgrading_a_database_of_the_stored_step_functions_drops_them_and_the_plans(fresh_database_url):
    """A database migrated by the release with stored step functions (revision 0005) keeps none
    after `upgrade`, whatever their signatures, and loses `flow_runs.plans`; other functions stay."""
    from models.migrate import upgrade

    upgrade(fresh_database_url, "0005")
    engine = create_engine(fresh_database_url)
    try:
        # Stand-ins for what that release left behind (empty bodies under the retired names, two
        # signatures of one name too): the test needs them to exist, not to do anything.
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE flow_runs ADD COLUMN plans jsonb"))
            for signature in ("volchain_claim_step(p varchar, s text)", "volchain_claim_step(p varchar)",
                              "volchain_run_planned(a varchar, b text, c timestamp, d text)"):
                conn.execute(text(f"CREATE FUNCTION {signature} RETURNS json LANGUAGE sql AS 'SELECT NULL::json'"))
            conn.execute(text("CREATE FUNCTION volchainish() RETURNS int LANGUAGE sql AS 'SELECT 1'"))
        upgrade(fresh_database_url)
        with engine.connect() as conn:
            left = conn.scalars(text("SELECT proname FROM pg_proc WHERE proname LIKE 'volchain%'")).all()
            plans = conn.scalar(text("SELECT count(*) FROM information_schema.columns "
                                     "WHERE table_name = 'flow_runs' AND column_name = 'plans'"))
    finally:
        engine.dispose()
    assert left == ["volchainish"] and plans == 0


@pytest.mark.parametrize(("env", "fragment"), [
    ({"VOLCHAIN_LOG_FORMAT": "xml"}, "invalid settings: VOLCHAIN_LOG_FORMAT: Input should be 'text' or 'json'"),
    ({"VOLCHAIN_FLOW_DEADLINE_SECONDS": "10"},
     "invalid settings: VOLCHAIN_FLOW_DEADLINE_SECONDS (10) must exceed VOLCHAIN_VISIBILITY_TIMEOUT"),
])
def test_a_wrong_setting_is_one_line_naming_it(env, fragment):
    assert_one_line_error(volchain("quota", "show", "--project", "ab", env={**os.environ, **WORKER_ENV, **env}),
                          fragment)
