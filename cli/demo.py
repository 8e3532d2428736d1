"""`volchain demo`: the whole create chain with no servers, on an embedded PostgreSQL.

The data directory (--data, default VOLCHAIN_DATA_DIR: ./volchain-data) is made on the first run
and kept; each run seeds a project of its own, so runs add up without meeting each other. Three
creates succeed (two via the scheduler queue, one from a snapshot straight to its backend's
`volume.<host>` queue); then the volumes quota is set to the count, so a fourth create fails in
quota_reserve and is compensated. Ends with the quota usage beside what the rows say, and stops
the server (the next run, or any command with VOLCHAIN_DATA_DIR set to the directory, starts it).
With --json the same is printed at the end as one JSON object instead of lines.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

from cli import render
from cli.flows import error_line, load_flow

SOURCE_HOST = "node1@lvm#pool"
WAIT_SECONDS = 15.0


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the chain in-process (embedded PostgreSQL, memory broker, worker thread)")
    p.add_argument("--data", type=Path, metavar="DIR",
                   help="PostgreSQL data directory, made if missing and kept (default: VOLCHAIN_DATA_DIR, "
                   "./volchain-data)")
    p.add_argument("--json", action="store_true", help="print what the demo did as one JSON object at the end")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from workers.embedded import embedded, postgres
    from workers.settings import get_settings

    say = _quiet if args.json else print
    with postgres(args.data or get_settings().data_dir) as server, embedded(server.url) as settings:
        say(f"volchain demo: PostgreSQL in {server.data_dir} (kept), broker {settings.broker_url}, "
            f"worker thread on {settings.step_queue} + {settings.compensate_queue}")
        project = f"demo-{uuid.uuid4().hex[:8]}"
        report = _demo(project, say)
    say(f"\nkept in {server.data_dir}: VOLCHAIN_DATA_DIR={server.data_dir} volchain quota show --project {project}")
    if args.json:
        print(render.to_json({"data_dir": str(server.data_dir), "broker": settings.broker_url, "project": project,
                              **report}))
    if not report["behaved"]:
        print("volchain demo: the chain did not behave as expected (see above)", file=sys.stderr)
        return 1
    return 0


def _quiet(*_args, **_kwargs) -> None:
    """`say` with --json: the lines are left out, the JSON at the end says it all."""


def _seed(factory, project: str) -> tuple[str, str]:
    """A 1 GB volume on SOURCE_HOST and a snapshot of it (imported: outside quota)."""
    from sqlalchemy import select

    from models.snapshot import Snapshot
    from models.volume import Volume
    from models.volume_type import VolumeType
    from workers.settings import get_settings

    with factory() as session, session.begin():
        type_id = session.scalar(select(VolumeType.id).where(VolumeType.name == get_settings().default_volume_type))
        vol = Volume(project_id=project, size=1, status="available", host=SOURCE_HOST, availability_zone="nova",
                     volume_type_id=type_id, display_name="demo-source", use_quota=False)
        session.add(vol)
        session.flush()
        snap = Snapshot(project_id=project, volume_id=vol.id, volume_size=1, volume_type_id=type_id,
                        display_name="demo-snap", use_quota=False)
        session.add(snap)
        session.flush()
        return vol.id, snap.id


def _create(say: Callable, project: str, number: int, label: str, **request: Any):
    from tasks.context import RequestContext
    from workers.submit import create_volume

    out = create_volume(RequestContext(project_id=project, user_id="demo"), timeout=WAIT_SECONDS, **request)
    detail = f"queue {out.cast['queue']}" if out.cast else error_line(out.error) or "-"
    say(f"create {number}  {label:<30} flow {out.flow_id}  {out.state:<9}  {detail}")
    return out


def _as_dict(number: int, label: str, out) -> dict[str, Any]:
    return {"number": number, "label": label, "flow_id": out.flow_id, "volume_id": out.volume_id, "state": out.state,
            "queue": out.cast["queue"] if out.cast else None, "error": out.error}


def _quota_config():
    from workers.runtime import get_runtime, quota_config

    return quota_config(get_runtime().settings)


def _usage(factory, project: str) -> tuple[list[tuple], bool]:
    """Usage per resource beside a recount from the rows; True when they agree everywhere."""
    from sqlalchemy import func, select

    from models.quota import Reservation
    from tasks.quota_engine import LIMIT_ONLY, sync_usage, usage_report

    config = _quota_config()
    rows, agree = [], True
    with factory() as session:
        pending = dict(session.execute(
            select(Reservation.resource, func.sum(Reservation.delta))
            .where(Reservation.project_id == project, Reservation.delta > 0).group_by(Reservation.resource)
        ).all())
        for name, u in usage_report(session, project, config).items():
            if name in LIMIT_ONLY:
                rows.append((name, u["limit"], u["in_use"], u["reserved"], None, None))
                continue
            counted, held = sync_usage(session, project, name, config), int(pending.get(name, 0))
            agree = agree and (u["in_use"], u["reserved"]) == (counted, held)
            rows.append((name, u["limit"], u["in_use"], u["reserved"], counted, held))
    return rows, agree


def _demo(project: str, say: Callable) -> dict[str, Any]:
    """Run the four creates, saying each; what happened, and whether it is what the demo expects."""
    from tasks import quota_engine
    from workers.runtime import get_runtime

    factory = get_runtime().factory
    source_id, snap_id = _seed(factory, project)
    say(f"project {project}: seeded volume {source_id} on {SOURCE_HOST} and its snapshot {snap_id}\n")

    labels = ["size 1 GB", f"from snapshot {snap_id[:8]}", "size 2 GB, metadata tier=gold"]
    created = [
        _create(say, project, 1, labels[0], size=1, name="demo-1"),
        _create(say, project, 2, labels[1], snapshot_id=snap_id, name="demo-2"),
        _create(say, project, 3, labels[2], size=2, name="demo-3", metadata={"tier": "gold"}),
    ]
    with factory() as session, session.begin():
        count = quota_engine.sync_usage(session, project, "volumes", _quota_config())
        quota_engine.set_limits(session, project, {"volumes": count})
    say(f"\nquota set --project {project} volumes={count}\n")
    over = _create(say, project, 4, "size 1 GB, over quota", size=1, name="demo-4")
    steps = load_flow(over.flow_id)["steps"]
    say("         compensation: " + ", ".join(f"{s['step']} {s['state']}" for s in steps))

    rows, agree = _usage(factory, project)
    say(f"\nquota usage of {project} (engine) beside a recount of the rows:")
    say(render.table(("RESOURCE", "LIMIT", "IN_USE", "RESERVED", "ROWS_IN_USE", "ROWS_PENDING"), rows))
    say(f"quota usage equals the rows: {'yes' if agree else 'NO'}")

    queues = {out.cast["queue"] for out in created if out.cast}
    behaved = (all(out.succeeded for out in created) and {"scheduler", "volume.node1@lvm"} <= queues
               and over.state == "reverted" and (over.error or {}).get("type") == "VolumeLimitExceeded" and agree)
    columns = ("resource", "limit", "in_use", "reserved", "rows_in_use", "rows_pending")
    return {
        "seeded": {"volume_id": source_id, "snapshot_id": snap_id, "host": SOURCE_HOST},
        "creates": [_as_dict(n, label, out) for n, (label, out) in enumerate(zip(labels, created), 1)]
        + [_as_dict(4, "size 1 GB, over quota", over)],
        "volumes_limit": count,
        "compensation": [{"step": st["step"], "state": st["state"]} for st in steps],
        "quota": [dict(zip(columns, row)) for row in rows],
        "quota_equals_rows": agree,
        "behaved": behaved,
    }
