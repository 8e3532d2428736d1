"""What the scheduler has handed out on each backend: GB of live volumes and their snapshots,
kept per `host` string as volumes record it (`host@backend#pool`), so that scheduling reads one
row per pool instead of adding up every volume there (tasks/allocation.py)."""

from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from models import Base


class Allocation(Base):
    __tablename__ = "allocations"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    allocated_gb: Mapped[int] = mapped_column(BigInteger, default=0)
