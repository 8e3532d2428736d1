"""quota_commit: turn this flow's reservations into usage.

Requires: reservations, deltas (quota_reserve's record)
Provides: committed
Reversion strategy: give the committed usage back (Cinder's negative reserve + commit, as one
    step), and clear the volume's `use_quota`, so the row kept in `error` no longer counts; both
    once (tasks/usage.release_volume), also when a delete gave the usage back first. Only while
    the volume is still `creating`: one a scheduler or volume service took over (its cast went
    out before a crash stopped this flow) keeps its usage; they own it now.
Redelivery: the usage change and this step's record commit together; a repeat delivery
    commits nothing.
Expired reservations: if any reservation of the flow was expired meanwhile, the step fails
    (ReservationExpired) instead of committing a partial or unreserved amount.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.volume import Volume, VolumeStatus
from tasks import errors, quota_engine, usage
from tasks.context import CreateContext
from tasks.runner import StepEnv

name = "quota_commit"


def run(session: Session, ctx: CreateContext, env: StepEnv) -> dict[str, Any]:
    reservations = ctx.reservations or []
    committed = quota_engine.commit(session, reservations, scope=(ctx.project_id, list(ctx.deltas or {})))
    if committed != len(reservations):
        raise errors.ReservationExpired(volume_id=ctx.volume_id)
    return {"committed": True}


def revert(session: Session, ctx: CreateContext, result: dict[str, Any], env: StepEnv) -> None:
    status = session.scalar(select(Volume.status).where(Volume.id == ctx.volume_id).with_for_update())
    if status not in (None, VolumeStatus.CREATING.value, VolumeStatus.DELETED.value):
        return  # handed over: the consumer owns the volume and its usage
    usage.release_volume(session, ctx.volume_id, ctx.deltas or {})
