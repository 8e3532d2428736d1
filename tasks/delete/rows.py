"""Removing volume and snapshot rows: their usage given back once, in one quota change, their
backend's allocation given back (tasks/allocation.py), then soft-deleted."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import utcnow
from models.snapshot import Snapshot
from models.volume import Volume, VolumeStatus
from tasks import allocation, usage
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
        if not snap.deleted:
            host = volume.host if volume is not None and volume.id == snap.volume_id else \
                session.scalar(select(Volume.host).where(Volume.id == snap.volume_id))
            allocation.charge(session, host, -snap.volume_size)
        snap.status, snap.deleted, snap.deleted_at, snap.updated_at = "deleted", True, now, now
    if volume is not None:
        if not volume.deleted:
            allocation.charge(session, volume.host, -volume.size)
        volume.status, volume.deleted, volume.deleted_at, volume.updated_at = VolumeStatus.DELETED.value, True, now, now
