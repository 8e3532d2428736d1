"""The invariant every test ends with: quota usage equals what the rows say."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.quota import QuotaUsage, Reservation
from tasks.quota_engine import QuotaConfig, sync_usage


def quota_drift(session: Session, project_id: str) -> dict[str, dict[str, tuple[int, int]]]:
    """Resources whose in_use or reserved differ from the rows: {res: {field: (stored, expected)}}."""
    drift: dict[str, dict[str, tuple[int, int]]] = {}
    config = QuotaConfig()
    pending = dict(
        session.execute(
            select(Reservation.resource, func.coalesce(func.sum(Reservation.delta), 0))
            .where(Reservation.project_id == project_id, Reservation.delta > 0)
            .group_by(Reservation.resource)
        ).all()
    )
    for usage in session.scalars(select(QuotaUsage).where(QuotaUsage.project_id == project_id)):
        expected_in_use = sync_usage(session, project_id, usage.resource, config)
        expected_reserved = int(pending.get(usage.resource, 0))
        bad = {}
        if usage.in_use != expected_in_use:
            bad["in_use"] = (usage.in_use, expected_in_use)
        if usage.reserved != expected_reserved:
            bad["reserved"] = (usage.reserved, expected_reserved)
        if bad:
            drift[usage.resource] = bad
    return drift


def assert_quota_consistent(session: Session, project_id: str) -> None:
    drift = quota_drift(session, project_id)
    assert not drift, f"quota drift for project {project_id}: {drift}"
