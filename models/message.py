"""User messages: why an asynchronous operation failed, in words a user can act on (Cinder's messages API).

A message names the resource it is about, the action that failed (`action_id`) and why
(`detail_id`); the text shown to the user is built from those two codes (tasks/user_messages.py),
so the wording lives in one place. Messages expire (`expires_at`) and are soft-deleted.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from models import Base, new_id, utcnow


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_project_live", "project_id", "deleted"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(String(255))
    resource_type: Mapped[str | None] = mapped_column(String(36))
    resource_uuid: Mapped[str | None] = mapped_column(String(36), index=True)
    event_id: Mapped[str] = mapped_column(String(255))
    message_level: Mapped[str] = mapped_column(String(255), default="ERROR")
    action_id: Mapped[str | None] = mapped_column(String(10))
    detail_id: Mapped[str | None] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    deleted: Mapped[bool] = mapped_column(default=False)
    deleted_at: Mapped[datetime | None]
