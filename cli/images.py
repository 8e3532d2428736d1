"""`volchain image add|list`: the image catalogue (volchain's stand-in for Glance)."""

from __future__ import annotations

import argparse
from typing import Any

from cli import render
from cli.parsing import key_value, non_negative_float

GiB = 1024**3
STATUSES = ("active", "queued", "saving", "killed", "deleted", "pending_delete", "deactivated", "uploading", "importing")
VISIBILITIES = ("public", "private", "shared", "community")


def register(sub) -> None:
    image = sub.add_parser("image", help="image catalogue")
    image_sub = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")

    add = image_sub.add_parser("add", help="add an image")
    add.add_argument("--name", required=True, help="the image's name")
    add.add_argument("--size-gb", type=non_negative_float, help="size of the image data, in GiB")
    add.add_argument("--virtual-size-gb", type=non_negative_float, help="size of the disk it holds, in GiB")
    add.add_argument("--min-disk", type=int, default=0, help="smallest volume it fits, in GB")
    add.add_argument("--status", choices=STATUSES, default="active", help="Glance status (default active)")
    add.add_argument("--owner", help="owning project (private images are visible to it only)")
    add.add_argument("--visibility", choices=VISIBILITIES, default="public", help="who sees it (default public)")
    add.add_argument("--property", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                     help="an image property, e.g. os_type=linux (repeat for more)")
    add.add_argument("--json", action="store_true", help="print the image as a JSON object")
    add.set_defaults(handler=add_image)

    list_ = image_sub.add_parser("list", help="list images")
    list_.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    list_.set_defaults(handler=list_images)


def _gib(value: float | None) -> int | None:
    return int(value * GiB) if value is not None else None


def _as_dict(img) -> dict[str, Any]:
    return {"id": img.id, "name": img.name, "status": img.status, "visibility": img.visibility, "owner": img.owner,
            "size": img.size, "virtual_size": img.virtual_size, "min_disk": img.min_disk,
            "properties": dict(img.properties or {})}


def add_image(args: argparse.Namespace) -> int:
    from models.image import Image
    from tasks import errors
    from workers.runtime import get_runtime

    if args.min_disk < 0:
        raise errors.InvalidInput(reason=f"min_disk must be 0 or greater, got {args.min_disk}.")
    with get_runtime().factory() as session, session.begin():
        img = Image(name=args.name, status=args.status, visibility=args.visibility, owner=args.owner,
                    size=_gib(args.size_gb), virtual_size=_gib(args.virtual_size_gb), min_disk=args.min_disk,
                    properties=dict(args.property))
        session.add(img)
        session.flush()
        out = _as_dict(img)
    print(render.to_json(out) if args.json else f"image {out['name']} added: {out['id']}")
    return 0


def list_images(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from models.image import Image
    from workers.runtime import get_runtime

    with get_runtime().factory() as session:
        out = [_as_dict(i) for i in session.scalars(select(Image).order_by(Image.created_at, Image.id))]
    if args.json:
        print(render.to_json(out))
    else:
        rows = [(i["id"], i["name"], i["status"], i["visibility"], i["owner"],
                 f"{i['size'] / GiB:g}" if i["size"] is not None else None, i["min_disk"], i["properties"])
                for i in out]
        print(render.table(("ID", "NAME", "STATUS", "VISIBILITY", "OWNER", "SIZE_GB", "MIN_DISK", "PROPERTIES"), rows))
    return 0
