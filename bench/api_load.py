"""Bench: POST /v3/{project_id}/volumes under concurrent clients, beside the chain driven without HTTP.

    python bench/api_load.py                         # N=1000, 8 clients, 1 API worker
    python bench/api_load.py --n 200 --n-serial 50   # quick
    python bench/api_load.py --api-workers-both      # the HTTP modes with 1, then 2 API workers
    python bench/api_load.py --n 300 --no-baseline --py-spy /tmp/api   # where the API spends its CPU

Starts what an operator starts, with the settings we ship (events on, token auth): `volchain worker
--concurrency C` (prefork; C = --worker-concurrency, default four per CPU as shipped) and `volchain api --port P
--workers K`, on a PostgreSQL database and a Redis db of the bench's own. A member token for a project
with unlimited volumes and gigabytes drives three HTTP modes, asyncio + httpx.AsyncClient, one pooled
connection per client:

    wait    --concurrency clients, --n creates; the API answers once the chain has finished (the default)
    async   the same with `Prefer: respond-async`: 202 as soon as the flow is recorded and sent
    serial  one client, --n-serial creates, one at a time: single-create latency

Latency is client side (send to full response); creates/s = 202 answers / (last answer - first send).
The same-run baseline drives the same chain without HTTP: as many threads in this process calling
workers.submit.submit_create_volume and, for `wait`, workers.submit.wait_for_flow; so API minus
direct is what the HTTP front end adds. CPU per create comes from /proc: the API process tree and this
client while the requests run, the worker tree and the database's backends until every chain of the
mode has finished. Each mode starts on idle workers. Every response must be a 202 with a new volume
id, and at the end each project's volume rows must equal its answered creates. Cinder 29's own
figures on a 2-core machine are printed for scale.

Creates a PostgreSQL database of its own (dropped at the end) and empties its own Redis db (default
db 7) before and after. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/api_load.py` from anywhere
    sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    BenchError, check_redis, cpu_delta, create_database, drop_database, free_port, log, percentile, pg_cpu,
    run_main, tail, tree_cpu,
)
from workers.settings import default_worker_concurrency  # noqa: E402
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
DEFAULT_REDIS = "redis://127.0.0.1:6379/7"
# Goal: the HTTP front end is no longer what limits a create.
GOAL_RATE = 100.0  # creates/s in wait mode ...
GOAL_P99_MS = 250.0  # ... with p99 below this
GOAL_SERIAL_MS = 25.0  # single create, p50
# Cinder 29 (its own API, LVM driver stubbed) on a 2-core machine, concurrency 8, from the issue.
CINDER_REFERENCE = (
    ("wait, 1 API worker", "20", "280-400", "540-770"),
    ("wait, 2 API workers", "24-27", "280-400", "540-770"),
    ("single create", "-", "~57", "-"),
)
# Keys this bench, Celery/kombu and volchain write; anything else in the Redis db is someone else's.
OUR_KEYS = ("_kombu.", "unacked", "volchain", "scheduler", "volume.", "celery")
BODY = {"volume": {"size": 1, "name": "bench-api"}}
REQUEST_TIMEOUT = 60.0  # the API itself answers `creating` after api_wait_seconds (30 s)
START_WAIT = 60.0


@dataclass
class Run:
    """What one mode measured: latencies of the 202s, the errors, the volume ids answered."""

    mode: str
    path: str  # "API" or "direct"
    concurrency: int
    api_workers: int | None
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    volume_ids: list[str] = field(default_factory=list)
    answered_at: dict[str, float] = field(default_factory=dict)  # volume id -> unix time of the answer
    first_send: float = 0.0
    last_answer: float = 0.0
    cpu_ms: dict[str, float | None] = field(default_factory=dict)  # per create: api, workers, pg, client
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        span = self.last_answer - self.first_send
        return self.ok / span if span > 0 and self.ok else float("nan")

    def p(self, q: float) -> float:
        return percentile(sorted(self.latencies_ms), q)


# --------------------------------------------------------------------------------------------
# CPU per create, by process group (accounting in bench/harness.py)
# --------------------------------------------------------------------------------------------

class CpuMeter:
    """CPU per create: the API and this (client) process while the requests run; the workers and
    their PostgreSQL backends until the mode's chains have all finished (async answers first)."""

    def __init__(self, bench: Bench, api: subprocess.Popen | None) -> None:
        self.bench, self.api = bench, api
        self.before = self._sample(("api", "client", "workers", "pg"))
        self.after: dict = {}

    def _sample(self, keys: tuple[str, ...]) -> dict:
        out: dict = {}
        if "api" in keys:
            out["api"] = tree_cpu([self.api.pid]) if self.api is not None else None
        if "client" in keys:
            own = os.times()
            out["client"] = {0: own.user + own.system}
        if "workers" in keys:
            out["workers"] = tree_cpu([p.pid for p in self.bench.workers])
        if "pg" in keys:
            out["pg"] = pg_cpu(self.bench.pg_pids())
        return out

    def answered(self) -> None:
        self.after.update(self._sample(("api", "client")))

    def drained(self) -> None:
        self.after.update(self._sample(("workers", "pg")))

    def per_create(self, n: int) -> dict[str, float | None]:
        out = {}
        for key in ("api", "workers", "pg", "client"):
            spent = cpu_delta(self.before[key], self.after.get(key))
            out[key] = spent * 1000 / n if spent is not None and n else None
        return out


