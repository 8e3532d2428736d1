"""create_request: check the source volume, charge the snapshot's quota, insert its row, cast it to the backend.

Requires: volume_id (the source); the request's snapshot_id (allocated by the caller), name,
    description, metadata (checked here by Cinder's rules, tasks/fields.py), force; the caller
Provides: snapshot_id, deltas (what was charged), cast
Effect: the source must be the caller's, live, on a backend, and `available` (or `in-use` with
    `force`), as in Cinder. Quota: `snapshots`, `gigabytes` (unless no_snapshot_gb_quota) and
    their per-type copies are reserved and committed in this transaction (Cinder's 413s when
    over). The snapshot row is inserted `creating` and the create is cast to the source's
    `volume.<host@backend>` queue, where create_on_backend finishes it.
Reversion strategy: give the usage back (once) and set the snapshot to `error`.
Redelivery: runs in the API process, in the transaction that inserts its flow row: refused, it
    leaves nothing; committed, it is recorded with the flow.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import utcnow
from models.snapshot import Snapshot, SnapshotMetadata
from models.volume_type import VolumeType
from tasks import allocation, casts, errors, fields, lookups, quota_engine, usage
from tasks.context import FlowContext
from tasks.runner import StepEnv

name = "create_request"


def run(session: Session, ctx: FlowContext, env: StepEnv) -> dict[str, Any]:
    req = ctx.request
    metadata = fields.check_metadata(req.get("metadata"))
    vol = lookups.volume(session, ctx, ctx.volume_id, for_update=True)
    if req.get("force"):
        if vol.status not in ("available", "in-use"):
            raise errors.InvalidVolume(reason=f"Volume {vol.id} status must be available or in-use, but current "
                                              f"status is: {vol.status}.")
    elif vol.status != "available":
        raise errors.InvalidVolume(reason=f"Volume {vol.id} status must be available, but current status is: "
                                          f"{vol.status}.")
    if not vol.host:
        raise errors.InvalidVolume(reason=f"Volume {vol.id} is not on a backend.")
    type_name = session.scalar(select(VolumeType.name).where(VolumeType.id == vol.volume_type_id))
    deltas = usage.snapshot_deltas(type_name, vol.size, env.quota)
    try:
        uuids = quota_engine.reserve(session, vol.project_id, deltas, env.quota)
    except errors.OverQuota as exc:
        quota_engine.raise_for_over_quota(exc, vol.size)
    quota_engine.commit(session, uuids, scope=(vol.project_id, list(deltas)))
    snapshot_id = req["snapshot_id"]
    session.add(Snapshot(
        id=snapshot_id, project_id=vol.project_id, user_id=ctx.user_id, volume_id=vol.id, volume_size=vol.size,
        volume_type_id=vol.volume_type_id, encryption_key_id=vol.encryption_key_id, status="creating",
        display_name=req.get("name"), display_description=req.get("description"), progress="0%",
        use_quota=True, deleted=False, created_at=utcnow(),
    ))
    session.flush()
    allocation.charge(session, vol.host, vol.size)
    for key, value in metadata.items():
        session.add(SnapshotMetadata(snapshot_id=snapshot_id, key=key, value=value))
    body = casts.flow_message(ctx.flow_id, name, casts.backend_queue(vol.host), vol.id, vol.project_id,
                              host=vol.host, snapshot_id=snapshot_id)
    return {"snapshot_id": snapshot_id, "deltas": deltas,
            "cast": casts.publish(env, casts.SNAPSHOT_CREATE, body, vol.id)}


def revert(session: Session, ctx: FlowContext, result: dict[str, Any], env: StepEnv) -> None:
    usage.release_snapshot(session, result["snapshot_id"], env.quota)
    snap = session.get(Snapshot, result["snapshot_id"], with_for_update=True)
    if snap is not None and not snap.deleted:
        snap.status, snap.updated_at = "error", utcnow()
