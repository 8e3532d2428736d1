"""The entry point web front ends call: submit a create, get ids at once, wait if you like."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models import utcnow
from models.db import engine_of
from models.flow_log import FlowRun, FlowState
from tasks import errors
from tasks.context import RequestContext
from tasks.create.flow import KIND, STEPS
from tasks.runner import compensate, record_failure
from workers import outcome
from workers.runtime import get_runtime

log = logging.getLogger(__name__)

REQUEST_KEYS = frozenset({
    "name", "display_name", "description", "display_description", "size", "volume_type",
    "snapshot_id", "source_volid", "imageRef", "image_id", "availability_zone", "metadata",
    "scheduler_hints", "multiattach", "consistencygroup_id", "group_id", "backup_id",
    "source_replica", "_inject",
})
MAX_REQUEST_BYTES = 64 * 1024
_INSERT_FLOW = FlowRun.__table__.insert()
MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True)
class Submission:
    flow_id: str
    volume_id: str
    replayed: bool = False  # an earlier submission with the same idempotency key


def _check_shape(request: dict[str, Any]) -> None:
    unknown = sorted(set(request) - REQUEST_KEYS)
    if unknown:
        raise errors.InvalidInput(reason=f"Unknown create option(s): {', '.join(unknown)}.")
    try:
        encoded = json.dumps(request)
    except (TypeError, ValueError) as exc:
        raise errors.InvalidInput(reason=f"The request is not JSON: {exc}.") from exc
    if len(encoded) > MAX_REQUEST_BYTES:
        raise errors.InvalidInput(reason=f"The request is larger than {MAX_REQUEST_BYTES} bytes.")


def submit_create_volume(
    context: RequestContext, *, idempotency_key: str | None = None, respond_async: bool = False, **request: Any
) -> Submission:
    """Record a create flow and start its chain; return the flow id and the volume id at once.

    With an `idempotency_key`, a repeated submission by the same project returns the first
    submission's ids instead of creating a second volume. `respond_async` marks a create whose
    caller was answered before the outcome: if it fails, the volume shows as `error`.
    """
    from workers.chain import build_create_chain

    _check_shape(request)
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise errors.InvalidInput(reason=f"Idempotency key must be 1 to {MAX_IDEMPOTENCY_KEY} characters.")
    rt = get_runtime()
    flow_id, volume_id = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        # A plain connection in autocommit: the insert is its own transaction (one round trip);
        # a concurrent submission with the same key loses on the unique constraint below.
        with engine_of(rt.factory).connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            if idempotency_key is not None:
                earlier = _find_by_key(conn, context.project_id, idempotency_key, request)
                if earlier is not None:
                    return earlier
            now = utcnow()
            conn.execute(_INSERT_FLOW, {
                "id": flow_id, "kind": KIND, "volume_id": volume_id, "project_id": context.project_id,
                "user_id": context.user_id, "idempotency_key": idempotency_key, "state": FlowState.RUNNING.value,
                "request": request, "steps": {}, "compensation_attempts": 0,
                "caller": {"roles": list(context.roles), "is_admin": context.is_admin, "respond_async": respond_async},
                "root_task_id": flow_id, "created_at": now, "progress_at": now,
            })
    except IntegrityError:
        with engine_of(rt.factory).connect() as conn:
            earlier = _find_by_key(conn, context.project_id, idempotency_key, request)
        if earlier is None:
            raise
        return earlier

    try:
        build_create_chain(flow_id, volume_id).apply_async()
    except Exception as exc:
        error = errors.SubmitFailed(volume_id=volume_id)
        log.error("flow %s: the chain could not be sent (%s: %s)", flow_id, type(exc).__name__, exc)
        record_failure(rt.factory, flow_id, None, error.to_dict())
        compensate(rt.factory, flow_id, STEPS, rt.env)  # nothing ran yet: this only closes the flow
        raise error from exc
    return Submission(flow_id, volume_id)


def _find_by_key(conn, project_id: str, key: str, request: dict[str, Any]) -> Submission | None:
    """The earlier submission with this key, if any. The key names one request: reused with a
    different one, it is refused (the IETF Idempotency-Key draft's 422), not answered with the
    first request's volume."""
    row = conn.execute(
        select(FlowRun.id, FlowRun.volume_id, FlowRun.request)
        .where(FlowRun.project_id == project_id, FlowRun.idempotency_key == key)
    ).first()
    if row is None:
        return None
    if row.request != request:
        raise errors.IdempotencyKeyReused()
    return Submission(row.id, row.volume_id, replayed=True)


def wait_for_flow(flow_id: str, timeout: float = 30.0) -> outcome.FlowOutcome:
    """Wait (without busy polling) until the flow has finished, or `timeout` seconds pass."""
    rt = get_runtime()
    return outcome.wait_for_flow(rt.factory, rt.settings.broker_url, flow_id, timeout)


def create_volume(context: RequestContext, *, timeout: float = 30.0, **request: Any) -> outcome.FlowOutcome:
    """Submit a create and wait for its outcome (convenience for scripts and the CLI)."""
    submission = submit_create_volume(context, **request)
    return wait_for_flow(submission.flow_id, timeout)
