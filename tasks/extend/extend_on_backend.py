"""extend_on_backend: grow the volume on the backend and commit the extra gigabytes; `extending` -> `available`.

Requires: extend_request's record (new_size, reservations, deltas); env.driver and env.host
Provides: size; or driver_error / reservation_expired (why); or skipped (why)
Effect: the flow's reservations are committed, all of them or none (in a savepoint, taking the
    usage rows first like every quota change, so the sweeper's expiry waits or has gone first);
    then the driver grows the volume and the row gets its new size, `available`. The driver
    fails: the committed gigabytes are given back and the volume becomes `error_extending` with
    a user message (Cinder's outcome). A reservation expired meanwhile: the rest are rolled back,
    nothing is grown, the volume is `available` again with a user message. A volume no longer
    `extending` (deleted, reset): its reservations are rolled back, nothing else is done.
Reversion strategy: none; the flow's last step, whose outcomes are all recorded.
Redelivery: the record ends the flow; a second copy is replayed. Growing a file to a size is
    idempotent, so a crash before the commit redoes it safely.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from drivers.base import DriverError
from models import utcnow
from models.volume import Volume, VolumeStatus
from tasks import allocation, casts, errors, quota_engine, user_messages
from tasks.context import FlowContext
from tasks.runner import StepEnv

name = "extend_on_backend"


def _fail(session: Session, vol: Volume, status: str, detail: user_messages.Code) -> None:
    vol.status, vol.updated_at = status, utcnow()
    user_messages.record(session, project_id=vol.project_id, resource_type=user_messages.VOLUME,
                         resource_uuid=vol.id, action=user_messages.Action.EXTEND_VOLUME, detail=detail)


def run(session: Session, ctx: FlowContext, env: StepEnv) -> dict[str, Any]:
    uuids, deltas = ctx.results["reservations"], ctx.results["deltas"]
    scope = (ctx.results.get("project_id", ctx.project_id), list(deltas))
    vol = session.scalar(select(Volume).where(Volume.id == ctx.volume_id).with_for_update())
    if vol is None or vol.deleted or vol.status != VolumeStatus.EXTENDING.value:
        quota_engine.rollback(session, uuids, scope=scope)  # this flow's: nobody else will settle them
        return {"skipped": f"volume is {'missing' if vol is None else vol.status}"}
    if not casts.on_this_backend(vol.host, env):
        quota_engine.rollback(session, uuids, scope=scope)
        return {"skipped": f"volume is on {vol.host}, not {env.host}"}
    try:
        with session.begin_nested():  # all of them, or none (the usage rows first, as every quota change)
            if quota_engine.commit(session, uuids, scope=scope) != len(uuids):
                raise errors.ReservationExpired(volume_id=vol.id)
    except errors.ReservationExpired:
        quota_engine.rollback(session, uuids, scope=scope)
        _fail(session, vol, VolumeStatus.AVAILABLE.value, user_messages.Detail.QUOTA_EXCEED)
        return {"reservation_expired": True}
    new_size = ctx.results["new_size"]
    try:
        env.driver.extend_volume(vol.id, new_size)
    except DriverError as exc:
        quota_engine.release(session, scope[0], deltas)  # what the commit above just took
        _fail(session, vol, VolumeStatus.ERROR_EXTENDING.value, user_messages.Detail.DRIVER_FAILED_EXTEND)
        return {"driver_error": str(exc)[:500]}
    allocation.charge(session, vol.host, new_size - vol.size)
    vol.size, vol.status, vol.updated_at = new_size, VolumeStatus.AVAILABLE.value, utcnow()
    return {"size": new_size}


def revert(session: Session, ctx: FlowContext, result: dict[str, Any], env: StepEnv) -> None:
    """Never called: the flow's last step ends it with its record."""
