"""Bench: cost flat as the database grows. A create through the REST API to `available`, a GET of
one volume and a page of volumes/detail, on an empty and on a full database, in the same run.

    python bench/scale.py                      # full: 1,000,000 volumes and flow-log rows, 10,000 projects
    python bench/scale.py --volumes 100000     # quick: 100,000 of each (the same 100 volumes a project)
    python bench/scale.py --check              # exit 1 when a ratio misses the goal

Two stacks run at once, each what an operator starts (`volchain worker`, `volchain worker
scheduler`, one `volchain worker volume --host H@file --path DIR`, `volchain api`, token auth,
volchain's defaults) on a database and a Redis db of its own: `empty` on --redis (db 9) and `full`
on the next db (10). Both databases are filled the same way, set-based (INSERT ... SELECT
generate_series, never through the API), from a template: one real create made through each
stack's API, whose volume row, create flow-log row (its `steps` record as the chain left it) and
quota usage rows are copied with fresh ids, then removed. `empty` holds only the two measured
projects (100 volumes each with the defaults); `full` holds --volumes volumes and as many
succeeded create flows in --projects projects, spread over --backends backends (the measured
volume service is one of them), with matching quota usage rows and limits. Both are then VACUUM
ANALYZEd and checkpointed, and the quota invariant is checked on every project (tasks/reconcile).
With the defaults the measured backend holds 100,000 of the million volumes (--backends 10).

Measured, one request at a time, alternating blocks of --block between the two stacks after
--warmup unmeasured requests on each:

    create      POST /v3/{B}/volumes, then the volume's row polled (2 ms) until `available`
    show        GET /v3/{A}/volumes/{id}, A's volumes in turn
    list        GET /v3/{A}/volumes/detail (the default limit: all of A's volumes)
    list50      GET /v3/{A}/volumes/detail?limit=50
    list_zero   GET /v3/{C}/volumes/detail of a project with no volume

A and B are two of the filled projects; C has no row. Printed per operation and database: median
and p95 latency (client side), CPU ms per operation from /proc (the API, the workers, the
database's PostgreSQL backends but the bench's own poller), the full/empty ratios (goal: within
1.2x), the load average and both database sizes. Databases, Redis dbs, processes and files are
removed at the end, also on failure, Ctrl-C and SIGTERM. See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/scale.py` from anywhere
    sys.path.insert(0, str(REPO))

from bench.chain_throughput import OUR_KEYS, clean_env, fmt  # noqa: E402
from bench.harness import (  # noqa: E402
    BenchError, ProcessGroups, check_redis, cpu_delta, create_database, drop_database, free_port, log, percentile,
    pg_cpu, run_main, tree_cpu,
)

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
DEFAULT_REDIS = "redis://127.0.0.1:6379/9"  # `empty`; `full` takes the next db
GOAL = 1.2  # the issue: each operation's cost on the full database within 1.2x of the empty one
STACKS = ("empty", "full")
OPS = ("create", "show", "list", "list50", "list_zero")
LABELS = {
    "create": "create: POST -> available",
    "create_202": "  of which POST -> 202",
    "show": "GET volumes/{id}",
    "list": "GET volumes/detail",
    "list50": "GET volumes/detail?limit=50",
    "list_zero": "GET volumes/detail, no volumes",
}
CPU_GROUPS = ("api", "workers", "pg")
CAPACITY_GB = 1_000_000_000  # each volume service's reported capacity: no create is refused for space
FILL_CHUNK = 100_000  # rows per INSERT ... SELECT generate_series statement
SPAN_SECONDS = 365 * 86400  # the filled rows' created_at spread over the year before the run
PER_PROJECT = 100  # volumes a project holds when --projects is not given
PROJECT_LIMITS = {"volumes": 10_000, "gigabytes": 100_000}  # every filled project's own quota
READY_WAIT = 90.0
OP_TIMEOUT = 60.0
POLL_S = 0.002


# --------------------------------------------------------------------------------------------
# The fill: rows copied from a real create, set-based
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    """One real create as the chain and the volume service left it: the volume row, its
    create flow-log row and the resources of its project's usage rows."""

    project_id: str
    volume: dict
    flow: dict
    resources: tuple[str, ...]


