"""Project-scoped lookups for the create flow: a project never sees another project's rows.

Anything the caller may not see is reported exactly like something that does not exist.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, exists, func, or_, select
from sqlalchemy.orm import Session

from models.default_type import DefaultType
from models.image import Image
from models.service import VOLUME_BINARY, Service
from models.snapshot import Snapshot
from models.volume import Volume
from models.volume_type import Encryption, QosSpecs, VolumeType, VolumeTypeExtraSpec, VolumeTypeProject
from tasks import errors
from tasks.context import CreateContext

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def is_uuid_like(value: object) -> bool:
    return isinstance(value, str) and bool(UUID_RE.match(value))


@dataclass(frozen=True)
class EncryptionInfo:
    provider: str
    cipher: str | None
    key_size: int | None
    control_location: str


@dataclass(frozen=True)
class TypeInfo:
    """A volume type as a create reads it: plain values, loaded with its specs in one query."""

    id: str
    name: str
    description: str | None
    is_public: bool
    qos_specs_id: str | None
    extra_specs: dict[str, str]
    encryption: EncryptionInfo | None

    def specs(self) -> dict[str, str]:
        return dict(self.extra_specs)


_T, _S, _E, _A, _D = (VolumeType.__table__, VolumeTypeExtraSpec.__table__, Encryption.__table__,
                      VolumeTypeProject.__table__, DefaultType.__table__)
_TYPE_COLUMNS = select(
    _T.c.id, _T.c.name, _T.c.description, _T.c.is_public, _T.c.qos_specs_id, _S.c.key, _S.c.value,
    _E.c.provider, _E.c.cipher, _E.c.key_size, _E.c.control_location,
).select_from(_T.outerjoin(_S, _S.c.volume_type_id == _T.c.id).outerjoin(_E, _E.c.volume_type_id == _T.c.id))
_VISIBLE = or_(_T.c.is_public.is_(True), exists().where(_A.c.volume_type_id == _T.c.id,
                                                        _A.c.project_id == bindparam("project_id")))
_TYPE_QUERIES = {
    (by, admin): _TYPE_COLUMNS.where(_T.c.deleted.is_(False), getattr(_T.c, by) == bindparam("ref"),
                                     *(() if admin else (_VISIBLE,)))
    for by in ("id", "name") for admin in (True, False)
}


# The type a create naming none gets, in one query: the project's default type (3.62) while the
# project may use it (live, and public or shared with the project), and the configured default by
# name; `own` marks the project's rows.
_PROJECT_DEFAULT_ID = select(_D.c.volume_type_id).where(_D.c.project_id == bindparam("project_id")).scalar_subquery()
_DEFAULT_TYPE_QUERY = _TYPE_COLUMNS.add_columns((_T.c.id == _PROJECT_DEFAULT_ID).label("own")).where(
    _T.c.deleted.is_(False), or_(and_(_T.c.id == _PROJECT_DEFAULT_ID, _VISIBLE), _T.c.name == bindparam("ref")))


def _load_type(session: Session, by: str, ref: str, ctx: CreateContext | None) -> TypeInfo | None:
    admin = ctx is None or ctx.is_admin
    params = {"ref": ref} if admin else {"ref": ref, "project_id": ctx.project_id}
    return _type_info(session.connection().execute(_TYPE_QUERIES[(by, admin)], params).all())


def _type_info(rows) -> TypeInfo | None:
    """One type from its rows of _TYPE_COLUMNS (one row per extra spec)."""
    if not rows:
        return None
    first = rows[0]
    enc = None
    if first.provider is not None:
        enc = EncryptionInfo(first.provider, first.cipher, first.key_size, first.control_location)
    return TypeInfo(id=first.id, name=first.name, description=first.description, is_public=bool(first.is_public),
                    qos_specs_id=first.qos_specs_id, extra_specs={r.key: r.value for r in rows if r.key is not None},
                    encryption=enc)


def volume_type_by_name_or_id(session: Session, ctx: CreateContext, ref: str) -> TypeInfo:
    """Resolve a requested type by id or name; 404 for unknown or private-to-others types."""
    if is_uuid_like(ref):
        found = _load_type(session, "id", ref, ctx) or _load_type(session, "name", ref, ctx)
        if found is None:
            raise errors.VolumeTypeNotFound(volume_type_id=ref)
        return found
    found = _load_type(session, "name", ref, ctx)
    if found is None:
        raise errors.VolumeTypeNotFoundByName(volume_type_name=ref)
    return found


def volume_type_by_id(session: Session, type_id: str) -> TypeInfo | None:
    """Any live type by id, whoever asks (the type of a source the caller may already see)."""
    return _load_type(session, "id", type_id, None)


def default_volume_type(session: Session, name: str, project_id: str | None = None) -> TypeInfo:
    """The type for a create naming none: the project's default type (Cinder 3.62) if it has one
    it may still use, else the configured default `name`. A project default that was deleted, or
    made private and not shared with the project, is passed over."""
    if project_id is None:
        found = _load_type(session, "name", name, None)
    else:
        rows = session.connection().execute(_DEFAULT_TYPE_QUERY, {"ref": name, "project_id": project_id}).all()
        found = _type_info([r for r in rows if r.own] or rows)
    if found is None:
        raise errors.VolumeTypeDefaultMisconfiguredError(volume_type_name=name)
    return found


def snapshot(session: Session, ctx: CreateContext, snapshot_id: str) -> Snapshot:
    query = select(Snapshot).where(Snapshot.id == snapshot_id, Snapshot.deleted.is_(False))
    if not ctx.is_admin:
        query = query.where(Snapshot.project_id == ctx.project_id)
    found = session.scalar(query) if is_uuid_like(snapshot_id) else None
    if found is None:
        raise errors.SnapshotNotFound(snapshot_id=snapshot_id)
    return found


def volume(session: Session, ctx: CreateContext, volume_id: str, for_update: bool = False) -> Volume:
    query = select(Volume).where(Volume.id == volume_id, Volume.deleted.is_(False))
    if not ctx.is_admin:
        query = query.where(Volume.project_id == ctx.project_id)
    if for_update:
        query = query.with_for_update()
    found = session.scalar(query) if is_uuid_like(volume_id) else None
    if found is None:
        raise errors.VolumeNotFound(volume_id=volume_id)
    return found


def _image_visible(ctx: CreateContext):
    if ctx.is_admin:
        return True
    return or_(Image.visibility.in_(["public", "community"]), Image.owner == ctx.project_id)


def resolve_image_ref(session: Session, ctx: CreateContext, image_ref: str) -> Image:
    """Cinder's imageRef rules: the last path segment as an id, else a unique name."""
    candidate = image_ref.rstrip("/").rsplit("/", 1)[-1]
    if is_uuid_like(candidate):
        found = session.scalar(select(Image).where(Image.id == candidate, _image_visible(ctx)))
        if found is not None:
            return found
    matches = session.scalars(select(Image).where(Image.name == image_ref, _image_visible(ctx)).limit(2)).all()
    if len(matches) > 1:
        raise errors.MultipleImageMatches(image_ref=image_ref)
    if not matches:
        raise errors.InvalidImageRef()
    return matches[0]


