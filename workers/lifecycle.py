"""What the API and the CLI call to delete, snapshot and extend: each starts a flow and runs its first step here.

Each call runs the flow's request step in this process, through the one runner, in the
transaction that inserts the flow row (tasks/runner.run_flow): a request the rules refuse raises
Cinder's error and leaves nothing behind; an accepted one is recorded and cast to the volume's
volume service, which runs the flow's last step. The answer comes back as soon as the cast is
sent, as in Cinder (202).

Deleting a volume whose create flow is still under way stops that flow first: it is marked
failed and compensated here (its reservations rolled back or its committed usage given back,
exactly once), and the delete then finds a row with nothing left to give back.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from models.flow_log import FlowRun, FlowState
from models.snapshot import Snapshot
from tasks import errors
from tasks.context import RequestContext
from tasks.lookups import is_uuid_like
from tasks.create.flow import STEPS as CREATE_STEPS
from tasks.delete import flow as delete_flow
from tasks.extend import flow as extend_flow
from tasks.runner import compensate, flow_row, record_failure, run_flow
from tasks.snapshot import flow as snapshot_flow
from workers import outcome
from workers.runtime import get_runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    """An accepted request: its flow, and what the caller may show at once."""

    flow_id: str
    volume_id: str
    status: str
    results: dict[str, Any] = field(default_factory=dict)
    snapshot_id: str | None = None


def _caller(context: RequestContext) -> dict[str, Any]:
    return {"roles": list(context.roles), "is_admin": context.is_admin}


def _start(context: RequestContext, kind: str, steps, flow_steps, volume_id: str, request: dict[str, Any]):
    rt = get_runtime()
    flow_id = str(uuid.uuid4())
    start = flow_row(flow_id, kind, volume_id, context.project_id, context.user_id, request, _caller(context))
    return flow_id, run_flow(rt.factory, steps, flow_id, rt.env, flow_steps=flow_steps, start=start)


def stop_create(context: RequestContext, volume_id: str) -> bool:
    """Stop the caller's create flow of this volume if it is still running or compensating;
    True if there was one. Its compensation returns whatever it charged, once (and leaves alone
    a volume a scheduler or volume service has taken over). A create parked as needs_attention
    is an operator's to resolve: the delete is refused (409) until then."""
    rt = get_runtime()
    query = select(FlowRun.id, FlowRun.state).where(
        FlowRun.volume_id == volume_id, FlowRun.kind == "create_volume",
        FlowRun.state.in_([FlowState.RUNNING.value, FlowState.COMPENSATING.value, FlowState.NEEDS_ATTENTION.value]))
    if not context.is_admin:
        query = query.where(FlowRun.project_id == context.project_id)
    with rt.factory() as session:
        found = session.execute(query).first()
    if found is None:
        return False
    if found.state == FlowState.NEEDS_ATTENTION.value:
        raise errors.CreateNeedsAttention(volume_id=volume_id, flow_id=found.id)
    error = errors.DeletedWhileCreating(volume_id=volume_id)
    record_failure(rt.factory, found.id, None, error.to_dict())
    state = compensate(rt.factory, found.id, CREATE_STEPS, rt.env)
    try:  # a POST still waiting for this create hears now, not at its fallback poll
        outcome.notify(rt.settings.broker_url, found.id, state)
    except Exception:
        log.warning("flow %s: could not announce its end", found.id, exc_info=True)
    return True


def delete_volume(context: RequestContext, volume_id: str, cascade: bool = False, force: bool = False) -> Started:
    """Delete a volume (Cinder's rules); `deleted` at once when it never reached a backend."""
    if not is_uuid_like(volume_id):
        raise errors.VolumeNotFound(volume_id=volume_id)
    stopped = stop_create(context, volume_id)
    try:
        flow_id, ctx = _start(context, delete_flow.KIND, delete_flow.REQUEST_STEPS, delete_flow.STEPS, volume_id,
                              {"cascade": bool(cascade), "force": bool(force)})
    except errors.VolumeNotFound:
        if stopped:  # its create was stopped before its row existed (or the stop removed the row)
            return Started(flow_id="", volume_id=volume_id, status="deleted")
        raise
    status = "deleted" if ctx.results.get("deleted_at_once") else "deleting"
    return Started(flow_id=flow_id, volume_id=volume_id, status=status, results=ctx.results)


def create_snapshot(context: RequestContext, volume_id: str, name: str | None = None,
                    description: str | None = None, force: bool = False,
                    metadata: dict[str, str] | None = None) -> Started:
    if not is_uuid_like(volume_id):
        raise errors.VolumeNotFound(volume_id=volume_id)
    snapshot_id = str(uuid.uuid4())
    request = {"snapshot_id": snapshot_id, "name": name, "description": description, "force": bool(force),
               "metadata": metadata}
    flow_id, ctx = _start(context, snapshot_flow.CREATE_KIND, snapshot_flow.CREATE_STEPS[:1],
                          snapshot_flow.CREATE_STEPS, volume_id, request)
    return Started(flow_id=flow_id, volume_id=volume_id, status="creating", results=ctx.results,
                   snapshot_id=snapshot_id)


def delete_snapshot(context: RequestContext, snapshot_id: str) -> Started:
    if not is_uuid_like(snapshot_id):
        raise errors.SnapshotNotFound(snapshot_id=snapshot_id)
    rt = get_runtime()
    query = select(Snapshot.volume_id).where(Snapshot.id == snapshot_id, Snapshot.deleted.is_(False))
    if not context.is_admin:
        query = query.where(Snapshot.project_id == context.project_id)
    with rt.factory() as session:
        volume_id = session.scalar(query)
    if volume_id is None:
        raise errors.SnapshotNotFound(snapshot_id=snapshot_id)
    flow_id, ctx = _start(context, snapshot_flow.DELETE_KIND, snapshot_flow.DELETE_STEPS[:1],
                          snapshot_flow.DELETE_STEPS, volume_id, {"snapshot_id": snapshot_id})
    return Started(flow_id=flow_id, volume_id=volume_id, status="deleting", results=ctx.results,
                   snapshot_id=snapshot_id)


def extend_volume(context: RequestContext, volume_id: str, new_size: int) -> Started:
    if not is_uuid_like(volume_id):
        raise errors.VolumeNotFound(volume_id=volume_id)
    flow_id, ctx = _start(context, extend_flow.KIND, extend_flow.STEPS[:1], extend_flow.STEPS, volume_id,
                          {"new_size": int(new_size)})
    return Started(flow_id=flow_id, volume_id=volume_id, status="extending", results=ctx.results)


