"""Cinder's quota engine: limits, reserve, commit, rollback, expire, release.

Every function runs inside the caller's transaction (a `Session` already begun) and never
commits, so a chain step can record its flow-log row in the same transaction as the quota change.

Locking: usage rows are locked with `SELECT ... FOR UPDATE` ordered by id, then reservation rows. Every caller that also locks its
flow row locks it first, so the global order is flow -> usages -> reservations -> volume.
A missing usage row is created with `INSERT ... ON CONFLICT DO NOTHING` and then locked: two
concurrent first reservations of a project serialise on the unique key instead of failing.
"""

from __future__ import annotations

import uuid
from collections import namedtuple
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

from sqlalchemy import (BigInteger, DateTime, Integer, String, any_, bindparam, delete, func, insert, literal, select,
                        update)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert  # ON CONFLICT
from sqlalchemy.orm import Session

from models import utcnow
from models.quota import Quota, QuotaClass, QuotaUsage, Reservation
from models.snapshot import Snapshot
from models.volume import Volume
from models.volume_type import VolumeType
from tasks import errors, metrics

INT_MAX = 2147483647
DEFAULT_CLASS = "default"
BASE_RESERVABLE = ("volumes", "gigabytes", "snapshots", "backups", "backup_gigabytes", "groups")
LIMIT_ONLY = ("per_volume_gigabytes",)
PER_TYPE_BASES = ("volumes", "gigabytes", "snapshots")

# Cinder's config defaults, used when neither the project nor the default class has a row.
CONFIG_DEFAULTS: dict[str, int] = {
    "volumes": 10,
    "snapshots": 10,
    "gigabytes": 1000,
    "backups": 10,
    "backup_gigabytes": 1000,
    "per_volume_gigabytes": -1,
    "groups": 10,
}


@dataclass(frozen=True)
class QuotaConfig:
    """The quota options that shape the engine (Cinder's names)."""

    reservation_expire: int = 86400
    until_refresh: int = 0
    max_age: int = 0
    no_snapshot_gb_quota: bool = False
    defaults: Mapping[str, int] = field(default_factory=lambda: dict(CONFIG_DEFAULTS))


def per_type_deltas(deltas: Mapping[str, int], type_name: str) -> dict[str, int]:
    """Cinder's add_volume_type_opts: copy volumes/gigabytes/snapshots to `<res>_<type name>`."""
    out = dict(deltas)
    for res in PER_TYPE_BASES:
        if res in deltas:
            out[f"{res}_{type_name}"] = deltas[res]
    return out


def _split_type_resource(resource: str) -> tuple[str, str | None]:
    for base in PER_TYPE_BASES:
        if resource.startswith(base + "_") and resource != "backup_gigabytes":
            return base, resource[len(base) + 1 :]
    return resource, None


def _check_known(session: Session, names: Iterable[str], allowed: tuple[str, ...]) -> None:
    unknown = []
    type_names: set[str] = set()
    for name in names:
        base, type_name = _split_type_resource(name)
        if type_name is None:
            if name not in allowed:
                unknown.append(name)
        else:
            type_names.add(type_name)
    if type_names:
        known = set(session.scalars(select(VolumeType.name).where(VolumeType.name.in_(type_names))))
        unknown.extend(n for n in names if _split_type_resource(n)[1] in type_names - known)
    if unknown:
        raise errors.QuotaResourceUnknown(unknown=sorted(unknown))


def _one_of(column, name: str):
    """`column = ANY(<one array parameter>)`: unlike an expanded IN list, the text is the same for
    every list length, so it is rendered once and psycopg prepares it."""
    return column == any_(bindparam(name, type_=ARRAY(column.type)))


_QUOTAS = Quota.__table__
_CLASSES = QuotaClass.__table__
_LIMITS = (
    select(_QUOTAS.c.resource, _QUOTAS.c.hard_limit, literal(0).label("rank"))
    .where(_QUOTAS.c.project_id == bindparam("project_id"), _one_of(_QUOTAS.c.resource, "names"))
    .union_all(
        select(_CLASSES.c.resource, _CLASSES.c.hard_limit, literal(1).label("rank")).where(
            _CLASSES.c.class_name == DEFAULT_CLASS, _one_of(_CLASSES.c.resource, "names")
        )
    )
)


