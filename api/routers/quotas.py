"""Quotas: `/os-quota-sets/{project}` (+ defaults) and `/os-quota-class-sets/default`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from sqlalchemy import delete, or_, select
from starlette.concurrency import run_in_threadpool

from api import views
from api.deps import Scope, require_admin, scope
from api.errors import HTTPError
from api.routers.volumes import json_body
from api.openapi import answers, query, request_body
from api.schemas import QUOTA_CLASS_SET, QUOTA_SET, validate
from models.quota import Quota
from models.volume_type import VolumeType, VolumeTypeProject
from tasks import errors, quota_engine
from tasks.quota_engine import DEFAULT_CLASS
from workers.runtime import get_runtime

router = APIRouter(tags=["quotas"])
IGNORED_KEYS = ("tenant_id", "id")


def _resource_names(session, visible_to: str | None = None) -> list[str]:
    """Every resource, in Cinder's order; with `visible_to`, the per-type ones of the public types
    and of the private types that project may use only: a project never learns the name of
    another project's private type (admins see all)."""
    query = select(VolumeType.name).where(VolumeType.deleted.is_(False)).order_by(VolumeType.name)
    if visible_to is not None:
        query = query.where(or_(VolumeType.is_public.is_(True), VolumeType.id.in_(
            select(VolumeTypeProject.volume_type_id).where(VolumeTypeProject.project_id == visible_to))))
    return views.quota_order(list(session.scalars(query)))


def _visible_to(s: Scope) -> str | None:
    return None if s.is_admin else s.project_id


def quota_set(session, project_id: str, usage: bool, visible_to: str | None = None) -> dict:
    rt = get_runtime()
    report = quota_engine.usage_report(session, project_id, rt.env.quota)
    out: dict = {}
    for name in _resource_names(session, visible_to):
        row = report.get(name, {"limit": -1, "in_use": 0, "reserved": 0})
        out[name] = row if usage else row["limit"]
    return out


def default_limits(visible_to: str | None = None) -> dict[str, int]:
    """The default class's limits for every resource (as `_resource_names`), in Cinder's order."""
    rt = get_runtime()
    with rt.factory() as session:
        names = _resource_names(session, visible_to)
        limits = quota_engine.class_limits(session, names, rt.env.quota)
    return {n: limits[n] for n in names}


def _values(raw: dict, known: list[str]) -> dict[str, int]:
    bad = sorted(set(raw) - set(known))
    if bad:
        raise HTTPError(400, f"Bad key(s) in quota set: {', '.join(bad)}")
    return {k: int(v) for k, v in raw.items()}


def _target(s: Scope, target: str) -> None:
    if target != s.project_id and not s.is_admin:
        raise errors.PolicyNotAuthorized(action="volume_extension:quotas:show")


def _usage_flag(request: Request) -> bool:
    return (request.query_params.get("usage") or "").lower() in ("true", "1", "yes", "on", "y", "t")


@router.get("/os-quota-sets/{target}", summary="A project's quota (with ?usage=true: limit, in_use, reserved)",
            responses=answers(403), openapi_extra=query(usage="true: limit, in_use and reserved per resource"))
async def show_quota(target: str, request: Request, s: Scope = Depends(scope)):
    _target(s, target)
    usage = _usage_flag(request)

    def run():
        with get_runtime().factory() as session:
            return {"quota_set": {**quota_set(session, target, usage, _visible_to(s)), "id": target}}

    return await run_in_threadpool(run)


@router.get("/os-quota-sets/{target}/defaults", summary="The limits a project gets by default", responses=answers(403))
async def show_defaults(target: str, s: Scope = Depends(scope)):
    _target(s, target)

    return {"quota_set": {**await run_in_threadpool(default_limits, _visible_to(s)), "id": target}}


@router.put("/os-quota-sets/{target}", summary="Set a project's quota (admin)", responses=answers(403),
            openapi_extra=request_body(QUOTA_SET))
async def update_quota(target: str, request: Request, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:quotas:update")
    body = await json_body(request)
    if isinstance(body, dict) and isinstance(body.get("quota_set"), dict):
        for ignored in IGNORED_KEYS:  # cinderclient sends tenant_id; Cinder ignores both
            body["quota_set"].pop(ignored, None)
    validate(QUOTA_SET, body)

    def run():
        rt = get_runtime()
        with rt.factory() as session, session.begin():
            values = _values(body["quota_set"], _resource_names(session))
            # (`tenant_id`/`id`, which clients send along, were dropped before validation)
            report = quota_engine.usage_report(session, target, rt.env.quota)
            for name, value in values.items():
                used = report.get(name, {"in_use": 0, "reserved": 0})
                if value != -1 and name != "per_volume_gigabytes" and value < used["in_use"] + used["reserved"]:
                    raise HTTPError(400, f"Quota {name} limit must be equal or greater than existing resources. "
                                    f"Current usage is {used['in_use'] + used['reserved']} and the requested "
                                    f"limit is {value}.")
            quota_engine.set_limits(session, target, values)
            session.flush()
            return {"quota_set": quota_set(session, target, usage=False)}

    return await run_in_threadpool(run)


@router.delete("/os-quota-sets/{target}", summary="Reset a project's quota to the defaults (admin)",
               responses=answers(403))
async def reset_quota(target: str, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:quotas:delete")

    def run():
        with get_runtime().factory() as session, session.begin():
            session.execute(delete(Quota).where(Quota.project_id == target))

    await run_in_threadpool(run)
    return {}


@router.get("/os-quota-class-sets/{class_name}", summary="A quota class (admin)", responses=answers(403))
async def show_class(class_name: str, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:quota_classes")
    _only_default(class_name)

    return {"quota_class_set": {**await run_in_threadpool(default_limits), "id": class_name}}


@router.put("/os-quota-class-sets/{class_name}", summary="Set a quota class (admin)", responses=answers(403),
            openapi_extra=request_body(QUOTA_CLASS_SET))
async def update_class(class_name: str, request: Request, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:quota_classes:update")
    _only_default(class_name)
    body = await json_body(request)
    if isinstance(body, dict) and isinstance(body.get("quota_class_set"), dict):
        for ignored in (*IGNORED_KEYS, "class_name"):
            body["quota_class_set"].pop(ignored, None)
    validate(QUOTA_CLASS_SET, body)

    def run():
        rt = get_runtime()
        with rt.factory() as session, session.begin():
            names = _resource_names(session)
            quota_engine.set_class_limits(session, _values(body["quota_class_set"], names), class_name)
            session.flush()
            limits = quota_engine.class_limits(session, names, rt.env.quota)
            return {"quota_class_set": {n: limits[n] for n in names}}

    return await run_in_threadpool(run)


def _only_default(class_name: str) -> None:
    if class_name != DEFAULT_CLASS:
        raise HTTPError(404, f"Quota class {class_name} could not be found.")
