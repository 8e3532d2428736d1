"""Bench: volchain's create chain end to end, beside a same-run baseline of five no-op tasks.

    python bench/chain_throughput.py                 # N=1000 per config, events off and on
    python bench/chain_throughput.py --n 200         # quick
    python bench/chain_throughput.py --latency       # one create at a time: p50/p99 per create
    python bench/chain_throughput.py --floor         # also five tasks that each commit one write
    python bench/chain_throughput.py --against ../base   # also volchain from another checkout: the budget

Each configuration gets fresh worker processes started as operators start them
(`celery -A <app> worker -Q volchain.steps,volchain.compensate -P <pool, prefork> -c <4 x CPUs, <= 16>`, plus `-E` when
VOLCHAIN_TASK_EVENTS is on), and a fresh producer process with the same environment (the producer
sends task-sent events when events are on, as the API does). The baseline (`bench/noop_chain.py`)
uses the same `celery_config`, queues and worker command; its tasks do nothing. With `--floor` a
second reference runs too (`bench/floor_chain.py`): five tasks that each commit one single-row
UPDATE, the last also pushing a cast-sized message and a notification, the least a create with
a durable effect per step can cost on these settings.

A create counts as done when its cast is in the `scheduler` queue. Per-flow latency is the submit
time to the `finished_at` the worker records with the cast (no-op chains: the time their last task
pushes onto a list). Throughput is N / (last finish - first submit). The producer polls LLEN of the
done list (O(1), every 10 ms) only to keep `--window` flows in flight; nothing else watches the run.
Beside each figure: CPU per flow of the workers, their PostgreSQL backends and the producer (/proc).

With `--against PATH` (another checkout of volchain, e.g. a `git worktree` of an earlier commit)
each round also runs that checkout's volchain right after this one's, same event mode, Redis db and
PostgreSQL server: its own database, migrated by its own migrations, its own workers and its own
driver (PATH/bench/chain_throughput.py --drive), all with cwd and PYTHONPATH set to PATH. A Budget
section then compares the two side by side (BUDGET_FLOWS, BUDGET_CPU).

Creates a PostgreSQL database of its own (dropped at the end) and empties its own Redis db
(default db 3) before and after. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/chain_throughput.py` from anywhere
    sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    BenchError, check_redis, cpu_delta, create_database, drop_database, log, percentile, pg_cpu, run_main,
    stop_worker, tail, tree_cpu,
)
from workers.settings import default_worker_concurrency  # noqa: E402
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
DEFAULT_REDIS = "redis://127.0.0.1:6379/3"
QUEUES = "volchain.steps,volchain.compensate"
# The speed budget of issue 10 (it retired the old goal, volchain >= 60% of the no-op chain's flows/s):
# measured side by side in one run against an earlier checkout (--against), in both event modes.
BUDGET_FLOWS = 0.90  # volchain's flows/s at least 90% of the earlier checkout's
BUDGET_CPU = 1.15    # volchain's CPU ms per create (workers + PostgreSQL + producer) at most 1.15x the earlier one's
BUDGET_MODES = (False, True)  # events off and on
# Configurations in the order each round runs them (and the table lists them). "earlier" is volchain
# from the --against checkout: the same app module, its workers and driver started in that checkout.
APPS = {"noop": "bench.noop_chain", "volchain": "workers.app", "earlier": "workers.app", "floor": "bench.floor_chain"}
LABELS = {"noop": "no-op chain", "floor": "floor chain", "volchain": "volchain", "earlier": "volchain (earlier)"}
DRIVE_AS = {"earlier": "volchain"}  # the --drive kind of the checkout's own driver, when it differs
# Keys this bench, Celery/kombu and volchain write; anything else in the Redis db is someone else's.
OUR_KEYS = ("_kombu.", "unacked", "volchain", "scheduler", "volume.", "bench:", "celery")
RESULT_PREFIX = "RESULT "
WORKER_WAIT = 60.0


def summarize(submits: dict[str, float], finishes: dict[str, float]) -> dict:
    missing = [fid for fid in submits if fid not in finishes]
    if missing:
        raise BenchError(f"{len(missing)} flow(s) have no finish time (first: {missing[0]})")
    lat = sorted((finishes[fid] - t) * 1000 for fid, t in submits.items())
    span = max(finishes[fid] for fid in submits) - min(submits.values())
    return {
        "n": len(submits),
        "span_s": span,
        "flows_per_s": len(submits) / span if span > 0 else float("nan"),
        "p50_ms": percentile(lat, 50),
        "p90_ms": percentile(lat, 90),
        "p99_ms": percentile(lat, 99),
        "mean_ms": statistics.fmean(lat),
    }


# --------------------------------------------------------------------------------------------
# Driver (a child process per configuration, so events on/off is read from the environment
# exactly as volchain reads it)
# --------------------------------------------------------------------------------------------

class NoopTarget:
    """Chains of five no-op tasks; done = an entry on bench:noop:done."""

    kind = "noop"

    def __init__(self) -> None:
        from bench import noop_chain

        self.mod = noop_chain
        self.app = noop_chain.app
        self.done_key = noop_chain.DONE_KEY
        self._popped: dict[str, float] = {}

    def setup(self) -> None:
        pass

    def submit(self) -> str:
        chain_id = str(uuid.uuid4())
        self.mod.build_chain(chain_id).apply_async()
        return chain_id

    def popped(self, raw: bytes) -> None:
        chain_id, ts = raw.decode().split()
        self._popped[chain_id] = float(ts)

    def finish_times(self, r, ids: list[str], timeout: float) -> dict[str, float]:
        out = dict(self._popped)
        for raw in r.lrange(self.done_key, 0, -1):
            chain_id, ts = raw.decode().split()
            out[chain_id] = float(ts)
        return out

    def pg_pids(self) -> list[int]:
        return []

    def failures(self) -> str:
        return ""


class FloorTarget(NoopTarget):
    """Chains of five tasks that each commit one UPDATE (bench/floor_chain.py); done = an entry on
    bench:floor:done. Its PostgreSQL backends are counted like volchain's."""

    kind = "floor"

    def __init__(self) -> None:
        import psycopg

        from bench import floor_chain

        self.mod = floor_chain
        self.app = floor_chain.app
        self.done_key = floor_chain.DONE_KEY
        self._popped = {}
        self.conn = psycopg.connect(floor_chain.database_url(), autocommit=True)

    def setup(self) -> None:
        self.mod.prepare(self.conn)

    def pg_pids(self) -> list[int]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        return [pid for (pid,) in rows]


