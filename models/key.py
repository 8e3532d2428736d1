"""Keys of the built-in key manager (encrypted volume types)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, new_id, utcnow


class EncryptionKey(Base):
    __tablename__ = "encryption_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    algorithm: Mapped[str] = mapped_column(String(64))
    length: Mapped[int | None]
    secret: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
