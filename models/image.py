"""The image catalogue: volchain's stand-in for Glance."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, new_id, utcnow


class Image(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str | None] = mapped_column(String(255), index=True)
    owner: Mapped[str | None] = mapped_column(String(255))
    visibility: Mapped[str] = mapped_column(String(32), default="public")
    status: Mapped[str] = mapped_column(String(32), default="active")
    size: Mapped[int | None] = mapped_column(BigInteger)  # bytes
    virtual_size: Mapped[int | None] = mapped_column(BigInteger)  # bytes
    min_disk: Mapped[int] = mapped_column(default=0)  # GB
    properties: Mapped[dict] = mapped_column(default=dict)
    # A file holding the image's data, readable by the volume services (volumes from this image
    # start as a copy of it); None: the catalogue has the image's record only.
    location: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
