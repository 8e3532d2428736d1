"""Quota limits (per project and per class), usages and reservations: Cinder's tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, utcnow


class Quota(Base):
    """A project's own limit for one resource (overrides the class)."""

    __tablename__ = "quotas"
    __table_args__ = (UniqueConstraint("project_id", "resource"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(255))
    resource: Mapped[str] = mapped_column(String(300))
    hard_limit: Mapped[int] = mapped_column(BigInteger)


class QuotaClass(Base):
    """A class limit; the `default` class applies to every project without its own."""

    __tablename__ = "quota_classes"
    __table_args__ = (UniqueConstraint("class_name", "resource"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    class_name: Mapped[str] = mapped_column(String(255))
    resource: Mapped[str] = mapped_column(String(300))
    hard_limit: Mapped[int] = mapped_column(BigInteger)


class QuotaUsage(Base):
    __tablename__ = "quota_usages"
    __table_args__ = (UniqueConstraint("project_id", "resource"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    project_id: Mapped[str] = mapped_column(String(255))
    resource: Mapped[str] = mapped_column(String(300))
    in_use: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    until_refresh: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None]


class Reservation(Base):
    """A pending delta; it is deleted when committed, rolled back or expired."""

    __tablename__ = "reservations"
    __table_args__ = (Index("ix_reservations_expire", "expire"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    usage_id: Mapped[int] = mapped_column(ForeignKey("quota_usages.id"))
    project_id: Mapped[str] = mapped_column(String(255))
    resource: Mapped[str] = mapped_column(String(300))
    delta: Mapped[int] = mapped_column(BigInteger)
    expire: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
