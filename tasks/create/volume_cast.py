"""volume_cast: hand the create to the scheduler, or straight to the source's volume manager.

Requires: volume_id, spec (resource_backend, request spec fields)
Provides: cast (queue, task, message_id)
Routing: a create pinned to a source backend (a source volume, or a snapshot when
    snapshot_same_host) goes to that backend's `volume.<host@backend>` queue, with the row's
    `host` and `scheduled_at` set (Cinder's Pike rule); every other create goes to the scheduler.
Reversion strategy: nothing to undo. Its record ends the flow (`succeeded`), so no later step
    can fail and compensation never reaches it; when the cast itself fails nothing is recorded,
    and the earlier steps' reverts error out the row and return its quota exactly once.
Redelivery: the message is published before this step's record commits, under the flow lock. A
    recorded cast is never sent again; a crash between publish and commit re-sends the same
    message id, which consumers use to drop the duplicate (docs/messages.md).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from models import utcnow
from models.volume import Volume
from tasks import allocation, casts
from tasks.casts import MESSAGE_VERSION, backend_queue
from tasks.context import CreateContext
from tasks.runner import StepEnv

name = "volume_cast"


def message_id(flow_id: str) -> str:
    """Deterministic per flow, so a re-sent cast carries the same id."""
    return casts.message_id(flow_id, name)


def build_message(ctx: CreateContext, queue: str, direct: bool) -> dict[str, Any]:
    spec = ctx.spec or {}
    hints = spec.get("scheduler_hints")
    return {
        "version": MESSAGE_VERSION,
        "message_id": message_id(ctx.flow_id),
        "flow_id": ctx.flow_id,
        "volume_id": ctx.volume_id,
        "project_id": ctx.project_id,
        "user_id": ctx.user_id,
        "queue": queue,
        "allow_reschedule": not direct,
        "snapshot_id": spec.get("snapshot_id"),
        "image_id": spec.get("image_id"),
        "request_spec": {
            "volume_id": ctx.volume_id,
            "size": spec["size"],
            "volume_type": {
                "id": spec["volume_type_id"],
                "name": spec["volume_type_name"],
                "extra_specs": spec.get("volume_type_extra_specs") or {},
            },
            "snapshot_id": spec.get("snapshot_id"),
            "source_volid": spec.get("source_volid"),
            "image_id": spec.get("image_id"),
            "availability_zones": spec.get("availability_zones") or [],
            "resource_backend": spec.get("resource_backend"),
            "qos_specs": spec.get("qos_specs"),
            "encryption_key_id": spec.get("encryption_key_id"),
            "multiattach": bool(spec.get("multiattach")),
            "volume_properties": {
                "size": spec["size"],
                "display_name": spec.get("name"),
                "display_description": spec.get("description"),
                "availability_zone": (spec.get("availability_zones") or [None])[0]
                if len(spec.get("availability_zones") or []) == 1 else None,
                "metadata": spec.get("metadata") or {},
                "bootable": bool(spec.get("bootable")),
            },
        },
        "filter_properties": {"scheduler_hints": hints} if hints else {},
        "sent_at": utcnow().isoformat(),
    }


def run(session: Session, ctx: CreateContext, env: StepEnv) -> dict[str, Any]:
    backend = (ctx.spec or {}).get("resource_backend") or None
    queue = backend_queue(backend) if backend else env.scheduler_queue
    body = build_message(ctx, queue, backend is not None)
    if backend:
        body["host"] = backend
        session.execute(
            update(Volume).where(Volume.id == ctx.volume_id).values(host=backend, scheduled_at=utcnow())
        )
        allocation.charge(session, backend, ctx.spec["size"])
    task = casts.VOLUME_CREATE if backend else casts.SCHEDULER_CREATE
    return {"cast": casts.publish(env, task, body, ctx.volume_id)}


def revert(session: Session, ctx: CreateContext, result: dict[str, Any], env: StepEnv) -> None:
    """Never called: a recorded cast has ended the flow (see the contract above)."""
