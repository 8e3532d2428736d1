"""extend_request: check the new size, reserve the extra gigabytes, mark the volume `extending`, cast.

Requires: volume_id; the request's new_size; the caller
Provides: new_size, reservations, deltas, previous_status, cast
Effect: the volume must be the caller's, `available` and on a backend, and the new size larger
    than the current one (Cinder's 400s) and within per_volume_gigabytes. The extra gigabytes
    (and their per-type copy) are reserved, pending until the backend has grown the volume
    (Cinder's 413 when over quota). The reservation is held for at least a day, so a backend
    that is down for a while still finds it when it returns. The volume becomes `extending` and
    the extend is cast to its backend's `volume.<host@backend>` queue.
Reversion strategy: roll back the reservations still pending; put the volume back to its
    previous status if it is still `extending`.
Redelivery: runs in the API process, in the transaction that inserts its flow row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import utcnow
from models.volume import Volume, VolumeStatus
from models.volume_type import VolumeType
from tasks import casts, errors, lookups, quota_engine
from tasks.context import FlowContext
from tasks.runner import StepEnv

name = "extend_request"

MIN_HOLD_SECONDS = 86400


def run(session: Session, ctx: FlowContext, env: StepEnv) -> dict[str, Any]:
    new_size = ctx.request["new_size"]
    vol = lookups.volume(session, ctx, ctx.volume_id, for_update=True)
    if vol.status != VolumeStatus.AVAILABLE.value or not vol.host:
        raise errors.InvalidVolume(reason=f"Volume {vol.id} status must be available to extend, but current "
                                          f"status is: {vol.status}.")
    if new_size <= vol.size:
        raise errors.InvalidInput(reason=f"New size for extend must be greater than current size. (current: "
                                         f"{vol.size}, extended: {new_size}).")
    try:
        quota_engine.limit_check(session, vol.project_id, env.quota, per_volume_gigabytes=new_size)
    except errors.OverQuota as exc:
        raise errors.VolumeSizeExceedsLimit(size=new_size, limit=exc.quotas["per_volume_gigabytes"]) from exc
    type_name = session.scalar(select(VolumeType.name).where(VolumeType.id == vol.volume_type_id))
    extra = new_size - vol.size
    deltas = quota_engine.per_type_deltas({"gigabytes": extra}, type_name) if type_name else {"gigabytes": extra}
    if not vol.use_quota:  # a volume that counts for nothing (its usage was given back) grows for free
        deltas = {}
    try:
        uuids = quota_engine.reserve(session, vol.project_id, deltas, env.quota,
                                     expire=max(env.quota.reservation_expire, MIN_HOLD_SECONDS)) if deltas else []
    except errors.OverQuota as exc:
        quota_engine.raise_for_over_quota(exc, extra)
    previous, vol.status, vol.updated_at = vol.status, VolumeStatus.EXTENDING.value, utcnow()
    body = casts.flow_message(ctx.flow_id, name, casts.backend_queue(vol.host), vol.id, vol.project_id,
                              host=vol.host, new_size=new_size)
    return {"new_size": new_size, "reservations": uuids, "deltas": deltas, "project_id": vol.project_id,
            "previous_status": previous, "cast": casts.publish(env, casts.VOLUME_EXTEND, body, vol.id)}


def revert(session: Session, ctx: FlowContext, result: dict[str, Any], env: StepEnv) -> None:
    quota_engine.rollback(session, result["reservations"], scope=(result["project_id"], list(result["deltas"])))
    vol = session.get(Volume, ctx.volume_id, with_for_update=True)
    if vol is not None and vol.status == VolumeStatus.EXTENDING.value and not vol.deleted:
        vol.status = result["previous_status"]
