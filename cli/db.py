"""`volchain db upgrade`: apply the Alembic migrations to the configured database."""

from __future__ import annotations

import argparse

from sqlalchemy.engine import make_url

from cli import render


def register(sub) -> None:
    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="create or migrate the schema to the latest revision")
    up.add_argument("--json", action="store_true", help="print the database and its revision as a JSON object")
    up.set_defaults(handler=upgrade)


def upgrade(args: argparse.Namespace) -> int:
    from models.migrate import current, upgrade as migrate
    from workers.settings import get_settings

    url = get_settings().database_url
    migrate(url)
    shown = make_url(url).render_as_string(hide_password=True)
    revision = current(url)
    print(render.to_json({"database": shown, "revision": revision}) if args.json else
          f"database {shown} is at revision {revision}")
    return 0
