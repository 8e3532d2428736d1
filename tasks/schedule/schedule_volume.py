"""schedule_volume: pick a backend for a new volume, record it, and cast the create there.

Requires: the scheduler's create message as the flow's request (volume_id, request_spec:
    size, volume_type.extra_specs, availability_zones, resource_backend)
Provides: host (`host@backend#pool`) and cast; or no_valid_backend (why); or skipped (why)
Effect: the volume row gets `host`, `availability_zone` and `scheduled_at`, and the create is
    cast to that backend's `volume.<host@backend>` queue (tasks/schedule/filters.py chooses).
    No backend passes the filters: the volume goes to `error`, its quota is given back (once:
    tasks/usage.release_volume), and a user message says why; that is this step's recorded
    outcome, not a failure (Cinder's NoValidBackend is not re-raised either).
    A volume that is no longer `creating`, was deleted, or has a host already: nothing is done.
Reversion strategy: none; a one-step flow whose outcomes are all recorded.
Redelivery: the flow's id comes from the message id (and queue), so a second copy of the cast
    finds this step recorded and does nothing; a crash between the cast and the commit re-sends
    the same message id, which the backend's flow drops as a duplicate (or, sent to another
    backend after a new choice, the first backend skips: the volume is not on it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from models import utcnow
from models.volume import Volume, VolumeStatus
from tasks import allocation, casts, usage, user_messages
from tasks.context import FlowContext
from tasks.runner import StepEnv
from tasks.schedule import filters

name = "schedule_volume"


_LOCK_VOLUME = (select(Volume.status, Volume.deleted, Volume.host, Volume.project_id, Volume.size)
                .where(Volume.id == bindparam("volume_id")).with_for_update())
_SET = update(Volume).where(Volume.id == bindparam("volume_id"))


def run(session: Session, ctx: FlowContext, env: StepEnv) -> dict[str, Any]:
    conn = session.connection()
    vol = conn.execute(_LOCK_VOLUME, {"volume_id": ctx.volume_id}).first()
    if vol is None or vol.deleted or vol.status != VolumeStatus.CREATING.value or vol.host:
        state = "missing" if vol is None else ("deleted" if vol.deleted else f"{vol.status}, host {vol.host}")
        return {"skipped": f"volume is {state}"}
    spec = ctx.request.get("request_spec") or {}
    found, why_not = filters.candidates(session, spec, env.service_down_time)
    now = utcnow()
    if not found:
        reason = f"No valid backend was found. {why_not}".strip()
        conn.execute(_SET.values(status=VolumeStatus.ERROR.value, error_message=reason[:255], updated_at=now),
                     {"volume_id": ctx.volume_id})
        usage.release_volume(session, ctx.volume_id)
        user_messages.record(session, project_id=vol.project_id, resource_type=user_messages.VOLUME,
                             resource_uuid=ctx.volume_id, action=user_messages.Action.SCHEDULE_ALLOCATE_VOLUME,
                             detail=user_messages.Detail.NO_BACKEND_AVAILABLE)
        return {"no_valid_backend": reason}
    best = found[0]
    conn.execute(_SET.values(host=best.backend_id, availability_zone=best.availability_zone, scheduled_at=now,
                             updated_at=now), {"volume_id": ctx.volume_id})
    allocation.charge(session, best.backend_id, vol.size)
    body = {**ctx.request, "message_id": casts.message_id(ctx.flow_id, name), "queue": casts.backend_queue(best.host),
            "host": best.backend_id, "allow_reschedule": False, "scheduled_by": ctx.flow_id,
            "sent_at": now.isoformat()}
    return {"host": best.backend_id, "cast": casts.publish(env, casts.VOLUME_CREATE, body, ctx.volume_id)}


def revert(session: Session, ctx: FlowContext, result: dict[str, Any], env: StepEnv) -> None:
    """Never called: this one-step flow ends with its record."""
