"""quota_commit: turn this flow's reservations into usage.

Requires: reservations, deltas
Provides: committed
Reversion strategy: give the committed usage back (Cinder's negative reserve + commit, as one
    step), and clear the volume's `use_quota`, so the row kept in `error` no longer counts.
Redelivery: the usage change and this step's record commit together.
Expired reservations: if any reservation of the flow was expired meanwhile, the step fails
    (ReservationExpired) instead of committing a partial or unreserved amount.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, update
from sqlalchemy.orm import Session

from models import utcnow
from models.flow_log import FlowRun
from models.volume import Volume
from tasks import errors, quota_engine
from tasks.context import CreateContext
from tasks.runner import StepCall, StepEnv

name = "quota_commit"


class ReservationExpired(errors.VolchainError):
    message = "The quota reservation of volume %(volume_id)s expired before it was committed."


def run(session: Session, ctx: CreateContext, env: StepEnv) -> dict[str, Any]:
    reservations = ctx.reservations or []
    committed = quota_engine.commit(session, reservations, scope=(ctx.project_id, list(ctx.deltas or {})))
    if committed != len(reservations):
        raise ReservationExpired(volume_id=ctx.volume_id)
    return {"committed": True}


_CALL = (
    "SELECT volchain_quota_commit(%(flow_id)s, %(step)s, %(record)s, %(now)s, %(project_id)s, "
    "%(resources)s::text[], %(uuids)s::text[])"
)


def prepare_call(conn: Connection, ctx: CreateContext, env: StepEnv) -> StepCall:
    """PostgreSQL: the same commit as `run`, as one call."""
    return StepCall(_CALL, {"project_id": ctx.project_id, "resources": list(ctx.deltas or {}),
                            "uuids": list(ctx.reservations or [])}, {"committed": True})


def plan(ctx: CreateContext, env: StepEnv) -> dict[str, Any]:
    """PostgreSQL: planned by extract_volume_request (migration 0005). The reservations and
    resources to commit are read from quota_reserve's record when the step runs, whichever
    path reserved them; only the result is planned."""
    return {"provided": {"committed": True}}


def on_status(answer: dict[str, Any], ctx: CreateContext, call: StepCall) -> None:
    if answer["status"] == "expired":
        raise ReservationExpired(volume_id=ctx.volume_id)


def revert(session: Session, flow: FlowRun, records: dict[str, dict], env: StepEnv) -> None:
    deltas = records["quota_reserve"]["deltas"]
    quota_engine.release(session, flow.project_id, deltas)
    session.execute(
        update(Volume).where(Volume.id == flow.volume_id).values(use_quota=False, updated_at=utcnow())
    )
