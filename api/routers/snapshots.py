"""`/v3/{project_id}/snapshots`: create (charged here, made by the source's volume service), list, show, update, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from api import views
from api.deps import Scope, scope
from api.errors import HTTPError
from api.openapi import ALL_TENANTS, PAGING, answers, query, request_body
from api.schemas import SNAPSHOT_CREATE, SNAPSHOT_UPDATE
from api.routers.volumes import (DESCRIPTION_KEYS, MAX_LIMIT, NAME_KEYS, _all_tenants, _int_param,
                                 _require_writer, json_body, text_field)
from models import utcnow
from models.snapshot import Snapshot, SnapshotMetadata
from tasks import errors
from tasks.lookups import is_uuid_like
from workers import lifecycle
from workers.runtime import get_runtime

router = APIRouter(tags=["snapshots"])

LIST_QUERY = {**PAGING, **ALL_TENANTS, "name": "Exactly this name", "status": "Only this status",
              "volume_id": "Only snapshots of this volume"}  # the list's query string (/openapi.json)

TRUE = ("1", "t", "true", "on", "y", "yes")
FALSE = ("0", "f", "false", "off", "n", "no")


def _force(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
        return value.strip().lower() in TRUE
    raise errors.InvalidInput(reason=f"Invalid value '{value}' for force.")


def _snapshot_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("snapshot"), dict):
        raise HTTPError(400, "Malformed request body")
    return body["snapshot"]


def _load(session, s: Scope, snapshot_id: str) -> Snapshot:
    if not is_uuid_like(snapshot_id):
        raise errors.SnapshotNotFound(snapshot_id=snapshot_id)
    query = select(Snapshot).where(Snapshot.id == snapshot_id, Snapshot.deleted.is_(False))
    if not s.is_admin:
        query = query.where(Snapshot.project_id == s.project_id)
    snap = session.scalar(query)
    if snap is None:
        raise errors.SnapshotNotFound(snapshot_id=snapshot_id)
    return snap


def _metadata_of(session, ids: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {i: {} for i in ids}
    if ids:
        for sid, key, value in session.execute(select(SnapshotMetadata.snapshot_id, SnapshotMetadata.key,
                                                      SnapshotMetadata.value)
                                               .where(SnapshotMetadata.snapshot_id.in_(ids))):
            out[sid][key] = value
    return out


def _view(session, snap: Snapshot, s: Scope) -> dict[str, Any]:
    return views.snapshot_detail(snap, metadata=_metadata_of(session, [snap.id])[snap.id], version=s.version,
                                 admin=s.is_admin)


@router.post("/snapshots", status_code=202, summary="Create a snapshot of a volume",
             responses=answers(403, 413), openapi_extra=request_body(SNAPSHOT_CREATE))
async def create_snapshot(request: Request, s: Scope = Depends(scope)):
    body = _snapshot_body(await json_body(request))
    volume_id = body.get("volume_id")
    if not isinstance(volume_id, str) or not volume_id:
        raise errors.InvalidInput(reason="'volume_id' is a required property")
    _require_writer(s, "volume:create_snapshot")
    name = text_field(body, "name", NAME_KEYS)
    description = text_field(body, "description", DESCRIPTION_KEYS)
    started = await run_in_threadpool(
        lambda: lifecycle.create_snapshot(s.context(), volume_id, name=name, description=description,
                                          force=_force(body.get("force", False)),
                                          metadata=body.get("metadata")))

    def show() -> dict:
        with get_runtime().factory() as session:
            return _view(session, _load(session, s, started.snapshot_id), s)

    return JSONResponse({"snapshot": await run_in_threadpool(show)}, status_code=202)


def _list(request: Request, s: Scope, detail: bool) -> dict:
    params = request.query_params
    all_tenants = _all_tenants(request, s)
    limit = min(_int_param(request, "limit", MAX_LIMIT), MAX_LIMIT)
    offset = _int_param(request, "offset", 0)
    with get_runtime().factory() as session:
        query = select(Snapshot).where(Snapshot.deleted.is_(False))
        if not (all_tenants and s.is_admin):
            query = query.where(Snapshot.project_id == s.project_id)
        for param, column in (("name", Snapshot.display_name), ("status", Snapshot.status),
                              ("volume_id", Snapshot.volume_id)):
            if params.get(param) is not None:
                query = query.where(column == params[param])
        marker = params.get("marker")
        if marker:
            marked = session.scalar(query.where(Snapshot.id == marker))
            if marked is None:
                raise errors.InvalidInput(reason=f"marker [{marker}] not found")
            query = query.where((Snapshot.created_at < marked.created_at)
                                | ((Snapshot.created_at == marked.created_at) & (Snapshot.id < marked.id)))
        snaps = session.scalars(query.order_by(Snapshot.created_at.desc(), Snapshot.id.desc())
                                .offset(offset).limit(limit)).all()
        metadata = _metadata_of(session, [snap.id for snap in snaps])
        items = [views.snapshot_detail(snap, metadata=metadata[snap.id], version=s.version, admin=s.is_admin,
                                       extensions=detail) for snap in snaps]
    return {"snapshots": items}


@router.get("/snapshots", summary="List snapshots", responses=answers(403), openapi_extra=query(**LIST_QUERY))
async def list_snapshots(request: Request, s: Scope = Depends(scope)):
    return await run_in_threadpool(_list, request, s, False)


@router.get("/snapshots/detail", summary="List snapshots with details", responses=answers(403),
            openapi_extra=query(**LIST_QUERY))
async def list_snapshots_detail(request: Request, s: Scope = Depends(scope)):
    return await run_in_threadpool(_list, request, s, True)


@router.get("/snapshots/{snapshot_id}", summary="Show a snapshot")
async def show_snapshot(snapshot_id: str, s: Scope = Depends(scope)):
    def run() -> dict:
        with get_runtime().factory() as session:
            return {"snapshot": _view(session, _load(session, s, snapshot_id), s)}

    return await run_in_threadpool(run)


@router.put("/snapshots/{snapshot_id}", summary="Update a snapshot's name and description",
            responses=answers(403), openapi_extra=request_body(SNAPSHOT_UPDATE))
async def update_snapshot(snapshot_id: str, request: Request, s: Scope = Depends(scope)):
    body = _snapshot_body(await json_body(request))
    allowed = set(SNAPSHOT_UPDATE["properties"]["snapshot"]["properties"])  # the documented keys, one list
    if not body or set(body) - allowed:
        raise errors.InvalidInput(reason=f"Only {', '.join(sorted(allowed))} may be updated.")
    _require_writer(s, "volume:update_snapshot")
    name = text_field(body, "name", NAME_KEYS)
    description = text_field(body, "description", DESCRIPTION_KEYS)

    def run() -> dict:
        with get_runtime().factory() as session, session.begin():
            snap = _load(session, s, snapshot_id)
            session.refresh(snap, with_for_update=True)
            if name is not None or "name" in body or "display_name" in body:
                snap.display_name = name
            if description is not None or "description" in body or "display_description" in body:
                snap.display_description = description
            snap.updated_at = utcnow()
            session.flush()
            return {"snapshot": _view(session, snap, s)}

    return await run_in_threadpool(run)


@router.delete("/snapshots/{snapshot_id}", status_code=202, response_class=Response,
               summary="Delete a snapshot",
               responses=answers(403))
async def delete_snapshot(snapshot_id: str, s: Scope = Depends(scope)):
    _require_writer(s, "volume:delete_snapshot")
    await run_in_threadpool(lifecycle.delete_snapshot, s.context(), snapshot_id)
    return Response(status_code=202)
