"""`volchain type create|list`: volume types with extra specs and project access."""

from __future__ import annotations

import argparse
from typing import Any

from cli import render
from cli.parsing import key_value

MAX_LEN = 255


def register(sub) -> None:
    vtype = sub.add_parser("type", help="volume types")
    type_sub = vtype.add_subparsers(dest="type_command", required=True, metavar="ACTION")

    create = type_sub.add_parser("create", help="create a volume type")
    create.add_argument("name")
    create.add_argument("--description")
    create.add_argument("--extra-spec", type=key_value, action="append", default=[], metavar="KEY=VALUE")
    create.add_argument("--private", action="store_true", help="only admins and --project projects may use it")
    create.add_argument("--project", action="append", default=[], help="a project given access (with --private)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=create_type)

    list_ = type_sub.add_parser("list", help="list volume types")
    list_.add_argument("--json", action="store_true")
    list_.set_defaults(handler=list_types)


def _check(args: argparse.Namespace) -> None:
    from tasks import errors

    if not 0 < len(args.name.strip()) <= MAX_LEN:
        raise errors.InvalidVolumeType(reason=f"name must be 1 to {MAX_LEN} characters")
    if args.description is not None and len(args.description) > MAX_LEN:
        raise errors.InvalidVolumeType(reason=f"description is longer than {MAX_LEN} characters")
    for key, value in args.extra_spec:
        if len(key) > MAX_LEN or len(value) > MAX_LEN:
            raise errors.InvalidInput(reason=f"extra spec {key[:40]} is longer than {MAX_LEN} characters")
    if args.project and not args.private:
        raise errors.InvalidVolumeType(reason="Type access modification is not applicable to public volume type.")


def _as_dict(vt, projects: list[str]) -> dict[str, Any]:
    return {"id": vt.id, "name": vt.name, "description": vt.description, "is_public": vt.is_public,
            "extra_specs": vt.specs(), "projects": projects}


def create_type(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from models.volume_type import VolumeType, VolumeTypeExtraSpec, VolumeTypeProject
    from tasks import errors
    from workers.runtime import get_runtime

    _check(args)
    name = args.name.strip()
    with get_runtime().factory() as session, session.begin():
        if session.scalar(select(VolumeType.id).where(VolumeType.name == name, VolumeType.deleted.is_(False))):
            raise errors.Conflict(f"Volume Type {name} already exists.")
        vt = VolumeType(name=name, description=args.description, is_public=not args.private,
                        extra_specs=[VolumeTypeExtraSpec(key=k, value=v) for k, v in dict(args.extra_spec).items()])
        session.add(vt)
        session.flush()
        projects = sorted(set(args.project))
        session.add_all(VolumeTypeProject(volume_type_id=vt.id, project_id=p) for p in projects)
        out = _as_dict(vt, projects)
    print(render.to_json(out) if args.json else f"volume type {out['name']} created: {out['id']}")
    return 0


def list_types(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from models.volume_type import VolumeType, VolumeTypeProject
    from workers.runtime import get_runtime

    with get_runtime().factory() as session:
        types = session.scalars(select(VolumeType).where(VolumeType.deleted.is_(False)).order_by(VolumeType.name)).all()
        access: dict[str, list[str]] = {}
        for type_id, project in session.execute(
            select(VolumeTypeProject.volume_type_id, VolumeTypeProject.project_id).order_by(VolumeTypeProject.project_id)
        ):
            access.setdefault(type_id, []).append(project)
        out = [_as_dict(vt, access.get(vt.id, [])) for vt in types]
    if args.json:
        print(render.to_json(out))
    else:
        rows = [(t["id"], t["name"], "public" if t["is_public"] else "private", t["extra_specs"], t["projects"])
                for t in out]
        print(render.table(("ID", "NAME", "ACCESS", "EXTRA_SPECS", "PROJECTS"), rows))
    return 0
