"""Bench: what each step of a create costs, beside the runner's own cost (an empty step), same run.

    python bench/step_cost.py              # 2000 flows, in alternating blocks of 50
    python bench/step_cost.py --n 200      # quick

No Celery: one thread runs the steps of each flow in turn (tasks.runner.run_step, as the chain's
tasks call it) on a fresh PostgreSQL database, the way a pool child runs them, with a publisher
that drops the cast. Blocks of flows alternate between the five steps of a create and the
baseline: five empty steps through the same runner (lock the flow row, record an empty result,
commit), so the difference is what the steps' own work costs. Printed per step: client CPU (this
process) and, per flow, the CPU of the PostgreSQL backend the steps use (/proc; only when the
server is on this machine).

This is steadier than bench/chain_throughput.py on a busy box: CPU time moves less than throughput.
It measures the steps only, not the chain hops. See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.harness import BenchError, create_database, drop_database, log, pg_cpu  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
PATHS = ("create", "empty steps")


class EmptyStep:
    """The baseline: a step with no effect, run and recorded by the same runner."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, session, ctx, env) -> dict:
        return {}

    def revert(self, session, ctx, result, env) -> None:
        pass


def measure(database_url: str, n: int, warmup: int, block: int) -> dict:
    os.environ["VOLCHAIN_DATABASE_URL"] = database_url
    from models.db import engine_of
    from models.migrate import upgrade
    from tasks import quota_engine
    from tasks.context import RequestContext
    from tasks.create.flow import STEPS
    from tasks.runner import run_step
    from workers.runtime import get_runtime
    from workers.submit import _INSERT_FLOW
    from models import utcnow

    upgrade(database_url)
    rt = get_runtime()
    env = dataclasses.replace(rt.env, publish=lambda message: None)
    steps = {PATHS[0]: STEPS, PATHS[1]: [EmptyStep(step.name) for step in STEPS]}
    engine = engine_of(rt.factory)
    caller = RequestContext(project_id=f"bench-{uuid.uuid4().hex[:8]}", user_id="bench", roles=("member",))
    with rt.factory() as session, session.begin():
        quota_engine.set_limits(session, caller.project_id, {"volumes": -1, "gigabytes": -1})

    def new_flow() -> str:
        flow_id, now = str(uuid.uuid4()), utcnow()
        with engine.begin() as conn:
            conn.execute(_INSERT_FLOW, {
                "id": flow_id, "kind": "create_volume", "volume_id": str(uuid.uuid4()),
                "project_id": caller.project_id, "user_id": caller.user_id, "idempotency_key": None,
                "state": "running", "request": {"size": 1, "name": "bench"}, "steps": {},
                "compensation_attempts": 0, "caller": {"roles": ["member"], "is_admin": False, "respond_async": False},
                "root_task_id": flow_id, "created_at": now, "progress_at": now,
            })
        return flow_id

    cpu = {path: {step.name: 0.0 for step in STEPS} for path in PATHS}
    pg = {path: 0.0 for path in PATHS}
    flows = {path: 0 for path in PATHS}
    with rt.factory() as session:  # one thread: the pool hands every step this same connection
        backend = session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()

    def run(count: int) -> None:
        """Blocks of `block` flows, create and baseline in turn (a block is long enough for
        /proc's 10 ms ticks to time the backend)."""
        done = 0
        while done < count:
            path = PATHS[(done // block) % 2]
            size = min(block, count - done)
            before = pg_cpu([backend])
            for _ in range(size):
                flow_id = new_flow()
                for step in steps[path]:
                    started = time.process_time()
                    run_step(rt.factory, step, flow_id, env, final=step is steps[path][-1])
                    cpu[path][step.name] += time.process_time() - started
            after = pg_cpu([backend])
            if before and after:
                pg[path] += after[backend] - before[backend]
            flows[path] += size
            done += size

    run(warmup)
    for path in PATHS:
        cpu[path] = dict.fromkeys(cpu[path], 0.0)
        pg[path], flows[path] = 0.0, 0
    run(n)
    local = pg_cpu([backend]) is not None
    return {"cpu": {path: {k: v * 1000 / flows[path] for k, v in cpu[path].items()} for path in PATHS},
            "pg": {path: pg[path] * 1000 / flows[path] for path in PATHS} if local else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pg", default=DEFAULT_PG, help=f"PostgreSQL server, no database (default {DEFAULT_PG})")
    p.add_argument("--n", type=int, default=2000, help="measured flows, half of them baseline (default 2000)")
    p.add_argument("--warmup", type=int, default=100, help="unmeasured flows first (default 100)")
    p.add_argument("--block", type=int, default=50, help="flows in a row of one kind (default 50)")
    args = p.parse_args(argv)
    if args.n < 2 * args.block or args.warmup < 0 or args.block < 1:
        p.error("--block must be >= 1, --n >= 2 x --block and --warmup >= 0")
    name, admin = None, None
    try:
        name, admin = create_database(args.pg)
        log(f"database {name}: migrating, then {args.warmup} + {args.n} flows")
        out = measure(f"{args.pg}/{name}", args.n, args.warmup, args.block)
    except BenchError as exc:
        print(f"step_cost: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if name is not None:
            drop_database(admin, name)
    step_ms, empty_ms = out["cpu"][PATHS[0]], out["cpu"][PATHS[1]]
    print(f"\nClient CPU per step (ms), N={args.n} flows, create and baseline alternating, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'step':<24} | {'create':>8} | {'empty step':>10} | {'the step alone':>14}")
    print("-" * 66)
    for step in step_ms:
        print(f"{step:<24} | {step_ms[step]:8.3f} | {empty_ms[step]:10.3f} | {step_ms[step] - empty_ms[step]:14.3f}")
    total, total_empty = sum(step_ms.values()), sum(empty_ms.values())
    print(f"{'all five':<24} | {total:8.3f} | {total_empty:10.3f} | {total - total_empty:14.3f}")
    if out["pg"] is not None:
        a, b = out["pg"][PATHS[0]], out["pg"][PATHS[1]]
        print(f"{'PostgreSQL backend/flow':<24} | {a:8.3f} | {b:10.3f} | {a - b:14.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
