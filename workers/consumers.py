"""The consumers at the other end of the casts: the scheduler and the volume services (docs/messages.md).

Each task takes one message body and runs one step of a flow through the one runner:

    volchain.scheduler.create_volume   (queue `scheduler`)           the schedule flow
    volchain.volume.create_volume      (queue `volume.<host@backend>`) the provision flow
    volchain.volume.delete_volume      (queue `volume.<host@backend>`) the last step of the delete flow
    volchain.volume.extend_volume      (queue `volume.<host@backend>`) the last step of the extend flow
    volchain.volume.create_snapshot    (queue `volume.<host@backend>`) the last step of the snapshot create flow
    volchain.volume.delete_snapshot    (queue `volume.<host@backend>`) the last step of the snapshot delete flow

A flow started by a consumer takes its id from the message id and the queue (tasks/casts.py
`consumer_flow_id`) and is inserted in the step's own transaction, so a message delivered twice,
or a cast sent twice, runs its step once. Every cast is sent before its sender's transaction
commits (so that a crash cannot lose it): a consumer that does not find the sender's flow yet,
or the volume not yet handed over (CastNotReady), records nothing and tries again shortly, and
drops the message if that never happens (the sender rolled back; when it tries again it sends
the same message again). Late acks:
a consumer killed mid-step leaves its message to be redelivered. Transient database errors are
retried with backoff (Celery's `autoretry_for`); a step refused because its flow has ended is
dropped quietly.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import Ignore
from sqlalchemy.exc import OperationalError

from tasks import casts, errors
from tasks.context import FlowContext
from tasks.delete import flow as delete_flow
from tasks.extend import flow as extend_flow
from tasks.provision import flow as provision_flow
from tasks.runner import flow_row, park
from tasks.schedule import flow as schedule_flow
from tasks.snapshot import flow as snapshot_flow
from workers.app import VolchainTask, app
from workers.runtime import get_runtime

log = logging.getLogger(__name__)


class ConsumerTask(VolchainTask):
    """A consumer: transient database errors retried with backoff; a message that still fails is
    not dropped silently: its flow is parked `needs_attention` with the reason (recorded even when
    the flow's first step never committed), for `volchain flow list --state needs_attention`."""

    throws = errors.EXPECTED_ERRORS
    autoretry_for = (OperationalError, errors.ServiceUnavailable)  # the database or the broker away
    retry_backoff = True
    retry_backoff_max = 30
    max_retries = 10

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        body = args[0] if args and isinstance(args[0], dict) else {}
        kind = STARTED_BY.get(self.name)
        try:
            flow_id = casts.consumer_flow_id(body) if kind else body["flow_id"]
            start = flow_row(flow_id, kind, body["volume_id"], body.get("project_id") or "", body.get("user_id"),
                             body) if kind else None
            log.error("%s: flow %s failed (%s: %s); parked as needs_attention", self.name, flow_id,
                      type(exc).__name__, exc)
            park(get_runtime().factory, flow_id, f"{type(exc).__name__}: {exc}", start=start, why="consumer_error")
        except Exception:  # a message too broken to name its flow, or the database away: the log has it
            log.exception("%s: message %s failed and could not be parked", self.name, task_id)


def _check_version(body: dict[str, Any]) -> None:
    if str(body.get("version", "")).split(".")[0] != casts.MESSAGE_VERSION.split(".")[0]:
        raise errors.InvalidInput(reason=f"message version {body.get('version')!r} is not supported")


# The consumers that start a flow of their own, and its kind.
STARTED_BY = {casts.SCHEDULER_CREATE: schedule_flow.KIND, casts.VOLUME_CREATE: provision_flow.KIND}

NOT_COMMITTED_RETRIES = 8  # 0.05 s doubling: about 10 s for the sender's transaction to commit


def _run(task: ConsumerTask, body: dict[str, Any], step, flow_id: str, kind: str | None = None) -> dict[str, Any]:
    """Run `step` of `flow_id`; `kind` starts the flow from the message when it is new."""
    _check_version(body)
    rt = get_runtime()
    start = None
    if kind is not None:
        start = flow_row(flow_id, kind, body["volume_id"], body.get("project_id") or "", body.get("user_id"), body)
    try:
        ctx = rt.run_step(rt.factory, step, flow_id, rt.env, final=True, context=FlowContext, start=start)
    except errors.FlowNotRunning as exc:
        log.info("%s", exc)
        raise Ignore() from exc
    except (errors.FlowNotFound, errors.CastNotReady) as exc:
        if task.request.retries >= NOT_COMMITTED_RETRIES:
            log.warning("%s: the message is dropped", exc)
            raise Ignore() from exc
        raise task.retry(countdown=0.05 * 2 ** task.request.retries, max_retries=NOT_COMMITTED_RETRIES) from exc
    return {key: value for key, value in ctx.results.items() if key != "cast"}



@app.task(name=casts.SCHEDULER_CREATE, bind=True, base=ConsumerTask)
def schedule_create_volume(self, body: dict) -> dict:
    """Pick a backend for a new volume and cast its create there."""
    return _run(self, body, schedule_flow.STEPS[0], casts.consumer_flow_id(body), schedule_flow.KIND)


@app.task(name=casts.VOLUME_CREATE, bind=True, base=ConsumerTask)
def create_volume(self, body: dict) -> dict:
    """Make a scheduled volume real on this backend."""
    return _run(self, body, provision_flow.STEPS[0], casts.consumer_flow_id(body), provision_flow.KIND)


@app.task(name=casts.VOLUME_DELETE, bind=True, base=ConsumerTask)
def delete_volume(self, body: dict) -> dict:
    """Remove a volume (and its cascaded snapshots) from this backend."""
    return _run(self, body, delete_flow.STEPS[-1], body["flow_id"])


@app.task(name=casts.VOLUME_EXTEND, bind=True, base=ConsumerTask)
def extend_volume(self, body: dict) -> dict:
    """Grow a volume on this backend and commit its extra gigabytes."""
    return _run(self, body, extend_flow.STEPS[-1], body["flow_id"])


@app.task(name=casts.SNAPSHOT_CREATE, bind=True, base=ConsumerTask)
def create_snapshot(self, body: dict) -> dict:
    """Make a snapshot of a volume on this backend."""
    return _run(self, body, snapshot_flow.CREATE_STEPS[-1], body["flow_id"])


@app.task(name=casts.SNAPSHOT_DELETE, bind=True, base=ConsumerTask)
def delete_snapshot(self, body: dict) -> dict:
    """Remove a snapshot from this backend."""
    return _run(self, body, snapshot_flow.DELETE_STEPS[-1], body["flow_id"])