def get_limits(
    session: Session, project_id: str, resources: Iterable[str], config: QuotaConfig
) -> dict[str, int]:
    """Limit per resource: project row, else default class row, else config default, else -1."""
    names = list(resources)
    conn = session.connection()
    rows = conn.execute(_LIMITS, {"project_id": project_id, "names": names})
    found: dict[str, tuple[int, int]] = {}
    for resource, hard_limit, rank in rows:
        if resource not in found or rank < found[resource][0]:
            found[resource] = (rank, hard_limit)
    return {n: found[n][1] if n in found else config.defaults.get(n, -1) for n in names}


def class_limits(session: Session, resources: Iterable[str], config: QuotaConfig) -> dict[str, int]:
    """The default class's limits (else the config defaults, else -1): what a new project gets."""
    names = list(resources)
    rows = dict(session.execute(select(QuotaClass.resource, QuotaClass.hard_limit).where(
        QuotaClass.class_name == DEFAULT_CLASS, QuotaClass.resource.in_(names))).all())
    return {n: rows[n] if n in rows else config.defaults.get(n, -1) for n in names}


def limit_check(session: Session, project_id: str, config: QuotaConfig,
                limits: Mapping[str, int] | None = None, **values: int) -> None:
    """Check non-reservable limits (per_volume_gigabytes); raise OverQuota when exceeded.

    `limits`, when given, are the caller's already-read limits for (at least) these names.
    """
    unders = sorted(k for k, v in values.items() if v < 0)
    if unders:
        raise errors.InvalidQuotaValue(unders=unders)
    if limits is None:
        _check_known(session, values, LIMIT_ONLY)
        limits = get_limits(session, project_id, values, config)
    overs = sorted(k for k, v in values.items() if limits[k] >= 0 and limits[k] < v)
    if overs:
        raise _over_quota(overs, limits, {})


def sync_usage(session: Session, project_id: str, resource: str, config: QuotaConfig) -> int:
    """Recount one resource from the rows that consume it."""
    base, type_name = _split_type_resource(resource)
    vol_filter = [Volume.project_id == project_id, Volume.deleted.is_(False), Volume.use_quota.is_(True)]
    snap_filter = [Snapshot.project_id == project_id, Snapshot.deleted.is_(False), Snapshot.use_quota.is_(True)]
    if type_name is not None:
        type_ids = select(VolumeType.id).where(VolumeType.name == type_name).scalar_subquery()
        vol_filter.append(Volume.volume_type_id.in_(type_ids))
        snap_filter.append(Snapshot.volume_type_id.in_(type_ids))
    if base == "volumes":
        return session.scalar(select(func.count()).select_from(Volume).where(*vol_filter)) or 0
    if base == "gigabytes":
        total = session.scalar(select(func.coalesce(func.sum(Volume.size), 0)).where(*vol_filter)) or 0
        if not config.no_snapshot_gb_quota:
            total += session.scalar(select(func.coalesce(func.sum(Snapshot.volume_size), 0)).where(*snap_filter)) or 0
        return int(total)
    if base == "snapshots":
        return session.scalar(select(func.count()).select_from(Snapshot).where(*snap_filter)) or 0
    return 0  # backups and groups: not supported yet, nothing consumes them


class _Usage:
    """A locked usage row as plain values; `write_usages` saves the changed ones in one batch."""

    __slots__ = ("id", "resource", "in_use", "reserved", "until_refresh", "updated_at", "dirty")

    def __init__(self, row) -> None:
        self.id, self.resource, self.in_use, self.reserved = row.id, row.resource, row.in_use, row.reserved
        self.until_refresh, self.updated_at, self.dirty = row.until_refresh, row.updated_at, False


