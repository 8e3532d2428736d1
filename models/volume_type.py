"""Volume types with their extra specs, QoS specs, encryption spec and project access."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models import Base, new_id, utcnow

DEFAULT_TYPE_NAME = "__DEFAULT__"


class QosSpecs(Base):
    __tablename__ = "qos_specs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    consumer: Mapped[str] = mapped_column(String(32), default="back-end")
    specs: Mapped[dict] = mapped_column(default=dict)


class VolumeType(Base):
    __tablename__ = "volume_types"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), index=True)
    description: Mapped[str | None] = mapped_column(String(255))
    is_public: Mapped[bool] = mapped_column(default=True)
    qos_specs_id: Mapped[str | None] = mapped_column(ForeignKey("qos_specs.id"))
    deleted: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # Loaded with the type in one query: a create reads the type, its specs and its encryption.
    extra_specs: Mapped[list[VolumeTypeExtraSpec]] = relationship(
        cascade="all, delete-orphan", lazy="joined"
    )
    encryption: Mapped[Encryption | None] = relationship(lazy="joined", viewonly=True, uselist=False)

    def specs(self) -> dict[str, str]:
        return {s.key: s.value for s in self.extra_specs}


class VolumeTypeExtraSpec(Base):
    __tablename__ = "volume_type_extra_specs"
    __table_args__ = (UniqueConstraint("volume_type_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    volume_type_id: Mapped[str] = mapped_column(ForeignKey("volume_types.id"), index=True)
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(String(255))


class VolumeTypeProject(Base):
    """Which projects may use a private (is_public=False) type."""

    __tablename__ = "volume_type_projects"
    __table_args__ = (UniqueConstraint("volume_type_id", "project_id"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    volume_type_id: Mapped[str] = mapped_column(ForeignKey("volume_types.id"))
    project_id: Mapped[str] = mapped_column(String(255))


class Encryption(Base):
    """The encryption spec of a type; a type with one gets a key per volume."""

    __tablename__ = "encryption"

    volume_type_id: Mapped[str] = mapped_column(ForeignKey("volume_types.id"), primary_key=True)
    provider: Mapped[str] = mapped_column(String(255), default="luks")
    cipher: Mapped[str | None] = mapped_column(String(255))
    key_size: Mapped[int | None]
    control_location: Mapped[str] = mapped_column(String(255), default="front-end")
