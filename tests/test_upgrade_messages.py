"""Flows in flight across an upgrade: a worker of this release finishes a chain whose messages were
queued by the release that passed the whole context as the step's argument (not just its id).
The rule (docs/messages.md): step messages carry the flow id, and a step reads everything else
from the flow log, so an older message needs only its flow id; a cast carries `version`, and a
consumer refuses a major version it does not know."""

from __future__ import annotations

from celery import chain

from tasks.create.flow import STEP_NAMES
from tests import factories
from workers.steps import STEP_TASKS, compensate_flow
from workers.submit import wait_for_flow


def test_a_chain_queued_with_the_whole_context_is_finished(workers, db, redis_client, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=1, name="queued-before-upgrade")
    old_argument = {"flow_id": ctx.flow_id, "volume_id": ctx.volume_id, "project_id": project,
                    "request": ctx.request, "spec": None}
    first, *rest = STEP_NAMES
    flow = chain(STEP_TASKS[first].s(old_argument), *(STEP_TASKS[name].s() for name in rest))
    flow.on_error(compensate_flow.si(ctx.flow_id))
    flow.apply_async()
    out = wait_for_flow(ctx.flow_id, timeout=30)
    assert out.state == "succeeded", out.error
    assert factories.casts_for(redis_client, "scheduler", ctx.volume_id), "the finished chain cast nothing"
    check_invariant(project)


def test_a_cast_of_an_unknown_major_version_is_refused(db, project):
    import pytest

    from tasks import errors
    from workers.consumers import _check_version

    _check_version({"version": "1.7"})  # a later minor version: fields added, none changed
    with pytest.raises(errors.InvalidInput, match="message version '2.0' is not supported"):
        _check_version({"version": "2.0"})
