"""create_on_backend: the driver copies the volume into the snapshot; `creating` -> `available`.

Requires: the snapshot cast (volume_id, snapshot_id); env.driver and env.host
Provides: provider_location; or driver_error (why); or skipped (why)
Effect: the driver makes the snapshot (a copy of the volume on the file driver); the row becomes
    `available`, progress 100%. The driver fails: the row becomes `error` with a user message,
    its usage stays charged until it is deleted (as in Cinder). A snapshot no longer
    `creating`, or whose volume is on another backend: nothing is done.
Reversion strategy: none; the flow's last step, whose outcomes are all recorded.
Redelivery: the record ends the flow; a second copy is replayed. The driver's copy is made under
    a temporary name and renamed, so a crash before the commit redoes it and leaves one snapshot.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from drivers.base import DriverError
from models import utcnow
from models.snapshot import Snapshot
from models.volume import Volume
from tasks import casts, user_messages
from tasks.context import FlowContext
from tasks.runner import StepEnv

name = "create_on_backend"


def run(session: Session, ctx: FlowContext, env: StepEnv) -> dict[str, Any]:
    snapshot_id = ctx.results["snapshot_id"]
    snap = session.scalar(select(Snapshot).where(Snapshot.id == snapshot_id).with_for_update())
    if snap is None or snap.deleted or snap.status != "creating":
        return {"skipped": f"snapshot is {'missing' if snap is None else snap.status}"}
    # The source is held (FOR SHARE) while it is copied: no extend or delete of it meanwhile.
    host = session.scalar(select(Volume.host).where(Volume.id == snap.volume_id).with_for_update(read=True))
    if not casts.on_this_backend(host, env):
        return {"skipped": f"volume is on {host}, not {env.host}"}
    now = utcnow()
    try:
        location = env.driver.create_snapshot(snap.id, snap.volume_id)
    except DriverError as exc:
        snap.status, snap.updated_at = "error", now
        user_messages.record(session, project_id=snap.project_id, resource_type=user_messages.SNAPSHOT,
                             resource_uuid=snap.id, action=user_messages.Action.SNAPSHOT_CREATE,
                             detail=user_messages.Detail.SNAPSHOT_CREATE_ERROR)
        return {"driver_error": str(exc)[:500]}
    snap.status, snap.progress, snap.provider_location, snap.updated_at = "available", "100%", location, now
    return {"provider_location": location}


def revert(session: Session, ctx: FlowContext, result: dict[str, Any], env: StepEnv) -> None:
    """Never called: the flow's last step ends it with its record."""
