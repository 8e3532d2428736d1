"""Run one step with its flow-log record, and compensate a flow from its log.

A step's effect and its record (on the flow row) commit in one transaction, under a lock on the
flow row. A redelivered step finds its record and returns it, without repeating the effect.
Compensation reads only the log, so any worker can run it again after a crash.

Four ways to run a step, one contract: the transactional path (SQLite, and any flow a step
function hands back), and on PostgreSQL the one-call path (`_run_call`: the step's function does
lock, check, effect and record in one statement, after an unlocked read that builds the call),
the planned path (`_run_planned`: the same call, prepared by extract_volume_request, with no read
before it; chain steps that need no context back) and the driver path for volume_cast
(`_run_locked`: it publishes while it holds the lock).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from sqlalchemy import Connection, null, select, update
from sqlalchemy.orm import Session, sessionmaker

from models import utcnow
from models.db import engine_of
from models.flow_log import FlowRun, FlowState, StepState, TERMINAL_STATES
from tasks import errors, step_tx
from tasks.context import CreateContext
from tasks.quota_engine import QuotaConfig

log = logging.getLogger(__name__)


class FlowNotRunning(errors.VolchainError):
    """A step arrived for a flow that is already compensating or finished: drop it."""

    message = "Flow %(flow_id)s is %(state)s; step %(step)s is not run."
    http_status = 409


@dataclass(frozen=True)
class CastMessage:
    """A create handed to the scheduler or a volume manager (contract: docs/messages.md)."""

    queue: str
    task_name: str
    message_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class StepEnv:
    """Everything a step needs besides the database: options and the cast publisher."""

    quota: QuotaConfig = field(default_factory=QuotaConfig)
    storage_availability_zone: str = "nova"
    default_availability_zone: str | None = None
    allow_availability_zone_fallback: bool = False
    default_volume_type: str = "__DEFAULT__"
    snapshot_same_host: bool = True
    cloned_volume_same_az: bool = True
    az_cache_seconds: float = 30.0
    scheduler_queue: str = "scheduler"
    failure_injection: bool = False
    # PostgreSQL: run the steps that have one as a single call of their function (migration 0004).
    step_functions: bool = True
    publish: Callable[[CastMessage], None] | None = None


class Step(Protocol):
    name: str

    def run(self, session: Session, ctx: CreateContext, env: StepEnv) -> dict[str, Any]: ...

    def revert(self, session: Session, flow: FlowRun, records: dict[str, dict], env: StepEnv) -> None: ...

    # Optional, PostgreSQL only. A step whose effect is in the database, as one call (_run_call):
    # def prepare_call(conn: Connection, ctx: CreateContext, env: StepEnv) -> StepCall | None: ...
    # and the same call prepared ahead by extract_volume_request (_run_planned, migration 0005):
    # def plan(ctx: CreateContext, env: StepEnv) -> dict | None: ...  ({"params", "provided"})
    # def use_plan(env: StepEnv) -> bool: ...  (may this worker run the planned call; default yes)
    # def on_status(answer: dict, ctx: CreateContext, call: StepCall) -> None: ...  (raises its errors)
    # A step that acts outside the database under the flow lock (_run_locked):
    # def act(ctx: CreateContext, env: StepEnv, execute: Callable[[str, dict], None]) -> dict: ...


@dataclass(frozen=True)
class StepCall:
    """A step as one statement: a call to its function (migration 0004), which locks and checks
    the flow row, applies the effect and records `provided`, atomically.

    `sql` may use %(flow_id)s, %(step)s, %(record)s, %(now)s and %(final)s, which the runner
    fills in, and the step's own `params`.
    """

    sql: str
    params: dict[str, Any]
    provided: dict[str, Any]


class NeedsTransaction(Exception):
    """Raised by a step's prepare_call when this flow needs the transactional path after all."""


def injects(env: StepEnv, ctx: CreateContext, step: str, when: str) -> bool:
    """Failure injection (test facility): does the request's `_inject` ask for a failure here?"""
    if not env.failure_injection:
        return False
    wanted = ctx.request.get("_inject") or []
    if isinstance(wanted, dict):
        wanted = [wanted]
    return any(item.get("step") == step and item.get("when", "before") == when for item in wanted)


def inject(env: StepEnv, ctx: CreateContext, step: str, when: str) -> None:
    """Raise InjectedFailure where the request's `_inject` says, if failure injection is enabled."""
    if injects(env, ctx, step, when):
        raise errors.InjectedFailure(step=step, when=when)


def _lock_flow(conn: Connection, flow_id: str) -> tuple[str, dict, CreateContext]:
    """Lock the flow row; return its state, its step records and the context rebuilt from them."""
    row = step_tx.lock_flow(conn, flow_id)
    if row is None:
        raise errors.FlowNotFound(flow_id=flow_id)
    return _context(flow_id, row)


