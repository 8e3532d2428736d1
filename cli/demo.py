"""`volchain demo`: the whole create chain with no servers, on a throw-away SQLite file.

Three creates succeed (two via the scheduler queue, one from a snapshot straight to its backend's
`volume.<host>` queue); then the volumes quota is set to the count, so a fourth create fails in
quota_reserve and is compensated. Ends with the quota usage beside what the rows say.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from cli import render
from cli.flows import error_line, load_flow

PROJECT = "demo-project"
SOURCE_HOST = "node1@lvm#pool"
WAIT_SECONDS = 15.0


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the chain in-process (SQLite, memory broker, worker thread)")
    p.add_argument("--keep", action="store_true", help="keep the demo database and print its path")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from models.migrate import upgrade
    from workers.embedded import embedded

    workdir = Path(tempfile.mkdtemp(prefix="volchain-demo-"))
    path = workdir / "volchain.db"
    try:
        url = f"sqlite:///{path}"
        upgrade(url)
        with embedded(url) as settings:
            print(f"volchain demo: SQLite {path}, broker {settings.broker_url}, "
                  f"worker thread on {settings.step_queue} + {settings.compensate_queue}")
            return _demo()
    finally:
        if args.keep:
            print(f"database kept at {path}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _seed(factory) -> tuple[str, str]:
    """A 1 GB volume on SOURCE_HOST and a snapshot of it (imported: outside quota)."""
    from sqlalchemy import select

    from models.snapshot import Snapshot
    from models.volume import Volume
    from models.volume_type import VolumeType
    from workers.settings import get_settings

    with factory() as session, session.begin():
        type_id = session.scalar(select(VolumeType.id).where(VolumeType.name == get_settings().default_volume_type))
        vol = Volume(project_id=PROJECT, size=1, status="available", host=SOURCE_HOST, availability_zone="nova",
                     volume_type_id=type_id, display_name="demo-source", use_quota=False)
        session.add(vol)
        session.flush()
        snap = Snapshot(project_id=PROJECT, volume_id=vol.id, volume_size=1, volume_type_id=type_id,
                        display_name="demo-snap", use_quota=False)
        session.add(snap)
        session.flush()
        return vol.id, snap.id


def _create(number: int, label: str, **request: Any):
    from tasks.context import RequestContext
    from workers.submit import create_volume

    out = create_volume(RequestContext(project_id=PROJECT, user_id="demo"), timeout=WAIT_SECONDS, **request)
    detail = f"queue {out.cast['queue']}" if out.cast else error_line(out.error) or "-"
    print(f"create {number}  {label:<30} flow {out.flow_id}  {out.state:<9}  {detail}")
    return out


def _quota_config():
    from workers.runtime import get_runtime, quota_config

    return quota_config(get_runtime().settings)


def _usage(factory) -> tuple[list[tuple], bool]:
    """Usage per resource beside a recount from the rows; True when they agree everywhere."""
    from sqlalchemy import func, select

    from models.quota import Reservation
    from tasks.quota_engine import LIMIT_ONLY, sync_usage, usage_report

    config = _quota_config()
    rows, agree = [], True
    with factory() as session:
        pending = dict(session.execute(
            select(Reservation.resource, func.sum(Reservation.delta))
            .where(Reservation.project_id == PROJECT, Reservation.delta > 0).group_by(Reservation.resource)
        ).all())
        for name, u in usage_report(session, PROJECT, config).items():
            if name in LIMIT_ONLY:
                rows.append((name, u["limit"], u["in_use"], u["reserved"], None, None))
                continue
            counted, held = sync_usage(session, PROJECT, name, config), int(pending.get(name, 0))
            agree = agree and (u["in_use"], u["reserved"]) == (counted, held)
            rows.append((name, u["limit"], u["in_use"], u["reserved"], counted, held))
    return rows, agree


def _demo() -> int:
    from tasks import quota_engine
    from workers.runtime import get_runtime

    factory = get_runtime().factory
    source_id, snap_id = _seed(factory)
    print(f"project {PROJECT}: seeded volume {source_id} on {SOURCE_HOST} and its snapshot {snap_id}\n")

    created = [
        _create(1, "size 1 GB", size=1, name="demo-1"),
        _create(2, f"from snapshot {snap_id[:8]}", snapshot_id=snap_id, name="demo-2"),
        _create(3, "size 2 GB, metadata tier=gold", size=2, name="demo-3", metadata={"tier": "gold"}),
    ]
    with factory() as session, session.begin():
        count = quota_engine.sync_usage(session, PROJECT, "volumes", _quota_config())
        quota_engine.set_limits(session, PROJECT, {"volumes": count})
    print(f"\nquota set --project {PROJECT} volumes={count}\n")
    over = _create(4, "size 1 GB, over quota", size=1, name="demo-4")
    steps = load_flow(over.flow_id)["steps"]
    print("         compensation: " + ", ".join(f"{s['step']} {s['state']}" for s in steps))

    rows, agree = _usage(factory)
    print(f"\nquota usage of {PROJECT} (engine) beside a recount of the rows:")
    print(render.table(("RESOURCE", "LIMIT", "IN_USE", "RESERVED", "ROWS_IN_USE", "ROWS_PENDING"), rows))
    print(f"quota usage equals the rows: {'yes' if agree else 'NO'}")

    queues = {out.cast["queue"] for out in created if out.cast}
    expected = (all(out.succeeded for out in created) and {"scheduler", "volume.node1@lvm"} <= queues
                and over.state == "reverted" and (over.error or {}).get("type") == "VolumeLimitExceeded" and agree)
    if not expected:
        print("volchain demo: the chain did not behave as expected (see above)", file=sys.stderr)
        return 1
    return 0
