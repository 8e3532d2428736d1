"""Bench: creates to `available` per second with a scheduler and two volume services, beside the
same-run chain-only rate (create to cast).

    python bench/lifecycle_throughput.py                  # N=300 per phase, one round
    python bench/lifecycle_throughput.py --repeat 3       # 3 rounds; each row is the median round
    python bench/lifecycle_throughput.py --zones 2        # the two services in two zones, creates alternate
    python bench/lifecycle_throughput.py --check          # exit 1 when the goal is missed
    python bench/lifecycle_throughput.py --py-spy /tmp/lc # where each process spends its CPU

One set of processes, started as operators start them (`volchain worker`, `volchain worker
scheduler`, `volchain worker volume --host H@file --path DIR ...`, with volchain's defaults), serves
both phases of every round:

- chain-only: the scheduler stops consuming its queue (Celery's `cancel_consumer`), N creates are
  submitted, and a create is done when its flow has `succeeded`, i.e. its cast is in the `scheduler`
  queue. The casts are purged afterwards; their volumes stay `creating` in a project of their own.
- full: the scheduler consumes again (`add_consumer`), N creates are submitted, and a create is
  done when its volume is `available`: scheduled, cast to its backend, a sparse file made there.
  Afterwards the phase's volume rows are marked deleted, so that every round schedules against
  the same allocated capacity (the scheduler sums each backend's live volumes per create).

Both phases run on the same step workers, submit the same requests from the same threads with the
same window, and take the same measures. Rounds alternate the order of the phases. Beside each
figure: CPU per create of every volchain process (step workers, scheduler, volume services, their
PostgreSQL backends, this submitting process; from /proc), the full run's time per stage and the
queue backlog it left, and the 1-minute load average. The goal of the issue: full >= 80% of the
chain-only flows/s, judged on the median same-round ratio.

Creates a PostgreSQL database of its own (dropped at the end), empties its own Redis db (default
db 6; refused when it holds foreign keys) before and after, and keeps the volume files and logs in
a temporary directory that is removed at the end, on failure, Ctrl-C and SIGTERM too.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
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
from dataclasses import dataclass, field
from datetime import timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python bench/lifecycle_throughput.py` from anywhere
    sys.path.insert(0, str(REPO))

from bench.chain_throughput import OUR_KEYS, clean_env, fmt, wait_for_workers  # noqa: E402
from bench.harness import (  # noqa: E402
    BenchError, ProcessGroups, check_redis, cpu_delta, create_database, drop_database, log, percentile, pg_cpu,
    run_main, tail, tree_cpu,
)
from workers.settings import default_worker_concurrency  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
DEFAULT_REDIS = "redis://127.0.0.1:6379/6"
GOAL = 0.80  # the issue: full creates/s at least 80% of the chain-only creates/s, same run
PHASES = ("chain", "full")
LABELS = {"chain": "chain-only (create -> cast)", "full": "full (create -> available)"}
GROUPS = ("steps", "scheduler", "volume", "pg", "submit")  # CPU columns, in table order
CAPACITY_GB = 1_000_000  # each file backend's reported capacity: no create is refused for space
ZONES = {1: ("nova", "nova"), 2: ("az1", "az2")}  # the two services' zones (nova: the shipped default)
READY_WAIT = 90.0
QUEUE_SAMPLE_S = 0.1
POLL_S = {"chain": 0.02, "full": 0.05}  # how often the submitter checks how many creates are done


# --------------------------------------------------------------------------------------------
# The processes: step workers, the scheduler, two volume services
# --------------------------------------------------------------------------------------------

@dataclass
class Fleet(ProcessGroups):
    """Every volchain process of the run, by group, with their logs."""

    run_id: str
    env: dict[str, str]
    log_dir: Path
    hosts: list[str] = field(default_factory=list)

    def start(self, group: str, name: str, argv: list[str]) -> None:
        """`volchain worker ARGV`, as the tests start it."""
        self.launch(group, self.log_dir / f"{name}.log", ["worker", *argv], self.env, REPO)

    @property
    def scheduler_node(self) -> str:
        return f"bench-scheduler-{self.run_id}"



def start_fleet(fleet: Fleet, args, volume_dir: Path) -> None:
    for i in range(args.workers):
        fleet.start("steps", f"steps{i}", ["-c", str(args.concurrency), "-l", "warning",
                                           "-n", f"bench-steps{i}-{fleet.run_id}@%h"])
    fleet.start("scheduler", "scheduler", ["scheduler", "-c", str(args.service_concurrency), "-l", "warning",
                                           "-n", f"{fleet.scheduler_node}@%h"])
    for i, zone in enumerate(ZONES[args.zones], 1):
        host = f"bench{i}-{fleet.run_id}@file"
        argv = ["volume", "--host", host, "--path", str(volume_dir / host), "--capacity-gb", str(CAPACITY_GB),
                "-c", str(args.service_concurrency), "-l", "warning", "-n", f"bench-volume{i}-{fleet.run_id}@%h"]
        if args.zones > 1:
            argv += ["--availability-zone", zone]
        fleet.start("volume", f"volume{i}", argv)
        fleet.hosts.append(host)


def wait_ready(fleet: Fleet, app, rt, count: int) -> str:
    """Every worker answers a ping and both volume services have reported; returns the scheduler's
    full node name (for cancel_consumer / add_consumer)."""
    from sqlalchemy import select

    from models.service import VOLUME_BINARY, Service

    try:
        wait_for_workers(app, count, READY_WAIT)
    except BenchError as exc:
        fleet.check_alive()
        raise BenchError(f"{exc}\n{fleet.log_tails()}") from exc
    deadline = time.monotonic() + READY_WAIT
    while True:
        with rt.factory() as session:
            reported = set(session.scalars(select(Service.host).where(Service.binary == VOLUME_BINARY,
                                                                      Service.host.in_(fleet.hosts))))
        if reported == set(fleet.hosts):
            break
        fleet.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"volume services {sorted(set(fleet.hosts) - reported)} did not report within "
                             f"{READY_WAIT:.0f}s\n{fleet.log_tails()}")
        time.sleep(0.2)
    for reply in app.control.ping(timeout=1.0) or []:
        for node in reply:
            if node.startswith(fleet.scheduler_node + "@"):
                return node
    raise BenchError(f"the scheduler {fleet.scheduler_node}@... does not answer a ping")


def set_scheduler_consuming(app, node: str, queue: str, consuming: bool) -> None:
    """Start or stop the scheduler's consumer of its queue (Celery remote control, no restart)."""
    control = app.control.add_consumer if consuming else app.control.cancel_consumer
    replies = control(queue, destination=[node], reply=True, timeout=5.0)
    if not replies:
        raise BenchError(f"the scheduler {node} did not answer {'add' if consuming else 'cancel'}_consumer")


