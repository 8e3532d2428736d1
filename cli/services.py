"""`volchain service add|list`: volume services; their zones are valid availability zones."""

from __future__ import annotations

import argparse

from cli import render


def register(sub) -> None:
    service = sub.add_parser("service", help="volume services")
    service_sub = service.add_subparsers(dest="service_command", required=True, metavar="ACTION")

    add = service_sub.add_parser("add", help="register a volume service (its zone becomes valid)")
    add.add_argument("--host", required=True, help="host@backend, e.g. node1@lvm")
    add.add_argument("--availability-zone", required=True)
    add.set_defaults(handler=add_service)

    list_ = service_sub.add_parser("list", help="list volume services")
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
    print(f"service {VOLUME_BINARY} on {args.host} added in zone {args.availability_zone}")
    return 0


def list_services(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from models.service import Service
    from workers.runtime import get_runtime

    with get_runtime().factory() as session:
        rows = session.execute(
            select(Service.host, Service.binary, Service.availability_zone, Service.disabled).order_by(Service.host)
        ).all()
    print(render.table(("HOST", "BINARY", "ZONE", "DISABLED"), rows))
    return 0