# --------------------------------------------------------------------------------------------
# HTTP clients (asyncio + httpx)
# --------------------------------------------------------------------------------------------

async def post_creates(base_url: str, project: str, token: str, n: int, concurrency: int, respond_async: bool,
                       run: Run, deadline: float) -> None:
    """`concurrency` clients share one connection pool and POST `n` creates between them."""
    import httpx

    headers = {"X-Auth-Token": token}
    if respond_async:
        headers["Prefer"] = "respond-async"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    counter = iter(range(n))
    url = f"/v3/{project}/volumes"

    async def client(http: httpx.AsyncClient) -> None:
        for _ in counter:
            if time.monotonic() > deadline:
                run.errors.append("not sent: time is up")
                continue
            t0 = time.perf_counter()
            try:
                answer = await http.post(url, json=BODY)
            except httpx.HTTPError as exc:
                run.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            took = (time.perf_counter() - t0) * 1000
            now = time.time()
            run.last_answer = max(run.last_answer, now)
            if answer.status_code != 202:
                run.errors.append(f"HTTP {answer.status_code}: {answer.text[:200]}")
                continue
            try:
                volume_id = answer.json()["volume"]["id"]
            except (ValueError, KeyError, TypeError):
                run.errors.append(f"202 without a volume id: {answer.text[:200]}")
                continue
            run.latencies_ms.append(took)
            run.volume_ids.append(volume_id)
            run.answered_at[volume_id] = now

    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=REQUEST_TIMEOUT) as http:
        run.first_send = time.time()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))


# --------------------------------------------------------------------------------------------
# The bench: database, Redis db, workers, API, the modes
# --------------------------------------------------------------------------------------------