def project_id(salt: str, n: int) -> str:
    """The n-th filled project (1-based), as the fill's SQL names it: md5 hex, a Cinder-like id."""
    return hashlib.md5(f"{salt}-p-{n}".encode()).hexdigest()


def capture_template(engine, project: str) -> Template:
    """The template project's one volume, its create flow and its usage resources."""
    from sqlalchemy import select

    from models.flow_log import FlowRun
    from models.quota import QuotaUsage
    from models.volume import Volume

    with engine.connect() as conn:
        volumes = conn.execute(select(Volume.__table__).where(Volume.project_id == project)).mappings().all()
        flows = conn.execute(select(FlowRun.__table__).where(FlowRun.project_id == project,
                                                             FlowRun.kind == "create_volume")).mappings().all()
        resources = conn.scalars(select(QuotaUsage.resource).where(QuotaUsage.project_id == project)
                                 .order_by(QuotaUsage.id)).all()
    if len(volumes) != 1 or len(flows) != 1 or not resources:
        raise BenchError(f"template project {project}: {len(volumes)} volume(s), {len(flows)} create flow(s), "
                         f"{len(resources)} usage row(s); expected one create")
    return Template(project, dict(volumes[0]), dict(flows[0]), tuple(resources))


def remove_project(engine, project: str) -> None:
    """Every row of one project that a create leaves (the template's, once captured)."""
    from sqlalchemy import text

    with engine.begin() as conn:
        for stmt in ("DELETE FROM volume_metadata WHERE volume_id IN (SELECT id FROM volumes WHERE project_id = :p)",
                     "DELETE FROM reservations WHERE project_id = :p", "DELETE FROM quota_usages WHERE project_id = :p",
                     "DELETE FROM quotas WHERE project_id = :p", "DELETE FROM flow_runs WHERE project_id = :p",
                     "DELETE FROM volumes WHERE project_id = :p"):
            conn.execute(text(stmt), {"p": project})


