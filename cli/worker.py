"""`volchain worker [ROLE]`: run one role.

`steps` (the default) execs a Celery worker for the chain's step and compensate queues;
`sweeper` runs the single-leader sweeper loop (stale reservations, stuck flows).
"""

from __future__ import annotations

import argparse
import os
import sys

from cli.parsing import UsageError, positive_int

POOLS = ("prefork", "threads", "solo")
ROLES = ("steps", "sweeper")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def register(sub) -> None:
    p = sub.add_parser(
        "worker", help="run a worker role: the chain's steps (default) or the sweeper",
        description="steps: same as `celery -A workers.app worker -Q <step queue>,<compensate queue> -E`. "
        "sweeper: expire stale reservations and finish stuck flows every VOLCHAIN_SWEEP_INTERVAL_SECONDS.",
    )
    p.add_argument("role", nargs="?", choices=ROLES, default="steps")
    p.add_argument("--interval", type=float, help="sweeper: seconds between sweeps")
    p.add_argument("--concurrency", "-c", type=positive_int, help="pool size (default: VOLCHAIN_WORKER_CONCURRENCY, else four per CPU)")
    p.add_argument("--pool", "-P", choices=POOLS, default="prefork")
    p.add_argument("--loglevel", "-l", choices=LOG_LEVELS, default="info", type=str.lower)
    p.add_argument("--hostname", "-n", help="node name, e.g. steps1@%%h (needed for two workers on one host)")
    p.set_defaults(handler=run)


def celery_argv(args: argparse.Namespace, step_queue: str, compensate_queue: str, events: bool = True) -> list[str]:
    argv = [sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            "-Q", f"{step_queue},{compensate_queue}", "-P", args.pool, "-l", args.loglevel]
    if events:  # VOLCHAIN_TASK_EVENTS (Flower needs them); -E would override a `false`
        argv.append("-E")
    if args.concurrency:
        argv += ["-c", str(args.concurrency)]
    if args.hostname:
        argv += ["-n", args.hostname]
    return argv


def run(args: argparse.Namespace) -> int:
    from workers.embedded import is_embedded
    from workers.settings import get_settings

    settings = get_settings()
    if args.role == "sweeper":
        return run_sweeper(args.interval)
    if is_embedded(settings):
        raise UsageError(
            "volchain worker", f"broker {settings.broker_url} exists only inside one process; "
            "set VOLCHAIN_BROKER_URL (e.g. redis://127.0.0.1:6379/0), or try `volchain demo`"
        )
    argv = celery_argv(args, settings.step_queue, settings.compensate_queue, settings.task_events)
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return 0  # not reached


def run_sweeper(interval: float | None) -> int:
    import logging

    from workers.sweeper import run_forever

    logging.getLogger("workers.sweeper").setLevel(logging.INFO)
    print(f"volchain sweeper: sweeping every {interval or 'VOLCHAIN_SWEEP_INTERVAL_SECONDS'} s (Ctrl-C stops)",
          flush=True)
    try:
        run_forever(interval)
    except KeyboardInterrupt:
        pass
    return 0
