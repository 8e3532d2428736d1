"""extract_volume_request: validate a create request and turn it into a request spec.

Requires: the raw request (size, name, description, volume_type, snapshot_id, source_volid,
    imageRef/image_id, availability_zone, metadata, scheduler_hints, multiattach)
Provides: spec (size, volume_type_id/name, sources, availability_zones, encryption_key_id,
    multiattach, qos_specs, metadata, name, description, bootable, resource_backend)
Reversion strategy: delete the encryption key this step created, unless a live volume row
    holds it. Nothing else was written.
Redelivery: the spec is recorded with the key; a repeat delivery returns the recorded spec.

Checks run in Cinder's order: the REST controller's lookups, `volume.API.create`, then
`ExtractVolumeRequestTask` (in Cinder's public tree: cinder/api/v3/volumes.py,
cinder/volume/api.py, cinder/volume/flows/api/create_volume.py).
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.orm import Session

from models.image import Image
from models.key import EncryptionKey
from models.snapshot import Snapshot
from models.volume import Volume
from tasks import errors, fields, lookups
from tasks.context import CreateContext
from tasks.policy import authorize
from tasks.quota_engine import INT_MAX
from tasks.runner import StepEnv

name = "extract_volume_request"

GiB = 1024**3
UNSUPPORTED = {
    "consistencygroup_id": "Creating a volume in a consistency group",
    "group_id": "Creating a volume in a group",
    "backup_id": "Creating a volume from a backup",
}
MULTIATTACH_REMOVED = (
    "multiattach parameter has been removed. The default behavior is to use multiattach enabled "
    "volume types. Contact your administrator to create a multiattach enabled volume type and use "
    "it to create multiattach volumes."
)
TRUE_STRINGS = {"1", "t", "true", "on", "y", "yes"}


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in TRUE_STRINGS
    return bool(value)


def _int_like(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().isdigit()


def _trim(request: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        if request.get(key) is not None:
            return fields.bounded_text(key, request[key])
    return None


def _size_limits(vtype: lookups.TypeInfo, size: int) -> None:
    specs = vtype.specs()
    low = specs.get("provisioning:min_vol_size")
    high = specs.get("provisioning:max_vol_size")
    if low is not None and _int_like(low) and size < int(low):
        raise errors.InvalidInput(
            reason=f"Specified volume size of '{size}' is less than the minimum required size of "
            f"'{low}' for volume type '{vtype.name}'."
        )
    if high is not None and _int_like(high) and size > int(high):
        raise errors.InvalidInput(
            reason=f"Specified volume size of '{size}' is greater than the maximum allowable size of "
            f"'{high}' for volume type '{vtype.name}'."
        )


def _encryption_signature(session: Session, type_id: str | None) -> tuple | None:
    enc = lookups.encryption_spec(session, type_id) if type_id else None
    if enc is None:
        return None
    return (enc.provider, enc.cipher, enc.key_size, enc.control_location)


def _retype_possible(session: Session, source_type_id: str | None, target: lookups.TypeInfo) -> bool:
    """Cinder's rule: equal encryption, and one volume service or the same backend name."""
    if _encryption_signature(session, source_type_id) != _encryption_signature(session, target.id):
        return False
    if lookups.volume_service_count(session) == 1:
        return True
    source = lookups.volume_type_by_id(session, source_type_id) if source_type_id else None
    src_backend = source.specs().get("volume_backend_name") if source else None
    return bool(src_backend) and src_backend == target.specs().get("volume_backend_name")


def _status_check(resource: str, prop: str, value: str, allowed: tuple[str, ...], exc: type[errors.VolchainError]):
    if value not in allowed:
        raise exc(reason=f"Originating {resource} {prop} must be one of '{', '.join(allowed)}' values")


