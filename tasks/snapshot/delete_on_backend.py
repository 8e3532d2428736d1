"""delete_on_backend: the driver removes the snapshot; its usage is given back and its row deleted.

Requires: the snapshot delete cast (snapshot_id); env.driver and env.host
Provides: deleted; or driver_error (why); or skipped (why)
Effect: driver delete (idempotent), usage given back once (tasks/usage), row soft-deleted. The
    driver fails: `error_deleting` with a user message; the usage stays charged. A snapshot no
    longer `deleting`: nothing is done.
Reversion strategy: none; the flow's last step, whose outcomes are all recorded.
Redelivery: the record ends the flow; a second copy is replayed; a crash before the commit
    redoes the (idempotent) driver delete.
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
from tasks.delete.rows import destroy
from tasks.runner import StepEnv

name = "delete_on_backend"


def run(session: Session, ctx: FlowContext, env: StepEnv) -> dict[str, Any]:
    snap = session.scalar(select(Snapshot).where(Snapshot.id == ctx.request["snapshot_id"]).with_for_update())
    if snap is None or snap.deleted or snap.status != "deleting":
        return {"skipped": f"snapshot is {'missing' if snap is None else snap.status}"}
    host = session.scalar(select(Volume.host).where(Volume.id == snap.volume_id))
    if not casts.on_this_backend(host, env):
        return {"skipped": f"volume is on {host}, not {env.host}"}
    try:
        env.driver.delete_snapshot(snap.id)
    except DriverError as exc:
        snap.status, snap.updated_at = "error_deleting", utcnow()
        user_messages.record(session, project_id=snap.project_id, resource_type=user_messages.SNAPSHOT,
                             resource_uuid=snap.id, action=user_messages.Action.SNAPSHOT_DELETE,
                             detail=user_messages.Detail.SNAPSHOT_DELETE_ERROR)
        return {"driver_error": str(exc)[:500]}
    destroy(session, env.quota, snapshots=[snap])
    return {"deleted": True}


def revert(session: Session, ctx: FlowContext, result: dict[str, Any], env: StepEnv) -> None:
    """Never called: the flow's last step ends it with its record."""
