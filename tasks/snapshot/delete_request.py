"""delete_request: check that a snapshot may be deleted, mark it `deleting`, cast the delete to its backend.

Requires: the request's snapshot_id (volume_id: its volume); the caller
Provides: previous_status, cast
Effect: the snapshot must be the caller's and `available` or `error` (Cinder's rule); it becomes
    `deleting` and the delete is cast to its volume's `volume.<host@backend>` queue.
Reversion strategy: put the snapshot back to its previous status if it is still `deleting`.
Redelivery: runs in the API process, in the transaction that inserts its flow row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import utcnow
from models.snapshot import Snapshot
from models.volume import Volume
from tasks import casts, errors
from tasks.context import FlowContext
from tasks.runner import StepEnv

name = "delete_request"


def run(session: Session, ctx: FlowContext, env: StepEnv) -> dict[str, Any]:
    snapshot_id = ctx.request["snapshot_id"]
    query = select(Snapshot).where(Snapshot.id == snapshot_id, Snapshot.deleted.is_(False))
    if not ctx.is_admin:
        query = query.where(Snapshot.project_id == ctx.project_id)
    snap = session.scalar(query.with_for_update())
    if snap is None:
        raise errors.SnapshotNotFound(snapshot_id=snapshot_id)
    if snap.status not in ("available", "error"):
        raise errors.InvalidSnapshot(reason="Snapshot status must be available or error and must not be part of "
                                            "a group.")
    host = session.scalar(select(Volume.host).where(Volume.id == snap.volume_id))
    previous, snap.status, snap.updated_at = snap.status, "deleting", utcnow()
    body = casts.flow_message(ctx.flow_id, name, casts.backend_queue(host), snap.volume_id, snap.project_id,
                              host=host, snapshot_id=snap.id)
    return {"previous_status": previous, "cast": casts.publish(env, casts.SNAPSHOT_DELETE, body, snap.volume_id)}


def revert(session: Session, ctx: FlowContext, result: dict[str, Any], env: StepEnv) -> None:
    snap = session.get(Snapshot, ctx.request["snapshot_id"], with_for_update=True)
    if snap is not None and snap.status == "deleting" and not snap.deleted:
        snap.status = result["previous_status"]
