"""Sweeper: expire stale reservations and drive every stuck flow to an end.

A flow is stuck when it is `running` or `compensating` and has made no progress for longer
than its deadline (a lost message, a worker killed with early acks, a broker restart without
persistence). The sweeper decides from the log alone:

    running, quota committed      -> forward: run the remaining steps (the cast) here
    running, quota not committed  -> backward: record FlowTimedOut, compensate
    compensating                  -> backward: compensate again (its task was lost)

Every action goes through the same idempotent step runner and compensation as the chain, so
a sweep racing a late worker changes nothing twice. A compensation that keeps failing is
parked as `needs_attention`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from models import utcnow
from models.flow_log import FlowRun, FlowState
from tasks import errors, quota_engine
from tasks.context import CreateContext
from tasks.runner import StepEnv, compensate, park, record_failure, run_step

log = logging.getLogger(__name__)

# Only create chains are swept: the other flows' last steps wait, by design, in the queue of a
# volume service that may be down ("a backend that is down keeps its messages until it returns").
CREATE_KIND = "create_volume"


@dataclass
class SweepReport:
    expired_reservations: int = 0
    resumed: list[str] = field(default_factory=list)
    compensated: list[str] = field(default_factory=list)
    parked: list[str] = field(default_factory=list)

    @property
    def finished(self) -> list[str]:
        return self.resumed + self.compensated + self.parked


def context_from_log(session: Session, flow_id: str) -> CreateContext:
    """Rebuild a flow's CreateContext from its run row and its recorded steps."""
    flow = session.get(FlowRun, flow_id)
    if flow is None:
        raise errors.FlowNotFound(flow_id=flow_id)
    return CreateContext.from_log(flow.id, flow.volume_id, flow.project_id, flow.user_id, flow.request,
                                  flow.caller, flow.steps)


def stuck_flows(session: Session, deadline_seconds: int, limit: int = 100) -> list[tuple[str, str, str]]:
    """(flow id, volume id, state) of flows with no progress for `deadline_seconds`."""
    cutoff = utcnow() - timedelta(seconds=deadline_seconds)
    rows = session.execute(
        select(FlowRun.id, FlowRun.volume_id, FlowRun.state)
        .where(FlowRun.kind == CREATE_KIND,
               FlowRun.state.in_([FlowState.RUNNING.value, FlowState.COMPENSATING.value]),
               FlowRun.progress_at < cutoff)
        .order_by(FlowRun.progress_at)
        .limit(limit)
    ).all()
    return [(r.id, r.volume_id, r.state) for r in rows]


def sweep(factory: sessionmaker[Session], steps: list, env: StepEnv, deadline_seconds: int,
          max_compensation_attempts: int = 5) -> SweepReport:
    """One pass: expire reservations, then finish every stuck flow. Safe to run concurrently."""
    report = SweepReport()
    with factory() as session, session.begin():
        report.expired_reservations = quota_engine.expire(session)
    with factory() as session:
        stuck = stuck_flows(session, deadline_seconds)
    for flow_id, volume_id, state in stuck:
        try:
            with factory() as session:
                ctx = context_from_log(session, flow_id)
            if state == FlowState.RUNNING.value and ctx.committed:
                for step in steps:
                    run_step(factory, step, flow_id, env, final=step is steps[-1])
                report.resumed.append(flow_id)
                continue
            if state == FlowState.RUNNING.value:
                timed_out = errors.FlowTimedOut(volume_id=volume_id, seconds=deadline_seconds)
                record_failure(factory, flow_id, None, timed_out.to_dict())
            compensate(factory, flow_id, steps, env)
            report.compensated.append(flow_id)
        except Exception as exc:  # one bad flow must not stop the sweep
            log.exception("sweeper: flow %s could not be finished", flow_id)
            if _count_attempt(factory, flow_id) >= max_compensation_attempts:
                park(factory, flow_id, f"{type(exc).__name__}: {exc}")
                report.parked.append(flow_id)
    return report


def _count_attempt(factory: sessionmaker[Session], flow_id: str) -> int:
    with factory() as session, session.begin():
        session.execute(update(FlowRun).where(FlowRun.id == flow_id)
                        .values(compensation_attempts=FlowRun.compensation_attempts + 1))
        return session.scalar(select(FlowRun.compensation_attempts).where(FlowRun.id == flow_id)) or 0
