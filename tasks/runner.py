"""The one runner: run a step of a flow with its flow-log record, and compensate a flow from its log.

A step is a module (or object) with a `name`, a `run` and a `revert` (the contract at the top of
each step module says what it requires, provides and reverts):

    run(session, ctx, env) -> dict          apply the effect; return what it provides
    revert(session, ctx, result, env)       undo the effect; `result` is what `run` returned

`run_step` runs every step of every flow the same way, as one short transaction:

    1. lock the flow row (SELECT ... FOR UPDATE): its state, its inputs and its step records,
       as of the latest commit; the context the step gets is rebuilt from them;
    2. a step recorded already (a redelivered message, a sweeper racing a late worker) is
       replayed: nothing runs again, the context with its record is returned; a flow that is
       no longer running refuses the step (FlowNotRunning);
    3. the step's `run` applies its effect in the same transaction;
    4. its result is merged into the flow row's records (the final step also ends the flow);
    5. COMMIT: the effect and its record together, or neither.

Every flow uses this runner, whichever process runs its steps: the create chain's steps run as
Celery tasks; a flow started by an API call runs its first steps in the API process
(`run_flow`) and its last one on a volume service; the scheduler and the volume services run
the flows their messages start. A flow whose first step starts it passes `start` (its row):
the row is inserted in that step's transaction, so a step refused with an error leaves no flow
behind, and a second delivery of the same message finds the row and replays the step.

A step may end its flow early by returning `ENDS_FLOW: True` in its result (a delete with
nothing left to do on a backend, a cast that found its volume gone): the flow is then
`succeeded` with that record.

`compensate` undoes a failed flow: it locks the flow row, then calls `revert` of every recorded
step in reverse, in one transaction; it reads only the log, so any worker can run it again after
a crash, and running it twice changes nothing.

What the log records is also counted (tasks/metrics.py), here and only here, once its
transaction has committed: a flow started, a step's duration, a flow succeeded, failed,
compensated or parked, and how long it took.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import dataclasses

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from models import utcnow
from models.db import engine_of, kept_connection
from models.flow_log import TERMINAL_STATES, FlowRun, FlowState, StepState
from tasks import errors, metrics, user_messages
from tasks.context import CreateContext, FlowContext
from tasks.quota_engine import QuotaConfig

log = logging.getLogger(__name__)


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
    service_down_time: float = 60.0
    publish: Callable[[CastMessage], None] | None = None
    driver: Any = None  # a volume service's drivers.base.VolumeDriver; None elsewhere
    host: str | None = None  # a volume service's host@backend


class Step(Protocol):
    name: str

    def run(self, session: Session, ctx: Any, env: StepEnv) -> dict[str, Any]: ...

    def revert(self, session: Session, ctx: Any, result: dict[str, Any], env: StepEnv) -> None: ...


ENDS_FLOW = "ends_flow"  # a step's result key: the flow ends here, succeeded


_FLOWS = FlowRun.__table__
_LOCK_FLOW = (
    select(_FLOWS.c.state, _FLOWS.c.steps, _FLOWS.c.volume_id, _FLOWS.c.project_id, _FLOWS.c.user_id,
           _FLOWS.c.request, _FLOWS.c.caller, _FLOWS.c.kind, _FLOWS.c.created_at)
    .where(_FLOWS.c.id == bindparam("flow_id"))
    .with_for_update()
)
_RECORD_STEP = (
    update(_FLOWS).where(_FLOWS.c.id == bindparam("flow_id"))
    .values(steps=bindparam("steps"), progress_at=bindparam("now"))
)
_RECORD_FINAL_STEP = _RECORD_STEP.values(state=FlowState.SUCCEEDED.value, finished_at=bindparam("now"))


_START_COLUMNS = [_FLOWS.c[name] for name in (
    "id", "kind", "volume_id", "project_id", "user_id", "state", "request", "caller", "steps",
    "compensation_attempts", "root_task_id", "created_at", "progress_at")]
# Text, built from the table's columns (a renamed column fails at import): SQLAlchemy 2.0 gives a
# PostgreSQL `ON CONFLICT` insert no cache key, so the Core form would be compiled on every flow.
_START_FLOW = text(
    f"INSERT INTO {_FLOWS.name} ({', '.join(c.name for c in _START_COLUMNS)}) "
    f"VALUES ({', '.join(':' + c.name for c in _START_COLUMNS)}) ON CONFLICT ({_FLOWS.c.id.name}) DO NOTHING"
).bindparams(*(bindparam(c.name, type_=c.type) for c in _START_COLUMNS))


def flow_row(flow_id: str, kind: str, volume_id: str, project_id: str, user_id: str | None,
             request: dict[str, Any], caller: dict[str, Any] | None = None) -> dict[str, Any]:
    """A new flow's row, for `run_step(..., start=...)`."""
    now = utcnow()
    return {"id": flow_id, "kind": kind, "volume_id": volume_id, "project_id": project_id, "user_id": user_id,
            "state": FlowState.RUNNING.value, "request": request, "caller": caller, "steps": {},
            "compensation_attempts": 0, "root_task_id": flow_id, "created_at": now, "progress_at": now}


