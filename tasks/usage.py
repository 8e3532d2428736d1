"""What a volume or snapshot row charges to its project's quota, and giving it back exactly once.

A live row with `use_quota` true is counted in its project's usage (tasks/quota_engine.sync_usage
counts the same rows). Giving its usage back clears `use_quota` in the same statement that
checks it, so whoever releases first (a delete, a compensation, the scheduler finding no
backend) releases, and everybody after finds nothing to give back.
"""

from __future__ import annotations

from typing import Mapping

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import utcnow
from models.snapshot import Snapshot
from models.volume import Volume
from models.volume_type import VolumeType
from tasks import quota_engine
from tasks.quota_engine import QuotaConfig


def _type_name(session: Session, type_id: str | None) -> str | None:
    if type_id is None:
        return None
    return session.scalar(select(VolumeType.name).where(VolumeType.id == type_id))


def volume_deltas(type_name: str | None, size: int) -> dict[str, int]:
    """What one volume of `size` GB charges: volumes, gigabytes and their per-type copies."""
    base = {"volumes": 1, "gigabytes": size}
    return quota_engine.per_type_deltas(base, type_name) if type_name else base


def snapshot_deltas(type_name: str | None, size: int, config: QuotaConfig) -> dict[str, int]:
    """What one snapshot of a `size` GB volume charges (gigabytes unless no_snapshot_gb_quota)."""
    base = {"snapshots": 1} if config.no_snapshot_gb_quota else {"snapshots": 1, "gigabytes": size}
    return quota_engine.per_type_deltas(base, type_name) if type_name else base


def release_volume(session: Session, volume_id: str, deltas: Mapping[str, int] | None = None) -> bool:
    """Give a volume's usage back once and clear its `use_quota`; False if it was given back already.

    `deltas`: what was charged, when the caller recorded it (the create flow); otherwise it is
    worked out from the row's size and type.
    """
    row = session.execute(
        update(Volume).where(Volume.id == volume_id, Volume.use_quota.is_(True))
        .values(use_quota=False, updated_at=utcnow())
        .returning(Volume.project_id, Volume.size, Volume.volume_type_id)
    ).first()
    if row is None:
        return False
    quota_engine.release(session, row.project_id,
                         deltas or volume_deltas(_type_name(session, row.volume_type_id), row.size))
    return True


def release_snapshot(session: Session, snapshot_id: str, config: QuotaConfig) -> bool:
    """Give a snapshot's usage back once and clear its `use_quota`; False if given back already."""
    row = session.execute(
        update(Snapshot).where(Snapshot.id == snapshot_id, Snapshot.use_quota.is_(True))
        .values(use_quota=False, updated_at=utcnow())
        .returning(Snapshot.project_id, Snapshot.volume_size, Snapshot.volume_type_id)
    ).first()
    if row is None:
        return False
    quota_engine.release(session, row.project_id,
                         snapshot_deltas(_type_name(session, row.volume_type_id), row.volume_size, config))
    return True