def clean_env(database_url: str, redis_url: str) -> dict[str, str]:
    """The process environment with volchain's defaults: only the database and broker URLs set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLCHAIN_")}
    env.update({
        "VOLCHAIN_DATABASE_URL": database_url,
        "VOLCHAIN_BROKER_URL": redis_url,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
    })
    return env


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM (warm shutdown; uvicorn and Celery stop their children), then SIGKILL its own session."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the process's own session: it and its children only
            proc.wait(timeout=10)


class Bench:
    def __init__(self, args, database_url: str, log_dir: Path) -> None:
        self.args = args
        self.env = clean_env(database_url, args.redis)
        # Before volchain reads its settings: the direct baseline runs in this process, like the API.
        for key in [k for k in os.environ if k.startswith("VOLCHAIN_") and k not in self.env]:
            del os.environ[key]
        os.environ.update(self.env)
        from api.auth import TokenSigner, database_secret
        from tasks import quota_engine
        from workers.runtime import get_runtime

        self.rt = get_runtime()
        self.log_dir = log_dir
        self.workers: list[subprocess.Popen] = []
        self.api: subprocess.Popen | None = None
        self.api_log: Path | None = None
        # One project for the HTTP creates, one for the direct ones: each has its own row check.
        self.project = uuid.uuid4().hex
        self.direct_project = uuid.uuid4().hex
        with self.rt.factory() as session, session.begin():
            for project in (self.project, self.direct_project):
                quota_engine.set_limits(session, project, {"volumes": -1, "gigabytes": -1})
        with self.rt.factory() as session:
            ttl = int(args.timeout * 6 + 3600)
            self.token = TokenSigner(database_secret(session)).issue(self.project, "bench", "member", ttl)
        self.answered = {self.project: 0, self.direct_project: 0}

    # ---- processes

    def start_workers(self) -> None:
        path = self.log_dir / "worker.log"
        cmd = [sys.executable, "-m", "cli.main", "worker", "--concurrency", str(self.args.worker_concurrency),
               "--loglevel", "warning", "--hostname", f"bench-api-{uuid.uuid4().hex[:6]}@%h"]
        with open(path, "ab") as fh:
            # Own session: a Ctrl-C reaches only this process, which stops the worker itself.
            self.workers.append(subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                                 start_new_session=True))
        self.worker_log = path
        from workers.app import app

        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            if app.control.ping(timeout=0.5):
                log(f"worker up: `volchain worker --concurrency {self.args.worker_concurrency}` (prefork)")
                return
            if self.workers[0].poll() is not None:
                break
        proc = self.workers[0]
        why = (f"exited ({proc.returncode})" if proc.poll() is not None
               else f"did not answer a ping within {START_WAIT:.0f}s")
        raise BenchError(f"the worker {why}\n{tail(path)}")

    def start_api(self, api_workers: int) -> str:
        port = free_port()
        self.api_log = self.log_dir / f"api-{api_workers}.log"
        cmd = [sys.executable, "-m", "cli.main", "api", "--port", str(port), "--workers", str(api_workers),
               "--log-level", "warning"]
        with open(self.api_log, "ab") as fh:
            self.api = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        import httpx

        deadline = time.monotonic() + START_WAIT
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                break
            try:
                httpx.get(base + "/", timeout=1)
                log(f"API up: `volchain api --port {port} --workers {api_workers}`")
                return base
            except httpx.HTTPError:
                time.sleep(0.1)
        why = (f"exited ({self.api.returncode})" if self.api.poll() is not None
               else f"did not answer within {START_WAIT:.0f}s")
        raise BenchError(f"the API {why}\n{tail(self.api_log)}")

    def stop_api(self) -> None:
        if self.api is not None:
            stop(self.api)
            self.api = None

    def stop_all(self) -> None:
        self.stop_api()
        for proc in self.workers:
            stop(proc)

    def check_alive(self) -> None:
        dead = [p.pid for p in self.workers if p.poll() is not None]
        if dead:
            raise BenchError(f"the worker died\n{tail(self.worker_log)}")
        if self.api is not None and self.api.poll() is not None:
            raise BenchError(f"the API died\n{tail(self.api_log)}")

    def pg_pids(self) -> list[int]:
        from sqlalchemy import text

        with self.rt.factory() as session:
            return list(session.scalars(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")))

    # ---- flows

    def running(self, project: str) -> int:
        from sqlalchemy import func, select

        from models.flow_log import FlowRun, FlowState

        with self.rt.factory() as session:
            return session.scalar(select(func.count()).where(
                FlowRun.project_id == project, FlowRun.state == FlowState.RUNNING.value))

    def drain(self, project: str) -> None:
        """Wait (bounded) until no flow of the project is running: the next mode starts on idle workers."""
        last, last_change = None, time.monotonic()
        while True:
            left = self.running(project)
            if left == 0:
                return
            self.check_alive()
            if left != last:
                last, last_change = left, time.monotonic()
            elif time.monotonic() - last_change > self.args.stall:
                raise BenchError(f"{left} flow(s) made no progress for {self.args.stall:.0f}s")
            time.sleep(0.05)

    def finished_at(self, volume_ids: list[str]) -> dict[str, tuple[str, float | None]]:
        from sqlalchemy import select

        from models.flow_log import FlowRun

        out = {}
        with self.rt.factory() as session:
            for i in range(0, len(volume_ids), 1000):
                for vid, state, done in session.execute(select(FlowRun.volume_id, FlowRun.state, FlowRun.finished_at)
                                                        .where(FlowRun.volume_id.in_(volume_ids[i:i + 1000]))):
                    out[vid] = (state, done.replace(tzinfo=timezone.utc).timestamp() if done else None)
        return out

    def settle(self, run: Run, project: str) -> None:
        """After a mode: flows drained, each answered create checked against its flow."""
        self.drain(project)
        self.answered[project] += run.ok
        dupes = run.ok - len(set(run.volume_ids))
        if dupes:
            run.errors.append(f"{dupes} volume id(s) answered twice")
        flows = self.finished_at(run.volume_ids)
        failed = [vid for vid in run.volume_ids if flows.get(vid, ("missing",))[0] != "succeeded"]
        if failed:
            run.errors.append(f"{len(failed)} answered create(s) whose flow did not succeed")
        if run.mode != "async":
            early = sum(1 for vid, t in run.answered_at.items() if (flows.get(vid, ("", None))[1] or math.inf) > t)
            if early:
                run.notes.append(f"{early} answered before their chain finished (API wait deadline?)")
        else:
            ends = [t for _, t in flows.values() if t is not None]
            if ends and run.first_send:
                span = max(ends) - run.first_send
                run.notes.append(f"async: chains of all {run.ok} finished {span:.1f}s after the first send "
                                 f"({run.ok / span:.1f} creates/s through the chain)")

    # ---- modes

    def http_mode(self, base: str, mode: str, api_workers: int, n: int, profile: bool = True) -> Run:
        concurrency = 1 if mode == "serial" else self.args.concurrency
        run = Run(mode, "API", concurrency, api_workers)
        deadline = time.monotonic() + self.args.timeout
        cpu = CpuMeter(self, self.api)
        with self.profiler(f"{mode}-api{api_workers}" if profile else None):
            try:
                asyncio.run(asyncio.wait_for(
                    post_creates(base, self.project, self.token, n, concurrency, mode == "async", run, deadline),
                    timeout=self.args.timeout + REQUEST_TIMEOUT))
            except asyncio.TimeoutError:
                run.errors.append(f"mode did not finish within {self.args.timeout + REQUEST_TIMEOUT:.0f}s")
        cpu.answered()
        self.check_alive()
        self.drain(self.project)
        cpu.drained()
        run.cpu_ms = cpu.per_create(run.ok)
        self.settle(run, self.project)
        return run

    @contextlib.contextmanager
    def profiler(self, label: str | None):
        """With --py-spy PREFIX: sample the API processes during a mode into PREFIX-<label>.txt (collapsed stacks)."""
        if not self.args.py_spy or label is None or self.api is None:
            yield
            return
        out = Path(f"{self.args.py_spy}-{label}.txt").resolve()
        # --gil: only the thread holding the GIL is sampled, so the samples are Python CPU time.
        cmd = ["py-spy", "record", "--pid", str(self.api.pid), "--subprocesses", "--gil", "--rate", "100",
               "--format", "raw", "--output", str(out)]
        with open(self.log_dir / "py-spy.log", "ab") as fh:
            spy = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(0.5)  # attached before the first request
        try:
            yield
        finally:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(timeout=10)
            log(f"py-spy: {out}" if out.exists() else f"py-spy wrote nothing\n{tail(self.log_dir / 'py-spy.log')}")

    def direct_mode(self, mode: str, n: int) -> Run:
        """The same creates through workers.submit in this process: no HTTP, no API process."""
        from tasks.context import RequestContext
        from workers.submit import submit_create_volume, wait_for_flow

        concurrency = 1 if mode == "serial" else self.args.concurrency
        run = Run(mode, "direct", concurrency, None)
        ctx = RequestContext(project_id=self.direct_project, user_id="bench", roles=("member",))
        lock = threading.Lock()
        counter = iter(range(n))
        deadline = time.monotonic() + self.args.timeout

        def client() -> None:
            for _ in counter:
                if time.monotonic() > deadline:
                    with lock:
                        run.errors.append("not sent: time is up")
                    continue
                t0 = time.perf_counter()
                try:
                    sub = submit_create_volume(ctx, respond_async=mode == "async", **BODY["volume"])
                    if mode != "async":
                        result = wait_for_flow(sub.flow_id, self.rt.settings.api_wait_seconds)
                        if result.finished and not result.succeeded:
                            raise RuntimeError(f"flow {result.state}: {result.error}")
                except Exception as exc:  # noqa: BLE001 - counted as an error, like a non-202
                    with lock:
                        run.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                took, now = (time.perf_counter() - t0) * 1000, time.time()
                with lock:
                    run.latencies_ms.append(took)
                    run.volume_ids.append(sub.volume_id)
                    run.answered_at[sub.volume_id] = now
                    run.last_answer = max(run.last_answer, now)

        cpu = CpuMeter(self, None)
        threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
        run.first_send = time.time()
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=max(1.0, deadline - time.monotonic() + REQUEST_TIMEOUT))
        if any(th.is_alive() for th in threads):
            run.errors.append("a client thread did not finish in time")
        cpu.answered()
        self.check_alive()
        self.drain(self.direct_project)
        cpu.drained()
        run.cpu_ms = cpu.per_create(run.ok)
        self.settle(run, self.direct_project)
        return run

    def warm_up(self, base: str | None, api_workers: int | None) -> None:
        """Unmeasured creates: connection pools fill, fork children connect, usage rows appear."""
        if not self.args.warmup:
            return
        run = (self.http_mode(base, "wait", api_workers, self.args.warmup, profile=False) if base
               else self.direct_mode("wait", self.args.warmup))
        if run.errors:
            raise BenchError(f"warm-up failed: {run.errors[0]}")

    def volume_rows(self, project: str) -> int:
        from sqlalchemy import func, select

        from models.volume import Volume

        with self.rt.factory() as session:
            return session.scalar(select(func.count()).where(Volume.project_id == project, Volume.deleted.is_(False)))


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def fmt(value, spec: str) -> str:
    """format(value, spec), or a dash as wide as the spec asks when there is no value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
        return "-".rjust(int(width or 0))
    return format(value, spec)


