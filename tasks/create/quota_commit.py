"""quota_commit: turn this flow's reservations into usage.

Requires: reservations, deltas (quota_reserve's record)
Provides: committed
Reversion strategy: give the committed usage back (Cinder's negative reserve + commit, as one
    step), and clear the volume's `use_quota`, so the row kept in `error` no longer counts.
Redelivery: the usage change and this step's record commit together; a repeat delivery
    commits nothing.
Expired reservations: if any reservation of the flow was expired meanwhile, the step fails
    (ReservationExpired) instead of committing a partial or unreserved amount.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from models import utcnow
from models.volume import Volume
from tasks import errors, quota_engine
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
    quota_engine.release(session, ctx.project_id, ctx.deltas or {})
    session.execute(
        update(Volume).where(Volume.id == ctx.volume_id).values(use_quota=False, updated_at=utcnow())
    )
