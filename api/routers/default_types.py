"""Per-project default volume types (3.62): the type a project's creates get when they name none.

Admins set, unset and list them; a project may read its own. A create naming no type uses the
project's default type while the project may still use it, else the configured default
(tasks/lookups.default_volume_type).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from starlette.concurrency import run_in_threadpool

from api.auth import check_id
from api.deps import Scope, scope
from api.errors import HTTPError
from api.microversion import v
from api.routers.volumes import json_body
from api.openapi import answers, request_body
from api.schemas import validate
from models import utcnow
from models.default_type import DefaultType
from tasks import errors, lookups
from workers.runtime import get_runtime

router = APIRouter(tags=["default_types"])

DEFAULT_TYPE_OVERRIDES = v("3.62")
NOT_FOUND = "The resource could not be found."
FORBIDDEN = "You are not authorized to perform this operation."
SET_DEFAULT_TYPE = {
    "type": "object",
    "properties": {
        "default_type": {
            "type": "object",
            "properties": {"volume_type": {"type": "string", "minLength": 1, "maxLength": 255}},
            "required": ["volume_type"],
            "additionalProperties": False,
        },
    },
    "required": ["default_type"],
}


def view(project_id: str, volume_type_id: str) -> dict[str, str]:
    return {"project_id": project_id, "volume_type_id": volume_type_id}


def _check(s: Scope, target: str | None = None, *, own_allowed: bool = False) -> None:
    """Cinder's order: the microversion, then the policy (403 in Cinder's words), then the project."""
    if s.version < DEFAULT_TYPE_OVERRIDES:
        raise HTTPError(404, NOT_FOUND)
    if not (s.is_admin or (own_allowed and target == s.project_id)):
        raise errors.NotAuthorized(FORBIDDEN)
    if target is not None:
        try:
            check_id("project", target)  # volchain has no project registry: only ids no token can carry are unknown
        except ValueError:
            raise HTTPError(404, f"Project with id {target} not found.") from None


@router.put("/default-types/{target}", summary="Set a project's default volume type (3.62, admin)",
            responses=answers(403), openapi_extra=request_body(SET_DEFAULT_TYPE))
async def set_default_type(target: str, request: Request, s: Scope = Depends(scope)):
    if s.version < DEFAULT_TYPE_OVERRIDES:
        raise HTTPError(404, NOT_FOUND)
    body = await json_body(request)
    validate(SET_DEFAULT_TYPE, body)
    ref = body["default_type"]["volume_type"]
    if not ref.strip():
        raise HTTPError(400, "An invalid 'name' value was provided. The 'name' can not be empty.")
    _check(s, target)

    def run():
        with get_runtime().factory() as session, session.begin():
            try:
                vt = lookups.volume_type_by_name_or_id(session, None, ref)  # admins see every type
            except errors.VolumeTypeNotFound as exc:
                raise HTTPError(400, exc.msg) from None
            now = utcnow()
            session.execute(pg_insert(DefaultType).values(project_id=target, volume_type_id=vt.id, created_at=now)
                            .on_conflict_do_update(index_elements=[DefaultType.project_id],
                                                   set_={"volume_type_id": vt.id, "updated_at": now}))
            return {"default_type": view(target, vt.id)}

    return await run_in_threadpool(run)


@router.get("/default-types", summary="Every project's default volume type (3.62, admin)", responses=answers(403))
async def list_default_types(s: Scope = Depends(scope)):
    _check(s)

    def run():
        with get_runtime().factory() as session:
            rows = session.execute(select(DefaultType.project_id, DefaultType.volume_type_id)
                                   .order_by(DefaultType.project_id)).all()
            return {"default_types": [view(p, t) for p, t in rows]}

    return await run_in_threadpool(run)


@router.get("/default-types/{target}", summary="A project's default volume type (3.62; admin, or the project)",
            responses=answers(403))
async def show_default_type(target: str, s: Scope = Depends(scope)):
    _check(s, target, own_allowed=True)

    def run():
        with get_runtime().factory() as session:
            type_id = session.scalar(select(DefaultType.volume_type_id).where(DefaultType.project_id == target))
            if type_id is None:
                raise errors.NotFound(f"Default type for project {target} not found.")
            return {"default_type": view(target, type_id)}

    return await run_in_threadpool(run)


@router.delete("/default-types/{target}", status_code=204, summary="Unset a project's default type (3.62, admin)",
               responses=answers(403))
async def unset_default_type(target: str, s: Scope = Depends(scope)):
    if s.version < DEFAULT_TYPE_OVERRIDES:
        raise HTTPError(404, NOT_FOUND)
    if not s.is_admin:
        raise errors.NotAuthorized(FORBIDDEN)

    def run() -> None:  # none set, or an unknown project: nothing to do, as in Cinder
        with get_runtime().factory() as session, session.begin():
            session.execute(delete(DefaultType).where(DefaultType.project_id == target))

    await run_in_threadpool(run)
    return Response(status_code=204)
