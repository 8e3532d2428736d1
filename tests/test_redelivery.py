"""Redelivered step messages have no double effect (acks_late means at-least-once delivery).

A chain applied twice delivers every step's message twice, to whichever worker child takes
it; the flow log makes the second delivery replay the first one's recorded result.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import func, select

from models.flow_log import FlowRun
from models.quota import QuotaUsage, Reservation
from models.volume import Volume
from tasks.context import CreateContext
from tests import factories
from workers.chain import build_create_chain
from workers.outcome import KEY_PREFIX
from workers.steps import STEP_TASKS
from workers.submit import submit_create_volume, wait_for_flow

STEPS = ["extract_volume_request", "quota_reserve", "entry_create", "quota_commit", "volume_cast"]
SIZE = 3


def _next_announcement(redis_client, flow_id: str, timeout: float = 30) -> bytes:
    """Block until a volume_cast (run or replay) or a compensation announces this flow's end."""
    popped = redis_client.blpop([KEY_PREFIX + flow_id], timeout=timeout)
    assert popped is not None, f"flow {flow_id} announced nothing within {timeout}s"
    return popped[1]


def _wait_until_broker_idle(redis_client, timeout: float = 30) -> None:
    """Bounded wait until no step or compensation message is queued or being worked on.

    With late acks a message sits in kombu's `unacked` hash from delivery until its task has
    finished (and published its successor or errback), so empty queues plus an empty hash,
    seen on consecutive reads, mean every copy of the chain has run to its end.
    """
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline:
        pipe = redis_client.pipeline(transaction=True)
        pipe.llen("volchain.steps").llen("volchain.compensate").hlen("unacked")
        quiet = quiet + 1 if not any(pipe.execute()) else 0
        if quiet >= 3:
            return
        time.sleep(0.05)
    pytest.fail(f"step/compensation messages still in flight after {timeout}s")


def _snapshot(db, project: str, flow_id: str) -> dict:
    with db() as s:
        flow = s.get(FlowRun, flow_id)
        return {
            "flow": (flow.state, flow.error, flow.finished_at),
            "steps": {name: (r["state"], r["result"], r["done_at"], r["reverted_at"])
                      for name, r in (flow.steps or {}).items()},
            "volumes": [(v.id, v.status, v.deleted, v.use_quota, v.host)
                        for v in s.scalars(select(Volume).where(Volume.project_id == project).order_by(Volume.id))],
            "usage": {u.resource: (u.in_use, u.reserved)
                      for u in s.scalars(select(QuotaUsage).where(QuotaUsage.project_id == project))},
            "reservations": s.scalar(
                select(func.count()).select_from(Reservation).where(Reservation.project_id == project)
            ),
        }


def _assert_one_created_volume(db, redis_client, project: str, ctx: CreateContext) -> dict:
    snap = _snapshot(db, project, ctx.flow_id)
    assert snap["flow"][0] == "succeeded"
    assert snap["flow"][1] is None
    assert sorted(snap["steps"]) == sorted(STEPS)
    assert all(state == "done" for state, *_ in snap["steps"].values())
    assert snap["volumes"] == [(ctx.volume_id, "creating", False, True, None)]
    assert snap["usage"]["volumes"] == (1, 0)
    assert snap["usage"]["gigabytes"] == (SIZE, 0)
    assert snap["usage"]["volumes___DEFAULT__"] == (1, 0)
    assert snap["usage"]["gigabytes___DEFAULT__"] == (SIZE, 0)
    assert snap["reservations"] == 0
    assert len(factories.casts_for(redis_client, "scheduler", ctx.volume_id)) == 1
    return snap


def test_every_step_delivered_twice_creates_one_volume_and_charges_quota_once(
    workers, db, redis_client, project, check_invariant
):
    ctx = factories.start_flow_directly(db, factories.member(project), size=SIZE, name="twice")
    flow = build_create_chain(ctx.flow_id, ctx.volume_id)
    flow.apply_async()
    flow.apply_async()

    # Each copy ends with a volume_cast (the first sends, the second replays) that announces the end.
    first = _next_announcement(redis_client, ctx.flow_id)
    out = wait_for_flow(ctx.flow_id, timeout=1)
    assert (first, out.state) == (b"succeeded", "succeeded"), out.error
    assert _next_announcement(redis_client, ctx.flow_id) == b"succeeded"

    _assert_one_created_volume(db, redis_client, project, ctx)
    with db() as s:
        rows = len(s.get(FlowRun, ctx.flow_id).steps or {})
    assert rows == 5
    check_invariant(project)


