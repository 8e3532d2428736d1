"""Deleting a volume whose create is still under way (Cinder: a volume with no host is deleted at
once, in any status). The create's steps are run one by one here, through the one runner, so the
delete lands at a chosen point; after each, whatever was charged is given back exactly once, the
rest of the create finds the flow stopped or the volume gone, and usage equals the rows.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from models.flow_log import FlowRun
from models.volume import Volume
from tasks import errors
from tasks.context import FlowContext
from tasks.create.flow import STEPS
from tasks.runner import flow_row, run_step
from tasks.schedule import flow as schedule_flow
from tests import factories
from workers import lifecycle
from workers.runtime import get_runtime


def _run_steps(ctx, upto: int):
    rt = get_runtime()
    for i, step in enumerate(STEPS[:upto]):
        run_step(rt.factory, step, ctx.flow_id, rt.env, final=i == len(STEPS) - 1)


def _flow(db, flow_id: str) -> FlowRun:
    with db() as session:
        return session.get(FlowRun, flow_id)


def _volume(db, volume_id: str) -> Volume | None:
    with db() as session:
        return session.get(Volume, volume_id)


@pytest.mark.parametrize("upto", [1, 2, 3, 4])  # stopped after extract, reserve, entry_create, commit
def test_delete_stops_a_running_create_and_gives_back_what_it_charged(db, project, check_invariant, upto):
    context = factories.member(project)
    ctx = factories.start_flow_directly(db, context, size=2, name="doomed")
    _run_steps(ctx, upto)
    started = lifecycle.delete_volume(context, ctx.volume_id)
    assert started.status == "deleted"
    flow = _flow(db, ctx.flow_id)
    assert flow.state == "reverted" and flow.error["type"] == "DeletedWhileCreating"
    vol = _volume(db, ctx.volume_id)
    assert vol is None or vol.deleted, "the volume is still there"
    rt = get_runtime()
    with pytest.raises(errors.FlowNotRunning):  # the next step of the chain finds the flow stopped
        run_step(rt.factory, STEPS[upto], ctx.flow_id, rt.env)
    check_invariant(project)


def test_delete_after_the_cast_and_the_scheduler_finds_the_volume_gone(db, project, check_invariant):
    context = factories.member(project)
    ctx = factories.start_flow_directly(db, context, size=3)
    _run_steps(ctx, len(STEPS))
    assert _flow(db, ctx.flow_id).state == "succeeded"
    with db() as session:
        usage_before = session.scalar(select(Volume.use_quota).where(Volume.id == ctx.volume_id))
    assert usage_before is True
    assert lifecycle.delete_volume(context, ctx.volume_id).status == "deleted"
    check_invariant(project)
    # The cast, still in the scheduler's queue, arrives now: it records a skip and gives nothing back.
    rt = get_runtime()
    cast = _flow(db, ctx.flow_id).steps["volume_cast"]["result"]["cast"]
    body = {"version": "1.0", "message_id": cast["message_id"], "flow_id": ctx.flow_id, "volume_id": ctx.volume_id,
            "project_id": project, "queue": "scheduler", "request_spec": {"size": 3}}
    done = run_step(rt.factory, schedule_flow.STEPS[0], cast["message_id"], replace(rt.env, publish=None),
                    final=True, context=FlowContext,
                    start=flow_row(cast["message_id"], schedule_flow.KIND, ctx.volume_id, project, None, body))
    assert done.results == {"skipped": "volume is deleted"}
    # A second delete of the same volume is a 404, and gives nothing back twice.
    with pytest.raises(errors.VolumeNotFound):
        lifecycle.delete_volume(context, ctx.volume_id)
    check_invariant(project)


def test_another_projects_running_create_cannot_be_stopped(db, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _run_steps(ctx, 3)
    with pytest.raises(errors.VolumeNotFound):
        lifecycle.delete_volume(factories.member("f" * 32), ctx.volume_id)
    assert _flow(db, ctx.flow_id).state == "running"
    _run_steps_from(ctx, 3)
    assert _flow(db, ctx.flow_id).state == "succeeded"
    lifecycle.delete_volume(factories.member(project), ctx.volume_id)
    check_invariant(project)


def _run_steps_from(ctx, start: int):
    rt = get_runtime()
    for i, step in enumerate(STEPS[start:], start):
        run_step(rt.factory, step, ctx.flow_id, rt.env, final=i == len(STEPS) - 1)
