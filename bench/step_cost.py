"""Bench: what each step of a create costs, one-call path beside the transactional path, same run.

    python bench/step_cost.py              # 2000 flows, the two paths in alternating blocks of 50
    python bench/step_cost.py --n 200      # quick

No Celery: one thread runs the five steps of each flow in turn (tasks.runner.run_step, called as
the chain's tasks call it) on a fresh PostgreSQL database, the way a pool child runs them, with a
publisher that drops the cast. Blocks of flows alternate between the one-call path
(VOLCHAIN_STEP_FUNCTIONS on, the default: quota_reserve, entry_create and quota_commit run the call
extract_volume_request planned, with no read before it) and the transactional path (off), so both
see the same machine at nearly the same moments. Printed per step: client CPU
(this process) and, per flow, the CPU of the PostgreSQL backend the steps use (/proc; only when the
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
PATHS = ("one call", "transactional")


def measure(database_url: str, n: int, warmup: int, block: int) -> dict:
    os.environ["VOLCHAIN_DATABASE_URL"] = database_url
    from models.db import engine_of
    from models.migrate import upgrade
    from tasks import quota_engine, step_tx
    from tasks.context import RequestContext
    from tasks.flow import STEPS
    from tasks.runner import run_step
    from workers.runtime import get_runtime
    from workers.submit import _INSERT_FLOW
    from models import utcnow

    upgrade(database_url)
    rt = get_runtime()
    base = dataclasses.replace(rt.env, publish=lambda message: None)
    envs = {PATHS[0]: dataclasses.replace(base, step_functions=True),
            PATHS[1]: dataclasses.replace(base, step_functions=False)}
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
    conn = step_tx.step_connection(engine)  # the connection every step of this thread uses
    backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    conn.commit()

    def run(count: int) -> None:
        """Blocks of `block` flows, the two paths in turn (a block is long enough for /proc's
        10 ms ticks to time the backend)."""
        done = 0
        while done < count:
            path = PATHS[(done // block) % 2]
            size = min(block, count - done)
            before = pg_cpu([backend])
            for _ in range(size):
                flow_id = new_flow()
                for step in STEPS:
                    started = time.process_time()
                    # As the chain's tasks call it: no context back, so planned steps skip the read.
                    run_step(rt.factory, step, flow_id, envs[path], final=step is STEPS[-1], context=False)
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
    step_tx.forget_step_connections()
    local = pg_cpu([backend]) is not None
    return {"cpu": {path: {k: v * 1000 / flows[path] for k, v in cpu[path].items()} for path in PATHS},
            "pg": {path: pg[path] * 1000 / flows[path] for path in PATHS} if local else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pg", default=DEFAULT_PG, help=f"PostgreSQL server, no database (default {DEFAULT_PG})")
    p.add_argument("--n", type=int, default=2000, help="measured flows, half on each path (default 2000)")
    p.add_argument("--warmup", type=int, default=100, help="unmeasured flows first (default 100)")
    p.add_argument("--block", type=int, default=50, help="flows in a row on one path (default 50)")
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
    one, other = out["cpu"][PATHS[0]], out["cpu"][PATHS[1]]
    print(f"\nClient CPU per step (ms), N={args.n} flows alternating the two paths, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'step':<24} | {'one call':>8} | {'transactional':>13} | {'one call / transactional':>24}")
    print("-" * 78)
    for step in one:
        print(f"{step:<24} | {one[step]:8.3f} | {other[step]:13.3f} | {one[step] / other[step]:23.0%}")
    total_one, total_other = sum(one.values()), sum(other.values())
    print(f"{'all five':<24} | {total_one:8.3f} | {total_other:13.3f} | {total_one / total_other:23.0%}")
    if out["pg"] is not None:
        a, b = out["pg"][PATHS[0]], out["pg"][PATHS[1]]
        print(f"{'PostgreSQL backend/flow':<24} | {a:8.3f} | {b:13.3f} | {a / b:23.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
