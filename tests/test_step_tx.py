"""The step transaction on PostgreSQL runs on a connection kept between steps, so every way out of
a step (success, replay, error) must leave that connection idle, its effect committed or undone."""

import dataclasses

import pytest

from models.db import engine_of
from models.flow_log import FlowRun
from models.volume import Volume
from tasks import errors, step_tx
from tasks.flow import STEPS
from tasks.runner import run_step
from tests import factories
from workers.runtime import get_runtime

IDLE = 0  # psycopg TransactionStatus.IDLE


def _status(db) -> int:
    conn = step_tx.step_connection(engine_of(db))
    assert conn.dialect.name == "postgresql"
    return conn.connection.driver_connection.info.transaction_status


def test_a_step_commits_its_effect_with_its_record_and_leaves_the_connection_idle(db, project, check_invariant):
    env = get_runtime().env
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    for step in STEPS[:3]:
        run_step(db, step, ctx.flow_id, env)
        assert _status(db) == IDLE
    with db() as s:
        assert sorted(s.get(FlowRun, ctx.flow_id).steps) == sorted(step.name for step in STEPS[:3])
        assert s.get(Volume, ctx.volume_id).status == "creating"
    # A replay only reads: its transaction is closed too.
    run_step(db, STEPS[2], ctx.flow_id, env)
    assert _status(db) == IDLE
    for step in STEPS[3:]:
        run_step(db, step, ctx.flow_id, env, final=step is STEPS[-1])
    check_invariant(project)


@pytest.mark.parametrize("when", ["before", "before_commit"])
def test_a_failing_step_rolls_back_its_effect_and_leaves_the_connection_idle(db, project, check_invariant, when):
    env = dataclasses.replace(get_runtime().env, failure_injection=True)
    ctx = factories.start_flow_directly(db, factories.member(project), size=1,
                                        _inject={"step": "entry_create", "when": when})
    for step in STEPS[:2]:
        run_step(db, step, ctx.flow_id, env)
    with pytest.raises(errors.InjectedFailure):
        run_step(db, STEPS[2], ctx.flow_id, env)
    assert _status(db) == IDLE
    with db() as s:
        assert s.get(Volume, ctx.volume_id) is None  # the insert was rolled back with the step
        assert "entry_create" not in s.get(FlowRun, ctx.flow_id).steps
    # The same connection runs the next step normally.
    env_ok = get_runtime().env
    with db() as s, s.begin():
        flow = s.get(FlowRun, ctx.flow_id)
        flow.request = {k: v for k, v in flow.request.items() if k != "_inject"}
    run_step(db, STEPS[2], ctx.flow_id, env_ok)
    assert _status(db) == IDLE
    with db() as s:
        assert s.get(Volume, ctx.volume_id).status == "creating"


def test_a_missing_flow_is_an_error_and_leaves_the_connection_idle(db):
    with pytest.raises(errors.FlowNotFound):
        run_step(db, STEPS[0], "00000000-0000-0000-0000-000000000000", get_runtime().env)
    assert _status(db) == IDLE


def test_a_driver_error_comes_out_as_sqlalchemys_so_the_step_is_retried(db, project):
    """The flow-row statements go straight to psycopg; a lock timeout must still surface as the
    OperationalError the step tasks retry (workers/steps.py TRANSIENT), leaving the connection usable."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    env = get_runtime().env
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    conn = step_tx.step_connection(engine_of(db))
    conn.exec_driver_sql("SET lock_timeout = '100ms'")
    conn.commit()
    try:
        with db() as holder, holder.begin():
            holder.execute(text("SELECT 1 FROM flow_runs WHERE id = :id FOR UPDATE"), {"id": ctx.flow_id})
            with pytest.raises(OperationalError):
                run_step(db, STEPS[0], ctx.flow_id, env)
        assert _status(db) == IDLE and not conn.invalidated
        run_step(db, STEPS[0], ctx.flow_id, env)  # the lock is free again: the retry succeeds
    finally:
        conn.exec_driver_sql("RESET lock_timeout")
        conn.commit()
    with db() as s:
        assert "extract_volume_request" in s.get(FlowRun, ctx.flow_id).steps


def _autocommit(db) -> bool:
    return step_tx.step_connection(engine_of(db)).connection.driver_connection.autocommit


@pytest.mark.parametrize("when", [None, "before", "before_commit", "replay", "missing"])
def test_the_cast_sends_begin_and_commit_itself_and_leaves_the_connection_as_it_found_it(db, project, when):
    """volume_cast sends `BEGIN; SELECT … FOR UPDATE` and `UPDATE …; COMMIT` as one message each:
    whatever happens, the transaction is closed and the driver is back out of autocommit (the
    transactional path relies on psycopg opening its transactions)."""
    cast = STEPS[-1]
    inject = {"step": cast.name, "when": when} if when in ("before", "before_commit") else None
    env = dataclasses.replace(get_runtime().env, failure_injection=True)
    request = {"_inject": inject} if inject else {}
    ctx = factories.start_flow_directly(db, factories.member(project), size=1, **request)
    for step in STEPS[:-1]:
        run_step(db, step, ctx.flow_id, env)
    flow_id = "00000000-0000-0000-0000-000000000000" if when == "missing" else ctx.flow_id
    if inject:
        with pytest.raises(errors.InjectedFailure):
            run_step(db, cast, flow_id, env, final=True)
    elif when == "missing":
        with pytest.raises(errors.FlowNotFound):
            run_step(db, cast, flow_id, env, final=True)
    else:
        run_step(db, cast, flow_id, env, final=True)
        if when == "replay":
            run_step(db, cast, flow_id, env, final=True)
    assert _status(db) == IDLE and _autocommit(db) is False
    with db() as s:
        flow = s.get(FlowRun, ctx.flow_id)
        assert ("volume_cast" in flow.steps) == (inject is None and when != "missing")
        assert flow.state == ("running" if inject or when == "missing" else "succeeded")


def test_autocommit_rolls_back_a_transaction_its_block_left_open(db, project):
    conn = step_tx.step_connection(engine_of(db))
    driver = conn.connection.driver_connection
    ctx = factories.start_flow_directly(db, factories.member(project), size=1)
    with step_tx.autocommit(conn):
        step_tx.begin_and_lock(conn, ctx.flow_id)  # a block that never ends its transaction
        assert _status(db) != IDLE
    assert _status(db) == IDLE and driver.autocommit is False
    with pytest.raises(RuntimeError, match="inside step_tx.autocommit"):
        step_tx.begin_and_lock(conn, ctx.flow_id)
