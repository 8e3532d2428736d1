"""The planned and one-call paths (PostgreSQL step functions, migrations 0004 and 0005) against
the transactional path.

On PostgreSQL extract_volume_request, quota_reserve, entry_create and quota_commit run as one
call each: after an unlocked read of the flow row (one call), or, for the chain's tasks, with
the call extract_volume_request planned and no read at all (planned). These tests run the same
flows every way and compare what they leave, and check the cases the functions hand back:
Cinder's errors, the fall-backs, and a step whose flow row changed after it was read.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from sqlalchemy import select

from models.db import engine_of
from models.flow_log import FlowRun
from models.quota import QuotaUsage, Reservation
from models.volume import Volume, VolumeMetadata
from tasks import errors, quota_engine, quota_reserve, step_tx
from tasks.flow import STEPS
from tasks.runner import FlowNotRunning, record_failure, run_step
from tests import factories
from workers.runtime import get_runtime

EXTRACT, RESERVE, ENTRY, COMMIT, CAST = STEPS
# path -> (step functions on, run_step's context): the chain's tasks ask for no context back.
PATHS = {"planned": (True, False), "one call": (True, True), "transactional": (False, True)}


def _env(path: str, **changes):
    return dataclasses.replace(get_runtime().env, step_functions=PATHS[path][0], **changes)


def _step(db, step, ctx, env, path: str, final: bool = False):
    return run_step(db, step, ctx.flow_id, env, final=final, context=PATHS[path][1])


def _run(db, ctx, env, steps=STEPS, path: str = "one call"):
    for step in steps:
        _step(db, step, ctx, env, path, final=step is STEPS[-1])


def _usages(db, project: str) -> dict[str, tuple[int, int]]:
    with db() as s:
        return {u.resource: (u.in_use, u.reserved)
                for u in s.scalars(select(QuotaUsage).where(QuotaUsage.project_id == project))}


def _pending(db, project: str) -> int:
    with db() as s:
        return len(s.scalars(select(Reservation.id).where(Reservation.project_id == project)).all())


def _warm(db, project: str, env, path: str = "one call") -> None:
    """One create first, so the project's usage rows exist (a first create is always transactional)."""
    _run(db, factories.start_flow_directly(db, factories.member(project), size=1), env, path=path)


def _volume_view(db, volume_id: str) -> dict:
    skip = {"id", "project_id", "created_at", "updated_at", "scheduled_at"}
    with db() as s:
        vol = s.get(Volume, volume_id)
        row = {c.key: getattr(vol, c.key) for c in Volume.__table__.columns if c.key not in skip}
        row["metadata"] = [(m.key, m.value) for m in s.scalars(
            select(VolumeMetadata).where(VolumeMetadata.volume_id == volume_id).order_by(VolumeMetadata.id))]
    return row


def test_both_paths_leave_the_same_volume_quota_and_records(db, check_invariant):
    views = {}
    for label in PATHS:
        project = f"paths-{label.replace(' ', '-')}-{id(views)}"
        env = _env(label)
        _warm(db, project, env, label)
        ctx = factories.start_flow_directly(db, factories.member(project), size=3, name="both", description="d",
                                            metadata={"zeta": "1", "alpha": "2", "mid": "3"})
        _run(db, ctx, env, path=label)
        with db() as s:
            flow = s.get(FlowRun, ctx.flow_id)
            records = {name: (list(rec), list(rec["result"])) for name, rec in flow.steps.items()}  # in order
            reserved = flow.steps["quota_reserve"]["result"]
            views[label] = {"volume": _volume_view(db, ctx.volume_id), "usages": _usages(db, project),
                            "state": flow.state, "records": records, "deltas": reserved["deltas"],
                            "reservations": len(reserved["reservations"]), "pending": _pending(db, project)}
        check_invariant(project)
    one, other = views["one call"], views["transactional"]
    assert {k: (v, other["volume"][k]) for k, v in one["volume"].items() if v != other["volume"][k]} == {}
    assert one == other
    assert views["planned"] == other
    assert one["state"] == "succeeded" and one["pending"] == 0
    assert one["volume"]["metadata"] == [("zeta", "1"), ("alpha", "2"), ("mid", "3")]  # the order given
    assert one["usages"]["gigabytes"] == (4, 0) and one["usages"]["volumes"] == (2, 0)


