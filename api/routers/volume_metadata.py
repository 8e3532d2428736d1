"""`/v3/{project_id}/volumes/{volume_id}`: update a volume's name, description and metadata, and
its metadata items (`/metadata`, `/metadata/{key}`), with Cinder's bodies, codes and messages.

Every write is one transaction that first locks the volume row (`SELECT ... FOR UPDATE`): the
checks (policy, status, an `If-Match`) and the change see the same volume, and `updated_at`
moves with the change. Readers may read, members and admins may write (Cinder's policy names).
From 3.15 the metadata list carries Cinder's `ETag` (the MD5 of its JSON body), and a replace
(`PUT .../metadata`, `PUT .../metadata/{key}`) whose `If-Match` no longer matches is 412.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import Scope, scope
from api.errors import HTTPError
from api.microversion import v
from api.routers.volumes import DESCRIPTION_KEYS, NAME_KEYS, _detail, _get_volume, json_body, text_field
from api.openapi import answers, request_body
from api.schemas import METADATA, NAME, validate
from models import utcnow
from models.volume import Volume, VolumeMetadata
from tasks import errors, fields
from tasks.policy import WRITER_ROLES
from workers.runtime import get_runtime

router = APIRouter(tags=["volume_metadata"])

ETAGS = v("3.15")  # Cinder's ETags on the metadata list
VOLUME_SCHEMA_CHANGES = v("3.53")  # an update must name something

# Cinder's metadata items: keys of 1-255 characters from a fixed set, string values of at most 255.
ITEMS = {"type": "object", "patternProperties": METADATA["patternProperties"], "additionalProperties": False}
METADATA_BODY = {
    "type": "object",
    "properties": {"metadata": ITEMS},
    "required": ["metadata"],
    "additionalProperties": False,
}
ONE_ITEM_BODY = {
    "type": "object",
    "properties": {"meta": {**ITEMS, "minProperties": 1, "maxProperties": 1}},
    "required": ["meta"],
    "additionalProperties": False,
}
UPDATE_FIELDS = {key: NAME for key in NAME_KEYS + DESCRIPTION_KEYS} | {"metadata": ITEMS}
UPDATE_BODY = {
    "type": "object",
    "properties": {"volume": {"type": "object", "properties": UPDATE_FIELDS, "additionalProperties": False}},
    "required": ["volume"],
    "additionalProperties": False,
}
# A replace whose `If-Match` names another version of the metadata (from 3.15): empty body.
PRECONDITION = {"412": "Precondition Failed: the `If-Match` ETag is not the metadata's current one (empty body)"}
UPDATE_BODY_V353 = {
    **UPDATE_BODY,
    "properties": {"volume": {**UPDATE_BODY["properties"]["volume"],
                              "anyOf": [{"required": [key]} for key in UPDATE_FIELDS]}},
}

# Statuses in which a write is refused (400 InvalidVolume): Cinder's, and `deleting`, since a
# volume being deleted is on its way out.
UPDATE_BLOCKED = ("maintenance", "deleting")
METADATA_BLOCKED = ("maintenance", "uploading", "deleting")
UPDATE_BLOCKED_REASONS = {
    "maintenance": "The volume cannot be updated during maintenance.",
    "deleting": "The volume cannot be updated while it is being deleted.",
}


class PreconditionFailed(Exception):
    """An `If-Match` that names another version of the metadata: 412 with an empty body, as Cinder."""


def _authorize(s: Scope, action: str) -> None:
    if not set(s.identity.roles) & WRITER_ROLES:
        raise errors.PolicyNotAuthorized(action=action)


def _check_metadata_writable(vol: Volume, verb: str) -> None:
    if vol.status in METADATA_BLOCKED:
        raise errors.InvalidVolume(reason=f"{verb} volume metadata is not allowed for volumes in {vol.status} status.")


def _read(session: Session, volume_id: str) -> dict[str, str]:
    """The volume's metadata, oldest item first (so the same metadata always has the same ETag)."""
    rows = session.execute(select(VolumeMetadata.key, VolumeMetadata.value)
                           .where(VolumeMetadata.volume_id == volume_id).order_by(VolumeMetadata.id))
    return dict(rows.all())


