"""Casts: the messages one flow sends to the scheduler or a volume service (docs/messages.md).

Every cast is a Celery task message on a named queue, JSON only, whose task id is its
`message_id`. A message id is derived from the flow that sends it and the cast's name, so a
re-sent cast carries the same id. A consumer that starts a flow of its own derives that flow's id
from the message id and its queue (`consumer_flow_id`): a copy delivered twice finds its flow
recorded and changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from models import utcnow
from tasks import errors
from tasks.runner import CastMessage, StepEnv

log = logging.getLogger(__name__)

MESSAGE_VERSION = "1.0"
MESSAGE_NAMESPACE = uuid.UUID("6b0d1c8e-3f1a-4c59-9a57-2f7e0f0c1d10")

# Task names, by who consumes them.
SCHEDULER_CREATE = "volchain.scheduler.create_volume"
VOLUME_CREATE = "volchain.volume.create_volume"
VOLUME_DELETE = "volchain.volume.delete_volume"
VOLUME_EXTEND = "volchain.volume.extend_volume"
SNAPSHOT_CREATE = "volchain.volume.create_snapshot"
SNAPSHOT_DELETE = "volchain.volume.delete_snapshot"


def backend_queue(host: str) -> str:
    """`host@backend#pool` -> `volume.host@backend` (one queue per backend, pools share it)."""
    return "volume." + host.split("#", 1)[0]


def on_this_backend(host: str | None, env: StepEnv) -> bool:
    """Whether a volume's `host` (`host@backend#pool`) is the backend this volume service runs."""
    return bool(host) and host.split("#", 1)[0] == env.host


def message_id(flow_id: str, cast: str) -> str:
    """Deterministic per flow and cast, so a re-sent cast carries the same id."""
    return str(uuid.uuid5(MESSAGE_NAMESPACE, f"{flow_id}/{cast}"))


def consumer_flow_id(body: dict[str, Any]) -> str:
    """The id of the flow a consumer starts for a message: one per message id and queue, so a copy
    delivered twice to one queue finds its flow, and the same id re-sent to another backend (a
    scheduler that chose again after its first choice rolled back) gets a flow of its own."""
    return message_id(body["message_id"], body["queue"])


def flow_message(flow_id: str, cast: str, queue: str, volume_id: str, project_id: str, **fields: Any) -> dict:
    """The body of a cast that hands the last step of `flow_id` to a volume service."""
    return {"version": MESSAGE_VERSION, "message_id": message_id(flow_id, cast), "flow_id": flow_id,
            "volume_id": volume_id, "project_id": project_id, "queue": queue, **fields,
            "sent_at": utcnow().isoformat()}


def publish(env: StepEnv, task_name: str, body: dict[str, Any], volume_id: str) -> dict[str, Any]:
    """Send `body` as `task_name` on its queue; returns what a step records of the cast: all of it,
    so that the sweeper can send it again if the broker loses it (tasks/redrive.py)."""
    message = CastMessage(queue=body["queue"], task_name=task_name, message_id=body["message_id"], body=body)
    if env.publish is None:
        log.error("cast to %s for volume %s: no publisher configured", message.queue, volume_id)
        raise errors.CastFailed(volume_id=volume_id)
    try:
        env.publish(message)
    except errors.VolchainError:
        raise
    except Exception as exc:  # the broker's own errors: the cause to the log, a 503 to the caller
        log.error("cast to %s for volume %s failed: %s: %s", message.queue, volume_id, type(exc).__name__, exc)
        raise errors.CastFailed(volume_id=volume_id) from exc
    return {"queue": message.queue, "task": message.task_name, "message_id": message.message_id, "body": body}