def purge(app, queue: str) -> int:
    with app.connection_for_write() as conn:
        return conn.default_channel.queue_purge(queue) or 0


# --------------------------------------------------------------------------------------------
# One phase: submit, wait, measure
# --------------------------------------------------------------------------------------------

class Phase:
    """The creates of one phase of one round, in a project of their own with unlimited quota."""

    def __init__(self, kind: str, rt, r, args, fleet: Fleet) -> None:
        from tasks import quota_engine

        self.kind, self.rt, self.r, self.args, self.fleet = kind, rt, r, args, fleet
        self.project = f"bench-{kind}-{uuid.uuid4().hex[:10]}"
        with rt.factory() as session, session.begin():
            quota_engine.set_limits(session, self.project, {"volumes": -1, "gigabytes": -1})
        self._zone = itertools.count()
        self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def submit(self) -> tuple[str, str]:
        """One create (1 GB, the default type); with two zones they alternate between the zones."""
        from tasks.context import RequestContext
        from workers.submit import submit_create_volume

        request = {"size": 1, "name": "bench"}
        if self.args.zones > 1:
            request["availability_zone"] = ZONES[2][next(self._zone) % 2]
        sub = submit_create_volume(RequestContext(project_id=self.project, user_id="bench"), **request)
        return sub.flow_id, sub.volume_id

    def done(self) -> int:
        """Creates done so far: casts waiting in the scheduler queue (chain-only; purged before the
        phase), or volumes `available` (full). Raises on volumes in `error`."""
        if self.kind == "chain":
            return self.r.llen(self.rt.settings.scheduler_queue)
        if self._conn is None:  # one connection and a plain statement: the poll costs little CPU
            from models.db import engine_of

            self._conn = engine_of(self.rt.factory).connect().execution_options(isolation_level="AUTOCOMMIT")
        counts = dict(self._conn.exec_driver_sql(
            "SELECT status, count(*) FROM volumes WHERE project_id = %(p)s GROUP BY status",
            {"p": self.project}).all())
        if counts.get("error"):
            raise BenchError(f"{counts['error']} volume(s) went to error\n{self.failures()}")
        return counts.get("available", 0)

    def failures(self) -> str:
        from sqlalchemy import func, select

        from models.flow_log import FlowRun
        from models.volume import Volume

        with self.rt.factory() as session:
            flows = session.execute(select(FlowRun.kind, FlowRun.state, func.count()).where(
                FlowRun.project_id == self.project).group_by(FlowRun.kind, FlowRun.state)).all()
            volumes = session.execute(select(Volume.status, func.count()).where(
                Volume.project_id == self.project).group_by(Volume.status)).all()
            errors = session.execute(select(FlowRun.kind, FlowRun.failed_step, FlowRun.error).where(
                FlowRun.project_id == self.project, FlowRun.error.is_not(None)).limit(3)).all()
            volume_errors = session.scalars(select(Volume.error_message).where(
                Volume.project_id == self.project, Volume.error_message.is_not(None)).limit(3)).all()
        lines = ["  flows: " + ", ".join(f"{k} {s}={c}" for k, s, c in flows),
                 "  volumes: " + ", ".join(f"{s}={c}" for s, c in volumes)]
        lines += [f"  {kind} failed at {step}: {error}" for kind, step, error in errors]
        lines += [f"  volume error: {message}" for message in volume_errors]
        return "\n".join(lines)

    def pg_pids(self) -> list[int]:
        from sqlalchemy import text

        with self.rt.factory() as session:
            return list(session.scalars(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")))

    def finish_times(self, submits: dict[str, tuple[str, float]], timeout: float = 30.0) -> dict[str, float]:
        """Flow id -> when it was done: its create flow's `finished_at` (written as the cast is sent),
        or its volume's provision flow's `finished_at` (written as the volume turns `available`)."""
        from sqlalchemy import select

        from models.flow_log import FlowRun

        by_volume = {volume_id: flow_id for flow_id, (volume_id, _t) in submits.items()}
        kind = "create_volume" if self.kind == "chain" else "provision_volume"
        deadline = time.monotonic() + timeout
        while True:
            with self.rt.factory() as session:
                rows = session.execute(select(FlowRun.id, FlowRun.volume_id, FlowRun.finished_at).where(
                    FlowRun.project_id == self.project, FlowRun.kind == kind,
                    FlowRun.state == "succeeded")).all()
            done = {}
            for row in rows:
                fid = row.id if self.kind == "chain" else by_volume.get(row.volume_id)
                if fid in submits and row.finished_at is not None:
                    done[fid] = row.finished_at.replace(tzinfo=timezone.utc).timestamp()
            if len(done) == len(submits) or time.monotonic() > deadline:  # a cast's record commits just after it
                return done
            time.sleep(0.05)

    def stages(self) -> dict[str, list[float]]:
        """The full run's time per stage, ms, one value per volume, from the flow log."""
        from sqlalchemy import select

        from models.flow_log import FlowRun

        with self.rt.factory() as session:
            rows = session.execute(select(FlowRun.kind, FlowRun.volume_id, FlowRun.created_at, FlowRun.finished_at)
                                   .where(FlowRun.project_id == self.project)).all()
        flows: dict[str, dict[str, tuple]] = {}
        for row in rows:
            flows.setdefault(row.volume_id, {})[row.kind] = (row.created_at, row.finished_at)
        out: dict[str, list[float]] = {name: [] for name in STAGES}
        for f in flows.values():
            try:
                (c0, c1), (s0, s1), (p0, p1) = f["create_volume"], f["schedule_volume"], f["provision_volume"]
            except KeyError:
                continue
            for name, (a, b) in zip(STAGES, ((c0, c1), (c1, s0), (s0, s1), (s1, p0), (p0, p1))):
                out[name].append((b - a).total_seconds() * 1000)
        return out


STAGES = ("create chain", "scheduler queue", "schedule step", "volume queue", "provision step")


class QueueSampler:
    """LLEN of the step queue, the scheduler queue and each backend's queue every 0.1 s, in a thread."""

    def __init__(self, r, queues: list[str]) -> None:
        self.r, self.queues = r, queues
        self.samples: list[tuple[int, ...]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(QUEUE_SAMPLE_S):
            pipe = self.r.pipeline(transaction=False)
            for q in self.queues:
                pipe.llen(q)
            try:
                self.samples.append(tuple(pipe.execute()))
            except Exception:  # noqa: BLE001 - a lost sample changes no figure
                pass

    def __enter__(self) -> QueueSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def summary(self) -> dict[str, tuple[float, int]]:
        """Queue -> (mean, max) length over the samples."""
        if not self.samples:
            return {}
        return {q: (statistics.fmean(s[i] for s in self.samples), max(s[i] for s in self.samples))
                for i, q in enumerate(self.queues)}


def run_batch(phase: Phase, n: int, window: int, producers: int, stall: float,
              deadline: float) -> dict[str, tuple[str, float]]:
    """Submit n creates from `producers` threads, at most `window` not yet done (0: no limit); wait
    until all are done. Returns flow id -> (volume id, submit time)."""
    submits: dict[str, tuple[str, float]] = {}
    cond = threading.Condition()
    state = {"next": 0, "done": 0, "error": None, "stop": False}
    base = phase.done()

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
                flow_id, volume_id = phase.submit()
                submits[flow_id] = (volume_id, t)
        except BaseException as exc:  # noqa: BLE001 - reported by the watcher
            with cond:
                state["error"] = exc
                state["stop"] = True
                cond.notify_all()

    threads = [threading.Thread(target=produce, daemon=True) for _ in range(producers)]
    for th in threads:
        th.start()
    last_done, last_change = 0, time.monotonic()
    try:
        while True:
            done = phase.done() - base
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
                phase.fleet.check_alive()
                raise BenchError(f"{phase.kind}: no create done for {stall:.0f}s ({done}/{n} done, "
                                 f"{len(submits)} submitted)\n{phase.failures()}\n{phase.fleet.log_tails()}")
            if now > deadline:
                raise BenchError(f"{phase.kind}: time is up, {done}/{n} creates done\n{phase.failures()}")
            time.sleep(POLL_S[phase.kind])
    finally:
        with cond:
            state["stop"] = True
            cond.notify_all()
        for th in threads:
            th.join(timeout=30)
        phase.close()
    return submits


@contextlib.contextmanager
def profiler(fleet: Fleet, prefix: str | None, label: str):
    """With --py-spy PREFIX: sample every volchain worker (each with its pool children) during the
    measured creates into PREFIX-<label>-<process>.txt, collapsed stacks. --gil: only the thread
    holding the GIL is sampled, so the samples are Python CPU time. py-spy takes CPU of its own:
    flows/s measured with it on are not comparable with a run without."""
    if not prefix:
        yield
        return
    spies = []
    for group, procs in fleet.procs.items():
        for i, proc in enumerate(procs, 1):
            out = Path(f"{prefix}-{label}-{group}{i if len(procs) > 1 else ''}.txt").resolve()
            cmd = ["py-spy", "record", "--pid", str(proc.pid), "--subprocesses", "--gil", "--rate", "100",
                   "--format", "raw", "--output", str(out)]
            with open(fleet.log_dir / "py-spy.log", "ab") as fh:
                spies.append((out, subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                                    start_new_session=True)))
    time.sleep(1.0)  # attached before the first create
    try:
        yield
    finally:
        for _out, spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for out, spy in spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(timeout=10)
            log(f"py-spy: {out}" if out.exists() else f"py-spy wrote nothing\n{tail(fleet.log_dir / 'py-spy.log')}")


def cpu_sample(fleet: Fleet, pg_pids: list[int]) -> dict[str, object]:
    t = os.times()
    return {"steps": tree_cpu(fleet.pids("steps")), "scheduler": tree_cpu(fleet.pids("scheduler")),
            "volume": tree_cpu(fleet.pids("volume")), "pg": pg_cpu(pg_pids),
            "submit": {os.getpid(): t.user + t.system}}


def run_phase(kind: str, args, fleet: Fleet, app, rt, r, node: str, rnd: int = 0) -> dict:
    """One phase on the running fleet: warm-up, then N measured creates; returns its figures."""
    queue = rt.settings.scheduler_queue
    set_scheduler_consuming(app, node, queue, consuming=kind == "full")
    deadline = time.monotonic() + args.timeout
    phases = []
    if args.warmup:  # unmeasured: fills caches, connects pool children, makes the usage rows
        phases.append(Phase(kind, rt, r, args, fleet))
        run_batch(phases[-1], args.warmup, args.window, args.producers, args.stall, deadline)
    if kind == "chain":
        purge(app, queue)  # the warm-up's casts: the measured phase counts its own from zero
    phase = Phase(kind, rt, r, args, fleet)
    phases.append(phase)
    queues = [rt.settings.step_queue, queue] + [f"volume.{host}" for host in fleet.hosts]
    label = kind if args.repeat == 1 else f"{kind}-r{rnd + 1}"
    with profiler(fleet, args.py_spy, label):
        load0 = os.getloadavg()[0]
        pg0_pids = phase.pg_pids()
        before = cpu_sample(fleet, pg0_pids)
        with QueueSampler(r, queues) as sampler:
            submits = run_batch(phase, args.n, args.window, args.producers, args.stall, deadline)
        after = cpu_sample(fleet, sorted(set(pg0_pids) | set(phase.pg_pids())))
        load1 = os.getloadavg()[0]
    if kind == "chain":
        purge(app, queue)  # nobody will schedule these
    finishes = phase.finish_times(submits)
    stages = phase.stages() if kind == "full" else {}
    if kind == "full":
        retire(rt, [p.project for p in phases])
    missing = [fid for fid in submits if fid not in finishes]
    if missing:
        raise BenchError(f"{kind}: {len(missing)} create(s) have no finish time (first: {missing[0]})\n"
                         f"{phase.failures()}")
    lat = sorted((finishes[fid] - t) * 1000 for fid, (_v, t) in submits.items())
    span = max(finishes.values()) - min(t for _v, t in submits.values())
    cpu = {}
    for group in GROUPS:
        spent = cpu_delta(before[group], after[group])
        cpu[group] = None if spent is None else spent * 1000 / args.n
    out = {"kind": kind, "n": len(submits), "span_s": span, "flows_per_s": len(submits) / span,
           "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99), "cpu": cpu,
           "load": (load0, load1), "queues": sampler.summary(), "stages": stages}
    log(f"{LABELS[kind]}: {out['flows_per_s']:.1f} creates/s, p50 {out['p50_ms']:.0f} ms, "
        f"p99 {out['p99_ms']:.0f} ms; CPU ms/create " + ", ".join(f"{g} {fmt(cpu[g], '.1f')}" for g in GROUPS)
        + f", all {fmt(cpu_all(out), '.1f')}; load {load0:.1f} -> {load1:.1f}")
    return out


def retire(rt, projects: list[str]) -> None:
    """Mark a full phase's volumes deleted (rows only; a direct UPDATE in the bench's own database).
    The scheduler sums the live volumes of each backend for every create, so without this each
    round would schedule against more volumes than the one before."""
    from sqlalchemy import update

    from models import utcnow
    from models.volume import Volume

    with rt.factory.begin() as session:
        session.execute(update(Volume).where(Volume.project_id.in_(projects), Volume.deleted.is_(False))
                        .values(deleted=True, deleted_at=utcnow(), status="deleted"))


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def cpu_all(row: dict) -> float | None:
    parts = [row["cpu"][g] for g in GROUPS]
    return None if any(x is None for x in parts) else sum(parts)


def pick(runs: list[dict]) -> dict:
    """The round with the median flows/s (repeats on a busy 2-core box vary a lot)."""
    ranked = sorted(runs, key=lambda x: x["flows_per_s"])
    return ranked[(len(ranked) - 1) // 2]


def round_ratios(results: dict[str, list[dict]]) -> list[float]:
    """full / chain-only flows/s, round by round (each pair ran back to back)."""
    return [f["flows_per_s"] / c["flows_per_s"] for c, f in zip(results["chain"], results["full"])]


def report(results: dict[str, list[dict]], args, load: tuple[float, float]) -> bool:
    """Print the table, the stages, the backlog and the verdict; True when the goal is met."""
    rows = {kind: pick(results[kind]) for kind in PHASES}
    print()
    zones = "one zone" if args.zones == 1 else "two zones"
    print(f"volchain lifecycle: N={args.n} per phase, {args.workers} step worker(s) x {args.concurrency}, "
          f"scheduler x {args.service_concurrency}, 2 file volume services x {args.service_concurrency} ({zones}), "
          f"window {args.window or 'unlimited'}, {args.producers} submit threads, {os.cpu_count()} CPUs, "
          f"repeat {args.repeat} (median round), load avg {load[0]:.1f} -> {load[1]:.1f}")
    width = max(len(label) for label in LABELS.values())
    head = (f"{'phase':<{width}} | {'flows/s':>7} | {'p50 ms':>6} | {'p99 ms':>6} | {'CPU ms/create: steps':>20} | "
            f"{'sched':>5} | {'volume':>6} | {'PG':>5} | {'submit':>6} | {'all':>5} | {'load':>10}")
    print(head)
    print("-" * len(head))
    for kind in PHASES:
        row, c = rows[kind], rows[kind]["cpu"]
        print(f"{LABELS[kind]:<{width}} | {row['flows_per_s']:>7.1f} | {row['p50_ms']:>6.0f} | {row['p99_ms']:>6.0f} | "
              f"{fmt(c['steps'], '>20.1f')} | {fmt(c['scheduler'], '>5.1f')} | {fmt(c['volume'], '>6.1f')} | "
              f"{fmt(c['pg'], '>5.1f')} | {fmt(c['submit'], '>6.1f')} | {fmt(cpu_all(row), '>5.1f')} | "
              f"{row['load'][0]:>4.1f} -> {row['load'][1]:<4.1f}")
    full = rows["full"]
    if full["stages"]:
        parts = [f"{name} {percentile(sorted(v), 50):.0f} / {percentile(sorted(v), 90):.0f}"
                 for name, v in full["stages"].items() if v]
        print("Full run, ms per stage (p50 / p90): " + "; ".join(parts))
    for kind in PHASES:
        if rows[kind]["queues"]:
            parts = [f"{q} {mean:.1f} / {most}" for q, (mean, most) in rows[kind]["queues"].items()]
            print(f"Queue backlog, {kind} (mean / max): " + "; ".join(parts))
    ratios = round_ratios(results)
    median = statistics.median(ratios)
    chain_cpu, full_cpu = cpu_all(rows["chain"]), cpu_all(rows["full"])
    if chain_cpu and full_cpu:
        print(f"CPU-bound estimate (chain-only CPU/create over full's): {chain_cpu / full_cpu:.0%}")
    print("Same-round ratios, full / chain-only: " + ", ".join(f"{x:.0%}" for x in ratios)
          + (f" (median {median:.0%})" if len(ratios) > 1 else ""))
    met = median >= GOAL
    print(f"{'PASS' if met else 'MISS'}: full {full['flows_per_s']:.1f} creates/s to `available` is {median:.0%} of "
          f"chain-only {rows['chain']['flows_per_s']:.1f} creates/s to the cast "
          f"({'median same-round ratio; ' if len(ratios) > 1 else ''}goal >= {GOAL:.0%})")
    return met


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def parse_args(argv=None):
    shipped = default_worker_concurrency()  # what `volchain worker` starts: 4 per CPU, at most 16
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pg", default=DEFAULT_PG, help=f"PostgreSQL server, no database (default {DEFAULT_PG})")
    p.add_argument("--redis", default=DEFAULT_REDIS,
                   help=f"Redis db of the bench's own; emptied before and after (default {DEFAULT_REDIS})")
    p.add_argument("--n", type=int, default=300, help="measured creates per phase (default 300)")
    p.add_argument("--repeat", type=int, default=1, help="rounds of both phases; the median round is shown")
    p.add_argument("--concurrency", type=int, default=shipped,
                   help=f"pool size per step worker (default {shipped}, as `volchain worker`)")
    p.add_argument("--workers", type=int, default=1, help="step worker processes (default 1)")
    p.add_argument("--service-concurrency", type=int, default=shipped,
                   help=f"pool size of the scheduler and of each volume service (default {shipped}, as shipped)")
    p.add_argument("--zones", type=int, choices=(1, 2), default=1,
                   help="1: both volume services in `nova`, the weigher spreads the creates (default); "
                        "2: one service in az1, one in az2, creates alternate between the zones")
    p.add_argument("--window", type=int, default=None,
                   help="most creates not yet done; 0 submits all at once (default 8 x all step pool children)")
    p.add_argument("--producers", type=int, default=2, help="submitting threads (default 2)")
    p.add_argument("--warmup", type=int, default=100,
                   help="unmeasured creates before each phase, so every pool child has run some (default 100)")
    p.add_argument("--stall", type=float, default=30.0, help="fail when no create is done for this long (s)")
    p.add_argument("--timeout", type=float, default=None, help="most seconds per phase (default 120 + N x 0.5)")
    p.add_argument("--check", action="store_true", help=f"exit 1 when full < {GOAL * 100:.0f}%% of chain-only")
    p.add_argument("--py-spy", metavar="PREFIX",
                   help="sample every worker with py-spy during each phase into PREFIX-<phase>-<process>.txt")
    args = p.parse_args(argv)
    if args.window is None:
        args.window = 8 * args.concurrency * args.workers
    if args.timeout is None:
        args.timeout = 120 + args.n * 0.5
    if min(args.n, args.repeat, args.concurrency, args.workers, args.service_concurrency, args.producers) < 1 \
            or args.window < 0 or args.warmup < 0:
        p.error("--n, --repeat, --concurrency, --workers, --service-concurrency and --producers must be >= 1; "
                "--window and --warmup >= 0")
    return args


def _interrupted(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    # Clean up (processes, database, files) on a plain kill too, and on Ctrl-C even when started
    # with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    import redis

    from models.migrate import upgrade

    r = redis.Redis.from_url(args.redis)
    check_redis(r, args.redis, OUR_KEYS)
    r.flushdb()
    load_before = os.getloadavg()[0]
    name, admin = create_database(args.pg)
    database_url = f"{args.pg}/{name}"
    work_dir = Path(tempfile.mkdtemp(prefix="volchain-lifecycle-bench-"))
    log_dir, volume_dir = work_dir / "logs", work_dir / "volumes"
    log_dir.mkdir()
    env = clean_env(database_url, args.redis, True)  # volchain's defaults (events on, as shipped)
    fleet = Fleet(uuid.uuid4().hex[:6], env, log_dir)
    results: dict[str, list[dict]] = {kind: [] for kind in PHASES}
    try:
        log(f"database {name}: migrating")
        upgrade(database_url)
        # This process submits the creates: it reads the same settings as the workers.
        for key in [k for k in os.environ if k.startswith("VOLCHAIN_")]:
            del os.environ[key]
        os.environ.update({k: v for k, v in env.items() if k.startswith("VOLCHAIN_")})
        from workers.app import app
        from workers.runtime import get_runtime

        rt = get_runtime()
        start_fleet(fleet, args, volume_dir)
        node = wait_ready(fleet, app, rt, args.workers + 1 + len(fleet.hosts))
        log(f"{args.workers} step worker(s) x {args.concurrency}, scheduler and 2 volume services "
            f"x {args.service_concurrency} up; n={args.n}, window {args.window or 'unlimited'}")
        for rnd in range(args.repeat):
            if args.repeat > 1:
                log(f"round {rnd + 1}/{args.repeat}")
            for kind in (PHASES if rnd % 2 == 0 else PHASES[::-1]):  # alternate which phase goes first
                results[kind].append(run_phase(kind, args, fleet, app, rt, r, node, rnd))
                fleet.check_alive()
    finally:
        try:
            fleet.stop()
        finally:
            try:
                r.flushdb()
            finally:
                from workers.runtime import reset_runtime

                reset_runtime()
                drop_database(admin, name)
                log(f"database {name} dropped")
                shutil.rmtree(work_dir, ignore_errors=True)
    met = report(results, args, (load_before, os.getloadavg()[0]))
    return 1 if args.check and not met else 0


if __name__ == "__main__":
    run_main(main)
