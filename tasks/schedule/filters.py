"""The scheduler's filters and weigher: which backends may take a volume, and which is best.

A candidate is one pool of a volume service that is up (enabled, heartbeat younger than
`service_down_time`). The filters, in order (each named after Cinder's):

    AvailabilityZoneFilter  the service's zone is one the request allows
    CapabilitiesFilter      the type's `volume_backend_name` extra spec, if any, equals the
                            backend's reported `volume_backend_name`
    resource_backend pin    a create pinned to a source's backend keeps only that backend (and
                            that pool when the pin names one)
    CapacityFilter          the pool's free capacity covers the size

Free capacity is the driver's reported total less what is allocated on that backend (live
volumes and snapshots of volumes there: a counter per pool, kept in the transactions that
change it, tasks/allocation.py), so two creates scheduled between two heartbeats see each other. The candidates' service rows are locked while this is worked out,
so concurrent schedulers take turns per backend and never hand out the same space twice.

The weigher (CapacityWeigher): the most free capacity wins; ties go to the first host by name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from models import utcnow
from models.service import VOLUME_BINARY, Service
from tasks import allocation


@dataclass(frozen=True)
class Candidate:
    host: str  # host@backend
    pool: str
    availability_zone: str
    total_gb: int
    allocated_gb: int

    @property
    def backend_id(self) -> str:
        """host@backend#pool: what a volume's `host` records."""
        return f"{self.host}#{self.pool}"

    @property
    def free_gb(self) -> int:
        return self.total_gb - self.allocated_gb


def _pools(host: str, caps: dict[str, Any] | None) -> list[tuple[str, int]]:
    caps = caps or {}
    pools = caps.get("pools") or [{"pool_name": caps.get("volume_backend_name") or host.split("@")[-1],
                                   "total_capacity_gb": caps.get("total_capacity_gb", 0)}]
    return [(str(p.get("pool_name")), int(p.get("total_capacity_gb") or 0)) for p in pools]


_UP_SERVICES = (
    select(Service.host, Service.availability_zone, Service.capabilities)
    .where(Service.binary == VOLUME_BINARY, Service.disabled.is_(False), Service.updated_at >= bindparam("cutoff"))
    .order_by(Service.id).with_for_update()
)


def _pin_matches(pin: str | None, candidate: Candidate) -> bool:
    if not pin:
        return True
    if "#" in pin:
        return pin == candidate.backend_id
    return pin == candidate.host


def candidates(session: Session, spec: dict[str, Any], down_time: float) -> tuple[list[Candidate], str]:
    """The pools that pass every filter, best first, and (when none does) why not, in words."""
    services = session.execute(_UP_SERVICES, {"cutoff": utcnow() - timedelta(seconds=down_time)}).all()
    if not services:
        return [], "no volume service is up"
    zones = set(spec.get("availability_zones") or [])
    backend_name = ((spec.get("volume_type") or {}).get("extra_specs") or {}).get("volume_backend_name")
    pin = spec.get("resource_backend")
    size = int(spec.get("size") or 0)
    pools: list[Candidate] = []
    reasons: list[str] = []
    for service in services:
        if zones and service.availability_zone not in zones:
            reasons.append(f"{service.host}: zone {service.availability_zone} not in {sorted(zones)}")
            continue
        reported = (service.capabilities or {}).get("volume_backend_name")
        if backend_name and reported != backend_name:
            reasons.append(f"{service.host}: volume_backend_name {reported} is not {backend_name}")
            continue
        for pool, total in _pools(service.host, service.capabilities):
            cand = Candidate(service.host, pool, service.availability_zone, total, 0)
            if _pin_matches(pin, cand):
                pools.append(cand)
            else:
                reasons.append(f"{cand.backend_id}: not the pinned backend {pin}")
    allocated = allocation.allocated(session, [c.backend_id for c in pools]) if pools else {}
    passed: list[Candidate] = []
    for cand in pools:
        cand = dataclasses.replace(cand, allocated_gb=allocated[cand.backend_id])
        if cand.free_gb < size:
            reasons.append(f"{cand.backend_id}: {cand.free_gb} GB free, {size} GB asked")
            continue
        passed.append(cand)
    passed.sort(key=lambda c: (-c.free_gb, c.backend_id))
    return passed, "; ".join(reasons)
