"""The sweeper finishes flows whose messages were lost, forward or backward, from the log alone."""

import uuid
from datetime import timedelta

from sqlalchemy import create_engine, select, text, update

from models import utcnow
from models.flow_log import FlowRun
from models.quota import QuotaUsage, Reservation
from models.volume import Volume
from tasks import quota_engine
from tasks.create.flow import STEPS
from tasks.retention import prune
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


def test_a_flow_whose_chain_was_lost_before_any_step_is_finished_forward(db, redis_client, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _age(db, ctx.flow_id)
    report = _sweep(db)
    assert ctx.flow_id in report.resumed
    assert _flow(db, ctx.flow_id).state == "succeeded"
    assert _volume(db, ctx.volume_id).status == "creating"
    assert len(factories.casts_for(redis_client, "scheduler", ctx.volume_id)) == 1
    check_invariant(project)


def test_a_flow_stopped_after_reserving_is_finished_forward_and_commits(db, redis_client, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=3)
    _run_until(db, ctx, "entry_create")
    _age(db, ctx.flow_id)
    assert ctx.flow_id in _sweep(db).resumed
    with db() as s:
        assert s.scalars(select(Reservation).where(Reservation.project_id == project)).all() == []
        usage = s.execute(select(QuotaUsage.in_use, QuotaUsage.reserved).where(
            QuotaUsage.project_id == project, QuotaUsage.resource == "gigabytes")).one()
    assert tuple(usage) == (3, 0)
    assert _volume(db, ctx.volume_id).status == "creating"
    check_invariant(project)


def test_a_flow_whose_reservation_expired_while_stuck_is_failed_and_gives_everything_back(
        db, redis_client, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=3)
    _run_until(db, ctx, "entry_create")
    with db() as s, s.begin():
        s.execute(update(Reservation).where(Reservation.project_id == project)
                  .values(expire=utcnow() - timedelta(seconds=1)))
    _age(db, ctx.flow_id)
    report = _sweep(db)
    assert report.expired_reservations >= 2
    assert ctx.flow_id in report.compensated
    flow = _flow(db, ctx.flow_id)
    assert (flow.state, flow.failed_step, flow.error["type"]) == ("reverted", "quota_commit", "ReservationExpired")
    assert _volume(db, ctx.volume_id).deleted is True
    with db() as s:
        assert s.scalar(select(QuotaUsage.reserved).where(QuotaUsage.project_id == project,
                                                         QuotaUsage.resource == "gigabytes")) == 0
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



def test_one_pass_drains_a_backlog_larger_than_a_batch(db, redis_client, project, check_invariant, caplog):
    ids = [factories.start_flow_directly(db, factories.member(project), size=1).flow_id for _ in range(250)]
    with db() as s, s.begin():
        s.execute(update(FlowRun).where(FlowRun.project_id == project)
                  .values(progress_at=utcnow() - timedelta(seconds=DEADLINE + 5)))
    with caplog.at_level("INFO", logger="tasks.sweeper"):
        report = sweep(db, STEPS, get_runtime().env, DEADLINE, batch_size=100)
    # Forward while the project's quota lasts (10 volumes by default), then each one refused.
    assert set(ids) <= set(report.resumed) | set(report.compensated)
    assert report.resumed and report.compensated
    with db() as s:
        assert set(s.scalars(select(FlowRun.state).where(FlowRun.project_id == project))) == {"succeeded", "reverted"}
    batches = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sweeper: batch")]
    assert len(batches) >= 3 and batches[-1].endswith(", 0 left"), batches
    check_invariant(project)


class _LostCast:
    """A volume_cast whose broker is gone: every try fails before its effect."""

    name = "volume_cast"

    def run(self, session, ctx, env):
        raise RuntimeError("broker unreachable")

    def revert(self, session, ctx, result, env):
        pass


def test_a_flow_that_cannot_be_finished_is_tried_once_per_pass(db, redis_client, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _run_until(db, ctx, "quota_commit")
    _age(db, ctx.flow_id)
    report = sweep(db, STEPS[:-1] + [_LostCast()], get_runtime().env, DEADLINE, batch_size=1)
    assert ctx.flow_id not in report.finished
    flow = _flow(db, ctx.flow_id)
    assert (flow.state, flow.compensation_attempts) == ("running", 1)
    assert ctx.flow_id in _sweep(db).resumed  # the next pass, with its broker back, finishes it
    check_invariant(project)


def _finished_flow(db, project, state="succeeded", finished_ago=7200, key=None) -> str:
    now = utcnow()
    flow_id = str(uuid.uuid4())
    with db() as s, s.begin():
        s.add(FlowRun(id=flow_id, volume_id=str(uuid.uuid4()), project_id=project, user_id="u1", state=state,
                      idempotency_key=key, request={}, steps={}, created_at=now - timedelta(seconds=finished_ago + 1),
                      progress_at=now - timedelta(seconds=finished_ago),
                      finished_at=None if state == "running" else now - timedelta(seconds=finished_ago)))
    return flow_id


def _kept(db, ids) -> set[str]:
    with db() as s:
        return set(s.scalars(select(FlowRun.id).where(FlowRun.id.in_(ids))))


def test_finished_flows_past_their_retention_are_pruned_in_batches(db, project):
    old = [_finished_flow(db, project, state) for state in ("succeeded", "reverted") * 3]
    recent = _finished_flow(db, project, finished_ago=60)
    attention = _finished_flow(db, project, "needs_attention")
    running = _finished_flow(db, project, "running")
    assert prune(db, retention_seconds=3600, idempotency_seconds=0, batch=2) >= len(old)
    assert _kept(db, old + [recent, attention, running]) == {recent, attention, running}


def test_a_flow_is_kept_while_its_idempotency_key_is_honoured(db, project):
    keyed = _finished_flow(db, project, key="k1")
    prune(db, retention_seconds=3600, idempotency_seconds=86400, batch=100)
    assert _kept(db, [keyed]) == {keyed}
    prune(db, retention_seconds=3600, idempotency_seconds=3600, batch=100)
    assert _kept(db, [keyed]) == set()


def test_the_sweeper_pass_prunes_the_flow_log(db, redis_client, project):
    from workers.sweeper import sweep_once

    retention = get_runtime().settings.flow_retention_seconds
    old = _finished_flow(db, project, finished_ago=retention + 60)
    report = sweep_once()
    assert report.pruned >= 1
    assert _kept(db, [old]) == set()
