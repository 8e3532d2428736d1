"""The volume type catalogue: create, find, list, delete, extra specs. Shared by the CLI and the API.

Every function runs in the caller's transaction. Visibility follows Cinder: admins see every
type; others see public types and the private types their project was given access to.
"""

from __future__ import annotations

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.orm import Session

from models.volume import Volume
from models.volume_type import DEFAULT_TYPE_NAME, VolumeType, VolumeTypeExtraSpec, VolumeTypeProject
from tasks import errors
from tasks.lookups import is_uuid_like

MAX_LEN = 255
MAX_EXTRA_SPECS = 128


def _check_specs(specs: dict) -> dict[str, str]:
    if not isinstance(specs, dict):
        raise errors.InvalidInput(reason="extra_specs must be a dict.")
    if len(specs) > MAX_EXTRA_SPECS:
        raise errors.InvalidInput(reason=f"Too many extra specs: {len(specs)}, at most {MAX_EXTRA_SPECS}.")
    out = {}
    for key, value in specs.items():
        if isinstance(value, bool):
            value = str(value)
        if not isinstance(key, str) or not 0 < len(key) <= MAX_LEN:
            raise errors.InvalidInput(reason=f"Extra spec key {str(key)[:40]!r} must be 1 to {MAX_LEN} characters.")
        if not isinstance(value, (str, int, float)) or len(str(value)) > MAX_LEN:
            raise errors.InvalidInput(reason=f"Extra spec {key} must be a string of at most {MAX_LEN} characters.")
        out[key] = str(value)
    return out


def visible(is_admin: bool, project_id: str):
    if is_admin:
        return True
    return or_(
        VolumeType.is_public.is_(True),
        exists().where(VolumeTypeProject.volume_type_id == VolumeType.id, VolumeTypeProject.project_id == project_id),
    )


def create_type(session: Session, name: str, description: str | None = None, is_public: bool = True,
                extra_specs: dict | None = None, projects: list[str] = ()) -> VolumeType:
    name = (name or "").strip()
    if not 0 < len(name) <= MAX_LEN:
        raise errors.InvalidVolumeType(reason=f"name must be 1 to {MAX_LEN} characters")
    if description is not None and len(description) > MAX_LEN:
        raise errors.InvalidVolumeType(reason=f"description is longer than {MAX_LEN} characters")
    if projects and is_public:
        raise errors.InvalidVolumeType(reason="Type access modification is not applicable to public volume type.")
    specs = _check_specs(extra_specs or {})
    if session.scalar(select(VolumeType.id).where(VolumeType.name == name, VolumeType.deleted.is_(False))):
        raise errors.VolumeTypeExists(id=name)
    vt = VolumeType(name=name, description=description, is_public=is_public,
                    extra_specs=[VolumeTypeExtraSpec(key=k, value=v) for k, v in specs.items()])
    session.add(vt)
    session.flush()
    session.add_all(VolumeTypeProject(volume_type_id=vt.id, project_id=p) for p in sorted(set(projects)))
    session.flush()
    return vt


def list_types(session: Session, is_admin: bool, project_id: str, is_public: bool | None = True,
               everything: bool = False) -> list[VolumeType]:
    """Cinder's listing: by default public types plus the private ones shared with the caller's
    project; `is_public=False` private ones only; `everything` (admins) all of them."""
    query = select(VolumeType).where(VolumeType.deleted.is_(False))
    if not everything:
        query = query.where(visible(False, project_id))
    if is_public is False:
        query = query.where(VolumeType.is_public.is_(False))
    return list(session.scalars(query.order_by(VolumeType.name)).unique())


def get_type(session: Session, ref: str, is_admin: bool, project_id: str) -> VolumeType:
    """By id (or by name); 404 for unknown or invisible types."""
    base = select(VolumeType).where(VolumeType.deleted.is_(False), visible(is_admin, project_id))
    found = session.scalar(base.where(VolumeType.id == ref)) if is_uuid_like(ref) else None
    if found is None:
        found = session.scalar(base.where(VolumeType.name == ref))
    if found is None:
        raise errors.VolumeTypeNotFound(volume_type_id=ref)
    return found


def all_type_projects(session: Session) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for type_id, project in session.execute(
        select(VolumeTypeProject.volume_type_id, VolumeTypeProject.project_id).order_by(VolumeTypeProject.project_id)
    ):
        out.setdefault(type_id, []).append(project)
    return out


def delete_type(session: Session, vt: VolumeType) -> None:
    if vt.name == DEFAULT_TYPE_NAME:
        raise errors.InvalidVolumeType(reason="Default volume type can not be deleted")
    in_use = session.scalar(select(exists().where(Volume.volume_type_id == vt.id, Volume.deleted.is_(False))))
    if in_use:
        raise errors.VolumeTypeInUse(volume_type_id=vt.id)
    vt.deleted = True
    session.flush()


def set_extra_specs(session: Session, vt: VolumeType, specs: dict) -> dict[str, str]:
    specs = _check_specs(specs)
    current = {s.key: s for s in vt.extra_specs}
    if len(set(current) | set(specs)) > MAX_EXTRA_SPECS:
        raise errors.InvalidInput(reason=f"Too many extra specs, at most {MAX_EXTRA_SPECS}.")
    for key, value in specs.items():
        if key in current:
            current[key].value = value
        else:
            vt.extra_specs.append(VolumeTypeExtraSpec(key=key, value=value))
    session.flush()
    return specs


def unset_extra_spec(session: Session, vt: VolumeType, key: str) -> None:
    result = session.execute(delete(VolumeTypeExtraSpec).where(VolumeTypeExtraSpec.volume_type_id == vt.id,
                                                               VolumeTypeExtraSpec.key == key))
    if result.rowcount == 0:
        raise errors.VolumeTypeExtraSpecsNotFound(volume_type_id=vt.id, extra_specs_key=key)
    session.expire(vt, ["extra_specs"])
