"""Re-drive: send again a cast that no consumer took, so that every accepted operation ends.

A cast is published before its sender's transaction commits, and the sender records it (queue,
task, message id and body) with the step that sent it. A published message can still be lost:
Redis restarted without persistence, a queue purged. Then nothing would ever move again:

    a volume stays `creating`        its create (or schedule) flow succeeded with the cast, and the
                                     flow the consumer starts from it (tasks/casts.py
                                     `consumer_flow_id`) does not exist
    a delete, extend or snapshot     its flow stays `running`, waiting for the last step on the
    flow stays `running`             volume service

Rule: a cast whose consumer has recorded nothing `deadline` seconds after the sender's last
progress is published again, same message id and body, if its consumer is up (a service that is
down keeps its queue; it is re-sent once the service is back, should that queue have been lost).
The sender's `progress_at` is stamped whenever it is looked at, so each cast is re-sent at most
once per deadline, and candidates that must wait (their consumer down) do not crowd out others. A copy
of a message that was not lost after all finds its step recorded and changes nothing
(docs/messages.md). The sweeper runs this on every pass (tasks/sweeper.py).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import literal_column, select, update
from sqlalchemy.orm import Session, sessionmaker

from models import utcnow
from models.flow_log import FlowRun, FlowState
from models.service import SCHEDULER_BINARY, VOLUME_BINARY
from models.volume import Volume, VolumeStatus
from tasks import casts, errors
from tasks.create.flow import KIND as CREATE_KIND
from tasks.delete.flow import KIND as DELETE_KIND
from tasks.extend.flow import KIND as EXTEND_KIND
from tasks.runner import StepEnv
from tasks.schedule.flow import KIND as SCHEDULE_KIND
from tasks.services import up_services
from tasks.snapshot.flow import CREATE_KIND as SNAPSHOT_CREATE_KIND, DELETE_KIND as SNAPSHOT_DELETE_KIND

log = logging.getLogger(__name__)

# Flows that stay `running` until a volume service runs their last step.
WAITING_KINDS = (DELETE_KIND, EXTEND_KIND, SNAPSHOT_CREATE_KIND, SNAPSHOT_DELETE_KIND)
# Flows that succeed when their cast is sent; the volume stays `creating` until it is consumed.
HANDING_KINDS = (CREATE_KIND, SCHEDULE_KIND)


def recorded_cast(flow: FlowRun) -> dict[str, Any] | None:
    """The cast a flow recorded (each flow sends at most one), or None."""
    for record in (flow.steps or {}).values():
        result = record.get("result")
        if isinstance(result, dict) and isinstance(result.get("cast"), dict):
            return result["cast"]
    return None


def consuming_queues(session: Session, scheduler_queue: str, down_time: float) -> set[str]:
    """The queues whose consumer is up now: the scheduler's, and each up volume service's."""
    queues = {casts.backend_queue(s.host) for s in up_services(session, VOLUME_BINARY, down_time)}
    if up_services(session, SCHEDULER_BINARY, down_time):
        queues.add(scheduler_queue)
    return queues


def _lost(session: Session, flow: FlowRun, cast: dict[str, Any]) -> bool:
    """Whether the consumer of this flow's cast has recorded nothing of it, and is not working on
    it now: a volume service running a long step holds the volume's row (SKIP LOCKED passes it)."""
    if flow.kind in WAITING_KINDS:
        return flow.state == FlowState.RUNNING.value
    if session.get(FlowRun, casts.consumer_flow_id(cast["body"])) is not None:
        return False
    busy = session.scalars(select(Volume.id).where(Volume.id == flow.volume_id)
                           .with_for_update(skip_locked=True)).first() is None
    return not busy


def waiting_senders(session: Session, deadline_seconds: int, limit: int) -> list[str]:
    """Ids of flows whose cast may be lost, least recently looked at first: waiting flows with no
    progress for the deadline, and the handing flows of volumes still `creating` that long."""
    cutoff = utcnow() - timedelta(seconds=deadline_seconds)
    waiting = (select(FlowRun.id, FlowRun.progress_at)
               .where(FlowRun.state == FlowState.RUNNING.value, FlowRun.kind.in_(WAITING_KINDS),
                      FlowRun.progress_at < cutoff)
               .order_by(FlowRun.progress_at).limit(limit))
    creating = (select(FlowRun.id, FlowRun.progress_at).join(Volume, Volume.id == FlowRun.volume_id)
                # a literal, so that the partial index ix_volumes_creating serves even a generic plan
                .where(Volume.status == literal_column(f"'{VolumeStatus.CREATING.value}'"),
                       Volume.deleted.is_(False), Volume.created_at < cutoff, FlowRun.kind.in_(HANDING_KINDS),
                       FlowRun.state == FlowState.SUCCEEDED.value, FlowRun.progress_at < cutoff)
                .order_by(FlowRun.progress_at).limit(limit))
    rows = sorted(list(session.execute(waiting)) + list(session.execute(creating)), key=lambda row: row[1])
    return [flow_id for flow_id, _ in rows[:limit]]


def redrive(factory: sessionmaker[Session], env: StepEnv, deadline_seconds: int, down_time: float,
            limit: int = 1000) -> list[str]:
    """Re-send every lost cast by the rule above; returns the message ids sent again.

    Every flow looked at is stamped (`progress_at`), sent again or not, so the next pass looks at
    others first and each is looked at once per deadline. A flow whose row is locked (its consumer
    is at work) is passed over. The broker away ends the re-drive for this pass.
    """
    sent = []
    with factory() as session:
        candidates = waiting_senders(session, deadline_seconds, limit)
        consuming = consuming_queues(session, env.scheduler_queue, down_time) if candidates else set()
    for flow_id in candidates:
        try:
            message_id = _redrive_one(factory, env, flow_id, consuming)
        except errors.ServiceUnavailable:
            log.warning("sweeper: the broker is away; lost casts are sent again on a later pass")
            break
        except Exception:  # one bad flow must not stop the others
            log.exception("sweeper: flow %s: could not send its cast again", flow_id)
            continue
        if message_id is not None:
            sent.append(message_id)
    return sent


def _redrive_one(factory: sessionmaker[Session], env: StepEnv, flow_id: str, consuming: set[str]) -> str | None:
    with factory() as session, session.begin():
        flow = session.scalars(select(FlowRun).where(FlowRun.id == flow_id)
                               .with_for_update(skip_locked=True)).one_or_none()
        if flow is None:  # locked: its consumer's step is running now
            return None
        session.execute(update(FlowRun).where(FlowRun.id == flow_id).values(progress_at=utcnow()))
        cast = recorded_cast(flow)
        if cast is None or "body" not in cast or not _lost(session, flow, cast):
            return None  # consumed, being consumed, or recorded by a release that did not keep the body
        if cast["queue"] not in consuming:
            return None  # a service that is down keeps its queue; looked at again after a deadline
        casts.publish(env, cast["task"], cast["body"], flow.volume_id)
    log.warning("sweeper: flow %s: its cast %s to %s was not taken; sent it again", flow_id, cast["message_id"],
                cast["queue"])
    return cast["message_id"]
