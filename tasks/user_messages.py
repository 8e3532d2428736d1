"""User messages: record why an asynchronous operation failed, in words a user can act on.

Cinder's messages API: a message is an (action, detail) pair of codes about one resource; the
text a user reads is built from the codes when the message is read, so the wording lives in one
place. The codes and texts are Cinder's (`cinder/message/message_field.py` in its public tree),
so an event id means the same here as in Cinder; volchain's own codes start at 901, clear of
Cinder's, which are numbered from 001 upwards. Workers record a message in the same transaction
as the failure they report.
"""

from __future__ import annotations

from datetime import timedelta
from typing import NamedTuple

from sqlalchemy.orm import Session

from models import new_id, utcnow
from models.message import Message

VOLUME = "VOLUME"
SNAPSHOT = "VOLUME_SNAPSHOT"
BACKUP = "VOLUME_BACKUP"
MESSAGE_TTL_SECONDS = 30 * 24 * 3600  # Cinder's message_ttl (2592000)


class Code(NamedTuple):
    id: str
    text: str


class Action:
    SCHEDULE_ALLOCATE_VOLUME = Code("001", "schedule allocate volume")
    ATTACH_VOLUME = Code("002", "attach volume")
    COPY_VOLUME_TO_IMAGE = Code("003", "copy volume to image")
    UPDATE_ATTACHMENT = Code("004", "update attachment")
    COPY_IMAGE_TO_VOLUME = Code("005", "copy image to volume")
    UNMANAGE_VOLUME = Code("006", "unmanage volume")
    EXTEND_VOLUME = Code("007", "extend volume")
    CREATE_VOLUME_FROM_BACKEND = Code("008", "create volume from backend storage")
    SNAPSHOT_CREATE = Code("009", "create snapshot")
    SNAPSHOT_DELETE = Code("010", "delete snapshot")
    SNAPSHOT_UPDATE = Code("011", "update snapshot")
    SNAPSHOT_METADATA_UPDATE = Code("012", "update snapshot metadata")
    BACKUP_CREATE = Code("013", "create backup")
    BACKUP_DELETE = Code("014", "delete backup")
    BACKUP_RESTORE = Code("015", "restore backup")
    REIMAGE_VOLUME = Code("016", "reimage volume")
    # volchain's own: Cinder records no message when a volume fails to delete.
    DELETE_VOLUME = Code("901", "delete volume")
    # volchain's own: a create accepted before its outcome (202) that failed before any scheduler
    # took it (Cinder's API answers those failures itself; ours may come after the answer).
    CREATE_VOLUME = Code("902", "create volume")

    ALL = (SCHEDULE_ALLOCATE_VOLUME, ATTACH_VOLUME, COPY_VOLUME_TO_IMAGE, UPDATE_ATTACHMENT, COPY_IMAGE_TO_VOLUME,
           UNMANAGE_VOLUME, EXTEND_VOLUME, CREATE_VOLUME_FROM_BACKEND, SNAPSHOT_CREATE, SNAPSHOT_DELETE,
           SNAPSHOT_UPDATE, SNAPSHOT_METADATA_UPDATE, BACKUP_CREATE, BACKUP_DELETE, BACKUP_RESTORE, REIMAGE_VOLUME,
           DELETE_VOLUME, CREATE_VOLUME)