_USAGES = QuotaUsage.__table__
_RESERVATIONS = Reservation.__table__
_USAGE_COLUMNS = (_USAGES.c.id, _USAGES.c.resource, _USAGES.c.in_use, _USAGES.c.reserved, _USAGES.c.until_refresh,
                  _USAGES.c.updated_at)
_LOCK_USAGES = (
    select(*_USAGE_COLUMNS)
    .where(_USAGES.c.project_id == bindparam("project_id"), _one_of(_USAGES.c.resource, "resources"))
    .order_by(_USAGES.c.id)
    .with_for_update()
)
def _array(name: str, item_type) -> Any:
    """One array parameter (a list sent as one PostgreSQL array)."""
    return bindparam(name, type_=ARRAY(item_type))


# Every changed usage row in one statement (an executemany would send one statement per row): the
# rows come in as parallel arrays, unnested into `v`.
_V = func.unnest(_array("v_ids", Integer), _array("v_in_use", BigInteger), _array("v_reserved", BigInteger),
                 _array("v_until_refresh", Integer)).table_valued(
    "id", "in_use", "reserved", "until_refresh").render_derived(name="v")
_WRITE_USAGES = (
    update(_USAGES).where(_USAGES.c.id == _V.c.id)
    .values(in_use=_V.c.in_use, reserved=_V.c.reserved, until_refresh=_V.c.until_refresh,
            updated_at=bindparam("now", type_=DateTime))
)
# A reserve's new reservations go in with its usage rows, in the same statement (a writable CTE:
# one round trip instead of two), in the order given.
_NEW = func.unnest(_array("r_uuids", String), _array("r_usage_ids", Integer), _array("r_resources", String),
                   _array("r_deltas", BigInteger)).table_valued(
    "uuid", "usage_id", "resource", "delta", with_ordinality="n").render_derived(name="r")
_RESERVE_AND_WRITE_USAGES = _WRITE_USAGES.add_cte(
    insert(_RESERVATIONS).from_select(
        ["uuid", "usage_id", "project_id", "resource", "delta", "expire", "created_at"],
        select(_NEW.c.uuid, _NEW.c.usage_id, bindparam("r_project_id", type_=String), _NEW.c.resource, _NEW.c.delta,
               bindparam("r_expire", type_=DateTime), bindparam("now", type_=DateTime)).order_by(_NEW.c.n),
    ).cte("new_reservations")
)


def lock_usages(session: Session, project_id: str, resources: Iterable[str]) -> dict[str, _Usage]:
    """Lock a project's usage rows for these resources (`SELECT ... FOR UPDATE`, in id order: the
    one lock order every quota change takes); missing rows are simply absent."""
    conn = session.connection()
    rows = conn.execute(_LOCK_USAGES, {"project_id": project_id, "resources": list(resources)})
    return {row.resource: _Usage(row) for row in rows}


def write_usages(session: Session, usages: Iterable[_Usage], now: datetime) -> None:
    """Save the usage rows `lock_usages` returned that were changed, in one statement."""
    changed = [u for u in usages if u.dirty]
    if changed:
        session.connection().execute(_WRITE_USAGES, _usage_params(changed, now))


def _usage_params(changed: list[_Usage], now: datetime) -> dict:
    return {"v_ids": [u.id for u in changed], "v_in_use": [u.in_use for u in changed],
            "v_reserved": [u.reserved for u in changed], "v_until_refresh": [u.until_refresh for u in changed],
            "now": now}


def _resolve_expire(expire) -> datetime:
    now = utcnow()
    if expire is None:
        raise errors.InvalidReservationExpiration(expire=expire)
    if isinstance(expire, bool):
        raise errors.InvalidReservationExpiration(expire=expire)
    if isinstance(expire, int):
        return now + timedelta(seconds=expire)
    if isinstance(expire, timedelta):
        return now + expire
    if isinstance(expire, datetime):
        return expire
    raise errors.InvalidReservationExpiration(expire=expire)


