"""Registered services: the scheduler and the volume services (one row per host and binary).

A service reports on a heartbeat (`updated_at`, `report_count`); one whose last report is older
than `VOLCHAIN_SERVICE_DOWN_TIME` seconds is down. A volume service's `capabilities` hold what its
driver reported last (total and free capacity, `volume_backend_name`, its pools); volume services
also name the availability zones a create may use.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, utcnow

VOLUME_BINARY = "cinder-volume"
SCHEDULER_BINARY = "cinder-scheduler"


class Service(Base):
    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("host", "binary"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255))
    binary: Mapped[str] = mapped_column(String(255))
    availability_zone: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(default=False)
    disabled_reason: Mapped[str | None] = mapped_column(String(255))
    report_count: Mapped[int] = mapped_column(default=0)
    capabilities: Mapped[dict | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None]
