"""create_on_backend: make the volume real with this service's driver; `creating` -> `available`.

Requires: the create message as the flow's request (volume_id, host, request_spec: size,
    snapshot_id, source_volid, image_id); env.driver and env.host (this volume service)
Provides: provider_location; or driver_error (why); or skipped (why)
Effect: the driver creates the backend volume: blank, a copy of a snapshot or a source volume
    grown to the size, or a copy of the image's file when the catalogue has one. The row becomes
    `available` with its `provider_location`. The driver fails: the row becomes `error` with a
    user message (its quota stays charged until it is deleted, as in Cinder); that is this
    step's recorded outcome. A volume that is no longer `creating` (deleted meanwhile, or
    errored by its create's compensation) or that belongs to another backend: nothing is done.
    A volume still `creating` with no host yet: the cast arrived before its sender committed
    (the sender locks the row and sets the host in the transaction that publishes); the step
    raises CastNotReady and records nothing, and the consumer tries again shortly.
Reversion strategy: none; a one-step flow whose outcomes are all recorded.
Redelivery: the flow's id is the message id with this backend's queue; a second copy finds the
    step recorded. The driver
    runs inside the step's transaction, under the volume row's lock, and every driver create is
    idempotent (made under a temporary name, then renamed), so a crash before the commit redoes
    it and leaves one backend volume.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from drivers.base import DriverError
from models import utcnow
from models.image import Image
from models.snapshot import Snapshot
from models.volume import Volume, VolumeStatus
from tasks import casts, errors, user_messages
from tasks.context import FlowContext
from tasks.runner import StepEnv

name = "create_on_backend"


def _create(session: Session, vol: Volume, spec: dict[str, Any], env: StepEnv) -> str:
    """Run the driver call this create needs; returns the provider location."""
    driver, size = env.driver, vol.size
    if spec.get("snapshot_id"):  # held (FOR SHARE) while it is copied: no delete of it meanwhile
        session.execute(select(Snapshot.id).where(Snapshot.id == spec["snapshot_id"]).with_for_update(read=True))
        return driver.create_volume_from_snapshot(vol.id, spec["snapshot_id"], size)
    if spec.get("source_volid"):  # held while it is copied: no extend or delete of it meanwhile
        session.execute(select(Volume.id).where(Volume.id == spec["source_volid"]).with_for_update(read=True))
        return driver.create_cloned_volume(vol.id, spec["source_volid"], size)
    image_id = spec.get("image_id")
    location = session.scalar(select(Image.location).where(Image.id == image_id)) if image_id else None
    if location:
        return driver.create_volume_from_image(vol.id, location, size)
    return driver.create_volume(vol.id, size)


def run(session: Session, ctx: FlowContext, env: StepEnv) -> dict[str, Any]:
    vol = session.scalar(select(Volume).where(Volume.id == ctx.volume_id).with_for_update())
    if vol is None or vol.deleted or vol.status != VolumeStatus.CREATING.value:
        state = "missing" if vol is None else ("deleted" if vol.deleted else vol.status)
        return {"skipped": f"volume is {state}"}
    if vol.host is None:
        raise errors.CastNotReady(volume_id=vol.id, host=env.host)
    if not casts.on_this_backend(vol.host, env):
        return {"skipped": f"volume is on {vol.host}, not {env.host}"}
    spec = ctx.request.get("request_spec") or {}
    now = utcnow()
    try:
        location = _create(session, vol, spec, env)
    except DriverError as exc:
        reason = f"Driver failed to create the volume: {exc}"
        vol.status, vol.error_message, vol.updated_at = VolumeStatus.ERROR.value, reason[:255], now
        action = (user_messages.Action.COPY_IMAGE_TO_VOLUME if spec.get("image_id")
                  else user_messages.Action.CREATE_VOLUME_FROM_BACKEND)
        user_messages.record(session, project_id=vol.project_id, resource_type=user_messages.VOLUME,
                             resource_uuid=vol.id, action=action, detail=user_messages.Detail.DRIVER_FAILED_CREATE)
        return {"driver_error": str(exc)[:500]}
    vol.status, vol.provider_location, vol.updated_at = VolumeStatus.AVAILABLE.value, location, now
    return {"provider_location": location}


def revert(session: Session, ctx: FlowContext, result: dict[str, Any], env: StepEnv) -> None:
    """Never called: this one-step flow ends with its record."""