def print_table(runs: list[Run], args) -> bool:
    print()
    print(f"volchain REST API: POST /v3/{{project_id}}/volumes (size 1), N={args.n} (serial {args.n_serial}), "
          f"`volchain worker` prefork x {args.worker_concurrency}, {os.cpu_count()} CPUs, load average "
          f"{args.load[0]:.2f} before, {args.load[1]:.2f} after; direct = workers.submit, no HTTP")
    head = (f"{'mode':<6} | {'path':<6} | {'concurrency':>11} | {'API workers':>11} | {'creates/s':>9} | "
            f"{'p50 ms':>7} | {'p95 ms':>7} | {'p99 ms':>7} | {'errors':>6} | "
            f"{'CPU ms/create: API':>18} | {'workers':>7} | {'PG':>5} | {'client':>6}")
    print(head)
    print("-" * len(head))
    for r in runs:
        c = r.cpu_ms
        print(f"{r.mode:<6} | {r.path:<6} | {r.concurrency:>11} | {fmt(r.api_workers, '>11')} | "
              f"{fmt(r.rate, '>9.1f')} | {fmt(r.p(50), '>7.1f')} | {fmt(r.p(95), '>7.1f')} | "
              f"{fmt(r.p(99), '>7.1f')} | {len(r.errors):>6} | "
              f"{fmt(c.get('api'), '>18.1f')} | {fmt(c.get('workers'), '>7.1f')} | {fmt(c.get('pg'), '>5.1f')} | "
              f"{fmt(c.get('client'), '>6.1f')}")
    notes = [f"  {r.mode}/{r.path}/{r.api_workers or '-'}: {note}" for r in runs for note in r.notes]
    errors = [f"  {r.mode}/{r.path}/{r.api_workers or '-'}: {err}" for r in runs for err in sorted(set(r.errors))[:3]]
    if notes:
        print("Notes:")
        print("\n".join(notes))
    if errors:
        print("Errors (first kinds):")
        print("\n".join(errors))

    print()
    print("For scale, Cinder 29's own API on a 2-core machine, concurrency 8 (reference figures, not this run):")
    print(f"  {'mode':<20} | {'creates/s':>9} | {'p50 ms':>8} | {'p99 ms':>8}")
    for label, rate, p50, p99 in CINDER_REFERENCE:
        print(f"  {label:<20} | {rate:>9} | {p50:>8} | {p99:>8}")

    print()
    print(f"Goal: wait mode >= {GOAL_RATE:.0f} creates/s with p99 < {GOAL_P99_MS:.0f} ms at concurrency "
          f"{args.concurrency}; single create (serial p50) < {GOAL_SERIAL_MS:.0f} ms.")
    met_all = True
    for k in sorted({r.api_workers for r in runs if r.path == "API"}):
        wait = next((r for r in runs if r.path == "API" and r.api_workers == k and r.mode == "wait"), None)
        serial = next((r for r in runs if r.path == "API" and r.api_workers == k and r.mode == "serial"), None)
        parts = []
        if wait is not None:
            ok = wait.rate >= GOAL_RATE and wait.p(99) < GOAL_P99_MS and not wait.errors
            met_all &= ok
            parts.append(f"wait {wait.rate:.1f}/s, p99 {wait.p(99):.0f} ms ({'met' if ok else 'NOT met'})")
        if serial is not None:
            ok = serial.p(50) < GOAL_SERIAL_MS and not serial.errors
            met_all &= ok
            parts.append(f"single create p50 {serial.p(50):.1f} ms ({'met' if ok else 'NOT met'})")
        print(f"Result, {k} API worker(s): " + "; ".join(parts))
    print(f"-> goal {'MET' if met_all else 'NOT MET'}")
    return met_all


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def run_all(bench: Bench, args) -> list[Run]:
    runs: list[Run] = []
    bench.start_workers()
    if not args.no_baseline:
        bench.warm_up(None, None)
    # Baseline first, on the same worker, with no API process running.
    for mode, n in (("wait", args.n), ("async", args.n), ("serial", args.n_serial)):
        if mode in args.modes and not args.no_baseline:
            runs.append(bench.direct_mode(mode, n))
            log(f"direct {mode}: {runs[-1].rate:.1f} creates/s, p50 {runs[-1].p(50):.1f} ms, "
                f"p99 {runs[-1].p(99):.1f} ms, {len(runs[-1].errors)} error(s)")
    for k in args.api_worker_counts:
        base = bench.start_api(k)
        try:
            bench.warm_up(base, k)
            for mode, n in (("wait", args.n), ("async", args.n), ("serial", args.n_serial)):
                if mode in args.modes:
                    runs.append(bench.http_mode(base, mode, k, n))
                    log(f"API x{k} {mode}: {runs[-1].rate:.1f} creates/s, p50 {runs[-1].p(50):.1f} ms, "
                        f"p99 {runs[-1].p(99):.1f} ms, {len(runs[-1].errors)} error(s)")
        finally:
            bench.stop_api()
    return runs


