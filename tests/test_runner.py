"""The one runner (tasks/runner.py) in-process on the real PostgreSQL test database: a step's
effect commits with its record or not at all, a recorded step replays, a flow that stopped
refuses steps, compensation reverts each recorded step once with its own result, and the schema
at head holds no stored step logic."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from sqlalchemy import select, text

from models.flow_log import FlowRun
from models.key import EncryptionKey
from models.quota import Reservation
from models.volume import Volume
from tasks import errors, runner
from tasks.create.flow import STEPS
from tasks.runner import compensate, record_failure, run_step
from tests import factories
from workers import failure_injection
from workers.runtime import get_runtime

EXTRACT, RESERVE, ENTRY, COMMIT, CAST = STEPS


def _env(**changes):
    return dataclasses.replace(get_runtime().env, publish=lambda message: None, **changes)


def _run(db, ctx, steps, env=None):
    env = env or _env()
    for step in steps:
        run_step(db, step, ctx.flow_id, env, final=step is STEPS[-1])


def _flow(db, flow_id: str) -> FlowRun:
    with db() as s:
        return s.get(FlowRun, flow_id)


def _pending(db, project: str) -> int:
    with db() as s:
        return len(s.scalars(select(Reservation.id).where(Reservation.project_id == project)).all())


class Counting:
    """A step around a real one that counts how often its `run` and `revert` are called."""

    def __init__(self, step) -> None:
        self.step, self.name, self.runs, self.reverts = step, step.name, 0, []

    def run(self, session, ctx, env):
        self.runs += 1
        return self.step.run(session, ctx, env)

    def revert(self, session, ctx, result, env):
        self.reverts.append((result, ctx.failure))
        self.step.revert(session, ctx, result, env)


class FailsAfterEffect(Counting):
    def run(self, session, ctx, env):
        super().run(session, ctx, env)
        raise errors.InvalidInput(reason="failed after its effect")


def test_a_step_commits_its_effect_with_its_record(db, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=2)
    _run(db, ctx, STEPS[:3])
    flow = _flow(db, ctx.flow_id)
    assert list(flow.steps) == ["extract_volume_request", "quota_reserve", "entry_create"]
    assert flow.steps["entry_create"]["state"] == "done" and flow.steps["entry_create"]["result"] == {"created": True}
    with db() as s:
        assert s.get(Volume, ctx.volume_id).status == "creating"
    _run(db, ctx, STEPS[3:])
    assert _flow(db, ctx.flow_id).state == "succeeded"
    check_invariant(project)


def test_a_step_that_fails_after_its_effect_leaves_neither_effect_nor_record(db, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _run(db, ctx, STEPS[:2])
    failing = FailsAfterEffect(ENTRY)
    with pytest.raises(errors.InvalidInput):
        run_step(db, failing, ctx.flow_id, _env())
    assert failing.runs == 1
    with db() as s:
        assert s.get(Volume, ctx.volume_id) is None  # the insert rolled back with the step
    assert "entry_create" not in _flow(db, ctx.flow_id).steps
    # The flow goes on normally afterwards.
    _run(db, ctx, STEPS[2:])
    assert _flow(db, ctx.flow_id).state == "succeeded"
    check_invariant(project)


def test_a_recorded_step_is_replayed_without_running_again(db, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _run(db, ctx, STEPS[:2])
    again = Counting(RESERVE)
    replayed = run_step(db, again, ctx.flow_id, _env())
    assert again.runs == 0
    assert replayed.reservations == _flow(db, ctx.flow_id).steps["quota_reserve"]["result"]["reservations"]
    assert _pending(db, project) == 4  # volumes, gigabytes and both per type, reserved once
    _run(db, ctx, STEPS[2:])
    check_invariant(project)


def test_two_copies_of_a_step_at_once_take_effect_once(db, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _run(db, ctx, STEPS[:1])
    copies = [Counting(RESERVE) for _ in range(4)]
    threads = [threading.Thread(target=run_step, args=(db, copy, ctx.flow_id, _env())) for copy in copies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(copy.runs for copy in copies) == 1  # the others waited on the flow lock, then replayed
    assert _pending(db, project) == 4
    _run(db, ctx, STEPS[1:])
    check_invariant(project)


def test_a_flow_that_is_compensating_refuses_its_next_step(db, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _run(db, ctx, STEPS[:2])
    assert record_failure(db, ctx.flow_id, "entry_create", errors.InvalidInput(reason="x").to_dict())
    refused = Counting(ENTRY)
    with pytest.raises(errors.FlowNotRunning):
        run_step(db, refused, ctx.flow_id, _env())
    assert refused.runs == 0
    assert compensate(db, ctx.flow_id, STEPS, _env()) == "reverted"
    assert _pending(db, project) == 0
    check_invariant(project)


def test_a_missing_flow_is_an_error(db):
    with pytest.raises(errors.FlowNotFound):
        run_step(db, EXTRACT, "00000000-0000-0000-0000-000000000000", _env())


def test_compensation_reverts_each_recorded_step_once_with_its_own_result(db, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=3)
    _run(db, ctx, STEPS[:4])
    error = errors.CastFailed(volume_id=ctx.volume_id).to_dict()
    record_failure(db, ctx.flow_id, "volume_cast", error)
    counted = [Counting(step) for step in STEPS]
    assert compensate(db, ctx.flow_id, counted, _env()) == "reverted"
    recorded = _flow(db, ctx.flow_id).steps
    for step in counted[:4]:
        assert step.reverts == [(recorded[step.name]["result"], error)]
        assert recorded[step.name]["state"] == "reverted"
    assert counted[4].reverts == []  # the cast never took effect
    with db() as s:
        vol = s.get(Volume, ctx.volume_id)
    assert (vol.status, vol.deleted, vol.use_quota) == ("error", False, False)  # committed: kept as error
    assert vol.error_message == error["message"][:128]
    # Running it again changes nothing.
    assert compensate(db, ctx.flow_id, counted, _env()) == "reverted"
    assert all(len(step.reverts) <= 1 for step in counted)
    check_invariant(project)


def test_an_uncommitted_create_is_reverted_to_a_deleted_row(db, project, check_invariant):
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _run(db, ctx, STEPS[:3])
    record_failure(db, ctx.flow_id, "quota_commit", errors.ReservationExpired(volume_id=ctx.volume_id).to_dict())
    compensate(db, ctx.flow_id, STEPS, _env())
    with db() as s:
        vol = s.get(Volume, ctx.volume_id)
    assert (vol.status, vol.deleted) == ("deleted", True)
    assert _pending(db, project) == 0
    check_invariant(project)


def test_an_encryption_key_commits_with_the_step_and_is_deleted_by_its_revert(db, project, check_invariant):
    vt = factories.volume_type(db, encryption={"provider": "luks", "cipher": "aes-xts-plain64", "key_size": 256,
                                               "control_location": "front-end"})
    ctx = factories.start_flow_directly(db, factories.member(project), size=1, volume_type=vt.name)
    _run(db, ctx, STEPS[:1])
    key_id = _flow(db, ctx.flow_id).steps["extract_volume_request"]["result"]["spec"]["encryption_key_id"]
    with db() as s:
        assert s.get(EncryptionKey, key_id) is not None
    record_failure(db, ctx.flow_id, "quota_reserve", errors.InvalidInput(reason="x").to_dict())
    compensate(db, ctx.flow_id, STEPS, _env())
    with db() as s:
        assert s.get(EncryptionKey, key_id) is None
    check_invariant(project)


def test_failure_injection_is_installed_only_when_switched_on():
    from workers import runtime

    settings = get_runtime().settings
    assert runtime._step_runner(settings.model_copy(update={"failure_injection": False})) == (runner.run_step, list)
    assert runtime._step_runner(settings.model_copy(update={"failure_injection": True})) == (
        failure_injection.run_step, failure_injection.compensation_steps)


@pytest.mark.parametrize("when", ["before", "before_commit"])
def test_an_injected_failure_rolls_the_step_back(db, project, check_invariant, when):
    ctx = factories.start_flow_directly(db, factories.member(project), size=1,
                                        _inject={"step": "entry_create", "when": when})
    _run(db, ctx, STEPS[:2])
    with pytest.raises(errors.InjectedFailure):
        failure_injection.run_step(db, ENTRY, ctx.flow_id, _env())
    with db() as s:
        assert s.get(Volume, ctx.volume_id) is None
    assert "entry_create" not in _flow(db, ctx.flow_id).steps
    record_failure(db, ctx.flow_id, "entry_create", errors.InjectedFailure(step="entry_create", when=when).to_dict())
    compensate(db, ctx.flow_id, STEPS, _env())
    check_invariant(project)


def test_a_migrated_database_holds_no_stored_step_logic(db):
    with db() as s:
        functions = s.scalars(text("SELECT proname FROM pg_proc WHERE proname LIKE 'volchain%'")).all()
        plans = s.scalar(text("SELECT count(*) FROM information_schema.columns "
                              "WHERE table_name = 'flow_runs' AND column_name = 'plans'"))
    assert functions == [] and plans == 0


def test_every_error_class_travels_by_name(db):
    def subclasses(klass):
        for sub in klass.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for klass in subclasses(errors.VolchainError):
        assert errors.REGISTRY.get(klass.__name__) is klass, f"{klass.__name__} is missing from errors.REGISTRY"
        rebuilt = errors.VolchainError.from_dict({"type": klass.__name__, "code": 599, "message": "m"})
        assert type(rebuilt) is klass and str(rebuilt) == "m"


def test_a_compensation_that_keeps_failing_parks_the_flow_with_the_reason(db, project):
    from workers.steps import compensate_flow

    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    broken = {"quota_reserve": {"state": "done", "result": {"reservations": None, "deltas": None},
                                "done_at": "2026-12-06T00:00:00", "reverted_at": None}}
    with db() as s, s.begin():
        flow = s.get(FlowRun, ctx.flow_id)
        flow.steps, flow.state = broken, "compensating"
        flow.error = errors.InvalidInput(reason="x").to_dict()
    # The last try (Celery's retries used up): the error is not retried again but parks the flow.
    result = compensate_flow.apply(args=(ctx.flow_id,), retries=compensate_flow.max_retries)
    assert result.failed()
    flow = _flow(db, ctx.flow_id)
    assert flow.state == "needs_attention"
    assert flow.error["type"] == "InvalidInput" and flow.error["compensation_error"].startswith("TypeError")


def test_a_kept_connection_whose_server_went_away_is_replaced(db, project, check_invariant):
    from sqlalchemy.exc import OperationalError

    from models.db import engine_of, kept_connection

    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _run(db, ctx, STEPS[:1])
    kept = kept_connection(engine_of(db))
    pid = kept.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    kept.rollback()
    with db() as s, s.begin():  # the server drops the step thread's connection between two steps
        s.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with pytest.raises(OperationalError):  # the step that finds out fails (its task retries it) ...
        run_step(db, RESERVE, ctx.flow_id, _env())
    assert kept.invalidated and kept_connection(engine_of(db)) is not kept  # ... and the next gets another
    _run(db, ctx, STEPS[1:])
    assert _flow(db, ctx.flow_id).state == "succeeded"
    check_invariant(project)


def test_the_errback_leaves_a_flow_that_recorded_no_failure_running(db, project, check_invariant):
    """A step task whose retry could not be queued fails without recording why; the chain's errback
    (compensate with only_failed) must not undo a flow that merely waits, the sweeper finishes it."""
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    _run(db, ctx, STEPS[:4])
    assert compensate(db, ctx.flow_id, STEPS, _env(), only_failed=True) == "running"
    with db() as s:
        flow = s.get(FlowRun, ctx.flow_id)
        assert (flow.state, flow.error) == ("running", None)
        assert {r["state"] for r in flow.steps.values()} == {"done"}
    record_failure(db, ctx.flow_id, "volume_cast", errors.CastFailed(volume_id=ctx.volume_id).to_dict())
    assert compensate(db, ctx.flow_id, STEPS, _env(), only_failed=True) == "reverted"  # a recorded failure is undone
    check_invariant(project)
