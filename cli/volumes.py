"""`volchain volume list|show|delete`: volumes as the database holds them; delete through the
volume lifecycle (`workers.lifecycle.delete_volume`), acting as an admin of the volume's project."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from cli import render

LIST_COLUMNS = ("ID", "PROJECT", "NAME", "STATUS", "SIZE", "TYPE", "CREATED")


def register(sub) -> None:
    volume = sub.add_parser("volume", help="volumes: list, show, delete")
    volume_sub = volume.add_subparsers(dest="volume_command", required=True, metavar="ACTION")

    list_ = volume_sub.add_parser("list", help="live volumes, newest first")
    which = list_.add_mutually_exclusive_group(required=True)
    which.add_argument("--project", help="list this project's volumes")
    which.add_argument("--all-projects", action="store_true", help="list every project's volumes")
    list_.add_argument("--status", help="only volumes in this status (available, creating, error, deleting, ...)")
    list_.add_argument("--json", action="store_true", help="print a JSON list (with metadata) instead of a table")
    list_.set_defaults(handler=list_volumes)

    show = volume_sub.add_parser("show", help="one volume, with its type and metadata")
    show.add_argument("volume_id", metavar="ID", help="the volume's id")
    show.add_argument("--json", action="store_true", help="print a JSON object instead of name/value lines")
    show.set_defaults(handler=show_volume)

    delete = volume_sub.add_parser("delete", help="delete a volume (Cinder's rules, through the volume lifecycle)")
    delete.add_argument("volume_id", metavar="ID", help="the volume's id")
    delete.add_argument("--project", help="the project the volume must belong to (another project's volume is "
                                          "not found); default: any project")
    delete.add_argument("--cascade", action="store_true", help="delete the volume's snapshots with it")
    delete.add_argument("--force", action="store_true",
                        help="skip the status check (Cinder's force delete, an admin's action)")
    delete.add_argument("--json", action="store_true", help="print the outcome as a JSON object")
    delete.set_defaults(handler=delete_volume)


def _select(where: list) -> list[dict[str, Any]]:
    """Live volumes matching `where`, newest first, each with its type's name and its metadata."""
    from sqlalchemy import select

    from models.volume import Volume, VolumeMetadata
    from models.volume_type import VolumeType
    from workers.runtime import get_runtime

    query = (select(Volume, VolumeType.name).outerjoin(VolumeType, VolumeType.id == Volume.volume_type_id)
             .where(Volume.deleted.is_(False), *where).order_by(Volume.created_at.desc(), Volume.id))
    with get_runtime().factory() as session:
        rows = session.execute(query).all()
        metadata: dict[str, dict[str, str]] = {vol.id: {} for vol, _ in rows}
        if metadata:
            for volume_id, key, value in session.execute(
                select(VolumeMetadata.volume_id, VolumeMetadata.key, VolumeMetadata.value)
                .where(VolumeMetadata.volume_id.in_(list(metadata))).order_by(VolumeMetadata.id)
            ):
                metadata[volume_id][key] = value
    return [_as_dict(vol, type_name, metadata[vol.id]) for vol, type_name in rows]


def _as_dict(vol, type_name: str | None, metadata: dict[str, str]) -> dict[str, Any]:
    return {
        "id": vol.id, "project_id": vol.project_id, "user_id": vol.user_id, "name": vol.display_name,
        "description": vol.display_description, "status": vol.status, "attach_status": vol.attach_status,
        "size": vol.size, "volume_type": type_name, "volume_type_id": vol.volume_type_id,
        "availability_zone": vol.availability_zone, "host": vol.host, "bootable": vol.bootable,
        "multiattach": vol.multiattach, "encrypted": vol.encryption_key_id is not None,
        "snapshot_id": vol.snapshot_id, "source_volid": vol.source_volid, "metadata": metadata,
        "created_at": vol.created_at, "updated_at": vol.updated_at,
    }


def list_volumes(args: argparse.Namespace) -> int:
    from models.volume import Volume

    where = [] if args.all_projects else [Volume.project_id == args.project]
    if args.status:
        where.append(Volume.status == args.status)
    volumes = _select(where)
    if args.json:
        print(render.to_json(volumes))
    else:
        rows = [(x["id"], x["project_id"], x["name"], x["status"], x["size"], x["volume_type"], x["created_at"])
                for x in volumes]
        print(render.table(LIST_COLUMNS, rows))
    return 0


def _one(volume_id: str) -> dict[str, Any]:
    from models.volume import Volume
    from tasks import errors

    found = _select([Volume.id == volume_id])
    if not found:
        raise errors.VolumeNotFound(volume_id=volume_id)
    return found[0]


def show_volume(args: argparse.Namespace) -> int:
    vol = _one(args.volume_id)
    if args.json:
        print(render.to_json(vol))
    else:
        print(render.fields([
            ("id", vol["id"]), ("project", vol["project_id"]), ("user", vol["user_id"]), ("name", vol["name"]),
            ("description", vol["description"]), ("status", vol["status"]), ("attach status", vol["attach_status"]),
            ("size", vol["size"]), ("type", vol["volume_type"] or vol["volume_type_id"]),
            ("zone", vol["availability_zone"]), ("host", vol["host"]), ("bootable", vol["bootable"]),
            ("multiattach", vol["multiattach"]), ("encrypted", vol["encrypted"]), ("snapshot", vol["snapshot_id"]),
            ("source volume", vol["source_volid"]), ("metadata", vol["metadata"]), ("created", vol["created_at"]),
            ("updated", vol["updated_at"]),
        ]))
    return 0


def _outcome(result: Any) -> dict[str, Any]:
    """What delete_volume returned, as a dict (it returns a dict or a small object with at least
    `volume_id` and `status`)."""
    if isinstance(result, dict):
        return dict(result)
    if dataclasses.is_dataclass(result):
        return dataclasses.asdict(result)
    return {"volume_id": result.volume_id, "status": result.status}


def delete_volume(args: argparse.Namespace) -> int:
    from tasks.context import RequestContext

    vol = _one(args.volume_id)
    if args.project and vol["project_id"] != args.project:  # exactly like a missing one
        from tasks import errors

        raise errors.VolumeNotFound(volume_id=args.volume_id)
    from workers.lifecycle import delete_volume as lifecycle_delete

    outcome = _outcome(lifecycle_delete(RequestContext.admin(vol["project_id"]), args.volume_id,
                                        cascade=args.cascade, force=args.force))
    if args.json:
        print(render.to_json(outcome))
    else:
        first = [("volume", outcome.get("volume_id")), ("status", outcome.get("status"))]
        print(render.fields(first + [(k, x) for k, x in sorted(outcome.items()) if k not in ("volume_id", "status")]))
    return 0
