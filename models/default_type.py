"""Per-project default volume types (Cinder 3.62): the type a project's creates get when they name none."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, utcnow


class DefaultType(Base):
    __tablename__ = "default_volume_types"

    project_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    volume_type_id: Mapped[str] = mapped_column(ForeignKey("volume_types.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime | None]
