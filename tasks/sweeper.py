"""Sweeper: expire stale reservations and drive every stuck flow to an end.

A flow is stuck when it is `running` or `compensating` and has made no progress for longer
than its deadline (its message lost with a broker that restarted empty, a worker killed with
early acks). The deadline exceeds the broker's visibility timeout (workers/settings.py), so a
message held by a worker that died is redelivered before this applies. `finish_flow` decides
from the log alone, for the sweeper and for an operator's `volchain flow resume`:

    running        -> forward: run the remaining steps here, as the chain would have; a step
                      that refuses (over quota by now, its reservation expired) fails the flow,
                      which is compensated at once, as the chain's errback would have
    compensating   -> backward: compensate again (its task was lost)

An accepted create is thus finished, not failed, because a message was lost. Every action goes
through the same idempotent step runner and compensation as the chain, so a sweep racing a late
worker changes nothing twice. A pass works in bounded batches, oldest first, until nothing is
due; it walks forward through the flows (by progress_at, id), so it tries each at most once. A
flow that keeps failing for another reason (the database, a bug), pass after pass, is parked as
`needs_attention`. Every flow a pass finishes is counted, by how (tasks/metrics.py).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from models import utcnow
from models.flow_log import FlowRun, FlowState
from tasks import errors, metrics, quota_engine
from tasks.create.flow import KIND as CREATE_KIND
from tasks.runner import StepEnv, compensate, park, record_failure, run_step

log = logging.getLogger(__name__)

# Only create chains are swept: the other flows' last steps wait, by design, in the queue of a
# volume service that may be down ("a backend that is down keeps its messages until it returns").
UNFINISHED = (FlowState.RUNNING.value, FlowState.COMPENSATING.value)
RESUMED, COMPENSATED = "resumed", "compensated"  # what finish_flow did
PARKED = "parked"  # what a pass did with a flow it could not finish, pass after pass


@dataclass
class SweepReport:
    expired_reservations: int = 0
    resumed: list[str] = field(default_factory=list)
    compensated: list[str] = field(default_factory=list)
    parked: list[str] = field(default_factory=list)
    pruned: int = 0  # finished flows deleted from the log (tasks/retention.py)
    redriven: list[str] = field(default_factory=list)  # message ids of lost casts sent again (tasks/redrive.py)

    @property
    def finished(self) -> list[str]:
        return self.resumed + self.compensated + self.parked


def _due(deadline_seconds: int, after: tuple[datetime, str] | None) -> list:
    """Stuck create flows, past `after` (progress_at, id) in sweep order."""
    where = [FlowRun.kind == CREATE_KIND, FlowRun.state.in_(UNFINISHED),
             FlowRun.progress_at < utcnow() - timedelta(seconds=deadline_seconds)]
    if after is not None:
        where.append(tuple_(FlowRun.progress_at, FlowRun.id) > after)
    return where


def stuck_flows(session: Session, deadline_seconds: int, limit: int,
                after: tuple[datetime, str] | None = None) -> list[tuple[datetime, str]]:
    """(progress_at, id) of up to `limit` flows with no progress for `deadline_seconds`, oldest
    first, starting past `after`: a pass walks forward, so it reaches each flow at most once."""
    rows = session.execute(select(FlowRun.progress_at, FlowRun.id).where(*_due(deadline_seconds, after))
                           .order_by(FlowRun.progress_at, FlowRun.id).limit(limit))
    return [tuple(row) for row in rows]


def finish_flow(factory: sessionmaker[Session], flow_id: str, steps: list, env: StepEnv) -> str | None:
    """Drive one running or compensating create flow to an end by the rule above.

    Returns RESUMED (it succeeded) or COMPENSATED, or None when the flow had ended already. Safe
    while a late worker still runs the flow: the runner and compensation serialise on the flow row.
    """
    with factory() as session:
        flow = session.get(FlowRun, flow_id)
        if flow is None:
            raise errors.FlowNotFound(flow_id=flow_id)
        state = flow.state
    if state == FlowState.RUNNING.value:
        try:
            for step in steps:
                run_step(factory, step, flow_id, env, final=step is steps[-1])
            return RESUMED
        except errors.ServiceUnavailable:  # the broker is away: the flow stays running, next pass tries again
            raise
        except errors.FlowNotRunning:  # a late worker ended or failed it meanwhile
            with factory() as session:
                state = session.get(FlowRun, flow_id).state
        except errors.VolchainError as exc:  # the step refused: fail the flow, as the chain does
            record_failure(factory, flow_id, step.name, exc.to_dict())
            state = FlowState.COMPENSATING.value
    if state != FlowState.COMPENSATING.value:
        return None
    compensate(factory, flow_id, steps, env)
    return COMPENSATED


def sweep(factory: sessionmaker[Session], steps: list, env: StepEnv, deadline_seconds: int,
          max_compensation_attempts: int = 5, batch_size: int = 100) -> SweepReport:
    """One pass: expire reservations, then finish every stuck flow, `batch_size` at a time, until
    none is left. Each flow is tried at most once per pass. Safe to run concurrently."""
    report = SweepReport()
    with factory() as session, session.begin():
        report.expired_reservations = quota_engine.expire(session)
    after = None
    for batch_number in itertools.count(1):
        with factory() as session:
            batch = stuck_flows(session, deadline_seconds, batch_size, after)
        if not batch:
            break
        for _, flow_id in batch:
            _finish_one(factory, flow_id, steps, env, max_compensation_attempts, report)
        after = batch[-1]
        with factory() as session:
            left = session.scalar(select(func.count()).select_from(FlowRun)
                                  .where(*_due(deadline_seconds, after)))
        log.info("sweeper: batch %d: %d flows finished so far, %d left", batch_number, len(report.finished), left)
        if not left:
            break
    return report


def _finish_one(factory: sessionmaker[Session], flow_id: str, steps: list, env: StepEnv,
                max_compensation_attempts: int, report: SweepReport) -> None:
    try:
        done = finish_flow(factory, flow_id, steps, env)
    except errors.ServiceUnavailable as exc:  # not the flow's fault: not counted against it
        log.warning("sweeper: flow %s waits for the broker: %s", flow_id, exc)
        return
    except Exception as exc:  # one bad flow must not stop the sweep
        log.exception("sweeper: flow %s could not be finished", flow_id)
        if _count_attempt(factory, flow_id) >= max_compensation_attempts:
            park(factory, flow_id, f"{type(exc).__name__}: {exc}")
            report.parked.append(flow_id)
            metrics.FLOWS_SWEPT.labels(CREATE_KIND, PARKED).inc()
        return
    if done == RESUMED:
        report.resumed.append(flow_id)
    elif done == COMPENSATED:
        report.compensated.append(flow_id)
    if done is not None:
        metrics.FLOWS_SWEPT.labels(CREATE_KIND, done).inc()


def _count_attempt(factory: sessionmaker[Session], flow_id: str) -> int:
    with factory() as session, session.begin():
        session.execute(update(FlowRun).where(FlowRun.id == flow_id)
                        .values(compensation_attempts=FlowRun.compensation_attempts + 1))
        return session.scalar(select(FlowRun.compensation_attempts).where(FlowRun.id == flow_id)) or 0
