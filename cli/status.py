"""`volchain status`: what runs and what waits: workers, queue depths, flows by state, services.

Workers are the Celery nodes that answer a broadcast ping within --timeout, with their queues,
pool and tasks run (Celery's `inspect`); queue depths are the messages waiting in each of
volchain's queues (the step, compensate and scheduler queues, and the queue of every volume
service known to the database), as the broker counts them; flows are counted by state from the
flow log; services are as `volchain service list` shows them. On the in-process broker (no
VOLCHAIN_BROKER_URL) there is no worker to ask and no queue outside this command: both are empty.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli import render
from cli.parsing import non_negative_float
from cli.services import service_rows, services_table
from models.flow_log import FlowState

DEFAULT_TIMEOUT = 1.0


def register(sub) -> None:
    p = sub.add_parser("status", help="workers, queue depths, flows by state and services",
                       description="Asks the workers over the broker (a ping, then their stats and queues), counts "
                       "the messages waiting in volchain's queues and the flows in each state, and lists the services.")
    p.add_argument("--timeout", type=non_negative_float, default=DEFAULT_TIMEOUT,
                   help=f"seconds to wait for workers to answer the ping (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.set_defaults(handler=run)


def workers(timeout: float) -> list[dict[str, Any]]:
    """The nodes that answered a ping, each with its queues, pool size and tasks run (from `stats`)."""
    from workers.app import app

    names = sorted(name for reply in app.control.ping(timeout=timeout) or [] for name in reply)
    if not names:
        return []
    inspect = app.control.inspect(destination=names, timeout=max(timeout, 1.0), limit=len(names))
    stats, queues = inspect.stats() or {}, inspect.active_queues() or {}
    found = []
    for name in names:
        pool = (stats.get(name) or {}).get("pool") or {}
        implementation = pool.get("implementation") or ""  # e.g. celery.concurrency.prefork:TaskPool
        found.append({"name": name, "queues": sorted(q["name"] for q in queues.get(name, [])),
                      "pool": implementation.split(":")[0].rsplit(".", 1)[-1] or None,
                      "concurrency": pool.get("max-concurrency"),
                      "tasks": sum(((stats.get(name) or {}).get("total") or {}).values())})
    return found


def queue_depths(queue_names: list[str]) -> dict[str, int]:
    """Messages waiting in each queue, counted as /metrics counts them (tasks/metrics.py)."""
    from tasks.metrics import queue_depth
    from workers.app import app

    with app.connection_for_read() as conn:
        return {name: queue_depth(conn.default_channel, name) for name in queue_names}


def flow_counts() -> dict[str, int]:
    """Flows in the log by state, every state listed."""
    from sqlalchemy import func, select

    from models.flow_log import FlowRun
    from workers.runtime import get_runtime

    with get_runtime().factory() as session:
        counted = dict(session.execute(select(FlowRun.state, func.count()).group_by(FlowRun.state)).all())
    return {state.value: int(counted.get(state.value, 0)) for state in FlowState}


def run(args: argparse.Namespace) -> int:
    from kombu.utils.url import maybe_sanitize_url

    from tasks.casts import backend_queue
    from models.service import VOLUME_BINARY
    from workers.embedded import is_embedded
    from workers.settings import get_settings

    settings = get_settings()
    services = service_rows()
    in_process = is_embedded(settings)
    queues = [settings.step_queue, settings.compensate_queue, settings.scheduler_queue,
              *sorted({backend_queue(s["host"]) for s in services if s["binary"] == VOLUME_BINARY})]
    report = {
        "broker": maybe_sanitize_url(settings.broker_url),
        "workers": [] if in_process else workers(args.timeout),
        "queues": {} if in_process else queue_depths(queues),
        "flows": flow_counts(),
        "services": services,
    }
    if args.json:
        print(render.to_json(report))
        return 0
    rows = [(w["name"], w["queues"], w["pool"], w["concurrency"], w["tasks"]) for w in report["workers"]]
    sections = [
        ("workers", render.table(("NAME", "QUEUES", "POOL", "CONCURRENCY", "TASKS"), rows) if rows else
         f"none answered within {args.timeout:g} s" if not in_process else
         f"none: the broker {report['broker']} lives inside this command"),
        ("queues", render.table(("QUEUE", "WAITING"), report["queues"].items()) if report["queues"] else
         "none outside this command"),
        ("flows", render.table(("STATE", "FLOWS"), report["flows"].items())),
        ("services", services_table(services) if services else "none registered"),
    ]
    print("\n\n".join(f"{title}\n{body}" for title, body in sections))
    return 0
