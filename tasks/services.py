"""Services: the heartbeat a scheduler or volume service writes, and which services are up.

A service row is keyed by (host, binary). Each heartbeat stamps `updated_at`, counts
`report_count` and, for a volume service, stores what its driver reports (`capabilities`:
total and free capacity, `volume_backend_name`, pools). A service is up while its last
heartbeat is younger than `down_time` seconds (Cinder's `service_down_time`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from models import utcnow
from models.service import Service


def heartbeat(session: Session, host: str, binary: str, availability_zone: str,
              capabilities: dict[str, Any] | None = None) -> None:
    """Register the service on its first report; afterwards stamp it and store its capabilities."""
    now = utcnow()
    insert = pg_insert(Service).values(
        host=host, binary=binary, availability_zone=availability_zone, disabled=False, report_count=1,
        capabilities=capabilities, created_at=now, updated_at=now,
    )
    session.execute(insert.on_conflict_do_update(
        index_elements=[Service.host, Service.binary],
        set_={"availability_zone": availability_zone, "report_count": Service.report_count + 1,
              "capabilities": capabilities, "updated_at": now},
    ))


def is_up(service: Service, down_time: float, now: datetime | None = None) -> bool:
    seen = service.updated_at or service.created_at
    return seen is not None and (now or utcnow()) - seen <= timedelta(seconds=down_time)


def up_services(session: Session, binary: str, down_time: float) -> list[Service]:
    """Services of `binary` that are enabled and reported within `down_time` seconds."""
    cutoff = utcnow() - timedelta(seconds=down_time)
    return list(session.scalars(
        select(Service).where(Service.binary == binary, Service.disabled.is_(False), Service.updated_at >= cutoff)
        .order_by(Service.host)
    ))
