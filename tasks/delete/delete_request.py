"""delete_request: check that a volume may be deleted, then delete it at once or hand it to its backend.

Requires: volume_id; the request's `cascade` and `force`; the caller (admins may act on any
    project's volume and `force`)
Provides: deleted_at_once; or previous_status, snapshots (those deleted with it), cast
Effect: a volume that never reached a backend (no host) is deleted here, in any status, with
    its usage given back (once), and the flow ends: nothing is cast, and a create still on its
    way to a backend finds the row gone and stops. Otherwise (Cinder's rules) the volume must be
    in a deletable status (available, error, error_restoring, error_extending, error_managing),
    detached, and without snapshots unless `cascade`; `force` (admins) skips the status checks.
    It becomes `deleting` (with `cascade`, its snapshots too) and the delete is cast to its
    backend's `volume.<host@backend>` queue, where delete_on_backend finishes it.
Reversion strategy: put the volume (and the cascaded snapshots) back to the status they had, if
    they are still `deleting` (only compensation would call it: this step is the flow's first).
Redelivery: runs in the API process, in the transaction that inserts its flow row: refused, it
    leaves nothing; committed, it is recorded with the flow.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import utcnow
from models.snapshot import Snapshot
from models.volume import Volume, VolumeStatus
from tasks import casts, errors, lookups
from tasks.context import FlowContext
from tasks.delete.rows import destroy
from tasks.runner import ENDS_FLOW, StepEnv

name = "delete_request"

DELETABLE = ("available", "error", "error_restoring", "error_extending", "error_managing")
SNAPSHOT_DELETABLE = ("available", "error")
INVALID = (f"Volume status must be {' or '.join(DELETABLE)} and must not be migrating, attached, belong to a group, "
           "have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.")


def run(session: Session, ctx: FlowContext, env: StepEnv) -> dict[str, Any]:
    vol = lookups.volume(session, ctx, ctx.volume_id, for_update=True)  # another project's: 404
    if not vol.host:
        destroy(session, env.quota, vol)
        return {"deleted_at_once": True, ENDS_FLOW: True}
    cascade, force = bool(ctx.request.get("cascade")), bool(ctx.request.get("force"))
    snapshots = list(session.scalars(
        select(Snapshot).where(Snapshot.volume_id == vol.id, Snapshot.deleted.is_(False)).with_for_update()))
    if not force:
        if vol.status not in DELETABLE or vol.attach_status != "detached":
            raise errors.InvalidVolume(reason=INVALID)
        if snapshots and not cascade:
            raise errors.InvalidVolume(reason=INVALID)
        if any(snap.status not in SNAPSHOT_DELETABLE for snap in snapshots):
            raise errors.InvalidVolume(reason="Snapshot status must be available or error to delete it with "
                                              "its volume.")
    elif snapshots and not cascade:
        raise errors.InvalidVolume(reason=INVALID)
    now = utcnow()
    previous = {"volume": vol.status, "snapshots": {snap.id: snap.status for snap in snapshots}}
    vol.status, vol.updated_at = VolumeStatus.DELETING.value, now
    for snap in snapshots:
        snap.status, snap.updated_at = "deleting", now
    body = casts.flow_message(ctx.flow_id, name, casts.backend_queue(vol.host), vol.id, vol.project_id,
                              host=vol.host, snapshot_ids=[snap.id for snap in snapshots])
    return {"previous_status": previous, "cast": casts.publish(env, casts.VOLUME_DELETE, body, vol.id)}


def revert(session: Session, ctx: FlowContext, result: dict[str, Any], env: StepEnv) -> None:
    previous = result.get("previous_status")
    if not previous:
        return
    vol = session.get(Volume, ctx.volume_id, with_for_update=True)
    if vol is not None and vol.status == VolumeStatus.DELETING.value and not vol.deleted:
        vol.status = previous["volume"]
    for snap_id, status in previous["snapshots"].items():
        snap = session.get(Snapshot, snap_id, with_for_update=True)
        if snap is not None and snap.status == "deleting" and not snap.deleted:
            snap.status = status