def _write(session: Session, volume_id: str, items: dict[str, str], replace: bool) -> dict[str, str]:
    """Set `items` (and with `replace`, drop every other key); the volume's metadata afterwards."""
    if replace:
        session.execute(delete(VolumeMetadata).where(VolumeMetadata.volume_id == volume_id,
                                                     VolumeMetadata.key.not_in(list(items))))
    if items:
        upsert = insert(VolumeMetadata).values(
            [{"volume_id": volume_id, "key": key, "value": value} for key, value in items.items()])
        session.execute(upsert.on_conflict_do_update(index_elements=[VolumeMetadata.volume_id, VolumeMetadata.key],
                                                     set_={"value": upsert.excluded.value}))
    return _read(session, volume_id)


def _list_body(metadata: dict[str, str]) -> bytes:
    return json.dumps({"metadata": metadata}).encode()


def _etag(metadata: dict[str, str]) -> str:
    return hashlib.md5(_list_body(metadata), usedforsecurity=False).hexdigest()


def _check_if_match(request: Request, s: Scope, session: Session, volume_id: str) -> None:
    """From 3.15, an `If-Match` must name the metadata's current ETag (or `*`)."""
    header = request.headers.get("if-match")
    if s.version < ETAGS or not header:
        return
    tags = {tag.strip().removeprefix("W/").strip('"') for tag in header.split(",")}
    if "*" not in tags and _etag(_read(session, volume_id)) not in tags:
        raise PreconditionFailed()


def _volume_changes(volume: dict[str, Any]) -> dict[str, Any]:
    """Column values from a validated update body. Names and descriptions are trimmed and bounded
    like a create's; `name` wins over `display_name` (and `description` over
    `display_description`), as in Cinder; null clears."""
    changes: dict[str, Any] = {}
    for column, field, keys in (("display_name", "name", NAME_KEYS),
                                ("display_description", "description", DESCRIPTION_KEYS)):
        given = [key for key in keys if key in volume]
        for key in given:  # every spelling given is checked, the first one wins
            if volume[key] is not None:
                fields.bounded_text(field, volume[key])
        if given:
            changes[column] = text_field(volume, field, given[:1])
    return changes


@router.put("/volumes/{volume_id}", summary="Update a volume's name, description or metadata",
            responses=answers(403), openapi_extra=request_body(UPDATE_BODY))
async def update_volume(volume_id: str, request: Request, s: Scope = Depends(scope)):
    body = await json_body(request)
    validate(UPDATE_BODY_V353 if s.version >= VOLUME_SCHEMA_CHANGES else UPDATE_BODY, body)
    changes = _volume_changes(body["volume"])
    metadata = body["volume"].get("metadata")

    def run() -> dict:
        with get_runtime().factory() as session, session.begin():
            vol = _get_volume(session, s, volume_id, for_update=True)
            _authorize(s, "volume:update")
            if vol.status in UPDATE_BLOCKED:
                raise errors.InvalidVolume(reason=UPDATE_BLOCKED_REASONS[vol.status])
            for column, value in changes.items():
                setattr(vol, column, value)
            if metadata is not None:  # replaces all of it, as Cinder's volume update does
                _write(session, vol.id, metadata, replace=True)
            if changes or metadata is not None:
                vol.updated_at = utcnow()
            session.flush()
            return _detail(session, vol, s, extensions=False)  # Cinder's update answers without the os-vol-* attributes

    return {"volume": await run_in_threadpool(run)}


@router.get("/volumes/{volume_id}/metadata", summary="A volume's metadata")
async def list_metadata(volume_id: str, s: Scope = Depends(scope)):
    def run() -> dict[str, str]:
        with get_runtime().factory() as session:
            return _read(session, _get_volume(session, s, volume_id).id)

    metadata = await run_in_threadpool(run)
    headers = {"ETag": _etag(metadata)} if s.version >= ETAGS else None
    return Response(_list_body(metadata), media_type="application/json", headers=headers)


