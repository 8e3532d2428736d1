"""`/v3/{project_id}/volumes`: create (through the chain), show, list, summary, delete, and the
actions os-extend, os-force_delete and os-reset_status."""

from __future__ import annotations

import json
import re
from urllib.parse import urlencode
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api import views
from api.deps import Scope, require_admin, scope
from api.errors import HTTPError
from api.microversion import v
from api.openapi import ALL_TENANTS, PAGING, SORTING, answers, query, request_body
from api.schemas import (CREATE_VOLUME_DOCUMENTED, RESET_STATUS, VOLUME_ACTION, create_volume_schema_cached,
                         validate)
from models import utcnow
from models.flow_log import FlowRun, FlowState
from models.volume import Volume, VolumeMetadata
from models.volume_type import VolumeType
from tasks import errors, fields
from tasks.lookups import is_uuid_like
from tasks.policy import WRITER_ROLES
from workers.runtime import get_runtime
from workers import lifecycle
from workers.outcome import read_outcome
from workers.submit import submit_create_volume

router = APIRouter(tags=["volumes"])

MAX_LIMIT = 1000
SORT_KEYS = {
    "id": Volume.id, "name": Volume.display_name, "display_name": Volume.display_name, "status": Volume.status,
    "size": Volume.size, "created_at": Volume.created_at, "updated_at": Volume.updated_at,
    "availability_zone": Volume.availability_zone, "volume_type_id": Volume.volume_type_id,
}
# Request keys the chain takes, by the name the REST body uses.
BODY_TO_REQUEST = {
    "size": "size", "volume_type": "volume_type", "snapshot_id": "snapshot_id", "source_volid": "source_volid",
    "availability_zone": "availability_zone", "metadata": "metadata", "multiattach": "multiattach",
    "consistencygroup_id": "consistencygroup_id", "group_id": "group_id", "backup_id": "backup_id",
}


# The list's query string (/openapi.json); `name~` from 3.34, `metadata` a JSON object of strings.
LIST_QUERY = {**PAGING, **SORTING, **ALL_TENANTS, "name": "Exactly this name", "name~": "Names containing this (3.34)",
              "status": "Only this status", "availability_zone": "Only this zone",
              "metadata": "Only volumes with these items: a JSON object of strings"}

MAX_JSON_DEPTH = 32  # Cinder's bodies nest 4 deep; metadata values are strings


async def json_body(request: Request) -> Any:
    """The request's JSON body, or a 400 for anything PostgreSQL or Cinder would refuse: not JSON,
    nested deeper than MAX_JSON_DEPTH, or a string (key or value) holding a NUL character or an
    unpaired surrogate. (The size is bounded while reading: api/middleware.py.)"""
    raw = await request.body()  # at most the limit: api/middleware.py answers 413 past it, while reading
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise HTTPError(400, "Malformed request body") from None
    _check_json(body)
    return body