class Detail:
    UNKNOWN_ERROR = Code("001", "An unknown error occurred.")
    DRIVER_NOT_INITIALIZED = Code("002", "Driver is not initialized at present.")
    NO_BACKEND_AVAILABLE = Code("003", "Could not find any available weighted backend.")
    FAILED_TO_UPLOAD_VOLUME = Code("004", "Failed to upload volume to image at backend.")
    VOLUME_ATTACH_MODE_INVALID = Code("005", "Volume's attach mode is invalid.")
    QUOTA_EXCEED = Code("006", "Not enough quota resource for operation.")
    NOT_ENOUGH_SPACE_FOR_IMAGE = Code("007", "Image used for creating volume exceeds available space.")
    UNMANAGE_ENC_NOT_SUPPORTED = Code("008", "Unmanaging encrypted volumes is not supported.")
    NOTIFY_COMPUTE_SERVICE_FAILED = Code("009", "Compute service failed to extend volume.")
    DRIVER_FAILED_EXTEND = Code("010", "Volume Driver failed to extend volume.")
    SIGNATURE_VERIFICATION_FAILED = Code("011", "Image signature verification failed.")
    DRIVER_FAILED_CREATE = Code("012", "Driver failed to create the volume.")
    SNAPSHOT_CREATE_ERROR = Code("013", "Snapshot failed to create.")
    SNAPSHOT_UPDATE_METADATA_FAILED = Code("014", "Volume snapshot update metadata failed.")
    SNAPSHOT_IS_BUSY = Code("015", "Snapshot is busy.")
    SNAPSHOT_DELETE_ERROR = Code("016", "Snapshot failed to delete.")
    BACKUP_INVALID_STATE = Code("017", "Backup status is invalid.")
    BACKUP_SERVICE_DOWN = Code("018", "Backup service is down.")
    BACKUP_CREATE_DEVICE_ERROR = Code("019", "Failed to get backup device from the volume service.")
    BACKUP_CREATE_DRIVER_ERROR = Code("020", "Backup driver failed to create backup.")
    ATTACH_ERROR = Code("021", "Failed to attach volume.")
    DETACH_ERROR = Code("022", "Failed to detach volume.")
    BACKUP_CREATE_CLEANUP_ERROR = Code("023", "Cleanup of temporary volume/snapshot failed.")
    BACKUP_SCHEDULE_ERROR = Code("024", "Backup failed to schedule. Service not found for creating backup.")
    BACKUP_DELETE_DRIVER_ERROR = Code("025", "Backup driver failed to delete backup.")
    BACKUP_RESTORE_ERROR = Code("026", "Backup driver failed to restore backup.")
    VOLUME_INVALID_STATE = Code("027", "Volume status is invalid.")
    REIMAGE_VOLUME_FAILED = Code("028", "Compute service failed to reimage volume.")
    IMAGE_FORMAT_UNACCEPTABLE = Code("029", "The image disk format must be the same as the volume format for the "
                                            "volume type you are requesting.")
    INCREMENTAL_BACKUP_FORCES_FULL_BACKUP = Code("030", "Incremental backup not possible, forcing full backup.")
    # volchain's own: Cinder has no detail for a driver that failed to delete a volume.
    DRIVER_FAILED_DELETE = Code("901", "Driver failed to delete the volume.")

    ALL = (UNKNOWN_ERROR, DRIVER_NOT_INITIALIZED, NO_BACKEND_AVAILABLE, FAILED_TO_UPLOAD_VOLUME,
           VOLUME_ATTACH_MODE_INVALID, QUOTA_EXCEED, NOT_ENOUGH_SPACE_FOR_IMAGE, UNMANAGE_ENC_NOT_SUPPORTED,
           NOTIFY_COMPUTE_SERVICE_FAILED, DRIVER_FAILED_EXTEND, SIGNATURE_VERIFICATION_FAILED, DRIVER_FAILED_CREATE,
           SNAPSHOT_CREATE_ERROR, SNAPSHOT_UPDATE_METADATA_FAILED, SNAPSHOT_IS_BUSY, SNAPSHOT_DELETE_ERROR,
           BACKUP_INVALID_STATE, BACKUP_SERVICE_DOWN, BACKUP_CREATE_DEVICE_ERROR, BACKUP_CREATE_DRIVER_ERROR,
           ATTACH_ERROR, DETACH_ERROR, BACKUP_CREATE_CLEANUP_ERROR, BACKUP_SCHEDULE_ERROR, BACKUP_DELETE_DRIVER_ERROR,
           BACKUP_RESTORE_ERROR, VOLUME_INVALID_STATE, REIMAGE_VOLUME_FAILED, IMAGE_FORMAT_UNACCEPTABLE,
           INCREMENTAL_BACKUP_FORCES_FULL_BACKUP, DRIVER_FAILED_DELETE)


UNKNOWN_ACTION = "unknown action"
# Messages recorded before action/detail codes existed carry only an event id (Cinder's defined_messages).
LEGACY_EVENTS = {
    "VOLUME_000001": "An unknown error occurred.",
    "VOLUME_000002": "No storage could be allocated for this volume request. You may be able to try another "
                     "size or volume type.",
    "VOLUME_000003": "A readonly volume must be attached as readonly.",
    "VOLUME_000004": "Failed to copy volume to image as image quota has been met. Please delete images or have "
                     "your limit increased, then try again.",
    "VOLUME_000005": "Unmanaging encrypted volumes is not supported.",
}

_ACTIONS = {code.id: code.text for code in Action.ALL}
_DETAILS = {code.id: code.text for code in Detail.ALL}


def event_id(resource_type: str, action: Code, detail: Code) -> str:
    """Cinder's event id: VOLUME_<resource>_<action>_<detail>."""
    return f"VOLUME_{resource_type}_{action.id}_{detail.id}"


def user_message(action_id: str | None, detail_id: str | None, event_id: str | None = None) -> str:
    """The text a user reads for a stored message, as Cinder words it: `<action>:<detail>` (an
    unknown action reads "unknown action", an unknown detail as the unknown error)."""
    if action_id is None and event_id in LEGACY_EVENTS:
        return LEGACY_EVENTS[event_id]
    action = _ACTIONS.get(action_id or "", UNKNOWN_ACTION)
    detail = _DETAILS.get(detail_id or "", Detail.UNKNOWN_ERROR.text)
    return f"{action}:{detail}"


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
