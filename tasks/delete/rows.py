"""Removing a volume's and a snapshot's rows: usage given back once, then soft-deleted."""

from __future__ import annotations

from models import utcnow
from models.snapshot import Snapshot
from models.volume import Volume, VolumeStatus
from sqlalchemy.orm import Session
from tasks import usage
from tasks.quota_engine import QuotaConfig


def destroy_volume(session: Session, vol: Volume) -> None:
    """Give the volume's usage back (once) and soft-delete its row."""
    session.flush()
    usage.release_volume(session, vol.id)
    now = utcnow()
    vol.status, vol.deleted, vol.deleted_at, vol.updated_at = VolumeStatus.DELETED.value, True, now, now
    vol.use_quota = False


def destroy_snapshot(session: Session, snap: Snapshot, config: QuotaConfig) -> None:
    """Give the snapshot's usage back (once) and soft-delete its row."""
    session.flush()
    usage.release_snapshot(session, snap.id, config)
    now = utcnow()
    snap.status, snap.deleted, snap.deleted_at, snap.updated_at = "deleted", True, now, now
    snap.use_quota = False
