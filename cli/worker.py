"""`volchain worker [ROLE]`: run one role.

`steps` (the default) execs a Celery worker for the chain's step and compensate queues;
`scheduler` execs one for the scheduler queue; `volume --host HOST@BACKEND --path DIR ...` execs
one for that backend's `volume.<host@backend>` queue with its driver; `sweeper` runs the
single-leader sweeper loop (stale reservations, stuck flows). The scheduler and volume services
register a service row and report on a heartbeat (workers/heartbeat.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from cli.parsing import UsageError, positive_int

POOLS = ("prefork", "threads", "solo")
ROLES = ("steps", "scheduler", "volume", "sweeper")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def register(sub) -> None:
    p = sub.add_parser(
        "worker", help="run a worker role: the chain's steps (default), the scheduler, a volume service, or the sweeper",
        description="steps: same as `celery -A workers.app worker -Q <step queue>,<compensate queue> -E`. "
        "scheduler: consumes the scheduler queue. volume: a volume service for one backend (--host, --path). "
        "sweeper: expire stale reservations and finish stuck flows every VOLCHAIN_SWEEP_INTERVAL_SECONDS.",
    )
    p.add_argument("role", nargs="?", choices=ROLES, default="steps",
                   help="what to run: steps (the default), scheduler, volume or sweeper")
    p.add_argument("--host", help="volume: this backend's host@backend (its queue is volume.<host@backend>)")
    p.add_argument("--driver", default="file", help="volume: the driver (default: file)")
    p.add_argument("--path", help="volume: the file driver's directory (made if missing)")
    p.add_argument("--availability-zone", help="volume: this service's zone (default: VOLCHAIN_STORAGE_AVAILABILITY_ZONE)")
    p.add_argument("--capacity-gb", type=positive_int,
                   help="volume: capacity to report (default: the size of the filesystem holding --path)")
    p.add_argument("--interval", type=float, help="sweeper: seconds between sweeps")
    p.add_argument("--concurrency", "-c", type=positive_int, help="pool size (default: VOLCHAIN_WORKER_CONCURRENCY, else four per CPU)")
    p.add_argument("--pool", "-P", choices=POOLS,
                   help="prefork (the default for steps) or threads (the default for the scheduler and volume "
                   "services: their tasks wait on PostgreSQL and the disk, and a thread takes a message without the "
                   "hand-over to a child process)")
    p.add_argument("--loglevel", "-l", choices=LOG_LEVELS, default="info", type=str.lower,
                   help="Celery's log level (default info)")
    p.add_argument("--hostname", "-n", help="node name, e.g. steps1@%%h (needed for two workers on one host)")
    p.set_defaults(handler=run)


def celery_argv(args: argparse.Namespace, queues: str, events: bool = True) -> list[str]:
    argv = [sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            "-Q", queues, "-P", args.pool, "-l", args.loglevel]
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
    queues = f"{settings.step_queue},{settings.compensate_queue}"
    args.pool = args.pool or ("prefork" if args.role == "steps" else "threads")
    if args.role == "scheduler":
        queues = settings.scheduler_queue
        os.environ["VOLCHAIN_SERVICE"] = "scheduler"
        args.hostname = args.hostname or "scheduler@%h"
    elif args.role == "volume":
        queues = _volume_service_env(args)
        if not args.hostname:
            args.hostname = f"volume-{args.host.replace('@', '-')}@%h"
    argv = celery_argv(args, queues, settings.task_events)
    sys.stdout.flush()
    os.execv(argv[0], argv)
    return 0  # not reached


def _volume_service_env(args: argparse.Namespace) -> str:
    """Check a volume service's options and hand them to the worker through its environment."""
    from drivers import DRIVERS
    from tasks.casts import backend_queue

    if not args.host or "@" not in args.host or "#" in args.host:
        raise UsageError("volchain worker volume", "--host HOST@BACKEND is required (e.g. node1@file)")
    if args.driver not in DRIVERS:
        raise UsageError("volchain worker volume", f"unknown driver {args.driver}; known: {', '.join(DRIVERS)}")
    if not args.path:
        raise UsageError("volchain worker volume", "--path DIR is required for the file driver")
    path = os.path.abspath(args.path)
    os.makedirs(path, exist_ok=True)
    os.environ.update({"VOLCHAIN_SERVICE": "volume", "VOLCHAIN_VOLUME_HOST": args.host,
                       "VOLCHAIN_VOLUME_DRIVER": args.driver, "VOLCHAIN_VOLUME_PATH": path})
    if args.availability_zone:
        os.environ["VOLCHAIN_VOLUME_AVAILABILITY_ZONE"] = args.availability_zone
    if args.capacity_gb:
        os.environ["VOLCHAIN_VOLUME_CAPACITY_GB"] = str(args.capacity_gb)
    return backend_queue(args.host)


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
