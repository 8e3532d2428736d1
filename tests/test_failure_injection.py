"""A failure at any point of the chain is compensated exactly once (docs/design.md, Failure and compensation).

Failures come from the request's `_inject` key, honoured because the test workers run with
VOLCHAIN_FAILURE_INJECTION=true: `before` the step's effect, `before_commit` (effect done,
transaction not committed) and `after_commit` (effect and record committed, then a raise).
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from models.flow_log import FlowRun
from models.quota import QuotaUsage, Reservation
from models.volume import Volume
from tasks.create.volume_cast import message_id
from tests import factories
from workers.outcome import KEY_PREFIX
from workers.steps import compensate_flow
from workers.submit import submit_create_volume, wait_for_flow

STEPS = ["extract_volume_request", "quota_reserve", "entry_create", "quota_commit", "volume_cast"]
SIZE = 3

# (step, when) -> steps recorded before the failure, and what becomes of the volume row.
CASES = {
    ("entry_create", "before"): (STEPS[:2], "absent"),
    ("entry_create", "before_commit"): (STEPS[:2], "absent"),
    ("entry_create", "after_commit"): (STEPS[:3], "deleted"),
    ("quota_commit", "before"): (STEPS[:3], "deleted"),
    ("quota_commit", "before_commit"): (STEPS[:3], "deleted"),
    ("quota_commit", "after_commit"): (STEPS[:4], "error"),
    ("volume_cast", "before"): (STEPS[:4], "error"),
    ("volume_cast", "before_commit"): (STEPS[:4], "error"),
}


def _state(db, sub) -> dict:
    """Everything a compensation could touch, for before/after comparisons."""
    with db() as s:
        flow = s.get(FlowRun, sub.flow_id)
        vol = s.scalar(select(Volume).where(Volume.id == sub.volume_id))
        return {
            "flow": (flow.state, flow.error, flow.failed_step, flow.finished_at),
            "steps": {name: (r["state"], r["reverted_at"]) for name, r in (flow.steps or {}).items()},
            "volume": None if vol is None else (vol.status, vol.deleted, vol.use_quota, vol.host, vol.updated_at),
            "usage": {u.resource: (u.in_use, u.reserved)
                      for u in s.scalars(select(QuotaUsage).where(QuotaUsage.project_id == flow.project_id))},
            "reservations": s.scalar(
                select(func.count()).select_from(Reservation).where(Reservation.project_id == flow.project_id)
            ),
        }


def _wait_for_compensation(redis_client, flow_id: str, timeout: float = 30) -> bytes:
    """Block until the compensation task of this flow announces its end state (it alone does, here)."""
    popped = redis_client.blpop([KEY_PREFIX + flow_id], timeout=timeout)
    assert popped is not None, f"no compensation of flow {flow_id} finished within {timeout}s"
    return popped[1]


@pytest.mark.parametrize(("step", "when"), list(CASES), ids=[f"{s}-{w}" for s, w in CASES])
def test_a_failure_is_compensated_and_returns_all_quota(
    workers, db, redis_client, project, check_invariant, step, when
):
    recorded, volume_fate = CASES[(step, when)]
    sub = submit_create_volume(factories.member(project), size=SIZE, _inject={"step": step, "when": when})
    out = wait_for_flow(sub.flow_id, timeout=30)

    assert out.state == "reverted"
    assert out.error == {"type": "InjectedFailure", "code": 500, "message": f"Injected failure in {step} ({when})."}
    st = _state(db, sub)
    assert st["flow"][2] == step
    assert st["flow"][3] is not None
    # Exactly the steps that took effect are in the log, and each one is reverted.
    assert set(st["steps"]) == set(recorded)
    for name, (state, reverted_at) in st["steps"].items():
        assert state == "reverted", name
        assert reverted_at is not None, name
    assert st["reservations"] == 0
    for resource in ("volumes", "gigabytes", "volumes___DEFAULT__", "gigabytes___DEFAULT__"):
        assert st["usage"].get(resource, (0, 0)) == (0, 0), resource

    if volume_fate == "absent":
        assert st["volume"] is None
    elif volume_fate == "deleted":
        status, deleted, _use_quota, _host, _ = st["volume"]
        assert (status, deleted) == ("deleted", True)
    else:  # quota was committed: the row is kept in error and no longer counts
        status, deleted, use_quota, host, _ = st["volume"]
        assert (status, deleted, use_quota) == ("error", False, False)
        assert host is None  # the cast's host update never committed
    if step != "volume_cast" or when == "before":
        assert factories.casts_for(redis_client, "scheduler", sub.volume_id) == []
    check_invariant(project)


def test_a_failure_after_the_cast_committed_leaves_the_flow_succeeded(
    workers, db, redis_client, project, check_invariant
):
    sub = submit_create_volume(
        factories.member(project), size=SIZE, _inject={"step": "volume_cast", "when": "after_commit"}
    )
    # The step's errback still runs a compensation; it must find the flow finished and leave it.
    assert _wait_for_compensation(redis_client, sub.flow_id) == b"succeeded"
    out = wait_for_flow(sub.flow_id, timeout=1)

    assert out.state == "succeeded"
    assert out.error is None
    assert out.cast["queue"] == "scheduler"
    st = _state(db, sub)
    assert st["steps"] == {name: ("done", None) for name in STEPS}
    status, deleted, use_quota, _host, _ = st["volume"]
    assert (status, deleted, use_quota) == ("creating", False, True)
    assert st["usage"]["volumes"] == (1, 0)
    assert st["usage"]["gigabytes"] == (SIZE, 0)
    assert st["reservations"] == 0
    assert len(factories.casts_for(redis_client, "scheduler", sub.volume_id)) == 1
    check_invariant(project)


def test_a_cast_published_before_a_failed_commit_names_a_volume_that_is_no_longer_creating(
    workers, db, redis_client, project, check_invariant
):
    """The publish is not transactional: a commit that fails after it leaves the message behind.

    docs/messages.md: a consumer checks that the volume is still `creating` before acting; here
    it is in `error` with its quota returned, and the message carries the flow's own id.
    """
    sub = submit_create_volume(
        factories.member(project), size=SIZE, _inject={"step": "volume_cast", "when": "before_commit"}
    )
    out = wait_for_flow(sub.flow_id, timeout=30)
    assert out.state == "reverted"
    assert out.cast is None
    msgs = factories.casts_for(redis_client, "scheduler", sub.volume_id)
    assert len(msgs) <= 1
    for msg in msgs:
        assert msg["args"][0]["flow_id"] == sub.flow_id
        assert msg["headers"]["id"] == message_id(sub.flow_id)
    status, deleted, use_quota, _host, _ = _state(db, sub)["volume"]
    assert (status, deleted, use_quota) == ("error", False, False)
    check_invariant(project)


@pytest.mark.parametrize(("step", "when"), [("quota_commit", "after_commit"), ("entry_create", "before")])
def test_compensating_a_reverted_flow_again_changes_nothing(
    workers, db, redis_client, project, check_invariant, step, when
):
    # Another live volume, so a second release of this flow's quota would show in usage.
    ok = submit_create_volume(factories.member(project), size=2)
    assert wait_for_flow(ok.flow_id, timeout=30).state == "succeeded"

    sub = submit_create_volume(factories.member(project), size=SIZE, _inject={"step": step, "when": when})
    assert _wait_for_compensation(redis_client, sub.flow_id) == b"reverted"
    before = _state(db, sub)
    assert before["flow"][0] == "reverted"
    assert before["usage"]["volumes"] == (1, 0)
    assert before["usage"]["gigabytes"] == (2, 0)

    compensate_flow.delay(sub.flow_id)
    assert _wait_for_compensation(redis_client, sub.flow_id) == b"reverted"

    assert _state(db, sub) == before
    check_invariant(project)
