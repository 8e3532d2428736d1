"""`volchain service add|list`: volume services; their zones are valid availability zones."""

from __future__ import annotations

import argparse
from typing import Any

from cli import render

LIST_COLUMNS = ("HOST", "BINARY", "ZONE", "STATUS", "DISABLED", "LAST_HEARTBEAT")


def register(sub) -> None:
    service = sub.add_parser("service", help="volume services")
    service_sub = service.add_subparsers(dest="service_command", required=True, metavar="ACTION")

    add = service_sub.add_parser("add", help="register a volume service (its zone becomes valid)")
    add.add_argument("--host", required=True, help="host@backend, e.g. node1@lvm")
    add.add_argument("--availability-zone", required=True, help="the zone the service is in (becomes a valid zone)")
    add.add_argument("--json", action="store_true", help="print the added service as a JSON object")
    add.set_defaults(handler=add_service)

    list_ = service_sub.add_parser("list", help="list services (schedulers and volume services), up or down")
    list_.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    list_.set_defaults(handler=list_services)


def add_service(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from models.service import VOLUME_BINARY, Service
    from tasks import errors
    from workers.runtime import get_runtime

    with get_runtime().factory() as session, session.begin():
        exists = select(Service.id).where(Service.host == args.host, Service.binary == VOLUME_BINARY)
        if session.scalar(exists) is not None:
            raise errors.Conflict(f"Service {VOLUME_BINARY} on host {args.host} already exists.")
        session.add(Service(host=args.host, binary=VOLUME_BINARY, availability_zone=args.availability_zone))
    if args.json:
        print(render.to_json({"host": args.host, "binary": VOLUME_BINARY, "availability_zone": args.availability_zone}))
    else:
        print(f"service {VOLUME_BINARY} on {args.host} added in zone {args.availability_zone}")
    return 0


def service_rows() -> list[dict[str, Any]]:
    """Every service, by host, up or down by its last heartbeat (tasks/services.is_up)."""
    from sqlalchemy import select

    from models.service import Service
    from tasks.services import is_up
    from workers.runtime import get_runtime

    rt = get_runtime()
    with rt.factory() as session:
        services = session.scalars(select(Service).order_by(Service.host, Service.binary)).all()
    return [{"host": s.host, "binary": s.binary, "availability_zone": s.availability_zone,
             "status": "up" if is_up(s, rt.settings.service_down_time) else "down", "disabled": s.disabled,
             "last_heartbeat": s.updated_at} for s in services]


def services_table(rows: list[dict[str, Any]]) -> str:
    return render.table(LIST_COLUMNS, [(r["host"], r["binary"], r["availability_zone"], r["status"], r["disabled"],
                                        r["last_heartbeat"]) for r in rows])


def list_services(args: argparse.Namespace) -> int:
    rows = service_rows()
    print(render.to_json(rows) if args.json else services_table(rows))
    return 0
