"""What a volume or snapshot row charges to its project's quota, and giving it back exactly once.

A live row with `use_quota` true is counted in its project's usage (tasks/quota_engine.sync_usage
counts the same rows). Giving its usage back clears `use_quota` in the same statement that
checks it, so whoever releases first (a delete, a compensation, the scheduler finding no
backend) releases, and everybody after finds nothing to give back.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping

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


def release(session: Session, config: QuotaConfig, volumes: Iterable[str] = (), snapshots: Iterable[str] = (),
            recorded: Mapping[str, int] | None = None) -> int:
    """Give back, once, the usage of these volume and snapshot rows and clear their `use_quota`;
    returns how many rows still had usage to give. Each project's usage rows are locked once, for
    the sum (a volume deleted with its snapshots takes its project's usage locks in one go, in
    the engine's order, like every other quota change).

    `recorded`: what a single volume was charged, when the caller recorded it (the create flow);
    otherwise it is worked out from each row's size and type.
    """
    now = utcnow()
    totals: dict[str, Counter] = {}
    found = 0
    names: dict[str | None, str | None] = {}  # type id -> name: one query per type, not per row

    def type_name(type_id: str | None) -> str | None:
        if type_id not in names:
            names[type_id] = _type_name(session, type_id)
        return names[type_id]

    volumes, snapshots = list(volumes), list(snapshots)
    if snapshots:
        for row in session.execute(
            update(Snapshot).where(Snapshot.id.in_(snapshots), Snapshot.use_quota.is_(True))
            .values(use_quota=False, updated_at=now)
            .returning(Snapshot.project_id, Snapshot.volume_size, Snapshot.volume_type_id)
        ).all():
            found += 1
            totals.setdefault(row.project_id, Counter()).update(
                snapshot_deltas(type_name(row.volume_type_id), row.volume_size, config))
    if volumes:
        for row in session.execute(
            update(Volume).where(Volume.id.in_(volumes), Volume.use_quota.is_(True))
            .values(use_quota=False, updated_at=now)
            .returning(Volume.project_id, Volume.size, Volume.volume_type_id)
        ).all():
            found += 1
            totals.setdefault(row.project_id, Counter()).update(
                recorded or volume_deltas(type_name(row.volume_type_id), row.size))
    for project_id, deltas in totals.items():
        quota_engine.release(session, project_id, dict(deltas))
    return found


def release_volume(session: Session, volume_id: str, recorded: Mapping[str, int] | None = None) -> bool:
    """Give one volume's usage back once; False if it was given back already."""
    return release(session, QuotaConfig(), volumes=[volume_id], recorded=recorded) == 1


def release_snapshot(session: Session, snapshot_id: str, config: QuotaConfig) -> bool:
    """Give one snapshot's usage back once; False if it was given back already."""
    return release(session, config, snapshots=[snapshot_id]) == 1
