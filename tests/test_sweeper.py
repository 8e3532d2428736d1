"""The sweeper finishes flows whose messages were lost, forward or backward, from the log alone."""

from datetime import timedelta

from sqlalchemy import create_engine, select, text, update

from models import utcnow
from models.flow_log import FlowRun
from models.quota import QuotaUsage, Reservation
from models.volume import Volume
from tasks import quota_engine
from tasks.create.flow import STEPS
from tasks.runner import record_failure, run_step
from tasks.sweeper import sweep
from tests import factories
from workers.runtime import get_runtime

DEADLINE = 60


def _run_until(db, ctx, last_step: str):
    env = get_runtime().env
    for step in STEPS:
        ctx = run_step(db, step, ctx.flow_id, env)
        if step.name == last_step:
            return ctx
    raise AssertionError(last_step)


def _age(db, flow_id: str, seconds: int = DEADLINE + 5) -> None:
    with db() as s, s.begin():
        s.execute(update(FlowRun).where(FlowRun.id == flow_id).values(progress_at=utcnow() - timedelta(seconds=seconds)))


def _sweep(db):
    return sweep(db, STEPS, get_runtime().env, DEADLINE)


def _flow(db, flow_id):
    with db() as s:
        return s.get(FlowRun, flow_id)


def _volume(db, volume_id):
    with db() as s:
        return s.scalar(select(Volume).where(Volume.id == volume_id))


def test_a_flow_whose_chain_was_lost_before_any_step_is_reverted_with_a_timeout(db, redis_client, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _age(db, ctx.flow_id)
    report = _sweep(db)
    assert ctx.flow_id in report.compensated
    flow = _flow(db, ctx.flow_id)
    assert flow.state == "reverted"
    assert flow.error["type"] == "FlowTimedOut"
    assert _volume(db, ctx.volume_id) is None
    check_invariant(project)


def test_a_flow_stopped_after_reserving_gives_its_reservation_back(db, redis_client, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=3)
    _run_until(db, ctx, "entry_create")
    with db() as s:
        assert s.scalar(select(QuotaUsage.reserved).where(QuotaUsage.project_id == project,
                                                         QuotaUsage.resource == "gigabytes")) == 3
    _age(db, ctx.flow_id)
    assert ctx.flow_id in _sweep(db).compensated
    with db() as s:
        assert s.scalars(select(Reservation).where(Reservation.project_id == project)).all() == []
        assert s.scalar(select(QuotaUsage.reserved).where(QuotaUsage.project_id == project,
                                                         QuotaUsage.resource == "gigabytes")) == 0
    assert _volume(db, ctx.volume_id).deleted is True
    check_invariant(project)


def test_a_flow_stopped_after_committing_is_driven_forward_and_cast(db, redis_client, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=2)
    _run_until(db, ctx, "quota_commit")
    _age(db, ctx.flow_id)
    assert ctx.flow_id in _sweep(db).resumed
    assert _flow(db, ctx.flow_id).state == "succeeded"
    assert _volume(db, ctx.volume_id).status == "creating"
    assert len(factories.casts_for(redis_client, "scheduler", ctx.volume_id)) == 1
    check_invariant(project)


def test_a_flow_left_compensating_is_compensated_again(db, redis_client, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _run_until(db, ctx, "quota_commit")
    record_failure(db, ctx.flow_id, "volume_cast", {"type": "CastFailed", "code": 500, "message": "lost"})
    _age(db, ctx.flow_id)
    assert ctx.flow_id in _sweep(db).compensated
    assert _flow(db, ctx.flow_id).state == "reverted"
    vol = _volume(db, ctx.volume_id)
    assert (vol.status, vol.use_quota) == ("error", False)
    with db() as s:
        states = {r["state"] for r in s.get(FlowRun, ctx.flow_id).steps.values()}
    assert states == {"reverted"}
    check_invariant(project)


def test_a_flow_within_its_deadline_is_left_alone(db, redis_client, project):
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    report = _sweep(db)
    assert ctx.flow_id not in report.finished
    assert _flow(db, ctx.flow_id).state == "running"
    _age(db, ctx.flow_id)  # leave nothing running behind for other sweeps
    _sweep(db)


def test_stale_reservations_expire_and_release_their_hold(db, project, check_invariant):
    with db() as s, s.begin():
        quota_engine.reserve(s, project, {"volumes": 1, "gigabytes": 5}, quota_engine.QuotaConfig(),
                             expire=utcnow() - timedelta(seconds=1))
    report = _sweep(db)
    assert report.expired_reservations >= 2
    with db() as s:
        assert s.scalars(select(Reservation).where(Reservation.project_id == project)).all() == []
        reserved = dict(s.execute(select(QuotaUsage.resource, QuotaUsage.reserved)
                                  .where(QuotaUsage.project_id == project)).all())
    assert reserved == {"volumes": 0, "gigabytes": 0}
    check_invariant(project)


def test_only_one_sweeper_sweeps_at_a_time(database_url, db, redis_client):
    from workers.sweeper import LEADER_LOCK_ID, sweep_once

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK_ID})
            assert sweep_once() is None
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LEADER_LOCK_ID})
        assert sweep_once() is not None
    finally:
        engine.dispose()

