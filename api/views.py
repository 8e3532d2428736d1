"""JSON views, field for field as Cinder answers (Cinder's volume API reference and its answers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from api.microversion import APIVersion, v
from models.snapshot import Snapshot
from models.volume import Volume
from models.volume_type import VolumeType


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def links(base_url: str, project_id: str | None, collection: str, item_id: str) -> list[dict[str, str]]:
    prefix = f"{project_id}/" if project_id else ""
    return [
        {"rel": "self", "href": f"{base_url}/v3/{prefix}{collection}/{item_id}"},
        {"rel": "bookmark", "href": f"{base_url}/{prefix}{collection}/{item_id}"},
    ]


def volume_detail(vol: Volume, *, metadata: dict[str, str], type_name: str | None, version: APIVersion,
                  admin: bool, base_url: str, url_project: str | None, extensions: bool = True) -> dict[str, Any]:
    """The detail view. `extensions` adds the admin `os-vol-*` attributes (show and list, not create)."""
    view: dict[str, Any] = {
        "id": vol.id,
        "status": vol.status,
        "size": vol.size,
        "availability_zone": vol.availability_zone,
        "created_at": _ts(vol.created_at),
        "updated_at": _ts(vol.updated_at),
        "name": vol.display_name,
        "description": vol.display_description,
        "volume_type": type_name if (type_name or version >= v("3.63")) else vol.volume_type_id,
        "snapshot_id": vol.snapshot_id,
        "source_volid": vol.source_volid,
        "metadata": metadata,
        "links": links(base_url, url_project, "volumes", vol.id),
        "user_id": vol.user_id,
        "bootable": "true" if vol.bootable else "false",
        "encrypted": vol.encryption_key_id is not None,
        "replication_status": vol.replication_status,
        "consistencygroup_id": None,
        "multiattach": bool(vol.multiattach),
        "attachments": [],
    }
    if admin:
        view["migration_status"] = None
    if version >= v("3.13"):
        view["group_id"] = None
    if version >= v("3.21") and admin:
        view["provider_id"] = None
    if version >= v("3.48"):
        view["shared_targets"] = bool(vol.shared_targets)
        view["service_uuid"] = None
    if version >= v("3.61") and admin:
        view["cluster_name"] = vol.cluster_name
    if version >= v("3.63"):
        view["volume_type_id"] = vol.volume_type_id
    if version >= v("3.64") and vol.encryption_key_id:
        view["encryption_key_id"] = vol.encryption_key_id
    if version >= v("3.65"):
        view["consumes_quota"] = bool(vol.use_quota)
    if admin and extensions:
        view["os-vol-tenant-attr:tenant_id"] = vol.project_id
        view["os-vol-mig-status-attr:migstat"] = None
        view["os-vol-mig-status-attr:name_id"] = None
        view["os-vol-host-attr:host"] = vol.host
    return view


def volume_summary(vol: Volume, *, base_url: str, url_project: str | None) -> dict[str, Any]:
    return {"id": vol.id, "links": links(base_url, url_project, "volumes", vol.id), "name": vol.display_name}


def volume_type(vt: VolumeType, *, admin: bool, version: APIVersion) -> dict[str, Any]:
    view = {
        "id": vt.id,
        "name": vt.name,
        "description": vt.description,
        "is_public": vt.is_public,
        "extra_specs": vt.specs(),
        "qos_specs_id": vt.qos_specs_id if admin else None,
        "os-volume-type-access:is_public": vt.is_public,
    }
    return view


# The order Cinder lists quota resources in: base, then per type, then groups.
QUOTA_BASE_ORDER = ("volumes", "per_volume_gigabytes", "snapshots", "gigabytes", "backups", "backup_gigabytes")


def quota_order(type_names: list[str]) -> list[str]:
    names = list(QUOTA_BASE_ORDER)
    for tn in type_names:
        names += [f"volumes_{tn}", f"gigabytes_{tn}", f"snapshots_{tn}"]
    names.append("groups")
    return names


def snapshot_detail(snap: Snapshot, *, metadata: dict[str, str], version: APIVersion, admin: bool,
                    extensions: bool = True) -> dict[str, Any]:
    """A snapshot as Cinder shows it (the `os-extended-snapshot-attributes` in show and detail)."""
    view: dict[str, Any] = {
        "id": snap.id,
        "status": snap.status,
        "size": snap.volume_size,
        "volume_id": snap.volume_id,
        "name": snap.display_name,
        "description": snap.display_description,
        "created_at": _ts(snap.created_at),
        "updated_at": _ts(snap.updated_at),
        "metadata": metadata,
    }
    if version >= v("3.14"):
        view["group_snapshot_id"] = None
    if version >= v("3.41"):
        view["user_id"] = snap.user_id
    if version >= v("3.65"):
        view["consumes_quota"] = bool(snap.use_quota)
    if extensions:
        view["os-extended-snapshot-attributes:progress"] = snap.progress
        view["os-extended-snapshot-attributes:project_id"] = snap.project_id
    return view