def run_step(factory: sessionmaker[Session], step: Step, flow_id: str, env: StepEnv,
             final: bool = False, context: type = CreateContext, start: dict[str, Any] | None = None):
    """Run `step` once for this flow: its effect and its record in one transaction; a step
    recorded already is replayed. Returns the flow's context with the step's result in it.

    The step's inputs come from the flow row, never from the message that triggered it. The
    transaction runs on this thread's kept connection; the step's Session joins it. `start`, a
    `flow_row`, inserts the flow in the same transaction unless it exists.
    """
    conn = kept_connection(engine_of(factory))
    began = time.perf_counter()
    with conn.begin(), Session(bind=conn, expire_on_commit=False) as session:
        if start is not None:
            conn.execute(_START_FLOW, start)
        row = conn.execute(_LOCK_FLOW, {"flow_id": flow_id}).first()
        if row is None:
            raise errors.FlowNotFound(flow_id=flow_id)
        state, steps, volume_id, project_id, user_id, request, caller, kind, created_at = row
        steps = steps or {}
        ctx = context.from_log(flow_id, volume_id, project_id, user_id, request, caller, steps)
        if step.name in steps:
            log.info("flow %s: %s already recorded, replaying its result", flow_id, step.name)
            return ctx
        if state != FlowState.RUNNING.value:
            raise errors.FlowNotRunning(flow_id=flow_id, state=state, step=step.name)
        provided = step.run(session, ctx, env)
        session.flush()
        now = utcnow()
        record = {"state": StepState.DONE.value, "result": provided, "done_at": now.isoformat(), "reverted_at": None}
        ends = final or bool(provided.get(ENDS_FLOW))
        conn.execute(_RECORD_FINAL_STEP if ends else _RECORD_STEP,
                     {"flow_id": flow_id, "steps": {**steps, step.name: record}, "now": now})
    metrics.STEP_SECONDS.labels(kind, step.name).observe(time.perf_counter() - began)
    if not steps:
        metrics.FLOWS_STARTED.labels(kind).inc()
    if ends:
        metrics.FLOWS_SUCCEEDED.labels(kind).inc()
        metrics.FLOW_SECONDS.labels(kind, FlowState.SUCCEEDED.value).observe((now - created_at).total_seconds())
    return ctx.merge(provided)


def error_dict(exc: BaseException) -> dict[str, Any]:
    """How a flow records the error that stopped it: {type, code, message}."""
    if isinstance(exc, errors.VolchainError):
        return exc.to_dict()
    if isinstance(exc, DBAPIError):
        return {"type": type(exc).__name__, "code": 500, "message": "A database error stopped the flow."}
    return {"type": type(exc).__name__, "code": 500, "message": f"Unexpected error: {type(exc).__name__}."}


def run_flow(factory: sessionmaker[Session], steps: list[Step], flow_id: str, env: StepEnv, *,
             flow_steps: list[Step] | None = None, context: type = FlowContext, start: dict[str, Any] | None = None):
    """Run `steps` of a flow in this process, in order, each through `run_step`; the first one
    starts the flow (`start`). `flow_steps` are all the flow's steps when this process runs only
    the first ones (the API hands the last to a volume service); the flow ends with its last.
    A step that fails stops the flow: its error is recorded and every recorded step is reverted
    (`compensate`), then the error is raised to the caller. A step whose result ends the flow
    stops the loop. Returns the last context."""
    flow_steps = flow_steps or steps
    ctx = None
    for i, step in enumerate(steps):
        try:
            ctx = run_step(factory, step, flow_id, env, final=step is flow_steps[-1], context=context,
                           start=start if i == 0 else None)
        except errors.FlowNotRunning:
            raise
        except Exception as exc:
            if i > 0 and record_failure(factory, flow_id, step.name, error_dict(exc)):
                compensate(factory, flow_id, flow_steps, env, context=context)
            raise
        if ctx.results.get(ENDS_FLOW):
            break
    return ctx


def record_failure(factory: sessionmaker[Session], flow_id: str, step: str | None, error: dict) -> bool:
    """Mark a running flow as compensating with the error that stopped it; False if not running."""
    with factory.begin() as session:
        stopped = session.execute(
            update(FlowRun)
            .where(FlowRun.id == flow_id, FlowRun.state == FlowState.RUNNING.value)
            .values(state=FlowState.COMPENSATING.value, error=error, failed_step=step, progress_at=utcnow())
            .returning(FlowRun.kind, FlowRun.steps)
        ).first()
    if stopped is None:
        return False
    kind, steps = stopped
    if not steps:  # it failed before any step was recorded: the log records it for the first time
        metrics.FLOWS_STARTED.labels(kind).inc()
    metrics.FLOWS_FAILED.labels(kind, step or metrics.NO_STEP, error.get("type") or "VolchainError").inc()
    return True