class VolchainTarget:
    """Real creates through submit_create_volume; done = the cast on the scheduler queue."""

    kind = "volchain"

    def __init__(self) -> None:
        from workers.app import app
        from workers.runtime import get_runtime

        self.app = app
        self.rt = get_runtime()
        self.done_key = self.rt.settings.scheduler_queue
        self.project = f"bench-{uuid.uuid4().hex[:12]}"

    def setup(self) -> None:
        """A project of its own with unlimited volumes and gigabytes, so no create is refused."""
        from tasks import quota_engine

        with self.rt.factory() as session, session.begin():
            quota_engine.set_limits(session, self.project, {"volumes": -1, "gigabytes": -1})

    def submit(self) -> str:
        from tasks.context import RequestContext
        from workers.submit import submit_create_volume

        ctx = RequestContext(project_id=self.project, user_id="bench", roles=("member",))
        return submit_create_volume(ctx, size=1, name="bench").flow_id

    def popped(self, raw: bytes) -> None:
        pass  # the flow log has the finish time

    def finish_times(self, r, ids: list[str], timeout: float) -> dict[str, float]:
        """finished_at of each flow; waits (bounded) for the last commits after their casts."""
        from datetime import timezone

        from sqlalchemy import select

        from models.flow_log import FlowRun

        wanted = set(ids)
        deadline = time.monotonic() + timeout
        while True:
            with self.rt.factory() as session:
                rows = session.execute(
                    select(FlowRun.id, FlowRun.state, FlowRun.finished_at).where(FlowRun.project_id == self.project)
                ).all()
            rows = [row for row in rows if row.id in wanted]
            bad = [row for row in rows if row.state not in ("running", "succeeded")]
            if bad:
                raise BenchError(f"{len(bad)} flow(s) did not succeed:\n{self.failures()}")
            done = {row.id: row.finished_at.replace(tzinfo=timezone.utc).timestamp()
                    for row in rows if row.state == "succeeded" and row.finished_at is not None}
            if len(done) == len(wanted) or time.monotonic() > deadline:
                return done
            time.sleep(0.05)

    def pg_pids(self) -> list[int]:
        from sqlalchemy import text

        with self.rt.factory() as session:
            return list(session.scalars(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            )))

    def failures(self) -> str:
        from sqlalchemy import func, select

        from models.flow_log import FlowRun

        with self.rt.factory() as session:
            counts = session.execute(
                select(FlowRun.state, func.count()).where(FlowRun.project_id == self.project).group_by(FlowRun.state)
            ).all()
            errors = session.execute(
                select(FlowRun.failed_step, FlowRun.error)
                .where(FlowRun.project_id == self.project, FlowRun.error.is_not(None)).limit(3)
            ).all()
        lines = ["  flow states: " + ", ".join(f"{s}={c}" for s, c in counts)]
        lines += [f"  failed at {step}: {error}" for step, error in errors]
        return "\n".join(lines)


