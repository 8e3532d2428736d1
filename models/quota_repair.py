"""What the quota reconciler repaired: one row per usage field it set right (tasks/reconcile.py)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, utcnow


class RepairSource(str, enum.Enum):
    MANUAL = "manual"  # `volchain quota check --sync`
    SCHEDULED = "scheduled"  # the `volchain.quota.reconcile` task, under Celery beat


class QuotaRepair(Base):
    """One field of one usage row, from `old` (None: there was no usage row) to what the rows say."""

    __tablename__ = "quota_repairs"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(255), index=True)
    resource: Mapped[str] = mapped_column(String(300))
    field: Mapped[str] = mapped_column(String(16))  # in_use | reserved
    old: Mapped[int | None] = mapped_column(BigInteger)
    new: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(16))
