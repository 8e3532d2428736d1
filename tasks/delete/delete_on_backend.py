"""delete_on_backend: remove the volume (and the snapshots deleted with it) from the backend; give the usage back.

Requires: the delete cast (volume_id, snapshot_ids); env.driver and env.host (this volume service)
Provides: deleted; or driver_error (why); or skipped (why)
Effect: the driver deletes each snapshot and then the volume; their usage is given back (once,
    tasks/usage, in one quota change) and their rows are soft-deleted. The driver fails: the
    volume (and the snapshots deleted with it) become `error_deleting` with a user message; their
    usage stays charged (they still exist), and an admin's force delete (or a status reset and a
    new delete) tries again, as in Cinder. A volume that is no longer `deleting`, or is on
    another backend: nothing is done.
Reversion strategy: none; the flow's last step, whose outcomes are all recorded.
Redelivery: the step's record ends the flow; a second copy of the cast is replayed. The driver
    runs inside the transaction under the volume row's lock and its deletes are idempotent, so
    a crash before the commit redoes them safely.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from drivers.base import DriverError
from models import utcnow
from models.snapshot import Snapshot
from models.volume import Volume, VolumeStatus
from tasks import casts, user_messages
from tasks.context import FlowContext
from tasks.delete.rows import destroy
from tasks.runner import StepEnv

name = "delete_on_backend"


def run(session: Session, ctx: FlowContext, env: StepEnv) -> dict[str, Any]:
    vol = session.scalar(select(Volume).where(Volume.id == ctx.volume_id).with_for_update())
    if vol is None or vol.deleted or vol.status != VolumeStatus.DELETING.value:
        state = "missing" if vol is None else ("deleted" if vol.deleted else vol.status)
        return {"skipped": f"volume is {state}"}
    if not casts.on_this_backend(vol.host, env):
        return {"skipped": f"volume is on {vol.host}, not {env.host}"}
    snapshots = list(session.scalars(
        select(Snapshot).where(Snapshot.volume_id == vol.id, Snapshot.deleted.is_(False)).with_for_update()))
    try:
        for snap in snapshots:
            env.driver.delete_snapshot(snap.id)
        env.driver.delete_volume(vol.id)
    except DriverError as exc:
        now = utcnow()
        vol.status, vol.error_message, vol.updated_at = VolumeStatus.ERROR_DELETING.value, str(exc)[:255], now
        for snap in snapshots:
            snap.status, snap.updated_at = "error_deleting", now
        user_messages.record(session, project_id=vol.project_id, resource_type=user_messages.VOLUME,
                             resource_uuid=vol.id, action=user_messages.Action.DELETE_VOLUME,
                             detail=user_messages.Detail.DRIVER_FAILED_DELETE)
        return {"driver_error": str(exc)[:500]}
    destroy(session, env.quota, vol, snapshots)
    return {"deleted": True, "snapshots": [snap.id for snap in snapshots]}


def revert(session: Session, ctx: FlowContext, result: dict[str, Any], env: StepEnv) -> None:
    """Never called: the flow's last step ends it with its record."""