UNKNOWN_FAILURE = {"type": "VolchainError", "code": 500, "message": "The create flow failed unexpectedly."}


def compensate(factory: sessionmaker[Session], flow_id: str, steps: list[Step], env: StepEnv,
               context: type = CreateContext, only_failed: bool = False) -> str:
    """Undo every recorded step of a flow, in reverse, in one transaction; return the end state.

    Each `revert` gets the flow's context rebuilt from its log (with the error that stopped the
    flow as `ctx.failure`) and its own step's recorded result. Idempotent: a finished flow is
    left as it is, a reverted step is not reverted again. With `only_failed` (the chain's
    errback), a flow still `running` is left as it is too: no step recorded a failure, so the
    task that fired the errback failed for a passing reason (its retry could not be queued while
    the broker was away); the flow goes on, or the sweeper drives it forward.
    """
    with factory.begin() as session:
        flow = session.scalar(select(FlowRun).where(FlowRun.id == flow_id).with_for_update())
        if flow is None:
            raise errors.FlowNotFound(flow_id=flow_id)
        if FlowState(flow.state) in TERMINAL_STATES:
            return flow.state
        if only_failed and flow.state == FlowState.RUNNING.value:
            return flow.state
        now = utcnow()
        if flow.error is None:
            flow.error = UNKNOWN_FAILURE
        recorded = {name: dict(rec) for name, rec in (flow.steps or {}).items()}
        ctx = dataclasses.replace(
            context.from_log(flow.id, flow.volume_id, flow.project_id, flow.user_id, flow.request, flow.caller,
                             recorded),
            failure=flow.error)
        for step in reversed(steps):
            rec = recorded.get(step.name)
            if rec is None or rec["state"] != StepState.DONE.value:
                continue
            step.revert(session, ctx, rec["result"], env)
            rec.update(state=StepState.REVERTED.value, reverted_at=now.isoformat())
        # (A create whose chain could not even be queued answered 503 itself: no message.)
        if (flow.caller or {}).get("respond_async") and flow.error.get("type") != "SubmitFailed":
            _tell_the_user(session, flow)
        flow.steps = recorded
        flow.state = FlowState.REVERTED.value
        flow.finished_at = now
        flow.progress_at = now
        kind, lasted = flow.kind, (now - flow.created_at).total_seconds()
    metrics.FLOWS_COMPENSATED.labels(kind).inc()
    metrics.FLOW_SECONDS.labels(kind, FlowState.REVERTED.value).observe(lasted)
    return FlowState.REVERTED.value


def _tell_the_user(session: Session, flow: FlowRun) -> None:
    """A create answered 202 before its outcome (`caller.respond_async`; only creates are) failed:
    the caller learns why from a user message, recorded with the compensation."""
    over_quota = (flow.error or {}).get("code") == 413
    user_messages.record(session, project_id=flow.project_id, resource_type=user_messages.VOLUME,
                         resource_uuid=flow.volume_id, action=user_messages.Action.CREATE_VOLUME,
                         detail=user_messages.Detail.QUOTA_EXCEED if over_quota else user_messages.Detail.UNKNOWN_ERROR)


def park(factory: sessionmaker[Session], flow_id: str, reason: str, start: dict[str, Any] | None = None,
         why: str = "compensation_error") -> None:
    """Give up on a flow: needs_attention, so an operator sees it (never dropped).

    The original error is kept; why it was given up (`why`: compensation kept failing, or a
    consumer's step did) is added to it. `start`, a `flow_row`, records a flow whose first step
    never committed, so that it is parked too.
    """
    with factory.begin() as session:
        if start is not None:
            session.execute(_START_FLOW, start)
        flow = session.scalar(select(FlowRun).where(FlowRun.id == flow_id).with_for_update())
        if flow is None or flow.state not in (FlowState.RUNNING.value, FlowState.COMPENSATING.value):
            return
        # Running with no step recorded: nothing counted it yet (a compensating flow was, as failed).
        first = flow.state == FlowState.RUNNING.value and not flow.steps
        flow.error = {**(flow.error or UNKNOWN_FAILURE), why: reason[:1000]}
        flow.state = FlowState.NEEDS_ATTENTION.value
        flow.progress_at = utcnow()
        kind, lasted = flow.kind, (flow.progress_at - flow.created_at).total_seconds()
    if first:
        metrics.FLOWS_STARTED.labels(kind).inc()
    metrics.FLOWS_PARKED.labels(kind, why).inc()
    metrics.FLOW_SECONDS.labels(kind, FlowState.NEEDS_ATTENTION.value).observe(lasted)
