"""Rows the tests need (types, volumes, snapshots, images, services), inserted directly."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from models.image import Image
from models.service import VOLUME_BINARY, Service
from models.snapshot import Snapshot
from models.volume import Volume
from models.volume_type import Encryption, QosSpecs, VolumeType, VolumeTypeExtraSpec, VolumeTypeProject
from tasks import quota_engine
from tasks.context import CreateContext, RequestContext

DEFAULT_TYPE_ID = "0ce21ce9-59f8-40b7-bd0a-9b39b09f4d4e"


def _add(db: sessionmaker[Session], row):
    with db() as session, session.begin():
        session.add(row)
    return row


def volume_type(db, name: str | None = None, extra_specs: dict[str, str] | None = None, is_public: bool = True,
                projects: list[str] = (), qos: dict | None = None, encryption: dict | None = None) -> VolumeType:
    name = name or f"type-{uuid.uuid4().hex[:8]}"
    with db() as session, session.begin():
        qos_id = None
        if qos is not None:
            q = QosSpecs(name=f"qos-{uuid.uuid4().hex[:8]}", specs=qos)
            session.add(q)
            session.flush()
            qos_id = q.id
        vt = VolumeType(name=name, is_public=is_public, qos_specs_id=qos_id)
        session.add(vt)
        session.flush()
        for k, v in (extra_specs or {}).items():
            session.add(VolumeTypeExtraSpec(volume_type_id=vt.id, key=k, value=v))
        for p in projects:
            session.add(VolumeTypeProject(volume_type_id=vt.id, project_id=p))
        if encryption is not None:
            session.add(Encryption(volume_type_id=vt.id, **encryption))
        session.expunge(vt)
    return vt


def volume(db, project_id: str, size: int = 1, status: str = "available", host: str | None = "node1@lvm#pool",
           availability_zone: str = "nova", volume_type_id: str = DEFAULT_TYPE_ID, use_quota: bool = False,
           bootable: bool = False, encryption_key_id: str | None = None) -> Volume:
    """A pre-existing volume (by default not counted in quota, so usage starts at zero)."""
    return _add(db, Volume(project_id=project_id, size=size, status=status, host=host,
                           availability_zone=availability_zone, volume_type_id=volume_type_id,
                           use_quota=use_quota, bootable=bootable, encryption_key_id=encryption_key_id))


def snapshot(db, project_id: str, volume: Volume, status: str = "available", volume_size: int | None = None) -> Snapshot:
    return _add(db, Snapshot(project_id=project_id, volume_id=volume.id, volume_size=volume_size or volume.size,
                             volume_type_id=volume.volume_type_id, status=status, use_quota=False,
                             encryption_key_id=volume.encryption_key_id))


def image(db, name: str | None = None, owner: str | None = None, visibility: str = "public", status: str = "active",
          size_gb: float | None = None, virtual_size_gb: float | None = None, min_disk: int = 0,
          properties: dict | None = None, location: str | None = None) -> Image:
    gib = 1024**3
    return _add(db, Image(name=name or f"img-{uuid.uuid4().hex[:8]}", owner=owner, visibility=visibility,
                          status=status, size=int(size_gb * gib) if size_gb else None,
                          virtual_size=int(virtual_size_gb * gib) if virtual_size_gb else None,
                          min_disk=min_disk, properties=properties or {}, location=location))


def service(db, host: str, availability_zone: str) -> Service:
    return _add(db, Service(host=host, binary=VOLUME_BINARY, availability_zone=availability_zone))


def set_quota(db, project_id: str, **limits: int) -> None:
    with db() as session, session.begin():
        quota_engine.set_limits(session, project_id, limits)


def member(project_id: str) -> RequestContext:
    return RequestContext(project_id=project_id, user_id="user1", roles=("member",))


def queued_messages(redis_client, queue: str) -> list[dict[str, Any]]:
    """Decode the cast messages waiting on a Redis queue (Celery protocol 2, JSON)."""
    out = []
    for raw in redis_client.lrange(queue, 0, -1):
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _embed = json.loads(body)
        out.append({"headers": envelope["headers"], "args": args, "kwargs": kwargs})
    return out


def casts_for(redis_client, queue: str, volume_id: str) -> list[dict[str, Any]]:
    return [m for m in queued_messages(redis_client, queue) if m["args"] and m["args"][0]["volume_id"] == volume_id]


def start_flow_directly(db, context: RequestContext, **request) -> CreateContext:
    """Record a flow like submit_create_volume does, without starting its chain (tests start it)."""
    from models import utcnow
    from models.flow_log import FlowRun

    flow_id, volume_id = str(uuid.uuid4()), str(uuid.uuid4())
    now = utcnow()
    _add(db, FlowRun(id=flow_id, volume_id=volume_id, project_id=context.project_id, user_id=context.user_id,
                     state="running", request=request, root_task_id=flow_id, created_at=now, progress_at=now,
                     caller={"roles": list(context.roles), "is_admin": context.is_admin, "respond_async": False}))
    return CreateContext(flow_id=flow_id, volume_id=volume_id, project_id=context.project_id,
                         user_id=context.user_id, roles=tuple(context.roles), is_admin=context.is_admin,
                         request=request)
