"""Chaos: creates, deletes and snapshots through the API while workers are SIGKILLed at random
and Redis restarts, then the books: nothing leaked, nothing doubled, nothing accepted and lost.

    python bench/chaos.py                      # 2 minutes, 3 clients, a kill about every second, 2 Redis restarts
    python bench/chaos.py --seconds 600 --clients 4 --kill-every 0.5

The stack (bench/stack.py): a Redis server of its own, two step workers, the scheduler, two volume
services, the sweeper and the API, each restarted by a supervisor when it dies. Short timeouts
(printed) keep a run to a few minutes. It prints flows, kills, broker restarts, redeliveries, flows
finished by the sweeper, casts it sent again, and what must be 0: leaked quota, duplicate backend
volumes, accepted-then-vanished creates; and the slowest operation's time to its end beside the
bound it must keep (one sweeper period plus the deadline, after the chaos stops).
tests/test_chaos.py runs a short one in CI and asserts the zeros.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import BenchError, create_database, drop_database, log  # noqa: E402
from bench.stack import Stack  # noqa: E402

WORKERS = ("steps1", "steps2", "scheduler", "node1", "node2")  # the roles killed at random
TIMEOUTS = {
    "VOLCHAIN_VISIBILITY_TIMEOUT": "5",
    "VOLCHAIN_UNACKED_RESTORE_SECONDS": "1",
    "VOLCHAIN_FLOW_DEADLINE_SECONDS": "12",
    "VOLCHAIN_SWEEP_INTERVAL_SECONDS": "2",
}
ENV = {
    **TIMEOUTS,
    "VOLCHAIN_REPORT_INTERVAL": "1",
    "VOLCHAIN_SERVICE_DOWN_TIME": "20",  # longer than a restart: a killed volume service is not "down"
    "VOLCHAIN_AZ_CACHE_SECONDS": "0",
    "VOLCHAIN_STORAGE_AVAILABILITY_ZONE": "chaos",
    "VOLCHAIN_API_WAIT_SECONDS": "0",
    "VOLCHAIN_TASK_EVENTS": "false",
}
TRANSITIONAL = ("creating", "deleting", "extending")


@dataclass
class Report:
    ops: Counter = field(default_factory=Counter)  # what the clients asked, and the answers
    accepted: dict[str, float] = field(default_factory=dict)  # volume id -> when its create was accepted
    deleted: set[str] = field(default_factory=set)  # volumes whose delete was accepted
    kills: Counter = field(default_factory=Counter)
    broker_restarts: int = 0
    seconds: float = 0.0
    settled_after: float = 0.0  # from the end of the chaos until everything ended
    flows: Counter = field(default_factory=Counter)
    redeliveries: int = 0
    sweeper_finished: int = 0
    redriven: int = 0
    worker_exits: dict[str, list[int]] = field(default_factory=dict)
    leaked_quota: int = 0  # usage rows that differ from the rows, plus reservations left
    allocation_drift: int = 0  # backends whose allocation counter differs from their rows
    duplicate_backend_volumes: int = 0
    vanished: int = 0  # accepted creates whose GET is a 404 (not deleted by a client)
    create_errors: Counter = field(default_factory=Counter)  # accepted creates that ended `error`, by reason
    slowest_flow: float = 0.0  # seconds from a flow's start to its end
    slowest_create: float = 0.0  # seconds from an accepted create to the end of its last create flow
    odd_creates: list[str] = field(default_factory=list)  # accepted creates whose flows disagree with their volume
    bound: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"operations asked:               {dict(self.ops)}",
            f"chaos lasted:                   {self.seconds:.1f} s; everything ended {self.settled_after:.1f} s later",
            f"flows:                          {sum(self.flows.values())} {dict(self.flows)}",
            f"kills (SIGKILL):                {sum(self.kills.values())} {dict(self.kills)}",
            f"broker restarts:                {self.broker_restarts}",
            f"workers that exited on their own (code): {self.worker_exits or 'none'}",
            f"redeliveries:                   {self.redeliveries}",
            f"flows finished by the sweeper:  {self.sweeper_finished}",
            f"lost casts sent again:          {self.redriven}",
            f"leaked quota:                   {self.leaked_quota} (must be 0)",
            f"allocation counters wrong:      {self.allocation_drift} (must be 0)",
            f"duplicate backend volumes:      {self.duplicate_backend_volumes} (must be 0)",
            f"accepted-then-vanished creates: {self.vanished} (must be 0)",
            f"accepted creates ended error:   {sum(self.create_errors.values())} {dict(self.create_errors)}",
            f"slowest flow, start to end:     {self.slowest_flow:.1f} s",
            f"slowest create, 202 to end:     {self.slowest_create:.1f} s",
            f"creates whose flows disagree:   {len(self.odd_creates)} {self.odd_creates[:3]}",
            f"bound (sweep period + deadline): {self.bound:.0f} s, after the chaos stops",
        ]

    @property
    def clean(self) -> bool:
        return not (self.leaked_quota or self.allocation_drift or self.duplicate_backend_volumes or self.vanished)


def build(database_url: str, workdir: Path) -> Stack:
    stack = Stack(database_url, workdir, env=ENV)
    stack.add_steps("steps1")
    stack.add_steps("steps2")
    stack.add_scheduler()
    stack.add_volume("node1", "chaos")
    stack.add_volume("node2", "chaos")
    stack.add_sweeper()
    stack.add_api()
    return stack


def _client(stack: Stack, project: str, rng: random.Random, until: float, report: Report,
            lock: threading.Lock) -> None:
    """Until `until` (monotonic): creates mostly; extends, snapshots and deletes of its volumes
    that are `available` (asked first, as a user would)."""
    mine: list[str] = []
    while time.monotonic() < until:
        roll = rng.random()
        live = [v for v in mine if v not in report.deleted]
        volume_id = rng.choice(live) if live and roll < 0.35 else None
        if volume_id is not None:
            status, body = stack.api("GET", f"/volumes/{volume_id}", project)
            if status != 200 or body["volume"]["status"] != "available":
                volume_id = None
        if volume_id is not None and roll < 0.1:
            size = body["volume"]["size"]
            status, body = stack.api("POST", f"/volumes/{volume_id}/action", project,
                                     {"os-extend": {"new_size": size + 1}})
            kind = "extend"
        elif volume_id is not None and roll < 0.2:
            status, body = stack.api("POST", "/snapshots", project,
                                     {"snapshot": {"volume_id": volume_id, "name": "chaos", "force": True}})
            kind = "snapshot"
        elif volume_id is not None:
            status, body = stack.api("DELETE", f"/volumes/{volume_id}?cascade=true", project)
            kind = "delete"
            if status == 202:
                with lock:
                    report.deleted.add(volume_id)
        else:
            status, body = stack.api("POST", "/volumes", project, {"volume": {"size": 1, "name": "chaos"}})
            kind = "create"
            if status == 202:
                with lock:
                    report.accepted[body["volume"]["id"]] = time.time()
                mine.append(body["volume"]["id"])
        with lock:
            report.ops[f"{kind} {status}"] += 1
        time.sleep(rng.uniform(0.05, 0.25))


def _chaos(stack: Stack, rng: random.Random, kill_every: float, broker_restarts: int, seconds: float,
           stop: threading.Event, report: Report) -> None:
    """A SIGKILL of a random worker about every `kill_every` seconds; Redis restarted (empty)
    `broker_restarts` times, evenly spread over the run."""
    restart_at = [seconds * (i + 1) / (broker_restarts + 1) for i in range(broker_restarts)]
    started = time.monotonic()
    while not stop.wait(rng.uniform(0.5 * kill_every, 1.5 * kill_every)):
        if restart_at and time.monotonic() - started >= restart_at[0]:
            restart_at.pop(0)
            stack.redis.restart(down=1.0)
            report.broker_restarts += 1
            continue
        victim = rng.choice(WORKERS)
        stack.kill(victim)
        report.kills[victim] += 1


def settle(stack: Stack, factory, project: str, timeout: float) -> float:
    """Wait until no flow of `project` runs and no volume or snapshot of it is in transition."""
    from sqlalchemy import func, select

    from models.flow_log import TERMINAL_STATES, FlowRun
    from models.snapshot import Snapshot
    from models.volume import Volume

    terminal = [s.value for s in TERMINAL_STATES]
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with factory() as s:
            open_flows = s.scalar(select(func.count()).select_from(FlowRun).where(
                FlowRun.project_id == project, FlowRun.state.not_in(terminal)))
            moving = s.scalar(select(func.count()).select_from(Volume).where(
                Volume.project_id == project, Volume.deleted.is_(False), Volume.status.in_(TRANSITIONAL)))
            snaps = s.scalar(select(func.count()).select_from(Snapshot).where(
                Snapshot.project_id == project, Snapshot.deleted.is_(False),
                Snapshot.status.in_(("creating", "deleting"))))
        if not (open_flows or moving or snaps):
            return time.monotonic() - started
        time.sleep(0.5)
    raise BenchError(f"project {project}: flows or volumes still moving {timeout:.0f} s after the chaos; "
                     f"logs in {stack.workdir}")


def books(stack: Stack, factory, project: str, report: Report) -> None:
    """Everything that must be 0, and the figures."""
    from sqlalchemy import func, select

    from models.flow_log import FlowRun
    from models.quota import Reservation
    from models.volume import Volume
    from tasks import allocation, reconcile
    from tasks.quota_engine import QuotaConfig

    with reconcile.consistent_session(factory) as s:
        report.leaked_quota = len(reconcile.check(s, QuotaConfig(), project))
        report.allocation_drift = len(allocation.drift(s))
    with factory() as s:
        report.leaked_quota += s.scalar(select(func.count()).select_from(Reservation)
                                         .where(Reservation.project_id == project)) or 0
        flows = s.execute(select(FlowRun.kind, FlowRun.state, FlowRun.created_at, FlowRun.finished_at,
                                 FlowRun.volume_id, FlowRun.steps).where(FlowRun.project_id == project)).all()
        volumes = {v.id: v for v in s.scalars(select(Volume).where(Volume.project_id == project))}
    report.flows = Counter(f"{kind}:{state}" for kind, state, *_ in flows)
    report.slowest_flow = max(((f.finished_at - f.created_at).total_seconds() for f in flows if f.finished_at),
                              default=0.0)
    create_kinds = ("create_volume", "schedule_volume", "provision_volume")
    by_volume: dict[str, list] = {}
    for f in flows:
        if f.kind in create_kinds:
            by_volume.setdefault(f.volume_id, []).append(f)
    on_backend: Counter = Counter()
    for host, ids in stack.backend_files().items():
        for volume_id in ids:
            vol = volumes.get(volume_id)
            if vol is None:
                continue  # another run's
            on_backend[volume_id] += 1
            if vol.deleted or not (vol.host or "").startswith(host):
                report.duplicate_backend_volumes += 1  # a file where the volume does not live
    report.duplicate_backend_volumes += sum(1 for n in on_backend.values() if n > 1)
    for volume_id, accepted_at in report.accepted.items():
        vol = volumes.get(volume_id)
        if volume_id not in report.deleted:
            status, _ = stack.api("GET", f"/volumes/{volume_id}", project)
            report.vanished += status == 404
        if vol is not None and vol.status == "error":
            report.create_errors[vol.error_message or "no reason recorded"] += 1
        ends = [f.finished_at for f in by_volume.get(volume_id, []) if f.finished_at]
        if vol is not None and ends:
            report.slowest_create = max(report.slowest_create, (max(ends) - vol.created_at).total_seconds())
        kinds = Counter(f"{f.kind}:{f.state}" for f in by_volume.get(volume_id, []))
        expected = {"create_volume:succeeded": 1, "schedule_volume:succeeded": 1, "provision_volume:succeeded": 1}
        if vol is not None and vol.status == "available" and kinds != Counter(expected):
            steps = {f.kind: sorted((f.steps or {}).keys()) for f in by_volume.get(volume_id, [])}
            report.odd_creates.append(f"{volume_id}: {dict(kinds)} use_quota={vol.use_quota} {steps}")
    logs = [role.log for role in stack.roles.values()]
    text = "".join(p.read_text(errors="replace") for p in logs if p.exists())
    report.redeliveries = text.count("redelivered: ")
    sweeps = re.findall(r"resumed (\d+), compensated (\d+), parked (\d+) flows; sent (\d+) lost casts", text)
    report.sweeper_finished = sum(int(a) + int(b) + int(c) for a, b, c, _ in sweeps)
    report.redriven = sum(int(d) for *_, d in sweeps)
    report.worker_exits = {r.name: r.exits for r in stack.roles.values() if r.exits}
    report.bound = float(TIMEOUTS["VOLCHAIN_SWEEP_INTERVAL_SECONDS"]) + float(TIMEOUTS["VOLCHAIN_FLOW_DEADLINE_SECONDS"])


def run(database_url: str, workdir: Path, seconds: float = 120.0, clients: int = 3, kill_every: float = 1.0,
        broker_restarts: int = 2, seed: int | None = None, settle_timeout: float = 180.0) -> Report:
    """One chaos run on a stack of its own; the stack is stopped at the end, whatever happens."""
    import uuid

    from models.db import engine_of, session_factory

    rng = random.Random(seed)
    project = uuid.uuid4().hex
    report = Report()
    stack = build(database_url, workdir)
    factory = session_factory(database_url)
    try:
        stack.start()
        status, body = stack.api("PUT", f"/os-quota-sets/{project}", project,
                                 {"quota_set": {"volumes": -1, "gigabytes": -1, "snapshots": -1}})
        if status != 200:
            raise BenchError(f"could not lift the project's quota: {status} {body}")
        lock = threading.Lock()
        stop = threading.Event()
        started = time.monotonic()
        threads = [threading.Thread(target=_client, daemon=True,
                                    args=(stack, project, random.Random(rng.random()), started + seconds, report, lock))
                   for _ in range(clients)]
        chaos = threading.Thread(target=_chaos, daemon=True,
                                 args=(stack, rng, kill_every, broker_restarts, seconds, stop, report))
        for t in threads + [chaos]:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        chaos.join()
        report.seconds = time.monotonic() - started
        report.settled_after = settle(stack, factory, project, settle_timeout)
        stack.wait_ready()  # every worker consumes again
        books(stack, factory, project, report)
    finally:
        stack.stop()
        engine_of(factory).dispose()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the chaos lasts (default 120)")
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=1.0, help="mean seconds between SIGKILLs")
    parser.add_argument("--broker-restarts", type=int, default=2)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--keep-logs", type=Path, help="keep the processes' logs in this folder")
    args = parser.parse_args(argv)

    import tempfile

    from models.migrate import upgrade

    name, admin = create_database(args.pg)
    workdir = args.keep_logs or Path(tempfile.mkdtemp(prefix="volchain-chaos-"))
    try:
        url = f"{args.pg}/{name}"
        upgrade(url)
        log(f"load average {os.getloadavg()[0]:.2f}; timeouts {TIMEOUTS}; logs in {workdir}")
        report = run(url, workdir, args.seconds, args.clients, args.kill_every, args.broker_restarts, args.seed)
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    finally:
        drop_database(admin, name)
    for line in report.lines():
        print(line)
    if report.clean and not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log(f"logs kept in {workdir}")
    return 0 if report.clean else 2


if __name__ == "__main__":
    sys.exit(main())