def check_limits(deltas: Mapping[str, int], limits: Mapping[str, int], usages: Mapping[str, Mapping[str, int]]) -> None:
    """Raise OverQuota naming every resource whose limit the deltas would pass (Cinder's check)."""
    overs = sorted(
        name
        for name, delta in deltas.items()
        if limits[name] >= 0 and delta >= 0
        and limits[name] < delta + usages[name]["in_use"] + usages[name]["reserved"]
    )
    if overs:
        raise _over_quota(overs, limits, usages)


def _over_quota(overs: list[str], limits: Mapping[str, int],
                usages: Mapping[str, Mapping[str, int]]) -> errors.OverQuota:
    """The one way a limit refuses a request: counted per resource, then raised by the caller."""
    for name in overs:
        metrics.QUOTA_REJECTIONS.labels(name).inc()
    return errors.OverQuota(overs=overs, quotas=dict(limits), usages=dict(usages))


def reserve(
    session: Session,
    project_id: str,
    deltas: Mapping[str, int],
    config: QuotaConfig,
    expire: int | timedelta | datetime | None = None,
    limits: Mapping[str, int] | None = None,
) -> list[str]:
    """Reserve `deltas` for a project; return reservation uuids in delta order, or raise OverQuota.

    `limits`, when given, are the caller's already-read limits for exactly these resources
    (names it derived from a validated type); otherwise the names are checked and limits read.
    """
    expire_at = _resolve_expire(config.reservation_expire if expire is None else expire)
    names = list(deltas)
    if limits is None:
        _check_known(session, names, BASE_RESERVABLE)
        limits = get_limits(session, project_id, names, config)

    usages = lock_usages(session, project_id, names)
    missing = [n for n in names if n not in usages]
    if missing:
        now = utcnow()
        session.execute(
            pg_insert(QuotaUsage)
            .values(
                [
                    {
                        "project_id": project_id,
                        "resource": name,
                        "in_use": sync_usage(session, project_id, name, config),
                        "reserved": 0,
                        "until_refresh": config.until_refresh or None,
                        "created_at": now,
                    }
                    for name in missing
                ]
            )
            .on_conflict_do_nothing(index_elements=["project_id", "resource"])
        )
        usages = lock_usages(session, project_id, names)

    now = utcnow()
    for name in names:
        usage = usages[name]
        refresh = usage.in_use < 0
        if usage.until_refresh is not None:
            usage.until_refresh -= 1
            usage.dirty = True
            refresh = refresh or usage.until_refresh <= 0
        if config.max_age and usage.updated_at and (now - usage.updated_at).total_seconds() >= config.max_age:
            refresh = True
        if refresh:
            usage.in_use = sync_usage(session, project_id, name, config)
            usage.until_refresh = config.until_refresh or None
            usage.dirty = True
        elif config.until_refresh and (usage.until_refresh is None or usage.until_refresh > config.until_refresh):
            usage.until_refresh = config.until_refresh
            usage.dirty = True
        elif not config.until_refresh and usage.until_refresh is not None:
            usage.until_refresh = None
            usage.dirty = True

    for name, delta in deltas.items():
        usage = usages[name]
        if delta > 0 and (usage.in_use + usage.reserved + delta > INT_MAX or usage.reserved + delta > INT_MAX):
            raise errors.QuotaUsageOverflow(resource=name, limit=INT_MAX)

    check_limits(deltas, limits, {n: {"in_use": u.in_use, "reserved": u.reserved} for n, u in usages.items()})

    uuids = [str(uuid.uuid4()) for _ in deltas]
    for name, delta in deltas.items():
        if delta > 0:
            usages[name].reserved += delta
        usages[name].dirty = True
    session.connection().execute(_RESERVE_AND_WRITE_USAGES, {
        **_usage_params([u for u in usages.values() if u.dirty], now),
        "r_project_id": project_id, "r_expire": expire_at, "r_uuids": uuids,
        "r_usage_ids": [usages[name].id for name in deltas], "r_resources": list(deltas),
        "r_deltas": list(deltas.values()),
    })
    return uuids