def _recorded(flow_id: str, step: Step, state: str, steps: dict) -> bool:
    """True when the step is recorded already (the caller replays it); FlowNotRunning when the
    flow is compensating or finished; False when the step may run."""
    if step.name in steps:
        log.info("flow %s: %s already recorded, replaying its result", flow_id, step.name)
        return True
    if state != FlowState.RUNNING.value:
        raise FlowNotRunning(flow_id=flow_id, state=state, step=step.name)
    return False


def _context(flow_id: str, row: tuple) -> tuple[str, dict, CreateContext]:
    state, steps, volume_id, project_id, user_id, request, caller = row
    steps = steps or {}
    return state, steps, CreateContext.from_log(flow_id, volume_id, project_id, user_id, request, caller, steps)


def run_step(
    factory: sessionmaker[Session], step: Step, flow_id: str, env: StepEnv, final: bool = False,
    context: bool = True,
) -> CreateContext | None:
    """Run `step` once for this flow: effect + record in one transaction; replay if recorded.

    The step's inputs come from the flow row, never from the message that triggered it.
    Returns the flow's context with this step's result folded in. With `context=False` (the
    chain's tasks) a planned step runs without reading the flow row and returns None.
    """
    conn = step_tx.step_connection(engine_of(factory))
    if conn.dialect.name == "postgresql" and env.step_functions:
        planned = None
        if not context and not final and hasattr(step, "plan") and (
                not hasattr(step, "use_plan") or step.use_plan(env)):
            planned = _run_planned(conn, step, flow_id)
            if planned in ("done", "replayed"):
                return None
        if hasattr(step, "prepare_call") and planned != "slow":
            out = _run_call(conn, step, flow_id, env, final)
            if out is not None:
                return out
        elif hasattr(step, "act"):
            return _run_locked(conn, step, flow_id, env, final)
    with conn.begin():
        state, steps, ctx = _lock_flow(conn, flow_id)
        if _recorded(flow_id, step, state, steps):
            return ctx
        inject(env, ctx, step.name, "before")
        # A Session on the step's connection, for the lookups that load ORM rows; it joins the
        # connection's transaction and never commits on its own.
        with Session(bind=conn, expire_on_commit=False) as session:
            provided = step.run(session, ctx, env)
            session.flush()
        inject(env, ctx, step.name, "before_commit")
        steps = {**steps, step.name: _record(provided, utcnow())}
        step_tx.record_step(conn, flow_id, steps, final)
    out = ctx.merge(provided)
    inject(env, ctx, step.name, "after_commit")
    return out


_RUN_PLANNED = "SELECT volchain_run_planned(%(flow_id)s, %(step)s, %(now)s, %(done_at)s)"


def _run_planned(conn: Connection, step: Step, flow_id: str) -> str:
    """PostgreSQL: run a step extract_volume_request planned (migration 0005) as one call, in
    autocommit, with no read before it; the function locks and checks the flow row. Returns the
    answer's status. Only `done` and `replayed` did (or had done) the step; on any other answer
    nothing was done: `slow` sends it to the transactional path (the Python engine must
    reserve), and `unplanned` (no plan for this step) or a refusal (`per_volume`, `overflow`,
    `over`, `expired`: the one-call path decides it again and raises Cinder's error) to the
    one-call path."""
    now = utcnow()
    with step_tx.autocommit(conn):
        answer = step_tx.call_step_function(
            conn, _RUN_PLANNED, {"flow_id": flow_id, "step": step.name, "now": now, "done_at": now.isoformat()})
    status = answer["status"]
    if status == "replayed":
        log.info("flow %s: %s already recorded, replaying its result", flow_id, step.name)
    elif status == "not_running":
        raise FlowNotRunning(flow_id=flow_id, state=answer["state"], step=step.name)
    elif status == "missing":
        raise errors.FlowNotFound(flow_id=flow_id)
    return status


def _run_call(conn: Connection, step: Step, flow_id: str, env: StepEnv, final: bool) -> CreateContext | None:
    """PostgreSQL: run `step` as one call of its function, in autocommit; None when this flow needs
    the transactional path instead (the step said so, before or after the call changed nothing).

    The flow row is read without a lock to build the call; the function locks it and checks it
    again (running, step not recorded), so a concurrent copy of the step or a compensation that
    got there first make it answer `replayed` or `not_running`, and nothing is done twice.
    """
    with step_tx.autocommit(conn):
        row = step_tx.read_flow(conn, flow_id)
        if row is None:
            raise errors.FlowNotFound(flow_id=flow_id)
        state, steps, ctx = _context(flow_id, row)
        if _recorded(flow_id, step, state, steps):
            return ctx
        inject(env, ctx, step.name, "before")
        try:
            call = step.prepare_call(conn, ctx, env)
        except (NeedsTransaction, errors.VolchainError):
            # A refusal found without the lock may come from a copy of the step that another
            # copy already recorded: the transactional path decides under the lock.
            return None
        if call is None or (final and "%(final)s" not in call.sql):
            return None
        now = utcnow()
        params = {**call.params, "flow_id": flow_id, "step": step.name, "now": now, "final": final,
                  "record": step_tx.json_param(_record(call.provided, now))}
        hook = (lambda: inject(env, ctx, step.name, "before_commit")) if injects(
            env, ctx, step.name, "before_commit") else None
        answer = step_tx.call_step_function(conn, call.sql, params, hook)
    status = answer["status"]
    if status == "done":
        inject(env, ctx, step.name, "after_commit")
        return ctx.merge(call.provided)
    if status == "replayed":
        log.info("flow %s: %s already recorded, replaying its result", flow_id, step.name)
        return ctx.merge(answer["record"]["result"])
    if status == "not_running":
        raise FlowNotRunning(flow_id=flow_id, state=answer["state"], step=step.name)
    if status == "missing":
        raise errors.FlowNotFound(flow_id=flow_id)
    if status == "slow":
        return None  # nothing was done: the transactional path does it
    if hasattr(step, "on_status"):
        step.on_status(answer, ctx, call)  # raises the step's own error for its own answers
    raise errors.VolchainError(f"{step.name}: unexpected answer {status!r} from the database")


