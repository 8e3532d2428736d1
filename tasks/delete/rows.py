"""Removing volume and snapshot rows: their usage given back once, in one quota change, then soft-deleted."""

from __future__ import annotations

from sqlalchemy.orm import Session

from models import utcnow
from models.snapshot import Snapshot
from models.volume import Volume, VolumeStatus
from tasks import usage
from tasks.quota_engine import QuotaConfig


def destroy(session: Session, config: QuotaConfig, volume: Volume | None = None,
            snapshots: list[Snapshot] = ()) -> None:
    """Give back the usage of a volume and/or snapshots (once, in one quota change: the release
    also clears their `use_quota`) and soft-delete their rows."""
    session.flush()
    usage.release(session, config, volumes=[volume.id] if volume is not None else [],
                  snapshots=[snap.id for snap in snapshots])
    now = utcnow()
    for snap in snapshots:
        snap.status, snap.deleted, snap.deleted_at, snap.updated_at = "deleted", True, now, now
    if volume is not None:
        volume.status, volume.deleted, volume.deleted_at, volume.updated_at = VolumeStatus.DELETED.value, True, now, now
