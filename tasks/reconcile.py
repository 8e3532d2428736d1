"""The quota reconciler: recount usage from the rows, report drift, repair it (Cinder's quota check/sync).

A usage row must hold what the rows say:
    in_use    what the project's live volume and snapshot rows with `use_quota` charge (the rows
              quota_engine.sync_usage counts), except a volume whose create has not committed its
              quota yet: between entry_create and quota_commit its amount is in `reserved`.
    reserved  the sum of the project's pending reservations with a positive delta.

check() reads every project at once, one grouped query per table (volumes, snapshots,
reservations, usages), in the caller's transaction: run it in one snapshot (REPEATABLE READ, as
sync() and the CLI do) so that a flow committing meanwhile cannot show up as drift.

sync() repairs one project per short transaction: it locks the drifted usage rows FOR UPDATE in
id order (the engine's lock; the reconciler locks no flow row, so it cannot deadlock with a
step), recounts that project after the lock, and writes only what is still wrong, with one
quota_repairs row per field it changed. Every quota change of a flow takes these row locks in
the transaction that changes its rows, so a recount made under them sees a flow's change whole
or not at all: the reconciler never undoes or doubles the work of a live flow.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterable

from sqlalchemy import and_, exists, func, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert  # ON CONFLICT
from sqlalchemy.orm import Session, sessionmaker

from models import utcnow
from models.flow_log import FlowRun
from models.quota import QuotaUsage, Reservation
from models.quota_repair import QuotaRepair, RepairSource
from models.snapshot import Snapshot
from models.volume import Volume, VolumeStatus
from models.volume_type import VolumeType
from tasks import allocation, quota_engine
from tasks.create import quota_commit
from tasks.sweeper import CREATE_KIND

Key = tuple[str, str]  # (project_id, resource)


@dataclass(frozen=True)
class Drift:
    """A usage row (or a missing one: in_use and reserved None) that differs from the rows."""

    project_id: str
    resource: str
    in_use: int | None
    reserved: int | None
    expected_in_use: int
    expected_reserved: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Repair:
    """One field set right: `old` (None: there was no usage row) -> `new`."""

    project_id: str
    resource: str
    field: str
    old: int | None
    new: int

    def to_dict(self) -> dict:
        return asdict(self)


# A volume between entry_create and quota_commit: its row exists, its amount is still reserved.
_CREATE_NOT_COMMITTED = and_(
    Volume.status == VolumeStatus.CREATING.value,
    exists().where(FlowRun.volume_id == Volume.id, FlowRun.kind == CREATE_KIND,
                   FlowRun.steps[quota_commit.name].is_(None)),
)


def _grouped(session: Session, table, size, project_id: str | None, *where) -> list:
    """(project, type name, rows, gigabytes) of the live rows of `table` that use quota."""
    query = (
        select(table.project_id, VolumeType.name, func.count(), func.coalesce(func.sum(size), 0))
        .select_from(table).outerjoin(VolumeType, VolumeType.id == table.volume_type_id)
        .where(table.deleted.is_(False), table.use_quota.is_(True), *where)
        .group_by(table.project_id, VolumeType.name)
    )
    if project_id is not None:
        query = query.where(table.project_id == project_id)
    return session.execute(query).all()


def _charged(session: Session, config: quota_engine.QuotaConfig, project_id: str | None) -> Counter:
    """What the live rows charge, {(project, resource): amount}: one grouped query per table."""
    charged: Counter = Counter()

    def add(project: str, type_name: str | None, amounts: dict[str, int]) -> None:
        if type_name is not None:
            amounts = quota_engine.per_type_deltas(amounts, type_name)
        for resource, amount in amounts.items():
            charged[project, resource] += amount

    for project, type_name, count, gigabytes in _grouped(session, Volume, Volume.size, project_id,
                                                         ~_CREATE_NOT_COMMITTED):
        add(project, type_name, {"volumes": count, "gigabytes": int(gigabytes)})
    for project, type_name, count, gigabytes in _grouped(session, Snapshot, Snapshot.volume_size, project_id):
        amounts = {"snapshots": count} if config.no_snapshot_gb_quota else {"snapshots": count,
                                                                            "gigabytes": int(gigabytes)}
        add(project, type_name, amounts)
    return charged


def _pending(session: Session, project_id: str | None) -> dict[Key, int]:
    """The pending reservations' positive deltas, {(project, resource): sum}."""
    query = (select(Reservation.project_id, Reservation.resource, func.sum(Reservation.delta))
             .where(Reservation.delta > 0).group_by(Reservation.project_id, Reservation.resource))
    if project_id is not None:
        query = query.where(Reservation.project_id == project_id)
    return {(p, r): int(total) for p, r, total in session.execute(query)}