_PENDING = select(_RESERVATIONS.c.usage_id).where(_RESERVATIONS.c.uuid.in_(bindparam("uuids", expanding=True)))
_LOCK_USAGES_BY_ID = (
    select(*_USAGE_COLUMNS)
    .where(_USAGES.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_USAGES.c.id)
    .with_for_update()
)
# Deleting a pending reservation is how it is settled; the DELETE locks it and RETURNING says
# which of the asked-for ones were still pending (a concurrent expire may have taken some).
_TAKE_RESERVATIONS = (
    delete(_RESERVATIONS)
    .where(_one_of(_RESERVATIONS.c.uuid, "uuids"))
    .returning(_RESERVATIONS.c.id, _RESERVATIONS.c.usage_id, _RESERVATIONS.c.delta)
)


# With a scope (project, resources): lock those usage rows (by id order) and delete the pending
# reservations among :uuids that hold them, in one statement. Each reservation's usage row is
# locked before the reservation is deleted, the order every settle and expire keeps.
_LOCKED = _LOCK_USAGES.cte("locked")
_TAKEN = (
    delete(_RESERVATIONS)
    .where(_RESERVATIONS.c.usage_id == _LOCKED.c.id, _one_of(_RESERVATIONS.c.uuid, "uuids"))
    .returning(_RESERVATIONS.c.id, _RESERVATIONS.c.usage_id, _RESERVATIONS.c.delta)
    .cte("taken")
)
_LOCK_AND_TAKE_IN_SCOPE = (
    select(_LOCKED, _TAKEN.c.id.label("reservation_id"), _TAKEN.c.delta)
    .select_from(_LOCKED.outerjoin(_TAKEN, _TAKEN.c.usage_id == _LOCKED.c.id))
)


_Taken = namedtuple("_Taken", "id usage_id delta")  # a reservation deleted by a settle


def _take_reservations(
    session: Session, uuids: list[str], scope: tuple[str, Iterable[str]] | None
) -> tuple[list, dict[int, _Usage]]:
    """Lock the usage rows (by id order), then delete the pending reservations among `uuids`.

    Returns the deleted reservations (id, usage_id, delta) and the locked usages. Two settles of
    the same reservation serialise on its usage row, which both lock first. `scope` (project id,
    resource names), when the caller knows it, does both in one statement and saves the look-up of
    the usage rows the reservations point at.
    """
    if not uuids:
        return [], {}
    conn = session.connection()
    if scope is not None:
        rows = conn.execute(_LOCK_AND_TAKE_IN_SCOPE,
                            {"project_id": scope[0], "resources": list(scope[1]), "uuids": uuids}).all()
        usages = {row.id: _Usage(row) for row in rows}
        return [_Taken(row.reservation_id, row.id, row.delta) for row in rows if row.reservation_id is not None], usages
    usage_ids = list(conn.scalars(_PENDING, {"uuids": uuids}))
    if not usage_ids:
        return [], {}
    usages = {row.id: _Usage(row) for row in conn.execute(_LOCK_USAGES_BY_ID, {"ids": usage_ids})}
    return conn.execute(_TAKE_RESERVATIONS, {"uuids": uuids}).all(), usages


def _settle(session: Session, uuids: Iterable[str], scope, use: bool) -> int:
    reservations, usages = _take_reservations(session, list(uuids), scope)
    if not reservations:
        return 0
    for r in sorted(reservations, key=lambda r: r.id):
        usage = usages[r.usage_id]
        if r.delta >= 0:
            usage.reserved -= min(r.delta, usage.reserved)
            if use:
                usage.in_use += r.delta
        elif use:
            usage.in_use += max(r.delta, -usage.in_use)
        usage.dirty = True
    write_usages(session, usages.values(), utcnow())
    return len(reservations)


def commit(session: Session, uuids: Iterable[str], scope: tuple[str, Iterable[str]] | None = None) -> int:
    """Move reserved deltas into in_use; return how many reservations were still pending."""
    return _settle(session, uuids, scope, use=True)


def rollback(session: Session, uuids: Iterable[str], scope: tuple[str, Iterable[str]] | None = None) -> int:
    """Release reserved deltas without using them; return how many were still pending."""
    return _settle(session, uuids, scope, use=False)