def parse_args(argv=None):
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pg", default=DEFAULT_PG, help=f"PostgreSQL server, no database (default {DEFAULT_PG})")
    p.add_argument("--redis", default=DEFAULT_REDIS,
                   help=f"Redis db of the bench's own; emptied before and after (default {DEFAULT_REDIS})")
    p.add_argument("--n", type=int, default=1000, help="creates per concurrent mode (default 1000)")
    p.add_argument("--n-serial", type=int, default=100, help="creates in the serial mode (default 100)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent HTTP clients (default 8)")
    shipped = default_worker_concurrency()  # what `volchain worker` starts (workers/app.worker_concurrency)
    p.add_argument("--worker-concurrency", type=int, default=shipped,
                   help=f"prefork children of `volchain worker` (default {shipped}: 4 per CPU, at most 16)")
    p.add_argument("--api-workers", type=int, default=1, help="`volchain api --workers` (default 1)")
    p.add_argument("--api-workers-both", action="store_true", help="run the HTTP modes with 1, then 2 API workers")
    p.add_argument("--modes", default="wait,async,serial", help="comma list of wait, async, serial (default all)")
    p.add_argument("--warmup", type=int, default=20, help="unmeasured creates before each path (default 20)")
    p.add_argument("--stall", type=float, default=30.0, help="fail when no flow finishes for this long (s)")
    p.add_argument("--timeout", type=float, default=None, help="most seconds per mode (default 120 + N/2)")
    p.add_argument("--check", action="store_true", help="exit 1 when the goal is not met")
    p.add_argument("--no-baseline", action="store_true", help="skip the direct (no HTTP) runs, e.g. when profiling")
    p.add_argument("--py-spy", metavar="PREFIX",
                   help="sample the API with py-spy during each HTTP mode into PREFIX-<mode>-api<K>.txt")
    args = p.parse_args(argv)
    args.modes = {m.strip() for m in args.modes.split(",") if m.strip()}
    if not args.modes or args.modes - {"wait", "async", "serial"}:
        p.error("--modes takes wait, async and serial")
    if min(args.n, args.n_serial, args.concurrency, args.worker_concurrency, args.api_workers) < 1 or args.warmup < 0:
        p.error("--n, --n-serial, --concurrency, --worker-concurrency and --api-workers must be >= 1; --warmup >= 0")
    args.api_worker_counts = (1, 2) if args.api_workers_both else (args.api_workers,)
    if args.timeout is None:
        args.timeout = 120 + max(args.n, args.n_serial) / 2
    return args