def check(session: Session, config: quota_engine.QuotaConfig, project_id: str | None = None) -> list[Drift]:
    """Every usage row of every project (or of one) that differs from the rows, and every missing
    usage row of a resource the rows charge; sorted by project and resource."""
    charged = _charged(session, config, project_id)
    pending = _pending(session, project_id)
    query = select(QuotaUsage.project_id, QuotaUsage.resource, QuotaUsage.in_use, QuotaUsage.reserved)
    if project_id is not None:
        query = query.where(QuotaUsage.project_id == project_id)
    stored = {(p, r): (in_use, reserved) for p, r, in_use, reserved in session.execute(query)}
    missing = {key for key, amount in charged.items() if amount and key not in stored}

    drifts = []
    for key in sorted(stored.keys() | missing):
        in_use, reserved = stored.get(key, (None, None))
        expected = (charged.get(key, 0), pending.get(key, 0))
        if (in_use, reserved or 0) != expected:
            drifts.append(Drift(*key, in_use, reserved, *expected))
    return drifts


def repair(session: Session, project_id: str, resources: Iterable[str], config: quota_engine.QuotaConfig,
           source: RepairSource) -> list[Repair]:
    """Under their row locks, set right those of a project's usage rows that are still wrong (a
    missing row is created first), recording each change; in the caller's transaction."""
    resources = sorted(set(resources))
    usages = quota_engine.lock_usages(session, project_id, resources)  # the engine's lock, in its order
    created: set[str] = set()
    missing = [r for r in resources if r not in usages]
    if missing:
        created = set(session.scalars(
            pg_insert(QuotaUsage)
            .values([{"project_id": project_id, "resource": r, "in_use": 0, "reserved": 0, "created_at": utcnow()}
                     for r in missing])
            .on_conflict_do_nothing(index_elements=["project_id", "resource"])
            .returning(QuotaUsage.resource)
        ))
        usages = quota_engine.lock_usages(session, project_id, resources)

    # Counted after the locks, so every change made under them before is seen, none after.
    charged = _charged(session, config, project_id)
    pending = _pending(session, project_id)
    now = utcnow()
    repairs = []
    for resource in resources:
        usage = usages[resource]
        for field, new in (("in_use", charged.get((project_id, resource), 0)),
                           ("reserved", pending.get((project_id, resource), 0))):
            old = getattr(usage, field)
            if old != new:
                setattr(usage, field, new)
                usage.dirty = True
                repairs.append(Repair(project_id, resource, field, None if resource in created else old, new))
    quota_engine.write_usages(session, usages.values(), now)
    if repairs:
        session.execute(insert(QuotaRepair), [{**r.to_dict(), "at": now, "source": source.value} for r in repairs])
    return repairs


def consistent_session(factory: sessionmaker[Session]) -> Session:
    """A session whose reads share one snapshot (REPEATABLE READ): what check() should run in."""
    session = factory()
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    return session


def sync(factory: sessionmaker[Session], config: quota_engine.QuotaConfig, project_id: str | None = None,
         source: RepairSource = RepairSource.MANUAL) -> list[Repair]:
    """Check every project (or one), then repair each drifted one in a transaction of its own."""
    with consistent_session(factory) as session:
        drifts = check(session, config, project_id)
    by_project: dict[str, list[str]] = {}
    for drift in drifts:
        by_project.setdefault(drift.project_id, []).append(drift.resource)
    repairs: list[Repair] = []
    for project, resources in by_project.items():
        with factory() as session, session.begin():
            repairs += repair(session, project, resources, config, source)
    if project_id is None:  # the whole deployment: the backends' allocation counters too
        with factory() as session, session.begin():
            allocation.repair(session)
    return repairs