def image(session: Session, ctx: CreateContext, image_id: str) -> Image:
    found = session.scalar(select(Image).where(Image.id == image_id, _image_visible(ctx)))
    if found is None:
        raise errors.ImageNotFound(image_id=image_id)
    return found


def encryption_spec(session: Session, type_id: str) -> EncryptionInfo | None:
    found = volume_type_by_id(session, type_id)
    return found.encryption if found else None


def qos_specs(session: Session, vtype: TypeInfo) -> dict | None:
    if not vtype.qos_specs_id:
        return None
    qos = session.get(QosSpecs, vtype.qos_specs_id)
    return dict(qos.specs) if qos and qos.specs else None


def volume_service_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Service).where(Service.binary == VOLUME_BINARY)) or 0


class ZoneCache:
    """Valid availability zones (storage zone + volume services' zones), cached per process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._zones: frozenset[str] | None = None
        self._loaded_at = 0.0

    def get(self, session: Session, storage_zone: str, max_age: float, refresh: bool = False) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            if not refresh and self._zones is not None and now - self._loaded_at < max_age:
                return self._zones
        zones = set(session.scalars(select(Service.availability_zone).where(Service.binary == VOLUME_BINARY)))
        zones.add(storage_zone)
        with self._lock:
            self._zones = frozenset(zones)
            self._loaded_at = now
            return self._zones


ZONES = ZoneCache()
