"""`volchain type create|list`: volume types with extra specs and project access."""

from __future__ import annotations

import argparse
from typing import Any

from cli import render
from cli.parsing import key_value


def register(sub) -> None:
    vtype = sub.add_parser("type", help="volume types")
    type_sub = vtype.add_subparsers(dest="type_command", required=True, metavar="ACTION")

    create = type_sub.add_parser("create", help="create a volume type")
    create.add_argument("name", help="the type's name (unique)")
    create.add_argument("--description", help="the type's description")
    create.add_argument("--extra-spec", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="an extra spec, e.g. volume_backend_name=lvm (repeat for more)")
    create.add_argument("--private", action="store_true", help="only admins and --project projects may use it")
    create.add_argument("--project", action="append", default=[], help="a project given access (with --private)")
    create.add_argument("--json", action="store_true", help="print the type as a JSON object")
    create.set_defaults(handler=create_type)

    list_ = type_sub.add_parser("list", help="list volume types")
    list_.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    list_.set_defaults(handler=list_types)


def _as_dict(vt, projects: list[str]) -> dict[str, Any]:
    return {"id": vt.id, "name": vt.name, "description": vt.description, "is_public": vt.is_public,
            "extra_specs": vt.specs(), "projects": projects}


def create_type(args: argparse.Namespace) -> int:
    from tasks import catalog
    from workers.runtime import get_runtime

    with get_runtime().factory() as session, session.begin():
        vt = catalog.create_type(session, args.name, args.description, is_public=not args.private,
                                 extra_specs=dict(args.extra_spec), projects=args.project)
        out = _as_dict(vt, sorted(set(args.project)))
    print(render.to_json(out) if args.json else f"volume type {out['name']} created: {out['id']}")
    return 0


def list_types(args: argparse.Namespace) -> int:
    from tasks import catalog
    from workers.runtime import get_runtime

    with get_runtime().factory() as session:
        access = catalog.all_type_projects(session)
        out = [_as_dict(vt, access.get(vt.id, [])) for vt in catalog.list_types(session, is_admin=True, project_id="", everything=True)]
    if args.json:
        print(render.to_json(out))
    else:
        rows = [(t["id"], t["name"], "public" if t["is_public"] else "private", t["extra_specs"], t["projects"])
                for t in out]
        print(render.table(("ID", "NAME", "ACCESS", "EXTRA_SPECS", "PROJECTS"), rows))
    return 0
