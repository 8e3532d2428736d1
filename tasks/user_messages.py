"""User messages: record why an asynchronous operation failed, in words a user can act on.

Cinder's messages API: a message is an (action, detail) pair of codes about one resource; the
text a user reads is `"<action>: <detail>"`, built here from the codes, so the wording lives in
one place. Workers record a message in the same transaction as the failure they report.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

from sqlalchemy.orm import Session

from models import new_id, utcnow
from models.message import Message

VOLUME = "VOLUME"
SNAPSHOT = "VOLUME_SNAPSHOT"
MESSAGE_TTL_SECONDS = 30 * 24 * 3600  # Cinder's message_ttl (2592000)


class Code(NamedTuple):
    id: str
    text: str


class Action:
    SCHEDULE_ALLOCATE_VOLUME = Code("001", "schedule allocate volume")
    COPY_IMAGE_TO_VOLUME = Code("005", "copy image to volume")
    EXTEND_VOLUME = Code("007", "extend volume")
    CREATE_VOLUME_FROM_BACKEND = Code("008", "create volume from backend storage")
    SNAPSHOT_CREATE = Code("009", "create snapshot")
    SNAPSHOT_DELETE = Code("010", "delete snapshot")
    DELETE_VOLUME = Code("017", "delete volume")

    ALL = (SCHEDULE_ALLOCATE_VOLUME, COPY_IMAGE_TO_VOLUME, EXTEND_VOLUME, CREATE_VOLUME_FROM_BACKEND,
           SNAPSHOT_CREATE, SNAPSHOT_DELETE, DELETE_VOLUME)


class Detail:
    UNKNOWN_ERROR = Code("001", "An unknown error occurred.")
    NO_BACKEND_AVAILABLE = Code("003", "Could not find any available weighted backend.")
    QUOTA_EXCEED = Code("006", "Not enough quota resource for operation.")
    DRIVER_FAILED_EXTEND = Code("010", "Volume Driver failed to extend volume.")
    SNAPSHOT_CREATE_ERROR = Code("013", "Snapshot failed to create.")
    SNAPSHOT_DELETE_ERROR = Code("015", "Snapshot failed to delete.")
    DRIVER_FAILED_CREATE = Code("016", "Driver failed to create the volume.")
    DRIVER_FAILED_DELETE = Code("017", "Driver failed to delete the volume.")

    ALL = (UNKNOWN_ERROR, NO_BACKEND_AVAILABLE, QUOTA_EXCEED, DRIVER_FAILED_EXTEND, SNAPSHOT_CREATE_ERROR,
           SNAPSHOT_DELETE_ERROR, DRIVER_FAILED_CREATE, DRIVER_FAILED_DELETE)


_ACTIONS = {code.id: code.text for code in Action.ALL}
_DETAILS = {code.id: code.text for code in Detail.ALL}


def event_id(resource_type: str, action: Code, detail: Code) -> str:
    """Cinder's event id: VOLUME_<resource>_<action>_<detail>."""
    return f"VOLUME_{resource_type}_{action.id}_{detail.id}"


def user_message(action_id: str | None, detail_id: str | None) -> str:
    """The text a user reads for a stored message."""
    action = _ACTIONS.get(action_id or "", "")
    detail = _DETAILS.get(detail_id or "", Detail.UNKNOWN_ERROR.text)
    return f"{action}: {detail}" if action else detail


def record(session: Session, *, project_id: str, resource_type: str, resource_uuid: str | None, action: Code,
           detail: Code, request_id: str | None = None, level: str = "ERROR") -> str:
    """Add a message in the caller's transaction; returns its id."""
    now = utcnow()
    message_id = new_id()
    session.add(Message(
        id=message_id, project_id=project_id, request_id=request_id, resource_type=resource_type,
        resource_uuid=resource_uuid, event_id=event_id(resource_type, action, detail), message_level=level,
        action_id=action.id, detail_id=detail.id, created_at=now,
        expires_at=now + timedelta(seconds=MESSAGE_TTL_SECONDS), deleted=False,
    ))
    return message_id
