"""quota_reserve: hold `volumes` and `gigabytes` (and the per-type resources) for one new volume.

Requires: project_id, spec.size, spec.volume_type_name
Provides: reservations (uuids), deltas (resource -> amount)
Reversion strategy: roll back this flow's pending reservations; nothing once quota_commit
    has recorded success (its own revert returns the committed usage).
Redelivery: the reservation uuids commit with this step's record; a repeat delivery returns them.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from models.flow_log import FlowRun
from tasks import errors, quota_engine
from tasks.context import CreateContext
from tasks.runner import StepCall, StepEnv

name = "quota_reserve"


def _deltas(ctx: CreateContext) -> tuple[int, dict[str, int]]:
    spec = ctx.spec or {}
    size = int(spec["size"])
    return size, quota_engine.per_type_deltas({"volumes": 1, "gigabytes": size}, spec["volume_type_name"])


def run(session: Session, ctx: CreateContext, env: StepEnv) -> dict[str, Any]:
    size, deltas = _deltas(ctx)
    # One read for every limit this create needs: the per-volume limit and the reservable ones.
    limits = quota_engine.get_limits(session, ctx.project_id, ["per_volume_gigabytes", *deltas], env.quota)
    per_volume = limits.pop("per_volume_gigabytes")
    if 0 <= per_volume < size:  # Cinder's limit_check(per_volume_gigabytes=size)
        raise errors.VolumeSizeExceedsLimit(size=size, limit=per_volume)
    try:
        uuids = quota_engine.reserve(session, ctx.project_id, deltas, env.quota, limits=limits)
    except errors.OverQuota as exc:
        quota_engine.raise_for_over_quota(exc, size)
    return {"reservations": uuids, "deltas": deltas}


_CALL = (
    "SELECT volchain_quota_reserve(%(flow_id)s, %(step)s, %(record)s, %(now)s, %(project_id)s, "
    "%(resources)s::text[], %(deltas)s::bigint[], %(defaults)s::bigint[], %(uuids)s::text[], %(expire)s, "
    "%(size)s, %(per_volume_default)s)"
)


def _call(ctx: CreateContext, env: StepEnv) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The inputs of the one-call reservation and the result it records; None when the Python
    engine must reserve (usage refreshes: until_refresh, max_age)."""
    if not use_plan(env):
        return None
    size, deltas = _deltas(ctx)
    names = list(deltas)
    defaults = env.quota.defaults
    params = {"resources": names, "deltas": list(deltas.values()), "defaults": [defaults.get(n, -1) for n in names],
              "size": size, "per_volume_default": defaults.get("per_volume_gigabytes", -1)}
    return params, {"reservations": [str(uuid.uuid4()) for _ in names], "deltas": deltas}


def prepare_call(conn: Connection, ctx: CreateContext, env: StepEnv) -> StepCall | None:
    """PostgreSQL: the same limit check and reservation as `run`, as one call. Usage refreshes
    (until_refresh, max_age) and a project's first usage rows stay with the Python engine."""
    call = _call(ctx, env)
    if call is None:
        return None
    params, provided = call
    return StepCall(_CALL, {**params, "project_id": ctx.project_id, "uuids": provided["reservations"],
                            "expire": quota_engine.reservation_deadline(env.quota)}, provided)


def plan(ctx: CreateContext, env: StepEnv) -> dict[str, Any] | None:
    """PostgreSQL: the same call, planned by extract_volume_request (migration 0005); the
    reservations expire `reservation_expire` seconds after the step runs."""
    expire = env.quota.reservation_expire
    call = _call(ctx, env)
    if call is None or not isinstance(expire, int) or isinstance(expire, bool):
        return None
    params, provided = call
    return {"params": {**params, "expire_seconds": expire}, "provided": provided}


def use_plan(env: StepEnv) -> bool:
    """Whether this worker may reserve in one call, prepared by itself or planned by whichever
    worker ran extract_volume_request: not when its quota engine refreshes usage."""
    return not (env.quota.until_refresh or env.quota.max_age)


def on_status(answer: dict[str, Any], ctx: CreateContext, call: StepCall) -> None:
    """Cinder's error for a refused reservation."""
    status = answer["status"]
    size = call.params["size"]
    if status == "per_volume":
        raise errors.VolumeSizeExceedsLimit(size=size, limit=answer["limit"])
    if status == "overflow":
        raise errors.QuotaUsageOverflow(resource=answer["resource"], limit=quota_engine.INT_MAX)
    if status == "over":
        usages = {n: {"in_use": u["in_use"], "reserved": u["reserved"]} for n, u in answer["usages"].items()}
        try:
            quota_engine.check_limits(call.provided["deltas"], answer["limits"], usages)
        except errors.OverQuota as exc:
            quota_engine.raise_for_over_quota(exc, size)


def revert(session: Session, flow: FlowRun, records: dict[str, dict], env: StepEnv) -> None:
    if "quota_commit" in records:
        return
    quota_engine.rollback(session, records[name]["reservations"],
                          scope=(flow.project_id, list(records[name]["deltas"])))
