"""Allocated capacity per backend: what the scheduler's capacity filter takes from a pool's total.

A counter per volume `host` string (`host@backend#pool`; models/allocation.py) holds the GB of the
live volumes there and of their live snapshots. The scheduler reads one row per pool, whatever
the number of volumes (bench/scale.py). `charge` changes it, in the transaction that changes
what a backend holds, at these places and no others:

    schedule_volume, volume_cast (a pinned create)   a volume gets its host      + size
    snapshot create_request                          a snapshot is taken         + volume_size
    extend_on_backend                                the volume grows            + (new - old)
    delete.rows.destroy                              a volume or snapshot goes   - size

`held` counts the same from the rows: the reference the reconciler compares the counters with
(`repair`, run by `volchain quota check --sync` and the scheduled reconcile).
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select, union_all
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from models.allocation import Allocation
from models.snapshot import Snapshot
from models.volume import Volume

log = logging.getLogger(__name__)


def charge(session: Session, host: str | None, gb: int) -> None:
    """Add `gb` (negative: give back) to the allocation of `host`, a volume's host string."""
    if not host or not gb:
        return
    insert = pg_insert(Allocation).values(host=host, allocated_gb=gb)
    session.execute(insert.on_conflict_do_update(index_elements=[Allocation.host],
                                                 set_={"allocated_gb": Allocation.allocated_gb + gb}))


def allocated(session: Session, backend_ids: list[str]) -> dict[str, int]:
    """GB allocated on each pool (`host@backend#pool`); a volume recorded without a pool counts
    toward every pool of its backend."""
    hosts = set(backend_ids) | {b.split("#", 1)[0] for b in backend_ids}
    counted = dict(session.execute(select(Allocation.host, Allocation.allocated_gb)
                                   .where(Allocation.host.in_(hosts))).all())
    return {b: int(counted.get(b, 0)) + int(counted.get(b.split("#", 1)[0], 0)) for b in backend_ids}


def held(session: Session) -> dict[str, int]:
    """GB of live volumes and their live snapshots per host string, added up from the rows."""
    volumes = (select(Volume.host.label("host"), Volume.size.label("gb"))
               .where(Volume.host.is_not(None), Volume.deleted.is_(False)))
    snapshots = (select(Volume.host.label("host"), Snapshot.volume_size.label("gb"))
                 .join(Volume, Volume.id == Snapshot.volume_id)
                 .where(Volume.host.is_not(None), Snapshot.deleted.is_(False)))
    both = union_all(volumes, snapshots).subquery()
    return {host: int(gb) for host, gb in session.execute(select(both.c.host, func.sum(both.c.gb))
                                                          .group_by(both.c.host)).all()}


def drift(session: Session, lock: bool = False) -> dict[str, tuple[int, int]]:
    """host -> (counted, held) for every counter that differs from what the rows hold."""
    query = select(Allocation.host, Allocation.allocated_gb).order_by(Allocation.host)
    counted = dict(session.execute(query.with_for_update() if lock else query).all())
    truth = held(session)
    return {host: (counted.get(host, 0), truth.get(host, 0)) for host in set(counted) | set(truth)
            if counted.get(host, 0) != truth.get(host, 0)}


def repair(session: Session) -> dict[str, tuple[int, int]]:
    """Set every counter to what the rows hold; returns host -> (counted, held) for each one that
    differed. The counters are locked before the rows are counted, so a change racing this either
    committed before the count (and is in it) or applies its charge after this commits."""
    wrong = drift(session, lock=True)
    for host, (was, now) in sorted(wrong.items()):
        charge(session, host, now - was)
        log.warning("allocation of %s was %d GB, the rows hold %d GB: repaired", host, was, now)
    return wrong