def release(session: Session, project_id: str, deltas: Mapping[str, int]) -> None:
    """Give back committed usage: Cinder's reserve-then-commit of negative deltas, in one step.

    `deltas` are the positive amounts that were committed; in_use never drops below 0.
    """
    usages = lock_usages(session, project_id, deltas)
    for name, amount in deltas.items():
        usage = usages.get(name)
        if usage is not None:
            usage.in_use -= min(amount, usage.in_use)
            usage.dirty = True
    write_usages(session, usages.values(), utcnow())


def expire(session: Session, now: datetime | None = None, limit: int = 500) -> int:
    """Expire reservations past their deadline; return how many were expired."""
    now = now or utcnow()
    uuids = list(
        session.scalars(select(Reservation.uuid).where(Reservation.expire < now).order_by(Reservation.id).limit(limit))
    )
    if not uuids:
        return 0
    return rollback(session, uuids)


def usage_report(session: Session, project_id: str, config: QuotaConfig) -> dict[str, dict[str, int]]:
    """Limit, in_use and reserved for every resource of a project (quota show)."""
    type_names = list(session.scalars(select(VolumeType.name).where(VolumeType.deleted.is_(False)).order_by(VolumeType.name)))
    names = list(BASE_RESERVABLE) + list(LIMIT_ONLY)
    for tn in type_names:
        names += [f"{base}_{tn}" for base in PER_TYPE_BASES]
    limits = get_limits(session, project_id, names, config)
    usages = {
        u.resource: u
        for u in session.scalars(select(QuotaUsage).where(QuotaUsage.project_id == project_id))
    }
    return {
        n: {
            "limit": limits[n],
            "in_use": usages[n].in_use if n in usages else 0,
            "reserved": usages[n].reserved if n in usages else 0,
        }
        for n in names
    }


def set_limits(session: Session, project_id: str, limits: Mapping[str, int]) -> None:
    """Set a project's own limits (quota set)."""
    _check_known(session, limits, BASE_RESERVABLE + LIMIT_ONLY)
    _check_limit_values(limits)
    for name, value in limits.items():
        stmt = pg_insert(Quota).values(project_id=project_id, resource=name, hard_limit=value)
        session.execute(
            stmt.on_conflict_do_update(index_elements=["project_id", "resource"], set_={"hard_limit": value})
        )


def _check_limit_values(limits: Mapping[str, int]) -> None:
    for name, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= INT_MAX:
            raise errors.InvalidInput(reason=f"Quota limit {value} for {name} must be an integer from -1 to {INT_MAX}.")


def set_class_limits(session: Session, limits: Mapping[str, int], class_name: str = DEFAULT_CLASS) -> None:
    """Set the limits of a quota class (the default class applies to every project)."""
    _check_known(session, limits, BASE_RESERVABLE + LIMIT_ONLY)
    _check_limit_values(limits)
    for name, value in limits.items():
        stmt = pg_insert(QuotaClass).values(class_name=class_name, resource=name, hard_limit=value)
        session.execute(
            stmt.on_conflict_do_update(index_elements=["class_name", "resource"], set_={"hard_limit": value})
        )


def raise_for_over_quota(exc: errors.OverQuota, size: int) -> None:
    """Cinder's process_reserve_over_quota (volume create, snapshot create, extend): the first over
    (sorted) wins."""
    for over in exc.overs:
        usage = exc.usages.get(over, {"in_use": 0, "reserved": 0})
        if "gigabytes" in over:
            raise errors.VolumeSizeExceedsAvailableQuota(
                name=over, requested=size, consumed=usage["in_use"] + usage["reserved"], quota=exc.quotas[over]
            ) from exc
        if "volumes" in over:
            raise errors.VolumeLimitExceeded(allowed=exc.quotas[over], name=over) from exc
        if "snapshots" in over:
            raise errors.SnapshotLimitExceeded(allowed=exc.quotas[over]) from exc
    raise errors.UnexpectedOverQuota(name=", ".join(exc.overs)) from exc

