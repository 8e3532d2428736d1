"""SQLAlchemy models: one aggregate per module, all on one declarative Base."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import JSON, MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (stable Alembic diffs)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict: JSON, list: JSON}


def utcnow() -> datetime:
    """Naive UTC now; every timestamp column stores naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_id() -> str:
    return str(uuid.uuid4())


# Import every model so that Base.metadata knows all tables.
from models.volume_type import VolumeType, VolumeTypeExtraSpec, VolumeTypeProject, QosSpecs, Encryption  # noqa: E402,F401
from models.volume import Volume, VolumeMetadata, VolumeStatus  # noqa: E402,F401
from models.snapshot import Snapshot, SnapshotMetadata  # noqa: E402,F401
from models.message import Message  # noqa: E402,F401
from models.default_type import DefaultType  # noqa: E402,F401
from models.image import Image  # noqa: E402,F401
from models.service import Service  # noqa: E402,F401
from models.key import EncryptionKey  # noqa: E402,F401
from models.quota import Quota, QuotaClass, QuotaUsage, Reservation  # noqa: E402,F401
from models.quota_repair import QuotaRepair, RepairSource  # noqa: E402,F401
from models.flow_log import FlowRun, FlowState  # noqa: E402,F401
from models.auth_key import AuthKey  # noqa: E402,F401
from models.allocation import Allocation  # noqa: E402,F401
