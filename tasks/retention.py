"""Retention: keep the flow log bounded by deleting finished flows once they are old enough.

A flow is pruned when it ended `succeeded` or `reverted` more than `retention_seconds` ago and,
if its create carried an idempotency key, the key is no longer honoured: the flow was created
more than `idempotency_seconds` ago (a repeated submission within that time must still find it).
`needs_attention` flows are never pruned (an operator has to see them), nor unfinished ones.
Deletes run in batches, each its own short transaction, until none is left.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from models import utcnow
from models.flow_log import FlowRun, FlowState

PRUNABLE = (FlowState.SUCCEEDED.value, FlowState.REVERTED.value)


def prune(factory: sessionmaker[Session], retention_seconds: int, idempotency_seconds: int, batch: int) -> int:
    """Delete finished flows past their retention, `batch` per statement; return how many."""
    now = utcnow()
    prunable = (
        select(FlowRun.id)
        .where(FlowRun.state.in_(PRUNABLE),
               FlowRun.finished_at < now - timedelta(seconds=retention_seconds),
               or_(FlowRun.idempotency_key.is_(None),
                   FlowRun.created_at < now - timedelta(seconds=idempotency_seconds)))
        .limit(batch)
    )
    statement = delete(FlowRun).where(FlowRun.id.in_(prunable.scalar_subquery()))
    pruned = 0
    while True:
        with factory.begin() as session:
            deleted = session.execute(statement, execution_options={"synchronize_session": False}).rowcount
        pruned += deleted
        if deleted < batch:
            return pruned