def _copy_statement(table, row: dict, ids: dict[str, str], overrides: dict[str, str]) -> tuple[str, dict]:
    """INSERT INTO table SELECT one row per `g` of generate_series(:lo, :hi), copied from `row`:
    a column in `overrides` takes that SQL expression; a string or JSON value has each template id
    (the keys of `ids`) replaced by the row's own (an SQL expression over `g`); a timestamp keeps
    its distance to the template's created_at from the row's `x.created`; anything else is copied."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    names, exprs, params = [], [], {}
    for i, (old, _new) in enumerate(ids.items()):
        params[f"id{i}"] = old
    created = row["created_at"]
    for column in table.columns:
        name, value = column.name, row[column.name]
        param = f"c_{name}"
        names.append(f'"{name}"')
        if name in overrides:
            exprs.append(overrides[name])
            continue
        if value is None:
            exprs.append("NULL")
            continue
        if isinstance(value, datetime):
            params[param] = value - created
            exprs.append(f"x.created + CAST(:{param} AS interval)")
            continue
        is_json = isinstance(value, (dict, list))
        if not (is_json or isinstance(value, str)):
            params[param] = value
            exprs.append(f":{param}")
            continue
        params[param] = json.dumps(value) if is_json else value
        expr = f"CAST(:{param} AS text)"
        for i, (old, new) in enumerate(ids.items()):
            if params[param] == old:
                expr = new
                break
            if old in params[param]:
                expr = f"replace({expr}, :id{i}, {new})"
        exprs.append(f"CAST({expr} AS {column.type.compile(dialect=dialect)})")
    sql = (f'INSERT INTO "{table.name}" ({", ".join(names)}) SELECT {", ".join(exprs)} '
           "FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS g, LATERAL (SELECT "
           "CAST(CAST(md5(:salt || '-v-' || g) AS uuid) AS text) AS vid, "
           "CAST(CAST(md5(:salt || '-f-' || g) AS uuid) AS text) AS fid, "
           "md5(:salt || '-p-' || ((g - 1) % :projects + 1)) AS pid, "
           "CAST(:now AS timestamp) - make_interval(secs => (:volumes - g) * CAST(:spacing AS double precision)) "
           "AS created) AS x")
    return sql, params


@dataclass
class FillStats:
    volumes: int = 0
    flows: int = 0
    projects: int = 0
    usages: int = 0
    seconds: float = 0.0
    on_measured_backend: int = 0


def fill(engine, template: Template, salt: str, volumes: int, projects: int, backends: int,
         label: str = "", chunk: int = FILL_CHUNK) -> FillStats:
    """`volumes` volumes (volume g in project (g - 1) % projects + 1, on backend (g - 1) % backends,
    backend 0 being the template's), one succeeded create flow each, and per project its usage
    rows (in_use as the rows say, nothing reserved) and its own limits. Set-based, `chunk` rows a
    statement; the caller VACUUMs."""
    from sqlalchemy import text

    from models.flow_log import FlowRun
    from models.volume import Volume

    started = time.monotonic()
    t_vol, t_flow = template.volume, template.flow
    ids = {t_vol["id"]: "x.vid", t_flow["id"]: "x.fid", template.project_id: "x.pid"}
    overrides = {"display_name": "'vol-' || g"}
    host = t_vol["host"]
    if host and "@" in host:  # other backends: the same driver and pool, another host
        overrides["host"] = ("CASE WHEN (g - 1) % :backends = 0 THEN :host "
                             "ELSE 'scale-fill-' || ((g - 1) % :backends) || :host_tail END")
    vol_sql, vol_params = _copy_statement(Volume.__table__, t_vol, ids, overrides)
    flow_sql, flow_params = _copy_statement(FlowRun.__table__, t_flow, ids, {})
    common = {"salt": salt, "projects": projects, "volumes": volumes, "spacing": SPAN_SECONDS / max(volumes, 1),
              "now": t_vol["created_at"], "backends": backends, "host": host,
              "host_tail": host[host.index("@"):] if host and "@" in host else None}
    for lo in range(1, volumes + 1, chunk):
        hi = min(lo + chunk - 1, volumes)
        with engine.begin() as conn:
            conn.execute(text(vol_sql), {**vol_params, **common, "lo": lo, "hi": hi})
            conn.execute(text(flow_sql), {**flow_params, **common, "lo": lo, "hi": hi})
        if volumes > chunk:
            log(f"{label}fill: {hi:,} of {volumes:,} volumes and create flows ({time.monotonic() - started:.0f}s)")
    with engine.begin() as conn:
        usages = conn.execute(text(
            "INSERT INTO quota_usages (project_id, resource, in_use, reserved, until_refresh, created_at, updated_at) "
            "SELECT v.project_id, r.resource, "
            "CASE split_part(r.resource, '___', 1) WHEN 'volumes' THEN count(*) "
            "WHEN 'gigabytes' THEN sum(v.size) ELSE 0 END, 0, NULL, min(v.created_at), max(v.created_at) "
            "FROM volumes v CROSS JOIN unnest(CAST(:resources AS text[])) AS r(resource) "
            "WHERE v.project_id IN (SELECT md5(:salt || '-p-' || n) FROM generate_series(1, :projects) AS n) "
            "AND NOT v.deleted AND v.use_quota GROUP BY v.project_id, r.resource"),
            {"resources": list(template.resources), "salt": salt, "projects": projects}).rowcount
        conn.execute(text(
            "INSERT INTO quotas (project_id, resource, hard_limit) "
            "SELECT md5(:salt || '-p-' || n), l.resource, l.hard_limit FROM generate_series(1, :projects) AS n "
            "CROSS JOIN unnest(CAST(:names AS text[]), CAST(:limits AS bigint[])) AS l(resource, hard_limit)"),
            {"salt": salt, "projects": projects, "names": list(PROJECT_LIMITS),
             "limits": list(PROJECT_LIMITS.values())})
        on_measured = conn.scalar(text("SELECT count(*) FROM volumes WHERE host = :h AND NOT deleted"), {"h": host})
    from sqlalchemy.orm import Session

    from tasks import allocation

    with Session(engine) as session, session.begin():
        allocation.repair(session)  # each backend's allocation counter, as the chain keeps it, from the rows
    return FillStats(volumes=volumes, flows=volumes, projects=projects, usages=usages,
                     seconds=time.monotonic() - started, on_measured_backend=on_measured or 0)


def settle(engine) -> None:
    """What a database in use has had time to do: VACUUM ANALYZE (visibility map, statistics),
    then a checkpoint, so neither autovacuum nor a checkpoint of the fill runs while measuring."""
    from sqlalchemy import text

    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) volumes, flow_runs, quota_usages, quotas"))
        conn.execute(text("CHECKPOINT"))


def quota_drift(engine) -> list:
    """The reconciler's check of every project, in one snapshot: [] when usage equals the rows."""
    from sqlalchemy.orm import Session

    from tasks import quota_engine, reconcile

    with Session(engine) as session:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        return reconcile.check(session, quota_engine.QuotaConfig())


# --------------------------------------------------------------------------------------------
# A stack: one database, one Redis db, its processes and its API
# --------------------------------------------------------------------------------------------

def next_db(url: str) -> str:
    base, _, db = url.rpartition("/")
    if not db.isdigit():
        raise BenchError(f"--redis must name a db number (redis://host:port/N), not {url}")
    return f"{base}/{int(db) + 1}"


@dataclass
class Stack(ProcessGroups):
    """The processes of one database, with their logs, and what the bench reads from them."""

    label: str
    db_name: str
    database_url: str
    redis_url: str
    work_dir: Path
    run_id: str
    base_url: str = ""
    engine: object = None
    tokens: dict[str, str] = field(default_factory=dict)  # project -> member token
    poller: object = None  # a psycopg connection: polls a volume's status
    fill: FillStats | None = None

    @property
    def host(self) -> str:
        return f"scale-{self.label}-{self.run_id}@file"

    def start(self, group: str, name: str, argv: list[str], env: dict) -> None:
        self.launch(group, self.work_dir / f"{self.label}-{name}.log", argv, env, REPO)

    def start_all(self, concurrency: int) -> None:
        env = clean_env(self.database_url, self.redis_url, True)  # volchain's defaults, as shipped
        c = ["-c", str(concurrency), "-l", "warning"]
        self.start("workers", "steps", ["worker", *c, "-n", f"scale-{self.label}-steps-{self.run_id}@%h"], env)
        self.start("workers", "scheduler",
                   ["worker", "scheduler", *c, "-n", f"scale-{self.label}-scheduler-{self.run_id}@%h"], env)
        self.start("workers", "volume", ["worker", "volume", "--host", self.host, "--path",
                                         str(self.work_dir / f"{self.label}-volumes"), "--capacity-gb",
                                         str(CAPACITY_GB), *c, "-n", f"scale-{self.label}-volume-{self.run_id}@%h"],
                   env)
        port = free_port()
        self.start("api", "api", ["api", "--port", str(port), "--workers", "1", "--log-level", "warning"], env)
        self.base_url = f"http://127.0.0.1:{port}"

    def check_alive(self) -> None:
        super().check_alive(f"{self.label}: ")

    def stop(self) -> None:
        super().stop()
        if self.poller is not None:
            self.poller.close()
            self.poller = None
        if self.engine is not None:
            self.engine.dispose()

    def wait_ready(self) -> None:
        """The API answers and the volume service has reported (the template create then shows
        that the step worker and the scheduler consume)."""
        import httpx
        from sqlalchemy import text

        deadline = time.monotonic() + READY_WAIT
        while True:
            self.check_alive()
            try:
                httpx.get(self.base_url + "/", timeout=1)
                with self.engine.connect() as conn:
                    if conn.scalar(text("SELECT count(*) FROM services WHERE host = :h"), {"h": self.host}):
                        return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.label}: API or volume service not up within {READY_WAIT:.0f}s\n"
                                 f"{self.log_tails()}")
            time.sleep(0.2)

    def token(self, project: str) -> str:
        if project not in self.tokens:
            from sqlalchemy.orm import Session

            from api.auth import TokenSigner, database_secret

            with Session(self.engine) as session:
                self.tokens[project] = TokenSigner(database_secret(session)).issue(project, "scale-bench", "member",
                                                                                   24 * 3600)
        return self.tokens[project]

    def connect_poller(self) -> None:
        import psycopg

        self.poller = psycopg.connect(self.database_url.replace("postgresql+psycopg://", "postgresql://"),
                                      autocommit=True)

    def pg_pids(self) -> list[int]:
        """The database's client backends but the poller's own (autovacuum workers are not counted)."""
        return [row[0] for row in self.poller.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'")]

    def cpu(self, pg_pids: list[int]) -> dict:
        return {"api": tree_cpu(self.pids("api")), "workers": tree_cpu(self.pids("workers")), "pg": pg_cpu(pg_pids)}

    def wait_available(self, volume_id: str, timeout: float = OP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            row = self.poller.execute("SELECT status FROM volumes WHERE id = %s", (volume_id,)).fetchone()
            status = row[0] if row else None
            if status == "available":
                return
            if status == "error":
                raise BenchError(f"{self.label}: volume {volume_id} went to error\n{self.log_tails()}")
            if time.monotonic() > deadline:
                self.check_alive()
                raise BenchError(f"{self.label}: volume {volume_id} not available within {timeout:.0f}s "
                                 f"(status {status})\n{self.log_tails()}")
            time.sleep(POLL_S)


# --------------------------------------------------------------------------------------------
# The operations
# --------------------------------------------------------------------------------------------

@dataclass
class Projects:
    reads: str  # A: show and lists
    creates: str  # B: the creates
    zero: str  # C: no volume at all
    read_volumes: dict[str, list[str]] = field(default_factory=dict)  # stack -> A's volume ids


@dataclass
class Figures:
    lat: list[float] = field(default_factory=list)
    lat_202: list[float] = field(default_factory=list)
    cpu: dict[str, float | None] = field(default_factory=lambda: dict.fromkeys(CPU_GROUPS, 0.0))

    @property
    def n(self) -> int:
        return len(self.lat)

    def cpu_ms(self, group: str) -> float | None:
        spent = self.cpu[group]
        return None if spent is None or not self.n else spent * 1000 / self.n

    def cpu_all(self) -> float | None:
        parts = [self.cpu_ms(g) for g in CPU_GROUPS]
        return None if any(x is None for x in parts) else sum(parts)


def http_get(http, stack: Stack, url: str, project: str, expect: int | None) -> float:
    t0 = time.perf_counter()
    resp = http.get(url, headers={"X-Auth-Token": stack.token(project)})
    took = (time.perf_counter() - t0) * 1000
    if resp.status_code != 200:
        raise BenchError(f"{stack.label}: GET {url}: HTTP {resp.status_code} {resp.text[:300]}")
    if expect is not None:
        got = len(resp.json()["volumes"])
        if got != expect:
            raise BenchError(f"{stack.label}: GET {url}: {got} volumes, expected {expect}")
    return took


def create(http, stack: Stack, project: str) -> tuple[float, float, str]:
    """POST a create and wait for `available`: (ms to the 202, ms to available, volume id)."""
    url = f"/v3/{project}/volumes"
    t0 = time.perf_counter()
    resp = http.post(url, json={"volume": {"size": 1, "name": "scale"}}, headers={"X-Auth-Token": stack.token(project)})
    t_202 = time.perf_counter()
    if resp.status_code != 202:
        raise BenchError(f"{stack.label}: POST {url}: HTTP {resp.status_code} {resp.text[:300]}\n{stack.log_tails()}")
    volume_id = resp.json()["volume"]["id"]
    stack.wait_available(volume_id)
    return (t_202 - t0) * 1000, (time.perf_counter() - t0) * 1000, volume_id


def run_op(op: str, http, stack: Stack, projects: Projects, i: int, figures: Figures | None) -> None:
    """One operation; its latency goes to `figures` (None: warm-up)."""
    a = projects.reads
    expect_a = len(projects.read_volumes[stack.label])
    if op == "create":
        t_202, took, _ = create(http, stack, projects.creates)
        if figures is not None:
            figures.lat_202.append(t_202)
    elif op == "show":
        ids = projects.read_volumes[stack.label]
        took = http_get(http, stack, f"/v3/{a}/volumes/{ids[i % len(ids)]}", a, None)
    elif op == "list":
        took = http_get(http, stack, f"/v3/{a}/volumes/detail", a, expect_a)
    elif op == "list50":
        took = http_get(http, stack, f"/v3/{a}/volumes/detail?limit=50", a, min(50, expect_a))
    elif op == "list_zero":
        took = http_get(http, stack, f"/v3/{projects.zero}/volumes/detail", projects.zero, 0)
    else:
        raise ValueError(op)
    if figures is not None:
        figures.lat.append(took)


def measure(stacks: dict[str, Stack], clients: dict, projects: Projects, args) -> dict[str, dict[str, Figures]]:
    """Per operation: --warmup unmeasured on each stack, then --ops measured on each, in blocks of
    --block alternating between the stacks (which goes first alternates too)."""
    results = {op: {label: Figures() for label in STACKS} for op in args.ops_list}
    for op in args.ops_list:
        for label in STACKS:
            for i in range(args.warmup):
                run_op(op, clients[label], stacks[label], projects, i, None)
        done, rnd = 0, 0
        while done < args.ops:
            size = min(args.block, args.ops - done)
            for label in (STACKS if rnd % 2 == 0 else STACKS[::-1]):
                stack, figures = stacks[label], results[op][label]
                pids = stack.pg_pids()
                before = stack.cpu(pids)
                for i in range(done, done + size):
                    run_op(op, clients[label], stack, projects, i, figures)
                after = stack.cpu(sorted(set(pids) | set(stack.pg_pids())))
                for group in CPU_GROUPS:
                    spent = cpu_delta(before[group], after[group])
                    figures.cpu[group] = None if spent is None or figures.cpu[group] is None \
                        else figures.cpu[group] + spent
                stack.check_alive()
            done += size
            rnd += 1
        e, f = results[op]["empty"], results[op]["full"]
        log(f"{op}: median {statistics.median(e.lat):.1f} ms empty, {statistics.median(f.lat):.1f} ms full "
            f"({statistics.median(f.lat) / statistics.median(e.lat):.2f}x); CPU ms/op {fmt(e.cpu_all(), '.1f')} "
            f"empty, {fmt(f.cpu_all(), '.1f')} full")
    return results


def scheduler_probe(stack: Stack, repeat: int = 5) -> float:
    """Median ms of the scheduler's allocated-capacity query (tasks/allocation.allocated)
    for the measured backend: the one create-path query that reads every volume of a backend."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from tasks.allocation import allocated

    with Session(stack.engine) as session:
        pool = session.scalar(text("SELECT host FROM volumes WHERE host LIKE :h LIMIT 1"), {"h": stack.host + "#%"})
        took = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            allocated(session, [pool or stack.host])
            took.append((time.perf_counter() - t0) * 1000)
    return statistics.median(took)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or not b else a / b


def report(results: dict[str, dict[str, Figures]], stacks: dict[str, Stack], args, info: dict) -> bool:
    print()
    empty, full = stacks["empty"].fill, stacks["full"].fill
    print(f"volchain scale: the same run, both stacks up at once ({os.cpu_count()} CPUs; each: `volchain worker`, "
          f"scheduler and one file volume service x {args.concurrency}, `volchain api` x 1, token auth); "
          f"{args.ops} measured per operation and database after {args.warmup} unmeasured, one at a time, "
          f"in alternating blocks of {args.block}")
    print(f"  empty: {empty.projects} projects, {empty.volumes:,} volumes, {empty.flows:,} flow-log rows "
          f"(the measured projects only); database {info['size']['empty']}")
    print(f"  full:  {full.projects:,} projects, {full.volumes:,} volumes, {full.flows:,} succeeded create "
          f"flow-log rows, {args.backends} backends ({full.on_measured_backend:,} volumes on the measured one); "
          f"database {info['size']['full']}; filled in {full.seconds:.0f}s, "
          f"VACUUM ANALYZE + CHECKPOINT {info['settle_s']['full']:.0f}s")
    print(f"  load average before: {info['load_before']}; after: {info['load_after']}")
    head = (f"{'operation':<31} | {'db':<10} | {'n':>4} | {'median ms':>9} | {'p95 ms':>7} | "
            f"{'CPU ms/op: API':>14} | {'workers':>7} | {'PG':>6} | {'all':>6}")
    print(head)
    print("-" * len(head))
    verdicts = []
    for op in args.ops_list:
        rows = [(op, "lat")] + ([("create_202", "lat_202")] if op == "create" else [])
        for key, attr in rows:
            stats = {}
            for label in STACKS:
                fig = results[op][label]
                lat = sorted(getattr(fig, attr))
                with_cpu = attr == "lat"
                stats[label] = (statistics.median(lat), percentile(lat, 95),
                                *(fig.cpu_ms(g) if with_cpu else None for g in CPU_GROUPS),
                                fig.cpu_all() if with_cpu else None)
                s = stats[label]
                print(f"{LABELS[key] if label == 'empty' else '':<31} | {label:<10} | {len(lat):>4} | {s[0]:>9.1f} | "
                      f"{s[1]:>7.1f} | {fmt(s[2], '>14.2f')} | {fmt(s[3], '>7.2f')} | {fmt(s[4], '>6.2f')} | "
                      f"{fmt(s[5], '>6.2f')}")
            r = [ratio(f, e) for f, e in zip(stats["full"], stats["empty"])]
            cells = [fmt(x, w) + ("x" if x is not None else " ") for x, w in
                     zip(r, (">8.2f", ">6.2f", ">13.2f", ">6.2f", ">5.2f", ">5.2f"))]
            print(f"{'':<31} | {'full/empty':<10} | {'':>4} | " + " | ".join(cells))
            if attr == "lat":
                verdicts.append((op, r[0], r[1], r[5]))
    print()
    probe = info["probe"]
    print(f"Scheduler's allocated-capacity query for the measured backend (tasks/allocation.allocated, "
          f"median of 5): empty {probe['empty']:.2f} ms, full {probe['full']:.2f} ms "
          f"({full.on_measured_backend:,} live volumes there)")
    print(f"Quota invariant (tasks/reconcile.check, every project): {info['drift']}")
    print(f"Ratios full / empty (goal: within {GOAL}x, judged on the median latency and on CPU ms/op, all):")
    met_all = True
    for op, med, p95, cpu in verdicts:
        ok = med is not None and med <= GOAL and (cpu is None or cpu <= GOAL)
        met_all &= ok
        print(f"  {LABELS[op]:<31} median {fmt(med, '.2f')}x, p95 {fmt(p95, '.2f')}x, CPU {fmt(cpu, '.2f')}x"
              f" -> {'met' if ok else 'NOT met'}")
    print(f"-> goal {'MET' if met_all else 'NOT MET'}")
    return met_all


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pg", default=DEFAULT_PG, help=f"PostgreSQL server, no database (default {DEFAULT_PG})")
    p.add_argument("--redis", default=DEFAULT_REDIS,
                   help=f"Redis db of the empty stack; the full stack takes the next db; both emptied before and "
                        f"after (default {DEFAULT_REDIS})")
    p.add_argument("--volumes", type=int, default=1_000_000,
                   help="volumes (and create flows) of the full database (default 1,000,000)")
    p.add_argument("--projects", type=int, default=None,
                   help=f"projects they are spread over (default --volumes / {PER_PROJECT}: 10,000 at the default "
                        f"--volumes, {PER_PROJECT} volumes a project)")
    p.add_argument("--backends", type=int, default=10,
                   help="backends they are spread over; the measured volume service is one (default 10)")
    p.add_argument("--ops", type=int, default=200, help="measured operations per operation and database (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="unmeasured operations before each (default 20)")
    p.add_argument("--block", type=int, default=25, help="operations per block; blocks alternate (default 25)")
    p.add_argument("--concurrency", type=int, default=2,
                   help="pool size of each stack's step worker, scheduler and volume service (default 2: requests "
                        "go one at a time)")
    p.add_argument("--only", default=",".join(OPS), help=f"comma list of operations (default {','.join(OPS)})")
    p.add_argument("--check", action="store_true", help=f"exit 1 when a ratio is above {GOAL}x")
    args = p.parse_args(argv)
    if args.projects is None:
        args.projects = max(1, args.volumes // PER_PROJECT)
    args.ops_list = [op.strip() for op in args.only.split(",") if op.strip()]
    if not args.ops_list or set(args.ops_list) - set(OPS):
        p.error(f"--only takes {', '.join(OPS)}")
    if min(args.projects, args.backends, args.ops, args.block, args.concurrency) < 1 or args.warmup < 0:
        p.error("--projects, --backends, --ops, --block and --concurrency must be >= 1; --warmup >= 0")
    if args.volumes < 2 * args.projects:
        p.error("--volumes must be at least twice --projects (the measured projects need volumes)")
    if (args.warmup + args.ops) >= PROJECT_LIMITS["volumes"] - args.volumes // args.projects:
        p.error(f"--warmup + --ops must leave the create project under its limit of {PROJECT_LIMITS['volumes']}")
    return args


def _interrupted(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def load_avg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv=None) -> int:
    args = parse_args(argv)
    # Clean up (processes, databases, files) on a plain kill too, and on Ctrl-C even when started
    # with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    import httpx
    import redis
    from sqlalchemy import create_engine, text

    from models.migrate import upgrade

    info: dict = {"load_before": load_avg()}
    log(f"load average {info['load_before']}")
    redis_urls = {"empty": args.redis, "full": next_db(args.redis)}
    clients_r = {label: redis.Redis.from_url(url) for label, url in redis_urls.items()}
    for label, r in clients_r.items():
        check_redis(r, redis_urls[label], OUR_KEYS)
    for r in clients_r.values():
        r.flushdb()
    run_id = uuid.uuid4().hex[:6]
    salt = uuid.uuid4().hex[:8]
    work_dir = Path(tempfile.mkdtemp(prefix="volchain-scale-bench-"))
    stacks: dict[str, Stack] = {}
    admins = {}
    http = {}
    results = None
    try:
        for label in STACKS:
            name, admin = create_database(args.pg)
            admins[label] = (admin, name)
            stacks[label] = Stack(label, name, f"{args.pg}/{name}", redis_urls[label], work_dir, run_id)
        for stack in stacks.values():
            log(f"{stack.label}: database {stack.db_name}, Redis {stack.redis_url}: migrating, starting processes")
            upgrade(stack.database_url)
            stack.engine = create_engine(stack.database_url)
            stack.start_all(args.concurrency)
        per_project = args.volumes // args.projects
        sizes = {"empty": (2 * per_project, 2), "full": (args.volumes, args.projects)}
        for stack in stacks.values():
            stack.wait_ready()
            http[stack.label] = httpx.Client(base_url=stack.base_url, timeout=OP_TIMEOUT)
            stack.connect_poller()
            template_project = uuid.uuid4().hex
            _, took, _ = create(http[stack.label], stack, template_project)
            log(f"{stack.label}: up; template create {took:.0f} ms")
            template = capture_template(stack.engine, template_project)
            remove_project(stack.engine, template_project)
            volumes, projects = sizes[stack.label]
            log(f"{stack.label}: filling {volumes:,} volumes and create flows in {projects:,} projects")
            stack.fill = fill(stack.engine, template, salt, volumes, projects, args.backends, f"{stack.label}: ")
            log(f"{stack.label}: filled in {stack.fill.seconds:.0f}s; VACUUM ANALYZE, CHECKPOINT")
            t0 = time.monotonic()
            settle(stack.engine)
            info.setdefault("settle_s", {})[stack.label] = time.monotonic() - t0
        drift = {label: quota_drift(stacks[label].engine) for label in STACKS}
        if any(drift.values()):
            raise BenchError(f"the fill left quota drift: { {k: v[:3] for k, v in drift.items()} }")
        info["drift"] = "no drift in either database"
        projects = Projects(reads=project_id(salt, 1), creates=project_id(salt, 2), zero=uuid.uuid4().hex)
        for label, stack in stacks.items():
            with stack.engine.connect() as conn:
                projects.read_volumes[label] = list(conn.scalars(text(
                    "SELECT id FROM volumes WHERE project_id = :p AND NOT deleted ORDER BY id"), {"p": projects.reads}))
        info["probe"] = {label: scheduler_probe(stack) for label, stack in stacks.items()}
        for stack in stacks.values():  # issued now: no connection of the bench's opens while measuring
            for project in (projects.reads, projects.creates, projects.zero):
                stack.token(project)
        for stack in stacks.values():
            stack.engine.dispose()  # no idle connection of the bench's but the poller
        log(f"measuring {', '.join(args.ops_list)}: {args.ops} each per database, blocks of {args.block}; "
            f"load average {load_avg()}")
        results = measure(stacks, http, projects, args)
        info["load_after"] = load_avg()
        with stacks["full"].engine.connect() as conn:
            info["size"] = {label: conn.scalar(text("SELECT pg_size_pretty(pg_database_size(:d))"),
                                               {"d": stacks[label].db_name}) for label in STACKS}
    finally:
        try:
            for client in http.values():
                client.close()
            for stack in stacks.values():
                stack.stop()
        finally:
            try:
                for r in clients_r.values():
                    r.flushdb()
            finally:
                for admin, name in admins.values():
                    drop_database(admin, name)
                    log(f"database {name} dropped")
                shutil.rmtree(work_dir, ignore_errors=True)
    met = report(results, stacks, args, info)
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    run_main(main)
