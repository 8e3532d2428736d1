"""entry_create: insert the volume row (`creating`) with its metadata.

Requires: volume_id (pre-allocated at submit), project_id, user_id, spec
Provides: created
Reversion strategy: soft-delete the row (deleted, status `deleted`) when quota was never
    committed; once quota_commit has recorded success, keep the row and set it to `error`, so the
    user sees why (quota_commit's revert returns the usage and clears `use_quota`). This is the
    one revert that reads a later step's record (`ctx.committed`): a committed fact from the
    log, not a flag shared while the flow runs. Either only while the row is still `creating`:
    a volume a scheduler or volume service has taken over (its cast went out before a crash
    stopped this flow) belongs to them, and is left as it is.
Redelivery: the row and this step's record commit together; a repeat delivery inserts nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from models import utcnow
from models.volume import Volume, VolumeMetadata, VolumeStatus
from tasks.context import CreateContext
from tasks.runner import StepEnv

name = "entry_create"


_VOLUMES = Volume.__table__.insert()
_METADATA = VolumeMetadata.__table__.insert()


def _row(ctx: CreateContext) -> dict[str, Any]:
    spec = ctx.spec or {}
    zones = spec.get("availability_zones") or []
    return {
        "id": ctx.volume_id,
        "project_id": ctx.project_id,
        "user_id": ctx.user_id,
        "display_name": spec.get("name"),
        "display_description": spec.get("description"),
        "size": spec["size"],
        "status": VolumeStatus.CREATING.value,
        "attach_status": "detached",
        "availability_zone": zones[0] if len(zones) == 1 else None,
        "volume_type_id": spec["volume_type_id"],
        "snapshot_id": spec.get("snapshot_id"),
        "source_volid": spec.get("source_volid"),
        "image_id": spec.get("image_id"),
        "encryption_key_id": spec.get("encryption_key_id"),
        "multiattach": bool(spec.get("multiattach")),
        "bootable": bool(spec.get("bootable")),
        "use_quota": True,
        "shared_targets": True,
        "deleted": False,
        "created_at": utcnow(),
    }


def run(session: Session, ctx: CreateContext, env: StepEnv) -> dict[str, Any]:
    conn = session.connection()
    conn.execute(_VOLUMES, _row(ctx))
    metadata = (ctx.spec or {}).get("metadata") or {}
    if metadata:
        conn.execute(_METADATA, [{"volume_id": ctx.volume_id, "key": k, "value": v} for k, v in metadata.items()])
    return {"created": True}


def error_out(session: Session, volume_id: str, reason: str) -> None:
    """Set a live volume still `creating` to `error` with a short reason (Cinder cuts it to 128
    characters)."""
    session.execute(
        update(Volume)
        .where(Volume.id == volume_id, Volume.deleted.is_(False), Volume.status == VolumeStatus.CREATING.value)
        .values(status=VolumeStatus.ERROR.value, error_message=reason[:128], updated_at=utcnow())
    )


def revert(session: Session, ctx: CreateContext, result: dict[str, Any], env: StepEnv) -> None:
    reason = (ctx.failure or {}).get("message", "create failed")
    if ctx.committed:
        error_out(session, ctx.volume_id, reason)
        return
    now = utcnow()
    session.execute(
        update(Volume)
        .where(Volume.id == ctx.volume_id, Volume.deleted.is_(False), Volume.status == VolumeStatus.CREATING.value)
        .values(status=VolumeStatus.DELETED.value, deleted=True, deleted_at=now, updated_at=now,
                error_message=reason[:128])
    )