@pytest.mark.parametrize("step", STEPS)
def test_a_step_resent_after_the_flow_succeeded_has_no_effect(
    workers, db, redis_client, project, check_invariant, step
):
    ctx = factories.start_flow_directly(db, factories.member(project), size=SIZE)
    build_create_chain(ctx.flow_id, ctx.volume_id).apply_async()
    assert _next_announcement(redis_client, ctx.flow_id) == b"succeeded"
    before = _assert_one_created_volume(db, redis_client, project, ctx)

    # Re-send the step alone; volume_cast is linked after it so its replay announces that the step ran.
    task = STEP_TASKS[step]
    link = None if step == "volume_cast" else STEP_TASKS["volume_cast"].s()
    task.apply_async(args=[ctx.flow_id], link=link)  # a step's message is its flow id
    assert _next_announcement(redis_client, ctx.flow_id) == b"succeeded"

    assert _snapshot(db, project, ctx.flow_id) == before
    assert len(factories.casts_for(redis_client, "scheduler", ctx.volume_id)) == 1
    check_invariant(project)


def test_a_whole_chain_resent_after_success_changes_nothing(workers, db, redis_client, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=SIZE)
    build_create_chain(ctx.flow_id, ctx.volume_id).apply_async()
    assert _next_announcement(redis_client, ctx.flow_id) == b"succeeded"
    before = _assert_one_created_volume(db, redis_client, project, ctx)

    build_create_chain(ctx.flow_id, ctx.volume_id).apply_async()
    assert _next_announcement(redis_client, ctx.flow_id) == b"succeeded"

    assert _snapshot(db, project, ctx.flow_id) == before
    check_invariant(project)


@pytest.mark.parametrize(("step", "when"), [("quota_commit", "before"), ("volume_cast", "before")])
def test_a_failing_flow_delivered_twice_is_compensated_once(
    workers, db, redis_client, project, check_invariant, step, when
):
    # A live volume of the same project: a second release of quota would eat into its usage.
    ok = submit_create_volume(factories.member(project), size=2)
    assert wait_for_flow(ok.flow_id, timeout=30).state == "succeeded"

    ctx = factories.start_flow_directly(db, factories.member(project), size=SIZE,
                                        _inject={"step": step, "when": when})
    flow = build_create_chain(ctx.flow_id, ctx.volume_id)
    flow.apply_async()
    flow.apply_async()

    assert _next_announcement(redis_client, ctx.flow_id) == b"reverted"
    # The other copy either failed too (its compensation finds the flow reverted) or was
    # dropped at the failed step (the flow was no longer running): wait for it either way.
    _wait_until_broker_idle(redis_client)

    out = wait_for_flow(ctx.flow_id, timeout=1)
    assert out.state == "reverted"
    assert out.error["type"] == "InjectedFailure"
    snap = _snapshot(db, project, ctx.flow_id)
    recorded = STEPS[: STEPS.index(step)]
    assert {name: state for name, (state, *_rest) in snap["steps"].items()} == {n: "reverted" for n in recorded}
    assert snap["usage"]["volumes"] == (1, 0)
    assert snap["usage"]["gigabytes"] == (2, 0)
    assert snap["usage"]["volumes___DEFAULT__"] == (1, 0)
    assert snap["usage"]["gigabytes___DEFAULT__"] == (2, 0)
    assert snap["reservations"] == 0
    failed = [v for v in snap["volumes"] if v[0] == ctx.volume_id]
    if step == "quota_commit":  # never committed: the row is soft-deleted
        assert [(status, deleted) for _id, status, deleted, _q, _h in failed] == [("deleted", True)]
    else:  # committed, then returned: the row is kept in error without quota
        assert [(status, deleted, use_quota) for _id, status, deleted, use_quota, _h in failed] == [
            ("error", False, False)
        ]
    assert factories.casts_for(redis_client, "scheduler", ctx.volume_id) == []
    check_invariant(project)


def test_a_step_message_queued_by_the_previous_release_still_runs(workers, db, redis_client, project, check_invariant):
    """Before messages carried only the flow id, a step's argument was the whole context (a dict)."""
    ctx = factories.start_flow_directly(db, factories.member(project), size=SIZE)
    flow = build_create_chain(ctx.flow_id, ctx.volume_id)
    flow.tasks[0].args = ({"flow_id": ctx.flow_id, "volume_id": ctx.volume_id, "project_id": project,
                           "request": {"size": SIZE}},)
    flow.apply_async()
    assert _next_announcement(redis_client, ctx.flow_id) == b"succeeded"
    _assert_one_created_volume(db, redis_client, project, ctx)
    check_invariant(project)