def _check_json(body: Any) -> None:
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise HTTPError(400, f"Malformed request body: nested deeper than {MAX_JSON_DEPTH} levels.")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_text(key)
                stack.append((item, depth + 1))
        elif isinstance(value, str):
            _check_text(value)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise HTTPError(400, "Invalid input received: a string contains a NUL character.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPError(400, "Invalid input received: a string contains an unpaired surrogate.") from None


NAME_KEYS, DESCRIPTION_KEYS = ("name", "display_name"), ("description", "display_description")


def text_field(body: dict, field: str, keys: tuple[str, ...]) -> str | None:
    """A name or description from a body that may spell it two ways (the first given wins),
    trimmed and bounded (tasks/fields.py); None when absent."""
    for key in keys:
        if body.get(key) is not None:
            return fields.bounded_text(field, body[key])
    return None


def create_request(body: dict) -> dict[str, Any]:
    """The chain's request from a validated REST body (names trimmed and bounded, as Cinder does)."""
    volume = body["volume"]
    request: dict[str, Any] = {}
    for field, aliases in (("name", NAME_KEYS), ("description", DESCRIPTION_KEYS)):
        value = text_field(volume, field, aliases)
        if value is not None:
            request[field] = value
    for body_key, request_key in BODY_TO_REQUEST.items():
        if volume.get(body_key) is not None:
            request[request_key] = volume[body_key]
    image = volume.get("imageRef") if volume.get("imageRef") is not None else volume.get("image_id")
    if image is not None:
        request["imageRef"] = image
    hints = body.get("OS-SCH-HNT:scheduler_hints")
    if hints:
        request["scheduler_hints"] = hints
    return request


def _prefers_async(request: Request) -> bool:
    return any(p.strip().lower() == "respond-async" for p in request.headers.get("prefer", "").split(","))


@router.post("/volumes", status_code=202, summary="Create a volume (runs the create chain)",
             responses=answers(403, 409, 413, 422, 500), openapi_extra=request_body(CREATE_VOLUME_DOCUMENTED))
async def create_volume(request: Request, s: Scope = Depends(scope)):
    body = await json_body(request)
    validate(create_volume_schema_cached(s.version), body)
    req = create_request(body)
    if not (set(s.identity.roles) & WRITER_ROLES):
        raise errors.PolicyNotAuthorized(action="volume:create_from_image" if "imageRef" in req else "volume:create")
    rt = get_runtime()
    respond_async = _prefers_async(request)
    key = request.headers.get("idempotency-key")
    sub = await run_in_threadpool(lambda: submit_create_volume(
        s.context(), idempotency_key=key, respond_async=respond_async, **req))
    if respond_async:
        if sub.replayed:
            flow = await run_in_threadpool(_flow, rt, sub.flow_id)
        else:  # just recorded: no need to read it back
            flow = FlowRun(id=sub.flow_id, volume_id=sub.volume_id, project_id=s.project_id,
                           user_id=s.identity.user_id, request=req, created_at=utcnow())
        return JSONResponse({"volume": _pending_view(flow, s, rt, status="creating")}, status_code=202,
                            headers={"Preference-Applied": "respond-async"})
    outcome = await request.app.state.waiter.wait(sub.flow_id, rt.settings.api_wait_seconds,
                                                  volume_id=sub.volume_id, just_submitted=not sub.replayed)
    if outcome.finished and not outcome.succeeded:  # the error the flow recorded, as its class
        raise errors.VolchainError.from_dict(outcome.error or errors.VolchainError().to_dict())
    if not outcome.finished and not await run_in_threadpool(_mark_answered_early, rt, sub.flow_id):
        outcome = await run_in_threadpool(read_outcome, rt.factory, sub.flow_id)  # it ended meanwhile
        if not outcome.succeeded:
            raise errors.VolchainError.from_dict(outcome.error or errors.VolchainError().to_dict())
    view = await run_in_threadpool(_created_view, rt, s, sub.flow_id, sub.volume_id,
                                   sub.replayed or bool(req.get("metadata")))
    return JSONResponse({"volume": view}, status_code=202)


_FLOWS = FlowRun.__table__
_ANSWERED_EARLY = text(  # merged on the server: the flow's steps may be writing the row meanwhile
    f"UPDATE {_FLOWS.name} SET {_FLOWS.c.caller.name} = (COALESCE({_FLOWS.c.caller.name}::jsonb, '{{}}'::jsonb) "
    f"|| '{{\"respond_async\": true}}'::jsonb)::json WHERE {_FLOWS.c.id.name} = :flow_id "
    f"AND {_FLOWS.c.state.name} IN ('running', 'compensating') RETURNING {_FLOWS.c.id.name}")


def _mark_answered_early(rt, flow_id: str) -> bool:
    """A create whose wait timed out was accepted (202) like a `Prefer: respond-async` one: mark it
    so, and a later failure shows on GET as `error` (see `_show`) with a user message, never as a
    404. False when the flow ended between the wait and the mark: the caller gets its outcome."""
    with rt.factory.begin() as session:
        return session.execute(_ANSWERED_EARLY, {"flow_id": flow_id}).first() is not None


def _flow(rt, flow_id: str) -> FlowRun:
    with rt.factory() as session:
        return session.get(FlowRun, flow_id)


def _created_view(rt, s: Scope, flow_id: str, volume_id: str, has_metadata: bool) -> dict:
    """The new volume as the create answers it: one query for the row and its type's name, and
    one for its metadata only if the request gave some (the chain writes no other)."""
    with rt.factory() as session:
        row = session.execute(
            select(Volume, VolumeType.name).outerjoin(VolumeType, VolumeType.id == Volume.volume_type_id)
            .where(Volume.id == volume_id)
        ).first()
        if row is None or row[0].deleted:  # still running after the wait: answer like Cinder, `creating`
            return _pending_view(session.get(FlowRun, flow_id), s, rt, status="creating")
        vol, type_name = row
        metadata = _metadata(session, [vol.id])[vol.id] if has_metadata else {}
        return views.volume_detail(vol, metadata=metadata, type_name=type_name, version=s.version, admin=s.is_admin,
                                   base_url=s.base_url, url_project=s.url_project, extensions=False)


def _type_names(session: Session, type_ids: set[str]) -> dict[str, str]:
    if not type_ids:
        return {}
    return dict(session.execute(select(VolumeType.id, VolumeType.name).where(VolumeType.id.in_(type_ids))).all())


def _metadata(session: Session, volume_ids: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {vid: {} for vid in volume_ids}
    if volume_ids:
        for vid, key, value in session.execute(
            select(VolumeMetadata.volume_id, VolumeMetadata.key, VolumeMetadata.value)
            .where(VolumeMetadata.volume_id.in_(volume_ids))
        ):
            out[vid][key] = value
    return out


def _detail(session: Session, vol: Volume, s: Scope, extensions: bool = True) -> dict:
    names = _type_names(session, {vol.volume_type_id})
    return views.volume_detail(vol, metadata=_metadata(session, [vol.id])[vol.id], type_name=names.get(vol.volume_type_id),
                               version=s.version, admin=s.is_admin, base_url=s.base_url, url_project=s.url_project,
                               extensions=extensions)


def _pending_view(flow: FlowRun, s: Scope, rt, status: str) -> dict:
    """A volume whose row does not exist (yet, or ever): drawn from its flow's request."""
    req = flow.request or {}
    size = req.get("size")
    vol = Volume(
        id=flow.volume_id, project_id=flow.project_id, user_id=flow.user_id, status=status,
        size=int(size) if isinstance(size, int) or (isinstance(size, str) and size.isdigit()) else 0,
        display_name=req.get("name"), display_description=req.get("description"),
        availability_zone=req.get("availability_zone") or rt.settings.default_availability_zone
        or rt.settings.storage_availability_zone,
        volume_type_id=None, snapshot_id=req.get("snapshot_id"), source_volid=req.get("source_volid"),
        bootable=False, multiattach=False, use_quota=True, shared_targets=True, created_at=flow.created_at,
    )
    view = views.volume_detail(vol, metadata=dict(req.get("metadata") or {}), type_name=None, version=s.version,
                               admin=s.is_admin, base_url=s.base_url, url_project=s.url_project, extensions=False)
    view["volume_type"] = req.get("volume_type") or rt.settings.default_volume_type
    return view


def _scoped(query, s: Scope, all_tenants: bool = False):
    if all_tenants and s.is_admin:
        return query
    return query.where(Volume.project_id == s.project_id)


def _get_volume(session: Session, s: Scope, volume_id: str, for_update: bool = False) -> Volume:
    """The caller's live volume (an admin's: any project's); another project's is a 404 like a
    missing one. `for_update` locks its row until the transaction ends."""
    if not is_uuid_like(volume_id):
        raise errors.VolumeNotFound(volume_id=volume_id)
    query = select(Volume).where(Volume.id == volume_id, Volume.deleted.is_(False))
    if not s.is_admin:
        query = query.where(Volume.project_id == s.project_id)
    vol = session.scalar(query.with_for_update() if for_update else query)
    if vol is None:
        raise errors.VolumeNotFound(volume_id=volume_id)
    return vol


def _show(s: Scope, volume_id: str) -> dict:
    if not is_uuid_like(volume_id):
        raise errors.VolumeNotFound(volume_id=volume_id)
    rt = get_runtime()
    with rt.factory() as session:
        query = select(Volume).where(Volume.id == volume_id, Volume.deleted.is_(False))
        if not s.is_admin:
            query = query.where(Volume.project_id == s.project_id)
        vol = session.scalar(query)
        if vol is not None:
            return _detail(session, vol, s)
        # A create answered before its outcome (Prefer: respond-async) shows through its flow.
        flow_query = select(FlowRun).where(FlowRun.volume_id == volume_id, FlowRun.kind == "create_volume")
        if not s.is_admin:
            flow_query = flow_query.where(FlowRun.project_id == s.project_id)
        flow = session.scalar(flow_query)
        if flow is not None:
            if flow.state == FlowState.RUNNING.value:  # answered `creating` before its row exists
                return _pending_view(flow, s, rt, status="creating")
            if flow.state != FlowState.SUCCEEDED.value and (flow.caller or {}).get("respond_async"):
                return _pending_view(flow, s, rt, status="error")
    raise errors.VolumeNotFound(volume_id=volume_id)


@router.get("/volumes/summary", summary="Count and total size of the project's volumes", responses=answers(403),
            openapi_extra=query(**ALL_TENANTS))
async def summary(request: Request, s: Scope = Depends(scope)):
    all_tenants = _all_tenants(request, s)

    def run() -> dict:
        with get_runtime().factory() as session:
            count, total = session.execute(_scoped(
                select(func.count(), func.coalesce(func.sum(Volume.size), 0)).where(Volume.deleted.is_(False)),
                s, all_tenants)).one()
            out: dict[str, Any] = {"total_size": int(total), "total_count": int(count)}
            if s.version >= v("3.36"):
                meta: dict[str, list[str]] = {}
                rows = session.execute(_scoped(
                    select(VolumeMetadata.key, VolumeMetadata.value).join(Volume, Volume.id == VolumeMetadata.volume_id)
                    .where(Volume.deleted.is_(False)), s, all_tenants))
                for key, value in rows:
                    meta.setdefault(key, [])
                    if value not in meta[key]:
                        meta[key].append(value)
                out["metadata"] = meta
            return {"volume-summary": out}

    return await run_in_threadpool(run)


def _all_tenants(request: Request, s: Scope) -> bool:
    value = request.query_params.get("all_tenants")
    if value is None:
        return False
    if not s.is_admin:
        raise errors.PolicyNotAuthorized(action="volume:get_all_tenants")
    return value.strip().lower() not in ("0", "false", "off", "no", "n", "f")


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPError(400, f"{name} param must be an integer") from None
    if value < 0:
        raise HTTPError(400, f"{name} param must be positive")
    return value


def _sort(request: Request) -> list:
    params = request.query_params
    pairs: list[tuple[str, str]] = []
    if params.get("sort"):
        for item in params["sort"].split(","):
            key, _, direction = item.strip().partition(":")
            pairs.append((key.strip(), (direction or "desc").strip().lower()))
    elif params.get("sort_key"):
        keys = params["sort_key"].split(",")
        dirs = (params.get("sort_dir") or "desc").split(",")
        pairs = [(k.strip(), (dirs[i] if i < len(dirs) else dirs[-1]).strip().lower()) for i, k in enumerate(keys)]
    order = []
    for key, direction in pairs or [("created_at", "desc")]:
        column = SORT_KEYS.get(key)
        if column is None:
            raise errors.InvalidInput(reason=f"Invalid sort key: {key}")
        if direction not in ("asc", "desc"):
            raise errors.InvalidInput(reason=f"Invalid sort direction: {direction}")
        order.append(column.asc() if direction == "asc" else column.desc())
    order.append(Volume.id.desc())
    return order


def _metadata_filter(raw: str) -> dict[str, str]:
    try:
        value = json.loads(raw.replace("'", '"'))
    except ValueError:
        raise errors.InvalidInput(reason="metadata filter must be a JSON object") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in value.items()):
        raise errors.InvalidInput(reason="metadata filter must map strings to strings")
    return value


def _list(request: Request, s: Scope, detail: bool) -> dict:
    params = request.query_params
    all_tenants = _all_tenants(request, s)
    limit = min(_int_param(request, "limit", MAX_LIMIT), MAX_LIMIT)
    marker = params.get("marker")
    order = _sort(request)
    with get_runtime().factory() as session:
        query = _scoped(select(Volume).where(Volume.deleted.is_(False)), s, all_tenants)
        if params.get("name") is not None:
            query = query.where(Volume.display_name == params["name"])
        if s.version >= v("3.34") and params.get("name~") is not None:
            query = query.where(Volume.display_name.contains(params["name~"], autoescape=True))
        if params.get("status") is not None:
            query = query.where(Volume.status == params["status"])
        if params.get("availability_zone") is not None:
            query = query.where(Volume.availability_zone == params["availability_zone"])
        if params.get("metadata"):
            for key, value in _metadata_filter(params["metadata"]).items():
                query = query.where(Volume.id.in_(select(VolumeMetadata.volume_id).where(
                    VolumeMetadata.key == key, VolumeMetadata.value == value)))
        if marker:
            marked = session.scalar(_scoped(select(Volume).where(Volume.id == marker), s, all_tenants))
            if marked is None:
                raise errors.InvalidInput(reason=f"marker [{marker}] not found")
            ids = session.scalars(query.with_only_columns(Volume.id).order_by(*order)).all()
            after = ids[ids.index(marker) + 1:] if marker in ids else []
            query = query.where(Volume.id.in_(after[:limit])) if after else query.where(False)
        volumes = session.scalars(query.order_by(*order).limit(limit)).all()
        ids = [vol.id for vol in volumes]
        if detail:
            names = _type_names(session, {vol.volume_type_id for vol in volumes})
            metadata = _metadata(session, ids)
            items = [views.volume_detail(vol, metadata=metadata[vol.id], type_name=names.get(vol.volume_type_id),
                                         version=s.version, admin=s.is_admin, base_url=s.base_url,
                                         url_project=s.url_project) for vol in volumes]
        else:
            items = [views.volume_summary(vol, base_url=s.base_url, url_project=s.url_project) for vol in volumes]
    out: dict[str, Any] = {"volumes": items}
    if limit and len(items) == limit:
        prefix = f"{s.url_project}/" if s.url_project else ""
        path = "volumes/detail" if detail else "volumes"
        query = [(k, v) for k, v in params.multi_items() if k not in ("limit", "marker")]
        query += [("limit", str(limit)), ("marker", ids[-1])]
        out["volumes_links"] = [{"rel": "next", "href": f"{s.base_url}/v3/{prefix}{path}?{urlencode(query)}"}]
    return out


@router.get("/volumes", summary="List volumes (id, name, links)", responses=answers(403),
            openapi_extra=query(**LIST_QUERY))
async def list_volumes(request: Request, s: Scope = Depends(scope)):
    return await run_in_threadpool(_list, request, s, False)


@router.get("/volumes/detail", summary="List volumes with details", responses=answers(403),
            openapi_extra=query(**LIST_QUERY))
async def list_volumes_detail(request: Request, s: Scope = Depends(scope)):
    return await run_in_threadpool(_list, request, s, True)


@router.get("/volumes/{volume_id}", summary="Show a volume")
async def show_volume(volume_id: str, s: Scope = Depends(scope)):
    return {"volume": await run_in_threadpool(_show, s, volume_id)}


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("1", "t", "true", "on", "y", "yes"):
        return True
    if value in ("0", "f", "false", "off", "n", "no"):
        return False
    raise errors.InvalidInput(reason=f"Invalid value '{raw}' for {name}.")


def _require_writer(s: Scope, action: str) -> None:
    if not (set(s.identity.roles) & WRITER_ROLES):
        raise errors.PolicyNotAuthorized(action=action)


@router.delete("/volumes/{volume_id}", status_code=202, response_class=Response,
               summary="Delete a volume (cascade: with its snapshots)",
               responses=answers(403, 409), openapi_extra=query(cascade="Delete its snapshots too (a boolean word)",
                                                               force="Admins, from 3.23: whatever its status"))
async def delete_volume(volume_id: str, request: Request, s: Scope = Depends(scope)):
    cascade = _flag(request, "cascade")
    force = s.version >= v("3.23") and _flag(request, "force")
    _require_writer(s, "volume:delete")
    if force:
        require_admin(s, "volume:force_delete")
    await run_in_threadpool(lifecycle.delete_volume, s.context(), volume_id, cascade=cascade, force=force)
    return Response(status_code=202)


def _new_size(value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.InvalidInput(reason=f"Invalid input for field/attribute new_size. Value: {value}.")
    if not 1 <= value <= 2147483647:
        raise errors.InvalidInput(reason=f"Invalid input for field/attribute new_size. Value: {value}. "
                                         f"{value} is less than the minimum of 1")
    return value


@router.post("/volumes/{volume_id}/action", status_code=202, response_class=Response,
             summary="Volume actions: os-extend, os-force_delete (admin), os-reset_status (admin)",
             responses=answers(403, 413), openapi_extra=request_body(VOLUME_ACTION))
async def volume_action(volume_id: str, request: Request, s: Scope = Depends(scope)):
    body = await json_body(request)
    if not isinstance(body, dict) or len(body) != 1:
        raise HTTPError(400, "Malformed request body")
    action = next(iter(body))
    if action == "os-extend":
        _require_writer(s, "volume:extend")
        args = body[action]
        if not isinstance(args, dict) or "new_size" not in args:
            raise HTTPError(400, "Malformed request body")
        new_size = _new_size(args["new_size"])
        await run_in_threadpool(lifecycle.extend_volume, s.context(), volume_id, new_size)
        return Response(status_code=202)
    if action == "os-force_delete":
        require_admin(s, "volume_extension:volume_admin_actions:force_delete")
        await run_in_threadpool(lifecycle.delete_volume, s.context(), volume_id, cascade=False, force=True)
        return Response(status_code=202)
    if action != "os-reset_status":
        raise HTTPError(400, f"There is no such action: {action}")
    require_admin(s, "volume_extension:volume_admin_actions:reset_status")
    validate(RESET_STATUS, body)
    change = body["os-reset_status"]

    def run() -> None:
        with get_runtime().factory() as session, session.begin():
            vol = _get_volume(session, s, volume_id)
            if "status" in change:
                vol.status = change["status"]
            if "attach_status" in change:
                vol.attach_status = change["attach_status"]
            vol.updated_at = utcnow()

    await run_in_threadpool(run)
    return Response(status_code=202)