def test_a_projects_first_create_reserves_in_python_and_later_ones_in_one_call(db, project, monkeypatch,
                                                                             check_invariant):
    calls = []
    real = quota_reserve.run
    monkeypatch.setattr(quota_reserve, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    env = _env("one call")
    _warm(db, project, env)  # no usage rows yet: the function answers `slow`
    assert calls == [1]
    ctx = factories.start_flow_directly(db, factories.member(project), size=2)
    _run(db, ctx, env)
    assert calls == [1]  # the rows exist now: one call did it
    assert _usages(db, project)["gigabytes"] == (3, 0)
    check_invariant(project)


def test_usage_refresh_settings_keep_the_reservation_in_python(db, project, monkeypatch, check_invariant):
    env = _env("one call")
    _warm(db, project, env)
    calls = []
    real = quota_reserve.run
    monkeypatch.setattr(quota_reserve, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    refreshing = _env("one call", quota=dataclasses.replace(env.quota, until_refresh=5))
    _run(db, factories.start_flow_directly(db, factories.member(project), size=1), refreshing)
    assert calls == [1]
    check_invariant(project)


@pytest.mark.parametrize("limits, size, error", [
    ({"volumes": 1}, 1, errors.VolumeLimitExceeded),
    ({"gigabytes": 3}, 3, errors.VolumeSizeExceedsAvailableQuota),
    ({"gigabytes___DEFAULT__": 2}, 2, errors.VolumeSizeExceedsAvailableQuota),
    ({"per_volume_gigabytes": 4}, 5, errors.VolumeSizeExceedsLimit),
])
def test_a_refused_reservation_gives_the_same_cinder_error_on_both_paths(db, check_invariant, limits, size, error):
    messages = {}
    for label in PATHS:
        project = f"over-{label.replace(' ', '-')}-{error.__name__}-{size}"
        env = _env(label)
        _warm(db, project, env, label)
        factories.set_quota(db, project, **limits)
        before = _usages(db, project)
        ctx = factories.start_flow_directly(db, factories.member(project), size=size)
        _step(db, EXTRACT, ctx, env, label)
        with pytest.raises(error) as info:
            _step(db, RESERVE, ctx, env, label)
        messages[label] = str(info.value).replace(project, "P")
        assert _usages(db, project) == before and _pending(db, project) == 0
        with db() as s:
            assert "quota_reserve" not in s.get(FlowRun, ctx.flow_id).steps
        check_invariant(project)
    assert messages["planned"] == messages["one call"] == messages["transactional"]


@pytest.mark.parametrize("label", PATHS)
def test_committing_an_expired_reservation_changes_nothing(db, project, check_invariant, label):
    env = _env(label)
    _warm(db, project, env, label)
    before = _usages(db, project)
    ctx = factories.start_flow_directly(db, factories.member(project), size=2)
    _run(db, ctx, env, STEPS[:3], path=label)
    with db() as s, s.begin():  # the sweeper expires one of the flow's reservations
        uuid = s.get(FlowRun, ctx.flow_id).steps["quota_reserve"]["result"]["reservations"][1]
        quota_engine.rollback(s, [uuid])
    with pytest.raises(errors.VolchainError, match="expired before it was committed"):
        _step(db, COMMIT, ctx, env, label)
    after = _usages(db, project)
    assert after["volumes"] == (before["volumes"][0], 1)  # still reserved, not committed
    assert after["gigabytes"] == before["gigabytes"]  # the expired one was given back, nothing committed
    assert _pending(db, project) == 3
    with db() as s:
        assert "quota_commit" not in s.get(FlowRun, ctx.flow_id).steps


def test_a_step_of_a_flow_that_started_compensating_after_it_was_read_does_nothing(db, project, monkeypatch):
    env = _env("one call")
    _warm(db, project, env)
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _run(db, ctx, env, STEPS[:2])
    read = step_tx.read_flow

    def read_then_fail(conn, flow_id):  # compensation takes the flow between the read and the call
        row = read(conn, flow_id)
        assert record_failure(db, flow_id, "elsewhere", {"type": "X", "code": 500, "message": "x"})
        return row

    monkeypatch.setattr(step_tx, "read_flow", read_then_fail)
    with pytest.raises(FlowNotRunning):
        run_step(db, ENTRY, ctx.flow_id, env)
    with db() as s:
        assert s.get(Volume, ctx.volume_id) is None
        assert "entry_create" not in s.get(FlowRun, ctx.flow_id).steps


def test_a_copy_of_a_step_that_read_the_flow_before_the_other_copy_recorded_replays(db, project, monkeypatch,
                                                                                   check_invariant):
    env = _env("one call")
    _warm(db, project, env)
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _run(db, ctx, env, STEPS[:1])
    conn = step_tx.step_connection(engine_of(db))
    with step_tx.autocommit(conn):
        stale = step_tx.read_flow(conn, ctx.flow_id)
    first = run_step(db, RESERVE, ctx.flow_id, env)
    monkeypatch.setattr(step_tx, "read_flow", lambda conn, flow_id: stale)  # it read before the first recorded
    second = run_step(db, RESERVE, ctx.flow_id, env)
    assert second.reservations == first.reservations  # the recorded result, not a second reservation
    assert _pending(db, project) == 4
    monkeypatch.undo()
    _run(db, ctx, env, STEPS[2:])
    check_invariant(project)


def test_an_encrypted_type_creates_its_key_in_the_steps_transaction(db, project, check_invariant):
    from models.key import EncryptionKey

    vtype = factories.volume_type(db, encryption={"provider": "luks", "cipher": "aes-xts-plain64", "key_size": 256,
                                                  "control_location": "front-end"})
    env = _env("one call")
    ctx = factories.start_flow_directly(db, factories.member(project), size=1, volume_type=vtype.name)
    _run(db, ctx, env)
    with db() as s:
        key_id = s.get(FlowRun, ctx.flow_id).steps["extract_volume_request"]["result"]["spec"]["encryption_key_id"]
        assert key_id and s.get(EncryptionKey, key_id) is not None
        assert s.get(Volume, ctx.volume_id).encryption_key_id == key_id
    check_invariant(project)


def test_a_refusal_found_without_the_lock_is_decided_under_it(db, project, monkeypatch, check_invariant):
    """A copy of extract_volume_request that read the flow before the other copy recorded it, and
    whose own validation now fails (the type was deleted meanwhile), replays the record instead of
    failing a healthy flow."""
    from models.volume_type import VolumeType

    vtype = factories.volume_type(db)
    env = _env("one call")
    ctx = factories.start_flow_directly(db, factories.member(project), size=1, volume_type=vtype.name)
    conn = step_tx.step_connection(engine_of(db))
    with step_tx.autocommit(conn):
        stale = step_tx.read_flow(conn, ctx.flow_id)
    first = run_step(db, EXTRACT, ctx.flow_id, env)
    with db() as s, s.begin():
        s.get(VolumeType, vtype.id).deleted = True
    monkeypatch.setattr(step_tx, "read_flow", lambda conn, flow_id: stale)
    second = run_step(db, EXTRACT, ctx.flow_id, env)
    assert second.spec == first.spec
    with db() as s:
        assert s.get(FlowRun, ctx.flow_id).state == "running"


def test_a_step_connection_closed_between_steps_is_replaced(db, project, check_invariant):
    env = _env("one call")
    _warm(db, project, env)
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    for i, step in enumerate(STEPS):
        conn = step_tx.step_connection(engine_of(db))
        if i % 2:
            conn.connection.driver_connection.close()  # the server went away between two steps
        else:
            conn.connection.driver_connection.execute("SELECT 1")  # a transaction left open
        run_step(db, step, ctx.flow_id, env, final=step is STEPS[-1])
    with db() as s:
        assert s.get(FlowRun, ctx.flow_id).state == "succeeded"
    check_invariant(project)


# --- The planned path (migration 0005) --------------------------------------------------------


def _no_reads(monkeypatch):
    """Fail the test if a step reads the flow row before its call, or prepares its call itself."""
    def refuse(*_a, **_k):
        raise AssertionError("a planned step read the flow row or prepared its own call")

    monkeypatch.setattr(step_tx, "read_flow", refuse)
    for step in (RESERVE, ENTRY, COMMIT):
        monkeypatch.setattr(step, "prepare_call", refuse)


def test_planned_steps_run_without_reading_the_flow(db, project, monkeypatch, check_invariant):
    env = _env("planned")
    _warm(db, project, env, "planned")
    ctx = factories.start_flow_directly(db, factories.member(project), size=2, metadata={"b": "1", "a": "2"})
    _step(db, EXTRACT, ctx, env, "planned")
    with db() as s:
        plans = s.get(FlowRun, ctx.flow_id).plans
    assert set(plans) == {"quota_reserve", "entry_create", "quota_commit"}
    assert plans["entry_create"]["params"]["meta_keys"] == ["b", "a"]
    _no_reads(monkeypatch)
    for step in (RESERVE, ENTRY, COMMIT):
        assert _step(db, step, ctx, env, "planned") is None
    monkeypatch.undo()
    _step(db, CAST, ctx, env, "planned", final=True)
    with db() as s:
        flow = s.get(FlowRun, ctx.flow_id)
        assert flow.state == "succeeded"
        assert flow.plans is None  # spent
        reserved = flow.steps["quota_reserve"]["result"]
        assert reserved == json.loads(plans["quota_reserve"]["provided"])
        assert list(reserved) == ["reservations", "deltas"]  # the keys in the order Python wrote them
        volume = s.get(Volume, ctx.volume_id)
        assert volume.status == "creating" and volume.size == 2
        assert abs((volume.created_at - flow.created_at).total_seconds()) < 60  # set when the step ran
    assert _usages(db, project)["gigabytes"] == (3, 0) and _pending(db, project) == 0
    check_invariant(project)


def test_a_planned_step_delivered_twice_replays(db, project, monkeypatch, check_invariant):
    env = _env("planned")
    _warm(db, project, env, "planned")
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _run(db, ctx, env, STEPS[:2], path="planned")
    _no_reads(monkeypatch)
    _step(db, RESERVE, ctx, env, "planned")  # the second copy
    assert _pending(db, project) == 4  # not 8
    _step(db, ENTRY, ctx, env, "planned")
    _step(db, ENTRY, ctx, env, "planned")
    monkeypatch.undo()
    _run(db, ctx, env, STEPS[3:], path="planned")
    assert _usages(db, project)["volumes"] == (2, 0)
    check_invariant(project)


def test_a_planned_step_of_a_flow_that_is_compensating_does_nothing(db, project, monkeypatch):
    env = _env("planned")
    _warm(db, project, env, "planned")
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _run(db, ctx, env, STEPS[:2], path="planned")
    assert record_failure(db, ctx.flow_id, "elsewhere", {"type": "X", "code": 500, "message": "x"})
    _no_reads(monkeypatch)
    with pytest.raises(FlowNotRunning):
        _step(db, ENTRY, ctx, env, "planned")
    with db() as s:
        assert s.get(Volume, ctx.volume_id) is None
        assert "entry_create" not in s.get(FlowRun, ctx.flow_id).steps


def test_commit_takes_the_reservations_quota_reserve_recorded(db, project, monkeypatch, check_invariant):
    """A reservation made by the Python engine (here: the project's first) commits from its
    record, not from what extract planned."""
    env = _env("planned")
    ctx = factories.start_flow_directly(db, factories.member(project), size=2)
    _run(db, ctx, env, STEPS[:3], path="planned")
    with db() as s:
        flow = s.get(FlowRun, ctx.flow_id)
        recorded = flow.steps["quota_reserve"]["result"]["reservations"]
        assert recorded != json.loads(flow.plans["quota_reserve"]["provided"])["reservations"]
    _no_reads(monkeypatch)
    _step(db, COMMIT, ctx, env, "planned")
    monkeypatch.undo()
    assert _usages(db, project)["gigabytes"] == (2, 0) and _pending(db, project) == 0
    check_invariant(project)


@pytest.mark.parametrize("plans", [None, {}], ids=["flow-before-0005", "nothing-planned"])
def test_an_unplanned_step_takes_the_one_call_path(db, project, monkeypatch, check_invariant, plans):
    env = _env("planned")
    _warm(db, project, env, "planned")
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _step(db, EXTRACT, ctx, env, "planned")
    with db() as s, s.begin():
        s.get(FlowRun, ctx.flow_id).plans = plans
    prepared = []
    for step in (RESERVE, ENTRY, COMMIT):
        real = step.prepare_call
        monkeypatch.setattr(step, "prepare_call",
                            lambda conn, c, e, real=real, name=step.name: prepared.append(name) or real(conn, c, e))
    _run(db, ctx, env, STEPS[1:], path="planned")
    assert prepared == ["quota_reserve", "entry_create", "quota_commit"]  # each built its own call
    with db() as s:
        flow = s.get(FlowRun, ctx.flow_id)
        assert flow.state == "succeeded" and list(flow.steps) == [step.name for step in STEPS]
        assert s.get(Volume, ctx.volume_id).status == "creating"
    assert _usages(db, project)["volumes"] == (2, 0) and _pending(db, project) == 0
    check_invariant(project)


def test_a_worker_whose_quota_engine_refreshes_usage_does_not_run_a_planned_reservation(db, project, monkeypatch,
                                                                                       check_invariant):
    env = _env("planned")
    _warm(db, project, env, "planned")
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _step(db, EXTRACT, ctx, env, "planned")  # planned by a worker without refreshes
    calls = []
    real = quota_reserve.run
    monkeypatch.setattr(quota_reserve, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    refreshing = _env("planned", quota=dataclasses.replace(env.quota, until_refresh=5))
    _step(db, RESERVE, ctx, refreshing, "planned")
    assert calls == [1]  # the Python engine reserved
    _run(db, ctx, env, STEPS[2:], path="planned")
    check_invariant(project)


def test_a_flow_with_failures_to_inject_is_not_planned(db, project):
    env = _env("planned", failure_injection=True)
    ctx = factories.start_flow_directly(db, factories.member(project), size=1,
                                        _inject=[{"step": "entry_create", "when": "before"}])
    _step(db, EXTRACT, ctx, env, "planned")
    with db() as s:
        assert s.get(FlowRun, ctx.flow_id).plans == {}
    _step(db, RESERVE, ctx, env, "planned")
    with pytest.raises(errors.InjectedFailure):
        _step(db, ENTRY, ctx, env, "planned")  # the full path injects it
    with db() as s:
        assert s.get(Volume, ctx.volume_id) is None
