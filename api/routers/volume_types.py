"""`/v3/{project_id}/types`: list, show, default, create, delete, extra specs (writes: admin only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from api import views
from api.deps import Scope, require_admin, scope
from api.errors import HTTPError
from api.routers.volumes import json_body
from api.openapi import answers, query, request_body
from api.schemas import EXTRA_SPECS, ONE_EXTRA_SPEC, VOLUME_TYPE_CREATE, validate
from tasks import catalog, errors, lookups
from workers.runtime import get_runtime

router = APIRouter(tags=["volume types"])
TRUE_WORDS = {"true", "1", "on", "yes", "y", "t"}


def _truthy(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() in TRUE_WORDS)


def _is_public_filter(request: Request) -> tuple[bool | None, bool]:
    """Cinder's `?is_public=`: absent or true, public types (plus the caller's project's private
    ones); false, private ones only; `none`, every type. Admins' false/none span all projects."""
    raw = request.query_params.get("is_public")
    if raw is None:
        return True, False
    if raw.strip().lower() == "none":
        return None, True
    public = _truthy(raw)
    return public, not public  # an admin asking for private types sees every project's


@router.get("/types", summary="List volume types visible to the caller",
            openapi_extra=query(is_public="true (default): public types and the project's; false: private; none: all"))
async def list_types(request: Request, s: Scope = Depends(scope)):
    is_public, every = _is_public_filter(request)

    def run():
        with get_runtime().factory() as session:
            types = catalog.list_types(session, s.is_admin, s.project_id, is_public, everything=every and s.is_admin)
            return {"volume_types": [views.volume_type(t, admin=s.is_admin, version=s.version) for t in types]}

    return await run_in_threadpool(run)


@router.get("/types/default", summary="The default volume type", responses=answers(500))
async def default_type(s: Scope = Depends(scope)):
    def run():
        rt = get_runtime()
        with rt.factory() as session:
            try:
                vt = lookups.default_volume_type(session, rt.settings.default_volume_type, s.project_id)
            except errors.VolumeTypeDefaultMisconfiguredError:
                raise HTTPError(404, "Default volume type can not be found.") from None
            return {"volume_type": views.volume_type(vt, admin=s.is_admin, version=s.version)}

    return await run_in_threadpool(run)


@router.get("/types/{type_id}", summary="Show a volume type")
async def show_type(type_id: str, s: Scope = Depends(scope)):
    def run():
        with get_runtime().factory() as session:
            vt = catalog.get_type(session, type_id, s.is_admin, s.project_id)
            return {"volume_type": views.volume_type(vt, admin=s.is_admin, version=s.version)}

    return await run_in_threadpool(run)


@router.post("/types", summary="Create a volume type (admin)", responses=answers(403, 409),
             openapi_extra=request_body(VOLUME_TYPE_CREATE))
async def create_type(request: Request, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:types_manage")
    body = await json_body(request)
    validate(VOLUME_TYPE_CREATE, body)
    spec = body["volume_type"]
    raw_public = spec.get("os-volume-type-access:is_public")
    is_public = True if raw_public is None else _truthy(raw_public)

    def run():
        with get_runtime().factory() as session, session.begin():
            vt = catalog.create_type(session, spec["name"], spec.get("description"), is_public=is_public,
                                     extra_specs=spec.get("extra_specs") or {})
            return {"volume_type": views.volume_type(vt, admin=True, version=s.version)}

    return await run_in_threadpool(run)


@router.delete("/types/{type_id}", status_code=202, response_class=Response,
               summary="Delete a volume type (admin)",
               responses=answers(403))
async def delete_type(type_id: str, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:types_manage")

    def run():
        with get_runtime().factory() as session, session.begin():
            catalog.delete_type(session, catalog.get_type(session, type_id, True, s.project_id))

    await run_in_threadpool(run)
    return Response(status_code=202)


@router.get("/types/{type_id}/extra_specs", summary="A type's extra specs")
async def list_extra_specs(type_id: str, s: Scope = Depends(scope)):
    def run():
        with get_runtime().factory() as session:
            return {"extra_specs": catalog.get_type(session, type_id, s.is_admin, s.project_id).specs()}

    return await run_in_threadpool(run)


@router.post("/types/{type_id}/extra_specs", summary="Add or change extra specs (admin)", responses=answers(403),
             openapi_extra=request_body(EXTRA_SPECS))
async def set_extra_specs(type_id: str, request: Request, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:types_extra_specs:create")
    body = await json_body(request)
    validate(EXTRA_SPECS, body)

    def run():
        with get_runtime().factory() as session, session.begin():
            vt = catalog.get_type(session, type_id, True, s.project_id)
            return {"extra_specs": catalog.set_extra_specs(session, vt, body["extra_specs"])}

    return await run_in_threadpool(run)


@router.get("/types/{type_id}/extra_specs/{key}", summary="One extra spec")
async def show_extra_spec(type_id: str, key: str, s: Scope = Depends(scope)):
    def run():
        with get_runtime().factory() as session:
            specs = catalog.get_type(session, type_id, s.is_admin, s.project_id).specs()
            if key not in specs:
                raise errors.VolumeTypeExtraSpecsNotFound(volume_type_id=type_id, extra_specs_key=key)
            return {key: specs[key]}

    return await run_in_threadpool(run)


@router.put("/types/{type_id}/extra_specs/{key}", summary="Set one extra spec (admin)", responses=answers(403),
            openapi_extra=request_body(ONE_EXTRA_SPEC))
async def update_extra_spec(type_id: str, key: str, request: Request, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:types_extra_specs:update")
    body = await json_body(request)
    if not isinstance(body, dict) or list(body) != [key]:
        raise HTTPError(400, "Request body and URI mismatch")

    def run():
        with get_runtime().factory() as session, session.begin():
            vt = catalog.get_type(session, type_id, True, s.project_id)
            return catalog.set_extra_specs(session, vt, body)

    return await run_in_threadpool(run)


@router.delete("/types/{type_id}/extra_specs/{key}", status_code=202, response_class=Response,
               summary="Remove one extra spec (admin)",
               responses=answers(403))
async def delete_extra_spec(type_id: str, key: str, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:types_extra_specs:delete")

    def run():
        with get_runtime().factory() as session, session.begin():
            catalog.unset_extra_spec(session, catalog.get_type(session, type_id, True, s.project_id), key)

    await run_in_threadpool(run)
    return Response(status_code=202)