def wait_for_workers(app, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(app.control.ping(timeout=0.5) or []) >= count:
            return
    raise BenchError(f"{count} worker(s) did not answer a ping within {timeout:.0f}s")


def run_batch(target, r, n: int, window: int, producers: int, stall: float, deadline: float) -> dict[str, float]:
    """Submit n flows from `producers` threads, at most `window` in flight (0: no limit); wait for all.

    Returns submit times by flow id. Progress is read with LLEN of the done list.
    """
    base = r.llen(target.done_key)
    submits: dict[str, float] = {}
    cond = threading.Condition()
    state = {"next": 0, "done": 0, "error": None, "stop": False}

    def produce() -> None:
        try:
            while True:
                with cond:
                    i = state["next"]
                    if i >= n or state["stop"]:
                        return
                    state["next"] += 1
                    while window and i - state["done"] >= window and not state["stop"]:
                        cond.wait(0.1)
                    if state["stop"]:
                        return
                t = time.time()
                fid = target.submit()
                submits[fid] = t
        except BaseException as exc:  # noqa: BLE001 - reported by the watcher
            with cond:
                state["error"] = exc
                state["stop"] = True
                cond.notify_all()

    threads = [threading.Thread(target=produce, daemon=True) for _ in range(producers)]
    for th in threads:
        th.start()
    poll = 0.01 if window else 0.05
    last_done, last_change = 0, time.monotonic()
    try:
        while True:
            done = r.llen(target.done_key) - base
            now = time.monotonic()
            with cond:
                if done != state["done"]:
                    state["done"] = done
                    cond.notify_all()
                if state["error"] is not None:
                    raise BenchError(f"submit failed: {state['error']!r}") from state["error"]
            if done >= n:
                break
            if done != last_done:
                last_done, last_change = done, now
            elif now - last_change > stall:
                raise BenchError(f"no flow finished for {stall:.0f}s ({done}/{n} done, "
                                 f"{len(submits)} submitted)\n{target.failures()}")
            if now > deadline:
                raise BenchError(f"time is up: {done}/{n} flows done\n{target.failures()}")
            time.sleep(poll)
    finally:
        with cond:
            state["stop"] = True
            cond.notify_all()
        for th in threads:
            th.join(timeout=30)
    return submits


def run_serial(target, r, n: int, stall: float, deadline: float) -> dict[str, float]:
    """One flow at a time: submit, block on the done list (BLPOP, no polling), next."""
    submits: dict[str, float] = {}
    for i in range(n):
        if time.monotonic() > deadline:
            raise BenchError(f"time is up: {i}/{n} flows done")
        t = time.time()
        fid = target.submit()
        submits[fid] = t
        popped = r.blpop([target.done_key], timeout=stall)
        if popped is None:
            raise BenchError(f"flow {fid} did not finish within {stall:.0f}s ({i}/{n} done)\n{target.failures()}")
        target.popped(popped[1])
    return submits


def drive(args) -> None:
    """Child process: measure one configuration against workers the parent started."""
    import redis

    target = {"noop": NoopTarget, "floor": FloorTarget, "volchain": VolchainTarget}[args.drive]()
    r = redis.Redis.from_url(args.redis)
    wait_for_workers(target.app, args.workers, WORKER_WAIT)
    target.setup()
    deadline = time.monotonic() + args.timeout
    serial = args.latency
    # Warm-up (not measured): fork children connect, caches fill, the usage rows appear.
    if serial:
        run_serial(target, r, args.warmup, args.stall, deadline)
    else:
        run_batch(target, r, args.warmup, args.window, args.producers, args.stall, deadline)
    r.delete(target.done_key)
    worker_pids = [int(p) for p in args.worker_pids.split(",") if p]
    pg_pids = target.pg_pids()
    w0, pg0, c0 = tree_cpu(worker_pids), pg_cpu(pg_pids), os.times()
    if serial:
        submits = run_serial(target, r, args.n, args.stall, deadline)
    else:
        submits = run_batch(target, r, args.n, args.window, args.producers, args.stall, deadline)
    c1 = os.times()
    w1 = tree_cpu(worker_pids)
    pg1 = pg_cpu(target.pg_pids())
    finishes = target.finish_times(r, list(submits), timeout=30)
    out = summarize(submits, finishes)
    wcpu, pgcpu = cpu_delta(w0, w1), cpu_delta(pg0, pg1)
    out["worker_cpu_ms"] = wcpu * 1000 / args.n if wcpu is not None else None
    out["pg_cpu_ms"] = pgcpu * 1000 / args.n if pgcpu is not None else (0.0 if args.drive == "noop" else None)
    out["client_cpu_ms"] = ((c1.user - c0.user) + (c1.system - c0.system)) * 1000 / args.n
    r.delete(target.done_key)
    print(RESULT_PREFIX + json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------
# Parent: database, Redis db, workers, one driver per configuration, the table
# --------------------------------------------------------------------------------------------

def clean_env(database_url: str, redis_url: str, events: bool, repo: Path = REPO) -> dict[str, str]:
    """The process environment with volchain's defaults: only the URLs and the events switch set,
    and `repo` (the checkout whose code the process runs) first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOLCHAIN_")}
    env.update({
        "VOLCHAIN_DATABASE_URL": database_url,
        "VOLCHAIN_BROKER_URL": redis_url,
        "VOLCHAIN_TASK_EVENTS": "true" if events else "false",
        "PYTHONPATH": os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p),
    })
    return env


def checkout_name(path: Path) -> str:
    """The short commit of a checkout (`git rev-parse --short HEAD`), else its directory's name."""
    try:
        done = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        done = None
    return done.stdout.strip() if done and done.returncode == 0 and done.stdout.strip() else path.name


def migrate_checkout(repo: Path, database_url: str, redis_url: str) -> None:
    """Migrate `database_url` with `repo`'s own migrations, in a process that runs `repo`'s code."""
    code = "import sys; from models.migrate import upgrade; upgrade(sys.argv[1])"
    try:
        done = subprocess.run([sys.executable, "-c", code, database_url], cwd=repo,
                              env=clean_env(database_url, redis_url, False, repo),
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"migrating with {repo}'s migrations did not finish in time") from exc
    if done.returncode != 0:
        raise BenchError(f"migrating with {repo}'s migrations failed (exit {done.returncode}):\n"
                         f"{done.stderr[-2000:]}")


def start_worker(kind: str, events: bool, pool: str, concurrency: int, env: dict, log_path: Path,
                 repo: Path = REPO) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "celery", "-A", APPS[kind], "worker", "-Q", QUEUES, "-P", pool,
           "-c", str(concurrency), "-l", "warning", "-n", f"bench-{kind}-{uuid.uuid4().hex[:6]}@%h"]
    if events:
        cmd.append("-E")
    with open(log_path, "ab") as fh:
        # Own session: a Ctrl-C reaches only the parent, which stops the workers itself.
        return subprocess.Popen(cmd, cwd=repo, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def run_config(kind: str, events: bool, args, database_url: str, r, log_dir: Path, repo: Path = REPO) -> dict:
    """One configuration: fresh workers and a driver, both running `repo`'s code (cwd and PYTHONPATH).

    The driver is `repo`'s own bench/chain_throughput.py: this script puts its own checkout first on
    sys.path, so run here with another PYTHONPATH it would still import this checkout's modules."""
    env = clean_env(database_url, args.redis, events, repo)
    label = f"{args.labels[kind]}, events {'on' if events else 'off'}"
    logs = [log_dir / f"{kind}-{'on' if events else 'off'}-{i}-{uuid.uuid4().hex[:4]}.log" for i in range(args.workers)]
    procs = [start_worker(kind, events, args.pool, args.concurrency, env, path, repo) for path in logs]
    log(f"{label}: {args.workers} worker(s) x {args.concurrency} started; "
        f"{'serial' if args.latency else 'window ' + str(args.window or 'unlimited')}, n={args.n}")
    cmd = [sys.executable, str(repo / "bench" / "chain_throughput.py"), "--drive", DRIVE_AS.get(kind, kind),
           "--redis", args.redis, "--n", str(args.n), "--warmup", str(args.warmup), "--window", str(args.window),
           "--producers", str(args.producers), "--workers", str(args.workers), "--stall", str(args.stall),
           "--timeout", str(args.timeout), "--worker-pids", ",".join(str(p.pid) for p in procs)]
    if args.latency:
        cmd.append("--latency")
    try:
        try:
            done = subprocess.run(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, text=True,
                                  timeout=args.timeout + WORKER_WAIT + 60)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{label}: the driver did not finish in time") from exc
        dead = [p.pid for p in procs if p.poll() is not None]
        result = next((line[len(RESULT_PREFIX):] for line in done.stdout.splitlines()
                       if line.startswith(RESULT_PREFIX)), None)
        if done.returncode != 0 or result is None or dead:
            worker_logs = "\n".join(f"--- {path.name}\n{tail(path)}" for path in logs)
            raise BenchError(f"{label}: run failed (driver exit {done.returncode}, dead workers {dead})\n"
                             f"{done.stdout[-2000:]}\n{worker_logs}")
    finally:
        for proc in procs:
            stop_worker(proc)
        r.flushdb()  # nothing of this configuration is left for the next one
    out = json.loads(result)
    out.update(kind=kind, events=events, label=label)
    rate = "" if args.latency else f"{out['flows_per_s']:.1f} flows/s, "
    log(f"{label}: {rate}p50 {out['p50_ms']:.1f} ms, p99 {out['p99_ms']:.1f} ms")
    return out


def pick(results: list[dict]) -> dict:
    """The run with the median throughput (repeats on a busy 2-core box vary a lot)."""
    ranked = sorted(results, key=lambda x: x["flows_per_s"])
    return ranked[(len(ranked) - 1) // 2]


def fmt(value, spec: str) -> str:
    """format(value, spec), or a dash as wide as the spec asks when there is no value."""
    if value is None:
        width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
        return "-".rjust(int(width or 0))
    return format(value, spec)


def load_note(args) -> str:
    """The 1-minute load average before and after: other work on the box skews every figure."""
    return f"load avg {args.load[0]:.1f} -> {args.load[1]:.1f}"


def cpu_total(row: dict) -> float | None:
    """CPU per flow of everything measured: workers, their PostgreSQL backends, the producer."""
    parts = (row["worker_cpu_ms"], row["pg_cpu_ms"], row["client_cpu_ms"])
    return None if any(x is None for x in parts) else sum(parts)


def pair_ratios(results: dict[tuple[str, bool], list[dict]], kind: str, base: str, events: bool,
                value=lambda run: run["flows_per_s"]) -> list[float | None]:
    """value(run of `kind`) / value(run of `base`), round by round (each pair ran in the same round);
    None for a round where either value is missing or the base's is zero."""
    out = []
    for a, b in zip(results.get((kind, events), []), results.get((base, events), [])):
        va, vb = value(a), value(b)
        out.append(va / vb if va is not None and vb else None)
    return out


def round_ratios(results: dict[tuple[str, bool], list[dict]], kind: str, base: str, events: bool) -> list[float]:
    """flows/s of `kind` over `base` in %, round by round (each pair ran back to back)."""
    return [x * 100 for x in pair_ratios(results, kind, base, events) if x is not None]


def print_round_ratios(results: dict[tuple[str, bool], list[dict]], args) -> None:
    """The same-round ratios behind the medians: on a box whose speed drifts, each round's pair
    is measured under the same conditions, the medians of different rounds may not be."""
    pairs = [("volchain", "noop")]
    if args.against:
        pairs.append(("earlier", "noop"))
    if args.floor:
        pairs += [("floor", "noop"), ("volchain", "floor")]
    for events in sorted({ev for _, ev in results}):
        parts = []
        for kind, base in pairs:
            ratios = round_ratios(results, kind, base, events)
            if ratios:
                each = ", ".join(f"{r:.0f}%" for r in ratios)
                median = f" (median {statistics.median(ratios):.0f}%)" if len(ratios) > 1 else ""
                parts.append(f"{args.labels[kind]} / {args.labels[base]} {each}{median}")
        if parts:
            print(f"Same-round ratios, events {'on' if events else 'off'}: " + "; ".join(parts))


@dataclass(frozen=True)
class ModeBudget:
    """The budget in one event mode: this checkout's volchain over the earlier one's, round by round."""

    events: bool
    flows: list[float | None]  # flows/s, this / earlier
    cpu: list[float | None]    # CPU ms per create of all processes (the `all` column), this / earlier

    @property
    def flows_median(self) -> float | None:
        known = [x for x in self.flows if x is not None]
        return statistics.median(known) if known else None

    @property
    def cpu_median(self) -> float | None:
        known = [x for x in self.cpu if x is not None]
        return statistics.median(known) if known else None

    @property
    def flows_ok(self) -> bool:
        return self.flows_median is not None and self.flows_median >= BUDGET_FLOWS

    @property
    def cpu_ok(self) -> bool:
        return self.cpu_median is not None and self.cpu_median <= BUDGET_CPU

    @property
    def met(self) -> bool:
        return self.flows_ok and self.cpu_ok


def budget(results: dict[tuple[str, bool], list[dict]], kind: str = "volchain", earlier: str = "earlier",
           modes: tuple[bool, ...] = BUDGET_MODES) -> tuple[bool, list[ModeBudget]]:
    """The budget verdict: in every event mode of `modes`, the median same-round flows/s ratio is at
    least BUDGET_FLOWS and the median same-round CPU ratio at most BUDGET_CPU. A mode that was not
    measured, or has no CPU figure (PostgreSQL not on this machine), fails it."""
    per_mode = [ModeBudget(events, pair_ratios(results, kind, earlier, events),
                           pair_ratios(results, kind, earlier, events, value=cpu_total))
                for events in modes]
    return all(m.met for m in per_mode), per_mode


def budget_lines(met: bool, per_mode: list[ModeBudget], earlier_label: str) -> list[str]:
    """The Budget section: each mode's same-round ratios and medians, then the verdict."""
    def each(values: list[float | None], spec: str, unit: str) -> str:
        return ", ".join("-" if x is None else f"{format(x, spec)}{unit}" for x in values)

    lines = [f"Budget: volchain / {earlier_label}, same round; flows/s >= {BUDGET_FLOWS:.0%} and "
             f"CPU ms/create (all) <= {BUDGET_CPU:.2f}x, in both event modes."]
    misses = []
    for m in per_mode:
        mode = f"events {'on' if m.events else 'off'}"
        if not m.flows:
            lines.append(f"  {mode}: not measured")
            misses.append(f"{mode} not measured")
            continue
        fm, cm = m.flows_median, m.cpu_median
        flows = (f"flows/s {each([None if x is None else x * 100 for x in m.flows], '.0f', '%')} "
                 f"(median {fmt(None if fm is None else fm * 100, '.0f')}%, {'ok' if m.flows_ok else 'NOT ok'})")
        cpu = (f"CPU {each(m.cpu, '.2f', 'x')} "
               f"(median {fmt(cm, '.2f')}x, {'ok' if m.cpu_ok else 'NOT ok'})")
        lines.append(f"  {mode}: {flows}; {cpu}")
        if not m.flows_ok:
            misses.append(f"{mode} flows/s {fmt(None if fm is None else fm * 100, '.0f')}% < {BUDGET_FLOWS:.0%}")
        if not m.cpu_ok:
            misses.append(f"{mode} CPU " + ("not measured" if cm is None else f"{cm:.2f}x > {BUDGET_CPU:.2f}x"))
    lines.append("-> budget MET" if met else "-> budget NOT met (" + "; ".join(misses) + ")")
    return lines


def print_throughput(rows: list[dict], args) -> None:
    print()
    refs = [" and the floor chain" if args.floor else "",
            f", volchain @ {args.against_name} ({args.against})" if args.against else ""]
    print(f"volchain create chain vs a no-op 5-task chain{''.join(refs)}: N={args.n}, {args.workers} {args.pool} "
          f"worker(s) x {args.concurrency}, window {args.window or 'unlimited'}, {args.producers} producer thread(s), "
          f"{os.cpu_count()} CPUs, repeat {args.repeat} (median), {load_note(args)}")
    width = max([26] + [len(row["label"]) for row in rows])
    head = (f"{'config':<{width}} | {'flows/s':>7} | {'p50 ms':>7} | {'p99 ms':>7} | {'% of baseline':>13} | "
            f"{'CPU ms/flow: worker':>19} | {'PG':>5} | {'producer':>8} | {'all':>5}")
    print(head)
    print("-" * len(head))
    base = {row["events"]: row for row in rows if row["kind"] == "noop"}
    estimates = []
    for row in rows:
        b = base.get(row["events"])
        pct = row["flows_per_s"] / b["flows_per_s"] * 100 if b else None
        if row["kind"] in ("volchain", "earlier") and b:
            cpu, bcpu = cpu_total(row), cpu_total(b)
            if cpu and bcpu:
                estimates.append(f"{args.labels[row['kind']]}, events {'on' if row['events'] else 'off'}: "
                                 f"{bcpu / cpu * 100:.0f}%")
        print(f"{row['label']:<{width}} | {row['flows_per_s']:>7.1f} | {row['p50_ms']:>7.1f} | {row['p99_ms']:>7.1f} | "
              f"{fmt(pct, '>12.0f')}% | {fmt(row['worker_cpu_ms'], '>19.1f')} | {fmt(row['pg_cpu_ms'], '>5.1f')} | "
              f"{fmt(row['client_cpu_ms'], '>8.1f')} | {fmt(cpu_total(row), '>5.1f')}")
    print()
    print("% of baseline: flows/s over the no-op chain's, same event mode (information; the 60% goal is retired).")
    if estimates:
        print("CPU-bound estimate (no-op chain's CPU/flow over this row's, less sensitive to other load on the box): "
              + "; ".join(estimates))


def print_latency(rows: list[dict], args) -> None:
    print()
    print(f"One create at a time (serial): N={args.n}, {args.workers} {args.pool} worker(s) x {args.concurrency}, "
          f"repeat {args.repeat} (median), {load_note(args)}")
    head = (f"{'config':<26} | {'p50 ms':>7} | {'p90 ms':>7} | {'p99 ms':>7} | {'p50 over baseline':>17} | "
            f"{'worker CPU ms/flow':>18} | {'PG CPU ms/flow':>14}")
    print(head)
    print("-" * len(head))
    base = {row["events"]: row["p50_ms"] for row in rows if row["kind"] == "noop"}
    for row in rows:
        extra = row["p50_ms"] - base[row["events"]] if row["kind"] != "noop" and row["events"] in base else None
        print(f"{row['label']:<26} | {row['p50_ms']:>7.1f} | {row['p90_ms']:>7.1f} | {row['p99_ms']:>7.1f} | "
              f"{fmt(extra, '>+14.1f')} ms | {fmt(row['worker_cpu_ms'], '>18.2f')} | {fmt(row['pg_cpu_ms'], '>14.2f')}")


def parse_args(argv=None):
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pg", default=DEFAULT_PG, help=f"PostgreSQL server, no database (default {DEFAULT_PG})")
    p.add_argument("--redis", default=DEFAULT_REDIS,
                   help=f"Redis db of the bench's own; emptied before and after (default {DEFAULT_REDIS})")
    p.add_argument("--n", type=int, default=None, help="measured flows per config (default 1000; --latency 300)")
    p.add_argument("--latency", action="store_true", help="one create at a time: per-create latency")
    p.add_argument("--events", choices=("both", "on", "off"), default="both", help="task event modes to run")
    p.add_argument("--pool", choices=("prefork", "threads", "solo"), default="prefork",
                   help="worker pool, for both chains (default prefork, what `volchain worker` starts)")
    shipped = default_worker_concurrency()  # what `volchain worker` starts (workers/app.worker_concurrency)
    p.add_argument("--concurrency", type=int, default=shipped,
                   help=f"pool size per worker (default {shipped}, as `volchain worker`: 4 per CPU, at most 16)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--window", type=int, default=None,
                   help="most flows in flight; 0 submits all at once (default 8 x all pool children)")
    p.add_argument("--producers", type=int, default=2, help="submitting threads (default 2)")
    p.add_argument("--warmup", type=int, default=None, help="unmeasured flows first (default 50; --latency 10)")
    p.add_argument("--repeat", type=int, default=1, help="rounds of all configs; the median run is shown")
    p.add_argument("--stall", type=float, default=30.0, help="fail when no flow finishes for this long (s)")
    p.add_argument("--timeout", type=float, default=None, help="most seconds per config (default from N)")
    p.add_argument("--against", type=Path, metavar="PATH",
                   help="another checkout of volchain (e.g. `git worktree add ../base <commit>`): each round "
                        "also runs its volchain, and the Budget section compares the two")
    p.add_argument("--check", action="store_true",
                   help=f"exit 1 when the budget (flows/s >= {BUDGET_FLOWS * 100:.0f}%%, CPU <= {BUDGET_CPU:.2f}x of "
                        "--against, both event modes) is not met; needs --against")
    p.add_argument("--floor", action="store_true",
                   help="also run the floor chain (five tasks, one committed UPDATE each; bench/floor_chain.py)")
    p.add_argument("--drive", choices=("noop", "volchain", "floor"), help=argparse.SUPPRESS)
    p.add_argument("--worker-pids", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.n is None:
        args.n = 300 if args.latency else 1000
    if args.warmup is None:
        args.warmup = 10 if args.latency else 50
    if args.window is None:
        args.window = 8 * args.concurrency * args.workers
    if args.timeout is None:
        args.timeout = 120 + args.n * (0.5 if args.latency else 0.25)
    if min(args.n, args.concurrency, args.workers, args.producers, args.repeat) < 1 or args.window < 0:
        p.error("--n, --concurrency, --workers, --producers and --repeat must be >= 1; --window >= 0")
    if args.check and not args.against:
        p.error("--check compares with an earlier checkout: give it --against PATH")
    if args.check and args.latency:
        p.error("--check judges the budget, which is measured in throughput mode, not with --latency")
    args.labels = dict(LABELS)
    args.against_name = None
    if args.against and not args.drive:
        args.against = args.against.expanduser().resolve()
        needed = ("workers/app.py", "models/migrate.py", "bench/chain_throughput.py")
        missing = [f for f in needed if not (args.against / f).is_file()]
        if missing:
            p.error(f"--against {args.against}: not a volchain checkout with a bench driver (no {', '.join(missing)})")
        args.against_name = checkout_name(args.against)
        args.labels["earlier"] = f"volchain @ {args.against_name}"
    return args


def _interrupted(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.drive:
        drive(args)
        return 0
    signal.signal(signal.SIGTERM, _interrupted)  # clean up (workers, database) on a plain kill too
    import redis

    from models.migrate import upgrade

    r = redis.Redis.from_url(args.redis)
    check_redis(r, args.redis, OUR_KEYS)
    r.flushdb()
    name, admin = create_database(args.pg)
    database_url = f"{args.pg}/{name}"
    earlier = None  # (name, admin engine) of the --against checkout's database
    log_dir = Path(tempfile.mkdtemp(prefix="volchain-bench-"))
    modes = {"both": (False, True), "off": (False,), "on": (True,)}[args.events]
    results: dict[tuple[str, bool], list[dict]] = {}
    load_before = os.getloadavg()[0]
    try:
        log(f"database {name}: migrating")
        upgrade(database_url)
        urls, repos = {}, {}
        if args.against:
            earlier = create_database(args.pg)
            urls["earlier"], repos["earlier"] = f"{args.pg}/{earlier[0]}", args.against
            log(f"database {earlier[0]}: migrating with {args.against}'s migrations ({args.against_name})")
            migrate_checkout(args.against, urls["earlier"], args.redis)
        kinds = [kind for kind in APPS if (kind != "earlier" or args.against) and (kind != "floor" or args.floor)]
        for rnd in range(args.repeat):
            if args.repeat > 1:
                log(f"round {rnd + 1}/{args.repeat}")
            for events in modes:
                for kind in kinds:  # the baseline, volchain, the earlier volchain back to back: same conditions
                    results.setdefault((kind, events), []).append(run_config(
                        kind, events, args, urls.get(kind, database_url), r, log_dir, repos.get(kind, REPO)))
    finally:
        try:
            r.flushdb()
        finally:
            for db_name, db_admin in ((name, admin), earlier or (None, None)):
                if db_name:
                    drop_database(db_admin, db_name)
                    log(f"database {db_name} dropped")
            shutil.rmtree(log_dir, ignore_errors=True)
    rows = [pick(runs) for runs in results.values()]
    rows.sort(key=lambda row: (row["events"], list(APPS).index(row["kind"])))
    args.load = (load_before, os.getloadavg()[0])
    if args.latency:
        print_latency(rows, args)
        return 0
    print_throughput(rows, args)
    print_round_ratios(results, args)
    if not args.against:
        return 0
    met, per_mode = budget(results)
    print()
    print("\n".join(budget_lines(met, per_mode, args.labels["earlier"])))
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    run_main(main)
