"""Volumes and their metadata."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, new_id, utcnow


class VolumeStatus(str, enum.Enum):
    CREATING = "creating"
    AVAILABLE = "available"
    IN_USE = "in-use"
    EXTENDING = "extending"
    ERROR = "error"
    ERROR_EXTENDING = "error_extending"
    ERROR_DELETING = "error_deleting"
    DELETING = "deleting"
    DELETED = "deleted"


class Volume(Base):
    __tablename__ = "volumes"
    __table_args__ = (
        Index("ix_volumes_project_live", "project_id", "deleted"),
        Index("ix_volumes_host_live", "host", "deleted"),  # a backend's allocated capacity (scheduler)
        # Volumes waiting for their create to be consumed: the sweeper re-sends lost casts (tasks/redrive.py).
        Index("ix_volumes_creating", "created_at", postgresql_where=text("status = 'creating'")),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(255))
    display_name: Mapped[str | None] = mapped_column(String(255))
    display_description: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int]
    status: Mapped[str] = mapped_column(String(255), default=VolumeStatus.CREATING.value)
    attach_status: Mapped[str] = mapped_column(String(255), default="detached")
    availability_zone: Mapped[str | None] = mapped_column(String(255))
    volume_type_id: Mapped[str] = mapped_column(String(36))
    snapshot_id: Mapped[str | None] = mapped_column(String(36))
    source_volid: Mapped[str | None] = mapped_column(String(36))
    image_id: Mapped[str | None] = mapped_column(String(36))
    encryption_key_id: Mapped[str | None] = mapped_column(String(36))
    multiattach: Mapped[bool] = mapped_column(default=False)
    bootable: Mapped[bool] = mapped_column(default=False)
    use_quota: Mapped[bool] = mapped_column(default=True)
    shared_targets: Mapped[bool] = mapped_column(default=True)
    replication_status: Mapped[str | None] = mapped_column(String(255))
    host: Mapped[str | None] = mapped_column(String(255))
    cluster_name: Mapped[str | None] = mapped_column(String(255))
    provider_location: Mapped[str | None] = mapped_column(String(255))
    scheduled_at: Mapped[datetime | None]
    error_message: Mapped[str | None] = mapped_column(String(255))
    deleted: Mapped[bool] = mapped_column(default=False)
    deleted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None]


class VolumeMetadata(Base):
    __tablename__ = "volume_metadata"
    __table_args__ = (UniqueConstraint("volume_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    volume_id: Mapped[str] = mapped_column(ForeignKey("volumes.id"), index=True)
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(String(255))