def _interrupted(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)  # clean up (processes, database) on a plain kill too
    import redis

    from models.migrate import upgrade

    load_before = os.getloadavg()[0]
    r = redis.Redis.from_url(args.redis)
    check_redis(r, args.redis, OUR_KEYS)
    r.flushdb()
    name, admin = create_database(args.pg)
    database_url = f"{args.pg}/{name}"
    log_dir = Path(tempfile.mkdtemp(prefix="volchain-api-bench-"))
    bench = None
    try:
        log(f"database {name}: migrating")
        upgrade(database_url)
        bench = Bench(args, database_url, log_dir)
        try:
            runs = run_all(bench, args)
        finally:
            bench.stop_all()
        rows = {p: bench.volume_rows(p) for p in (bench.project, bench.direct_project)}
    finally:
        try:
            if bench is not None:
                from workers.runtime import reset_runtime

                reset_runtime()
            r.flushdb()
        finally:
            drop_database(admin, name)
            log(f"database {name} dropped")
            shutil.rmtree(log_dir, ignore_errors=True)
    args.load = (load_before, os.getloadavg()[0])
    met = print_table(runs, args)
    print()
    consistent = True
    for project, label in ((bench.project, "API"), (bench.direct_project, "direct")):
        same = rows[project] == bench.answered[project]
        consistent &= same
        print(f"Check, {label}: {rows[project]} volume rows for {bench.answered[project]} answered creates "
              f"(warm-up included) -> {'ok' if same else 'MISMATCH'}")
    if not consistent:
        return 3
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    run_main(main)