def _new_key(session: Session, algorithm: str, length: int | None) -> str:
    key = EncryptionKey(algorithm=algorithm, length=length, secret=secrets.token_hex(max(length or 256, 8) // 8))
    session.add(key)
    session.flush()
    return key.id


def _clone_key(session: Session, key_id: str) -> str:
    source = session.get(EncryptionKey, key_id)
    if source is None:
        raise errors.Invalid("Key manager error")
    clone = EncryptionKey(algorithm=source.algorithm, length=source.length, secret=source.secret)
    session.add(clone)
    session.flush()
    return clone.id


def run(session: Session, ctx: CreateContext, env: StepEnv) -> dict[str, Any]:
    req = ctx.request
    for key, feature in UNSUPPORTED.items():
        if req.get(key):
            raise errors.UnsupportedRequest(feature=feature)

    # 2.1 REST controller: trim, resolve ids (404s), fill a missing size from the source.
    display_name = _trim(req, "name", "display_name")
    description = _trim(req, "description", "display_description")
    requested_type: lookups.TypeInfo | None = None
    if req.get("volume_type"):
        if not isinstance(req["volume_type"], str) or len(req["volume_type"]) > fields.MAX_FIELD_LEN:
            raise errors.InvalidInput(reason="volume_type must be a string of at most 255 characters.")
        requested_type = lookups.volume_type_by_name_or_id(session, ctx, req["volume_type"])
    snap: Snapshot | None = lookups.snapshot(session, ctx, req["snapshot_id"]) if req.get("snapshot_id") else None
    source: Volume | None = lookups.volume(session, ctx, req["source_volid"]) if req.get("source_volid") else None
    image_ref = req.get("imageRef") or req.get("image_id")
    if image_ref is not None and (not isinstance(image_ref, str) or len(image_ref) > fields.MAX_FIELD_LEN):
        raise errors.InvalidImageRef()
    image: Image | None = lookups.resolve_image_ref(session, ctx, image_ref) if image_ref else None
    size = req.get("size")
    if size is None:
        if snap is not None:
            size = snap.volume_size
        elif source is not None:
            size = source.size
    if _truthy(req.get("multiattach")):
        raise errors.Invalid(MULTIATTACH_REMOVED)

    # 2.2 volume.API.create.
    authorize(ctx, "volume:create_from_image" if image else "volume:create")
    if req.get("source_replica"):
        raise errors.InvalidInput(
            reason="Creating a volume from a replica source was part of the replication v1 "
            "implementation which is no longer available."
        )
    if size and (not _int_like(size) or int(size) <= 0 or int(size) > INT_MAX):
        raise errors.InvalidInput(
            reason=f"Invalid volume size provided for create request: {size} (size argument must be an "
            "integer (or string representation of an integer) and greater than zero)."
        )
    if size is None or (isinstance(size, (int, str)) and not _int_like(size)):
        raise errors.MalformedRequest()
    default_type = None if requested_type else lookups.default_volume_type(session, env.default_volume_type,
                                                                            ctx.project_id)
    limits_type = requested_type or default_type
    _size_limits(limits_type, int(size))
    if requested_type is not None and source is not None and requested_type.id != source.volume_type_id:
        if not _retype_possible(session, source.volume_type_id, requested_type):
            raise errors.InvalidInput(
                reason=f"Invalid volume_type provided: {requested_type.id} (requested type is not compatible; "
                "either match source volume, or omit type argument)."
            )
    snap_volume: Volume | None = session.get(Volume, snap.volume_id) if snap is not None else None
    if requested_type is not None and snap_volume is not None and requested_type.id != snap_volume.volume_type_id:
        if not _retype_possible(session, snap_volume.volume_type_id, requested_type):
            raise errors.InvalidInput(
                reason=f"Invalid volume_type provided: {requested_type.id} (requested type is not compatible; "
                "recommend omitting the type argument)."
            )
    zones = lookups.ZONES.get(session, env.storage_availability_zone, env.az_cache_seconds)
    metadata = fields.check_metadata(req.get("metadata"))

    # 2.3 ExtractVolumeRequestTask.
    if sum(x is not None for x in (snap, image, source)) > 1:
        raise errors.InvalidInput(reason="May specify only one of backup, imageRef, snapshot, source volume")
    authorize(ctx, "volume:create")
    if snap is not None:
        _status_check("snapshot", "status", snap.status, ("available",), errors.InvalidSnapshot)
    if source is not None:
        _status_check("source volume", "status", source.status, ("available", "in-use"), errors.InvalidVolume)
    size = _extract_size(size, snap, source)
    if image is not None:
        _check_image(image, size)
    vtype = _pick_type(session, ctx, env, requested_type, source, snap_volume, snap, image, default_type)
    availability_zones, refresh_az = _pick_zones(session, env, req.get("availability_zone"), vtype, zones, snap_volume, source)
    encryption_key_id = _encryption_key(session, vtype, snap, source, image)
    multiattach = vtype.specs().get("multiattach") == "<is> True"
    if multiattach and encryption_key_id:
        raise errors.InvalidVolume(reason="Multiattach cannot be used with encrypted volumes.")
    if multiattach:
        authorize(ctx, "volume:multiattach")

    parent = source or snap_volume
    backend = None
    if source is not None:
        backend = source.host
    elif snap_volume is not None and env.snapshot_same_host:
        backend = snap_volume.host
    return {
        "spec": {
            "size": size,
            "name": display_name,
            "description": description,
            "volume_type_id": vtype.id,
            "volume_type_name": vtype.name,
            "volume_type_extra_specs": vtype.specs(),
            "snapshot_id": snap.id if snap else None,
            "source_volid": source.id if source else None,
            "image_id": image.id if image else None,
            "availability_zones": availability_zones,
            "refresh_az": refresh_az,
            "encryption_key_id": encryption_key_id,
            "multiattach": multiattach,
            "qos_specs": lookups.qos_specs(session, vtype),
            "metadata": metadata,
            "bootable": bool(parent.bootable) if parent is not None else False,
            "resource_backend": backend,
            "scheduler_hints": req.get("scheduler_hints") or None,
        }
    }


def _extract_size(size: Any, snap: Snapshot | None, source: Volume | None) -> int:
    if not size:
        if source is not None:
            size = source.size
        elif snap is not None:
            size = snap.volume_size
    try:
        value = int(size)
    except (TypeError, ValueError):
        value = 0
    if isinstance(size, bool) or value <= 0:
        raise errors.InvalidInput(reason=f"Volume size '{size}' must be an integer and greater than 0")
    if source is not None and value < source.size:
        raise errors.InvalidInput(
            reason=f"Volume size '{value}'GB cannot be smaller than original volume size {source.size}GB. "
            "They must be >= original volume size."
        )
    if snap is not None and value < snap.volume_size:
        raise errors.InvalidInput(
            reason=f"Volume size '{value}'GB cannot be smaller than the snapshot size {snap.volume_size}GB. "
            "They must be >= original snapshot size."
        )
    return value


def _check_image(image: Image, size: int) -> None:
    if image.status != "active":
        raise errors.InvalidInput(reason=f"Image {image.id} is not active.")
    if image.size:
        image_gb = math.ceil(image.size / GiB)
        if image_gb > size:
            raise errors.InvalidInput(reason=f"Size of specified image {image_gb}GB is larger than volume size {size}GB.")
    if image.min_disk and size < image.min_disk:
        raise errors.InvalidInput(
            reason=f"Volume size {size}GB cannot be smaller than the image minDisk size {image.min_disk}GB."
        )
    if image.virtual_size:
        virtual_gb = math.ceil(image.virtual_size / GiB)
        if virtual_gb > size:
            raise errors.ImageUnacceptable(
                image_id=image.id,
                reason=f"Image virtual size is {virtual_gb}GB and doesn't fit in a volume of size {size}GB.",
            )


def _pick_type(session, ctx, env, requested, source, snap_volume, snap, image, default) -> lookups.TypeInfo:
    if requested is not None:
        return requested
    for type_id in (source.volume_type_id if source else None, snap.volume_type_id if snap else None,
                    snap_volume.volume_type_id if snap_volume else None):
        if type_id:
            found = lookups.volume_type_by_id(session, type_id)
            if found is not None:
                return found
    if image is not None and image.properties.get("cinder_img_volume_type"):
        return lookups.volume_type_by_name_or_id(session, ctx, image.properties["cinder_img_volume_type"])
    return default or lookups.default_volume_type(session, env.default_volume_type, ctx.project_id)


def _pick_zones(session, env: StepEnv, requested, vtype, zones, snap_volume, source) -> tuple[list[str], bool]:
    if requested is not None and (not isinstance(requested, str) or not 0 < len(requested) <= fields.MAX_FIELD_LEN):
        raise errors.InvalidAvailabilityZone(az=requested)
    restriction = [z.strip() for z in vtype.specs().get("RESKEY:availability_zones", "").split(",") if z.strip()]
    if restriction:
        safe = [z for z in restriction if z in zones]
        if not safe:  # the cache may be stale: look again before refusing
            zones = lookups.ZONES.get(session, env.storage_availability_zone, env.az_cache_seconds, refresh=True)
            safe = [z for z in restriction if z in zones]
        if not safe:
            raise errors.InvalidTypeAvailabilityZones(az=restriction)  # Cinder renders the list
    else:
        safe = sorted(zones)
    az = requested
    if az is None and snap_volume is not None:
        az = snap_volume.availability_zone
    if az is None and source is not None:
        az = source.availability_zone
    if az is None and not restriction:
        az = env.default_availability_zone or env.storage_availability_zone
    refresh_az = False
    if az is not None and az not in safe:
        # The cache may be stale: look again before refusing (Cinder refreshes after the failure).
        zones = lookups.ZONES.get(session, env.storage_availability_zone, env.az_cache_seconds, refresh=True)
        safe = [z for z in restriction if z in zones] if restriction else sorted(zones)
        if az not in safe:
            refresh_az = True
            if env.allow_availability_zone_fallback:
                az = env.default_availability_zone or env.storage_availability_zone
            else:
                raise errors.InvalidAvailabilityZone(az=az)
    if env.cloned_volume_same_az:
        if snap_volume is not None and az != snap_volume.availability_zone:
            raise errors.InvalidInput(reason="Volume must be in the same availability zone as the snapshot")
        if source is not None and az != source.availability_zone:
            raise errors.InvalidInput(reason="Volume must be in the same availability zone as the source volume")
    return ([az] if az is not None else list(safe)), refresh_az


def _encryption_key(session, vtype, snap, source, image) -> str | None:
    enc = vtype.encryption
    if enc is None:
        return None
    source_key = (snap.encryption_key_id if snap else None) or (source.encryption_key_id if source else None)
    if source_key is None and image is not None:
        source_key = image.properties.get("cinder_encryption_key_id")
    if source_key:
        return _clone_key(session, source_key)
    if not enc.cipher:
        raise errors.InvalidVolumeType(reason="Encryption spec of the volume type has no cipher.")
    return _new_key(session, enc.cipher.split("-")[0], enc.key_size)


def revert(session: Session, ctx: CreateContext, result: dict[str, Any], env: StepEnv) -> None:
    key_id = (result.get("spec") or {}).get("encryption_key_id")
    if not key_id:
        return
    held = session.scalar(
        select(exists().where(Volume.encryption_key_id == key_id, Volume.deleted.is_(False)))
    )
    if not held:
        session.execute(delete(EncryptionKey).where(EncryptionKey.id == key_id))