async def _set_metadata(volume_id: str, request: Request, s: Scope, replace: bool):
    body = await json_body(request)
    validate(METADATA_BODY, body)
    action = "volume:update_volume_metadata" if replace else "volume:create_volume_metadata"

    def run() -> dict[str, str]:
        with get_runtime().factory() as session, session.begin():
            vol = _get_volume(session, s, volume_id, for_update=True)
            _authorize(s, action)
            if replace:
                _check_if_match(request, s, session, vol.id)
            _check_metadata_writable(vol, "Updating")
            vol.updated_at = utcnow()
            return _write(session, vol.id, body["metadata"], replace)

    try:
        return {"metadata": await run_in_threadpool(run)}
    except PreconditionFailed:
        return Response(status_code=412)


@router.post("/volumes/{volume_id}/metadata", summary="Add or change metadata items (others are kept)",
             responses=answers(403), openapi_extra=request_body(METADATA_BODY))
async def create_metadata(volume_id: str, request: Request, s: Scope = Depends(scope)):
    return await _set_metadata(volume_id, request, s, replace=False)


@router.put("/volumes/{volume_id}/metadata", summary="Replace all of a volume's metadata",
            responses=answers(403, **PRECONDITION), openapi_extra=request_body(METADATA_BODY))
async def replace_metadata(volume_id: str, request: Request, s: Scope = Depends(scope)):
    return await _set_metadata(volume_id, request, s, replace=True)


@router.get("/volumes/{volume_id}/metadata/{key}", summary="One metadata item")
async def show_metadata_item(volume_id: str, key: str, s: Scope = Depends(scope)):
    def run() -> dict:
        with get_runtime().factory() as session:
            vol = _get_volume(session, s, volume_id)
            value = session.scalar(select(VolumeMetadata.value).where(VolumeMetadata.volume_id == vol.id,
                                                                       VolumeMetadata.key == key))
        if value is None:
            raise errors.NotFound(f"Volume {volume_id} has no metadata with key {key}.")
        return {"meta": {key: value}}

    return await run_in_threadpool(run)


@router.put("/volumes/{volume_id}/metadata/{key}", summary="Set one metadata item",
            responses=answers(403, **PRECONDITION), openapi_extra=request_body(ONE_ITEM_BODY))
async def update_metadata_item(volume_id: str, key: str, request: Request, s: Scope = Depends(scope)):
    body = await json_body(request)
    validate(ONE_ITEM_BODY, body)  # exactly one item: Cinder's schema refuses more before any other check
    item = body["meta"]
    if key not in item:
        raise HTTPError(400, "Request body and URI mismatch")

    def run() -> None:
        with get_runtime().factory() as session, session.begin():
            vol = _get_volume(session, s, volume_id, for_update=True)
            _authorize(s, "volume:update_volume_metadata")
            _check_if_match(request, s, session, vol.id)
            _check_metadata_writable(vol, "Updating")
            vol.updated_at = utcnow()
            _write(session, vol.id, item, replace=False)

    try:
        await run_in_threadpool(run)
    except PreconditionFailed:
        return Response(status_code=412)
    return {"meta": item}


@router.delete("/volumes/{volume_id}/metadata/{key}", response_class=Response,
               summary="Remove one metadata item",
               responses=answers(403))
async def delete_metadata_item(volume_id: str, key: str, s: Scope = Depends(scope)):
    def run() -> None:
        with get_runtime().factory() as session, session.begin():
            vol = _get_volume(session, s, volume_id, for_update=True)
            if key not in _read(session, vol.id):
                raise errors.NotFound(f"Volume {volume_id} has no metadata with key {key}.")
            _authorize(s, "volume:delete_volume_metadata")
            _check_metadata_writable(vol, "Deleting")
            vol.updated_at = utcnow()
            session.execute(delete(VolumeMetadata).where(VolumeMetadata.volume_id == vol.id, VolumeMetadata.key == key))

    await run_in_threadpool(run)
    return Response(status_code=200)
