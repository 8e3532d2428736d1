"""quota_reserve: hold `volumes` and `gigabytes` (and the per-type resources) for one new volume.

Requires: project_id, spec.size, spec.volume_type_name
Provides: reservations (uuids), deltas (resource -> amount)
Reversion strategy: roll back this flow's reservations that are still pending. Once quota_commit
    committed them they are no longer pending, so this does nothing (quota_commit's own revert
    returns the committed usage).
Redelivery: the reservation uuids commit with this step's record; a repeat delivery returns them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from tasks import errors, quota_engine
from tasks.context import CreateContext
from tasks.runner import StepEnv

name = "quota_reserve"


def run(session: Session, ctx: CreateContext, env: StepEnv) -> dict[str, Any]:
    spec = ctx.spec or {}
    size = int(spec["size"])
    deltas = quota_engine.per_type_deltas({"volumes": 1, "gigabytes": size}, spec["volume_type_name"])
    # One read for every limit this create needs: the per-volume limit and the reservable ones.
    limits = quota_engine.get_limits(session, ctx.project_id, ["per_volume_gigabytes", *deltas], env.quota)
    try:
        quota_engine.limit_check(session, ctx.project_id, env.quota, limits=limits, per_volume_gigabytes=size)
    except errors.OverQuota as exc:
        raise errors.VolumeSizeExceedsLimit(size=size, limit=exc.quotas["per_volume_gigabytes"]) from exc
    del limits["per_volume_gigabytes"]
    try:
        uuids = quota_engine.reserve(session, ctx.project_id, deltas, env.quota, limits=limits)
    except errors.OverQuota as exc:
        quota_engine.raise_for_over_quota(exc, size)
    return {"reservations": uuids, "deltas": deltas}


def revert(session: Session, ctx: CreateContext, result: dict[str, Any], env: StepEnv) -> None:
    quota_engine.rollback(session, result["reservations"], scope=(ctx.project_id, list(result["deltas"])))