def _run_locked(conn: Connection, step: Step, flow_id: str, env: StepEnv, final: bool) -> CreateContext:
    """PostgreSQL, for a step that acts outside the database while it holds the flow lock
    (volume_cast publishes): the lock, the step's action (its statements run in the same
    transaction), then its record and COMMIT, straight on the driver (measured: about a sixth
    cheaper than the Session path), BEGIN and COMMIT sent with the statements next to them. Any
    failure before the commit rolls back."""
    with step_tx.autocommit(conn):  # the driver leaves BEGIN and COMMIT to step_tx
        row = step_tx.begin_and_lock(conn, flow_id)
        try:
            if row is None:
                raise errors.FlowNotFound(flow_id=flow_id)
            state, steps, ctx = _context(flow_id, row)
            if _recorded(flow_id, step, state, steps):
                step_tx.rollback(conn)
                return ctx
            inject(env, ctx, step.name, "before")
            provided = step.act(ctx, env, lambda sql, params: step_tx.execute_in(conn, sql, params))
            inject(env, ctx, step.name, "before_commit")
        except BaseException:
            step_tx.rollback(conn)
            raise
        step_tx.record_and_commit(conn, flow_id, {**steps, step.name: _record(provided, utcnow())}, final)
    out = ctx.merge(provided)
    inject(env, ctx, step.name, "after_commit")
    return out


def _record(provided: dict[str, Any], now) -> dict[str, Any]:
    return {"state": StepState.DONE.value, "result": provided, "done_at": now.isoformat(), "reverted_at": None}


def record_failure(factory: sessionmaker[Session], flow_id: str, step: str | None, error: dict) -> bool:
    """Mark a running flow as compensating with the error that stopped it; False if not running."""
    with factory() as session, session.begin():
        result = session.execute(
            update(FlowRun)
            .where(FlowRun.id == flow_id, FlowRun.state == FlowState.RUNNING.value)
            .values(state=FlowState.COMPENSATING.value, error=error, failed_step=step, progress_at=utcnow())
        )
        return result.rowcount == 1


UNKNOWN_FAILURE = {"type": "VolchainError", "code": 500, "message": "The create flow failed unexpectedly."}


def compensate(factory: sessionmaker[Session], flow_id: str, steps: list[Step], env: StepEnv) -> str:
    """Undo every recorded step of a flow, in reverse, in one transaction; return the end state.

    Idempotent: a finished flow is left as it is, a reverted step is not reverted again.
    """
    with factory() as session, session.begin():
        flow = session.scalar(select(FlowRun).where(FlowRun.id == flow_id).with_for_update())
        if flow is None:
            raise errors.FlowNotFound(flow_id=flow_id)
        if FlowState(flow.state) in TERMINAL_STATES:
            return flow.state
        now = utcnow()
        if flow.error is None:
            flow.error = UNKNOWN_FAILURE
        recorded = {name: dict(rec) for name, rec in (flow.steps or {}).items()}
        results = {name: rec["result"] for name, rec in recorded.items()}
        for step in reversed(steps):
            rec = recorded.get(step.name)
            if rec is None or rec["state"] != StepState.DONE.value:
                continue
            step.revert(session, flow, results, env)
            rec.update(state=StepState.REVERTED.value, reverted_at=now.isoformat())
        flow.steps = recorded
        flow.plans = null()  # nothing planned runs any more (migration 0005)
        flow.state = FlowState.REVERTED.value
        flow.finished_at = now
        flow.progress_at = now
        return flow.state


def park(factory: sessionmaker[Session], flow_id: str, reason: str) -> None:
    """Give up on compensating a flow: needs_attention, so an operator sees it (never dropped).

    The original error is kept; why compensation failed is added to it.
    """
    with factory() as session, session.begin():
        flow = session.scalar(select(FlowRun).where(FlowRun.id == flow_id).with_for_update())
        if flow is None or flow.state not in (FlowState.RUNNING.value, FlowState.COMPENSATING.value):
            return
        flow.error = {**(flow.error or UNKNOWN_FAILURE), "compensation_error": reason[:1000]}
        flow.state = FlowState.NEEDS_ATTENTION.value
        flow.progress_at = utcnow()
