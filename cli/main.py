"""volchain's command line: `volchain COMMAND ...` (see `volchain --help`).

Exit status: 0 done; 1 a create failed (create --wait), the demo misbehaved or a part of
`serve` stopped on its own; 2 bad input (an argument, a setting, a server URL: workers/settings.py) or an
error reported by volchain, printed on one line on stderr, never as a traceback.
Every command but `demo` and `serve` uses the configured Settings (VOLCHAIN_DATABASE_URL,
VOLCHAIN_BROKER_URL); with no database URL, it runs on the embedded servers (workers/embedded.py)
and says so on stderr. `demo` always runs on embedded servers, in the data directory it is given;
`serve` starts the ones not configured (cli/serve.py).
"""

from __future__ import annotations

import logging
import sys

from cli import (api, create, db, demo, flower, flows, images, logs, quota, serve, services, status, token,
                 volume_types, volumes, worker)
from cli.parsing import ArgumentParser, UsageError

COMMANDS = (serve, status, db, worker, api, flower, token, demo, create, quota, volume_types, images, services,
            flows, volumes)
PROG = "volchain"
OWN_SERVERS = ("demo", "serve")  # start their own embedded servers
SERVES_OTHER_PROCESSES = ("worker", "api", "flower")  # needs servers that other processes can reach
# Errors reach the user once, as the one-line message below; -v shows the logs as well.
LOG_LEVELS = (logging.CRITICAL, logging.WARNING, logging.INFO, logging.DEBUG)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="OpenStack Cinder's create-volume flow as a Celery chain.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                        help="print volchain's version and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log warnings (-vv: info, -vvv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def version() -> str:
    """The installed distribution's version (a checkout that is not installed has none)."""
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed("volchain")
    except PackageNotFoundError:
        return "(not installed)"


def _fail(line: str) -> int:
    print(" ".join(line.split()), file=sys.stderr)
    return 2


def run(args) -> int:
    """The command's handler, on the configured servers or else the embedded ones."""
    from workers.embedded import BROKER_URL, DATABASE, servers
    from workers.settings import get_settings

    get_settings()  # a wrong setting or server URL stops here, in one line (main)
    if args.command in OWN_SERVERS:
        return args.handler(args)
    with servers(get_settings(), serves_other_processes=args.command in SERVES_OTHER_PROCESSES) as embedded:
        if embedded is not None:
            print(f"{PROG}: no VOLCHAIN_DATABASE_URL: embedded PostgreSQL in {embedded.data_dir} (database "
                  f"{DATABASE}), broker {BROKER_URL} in this process", file=sys.stderr)
        return args.handler(args)


def main(argv: list[str] | None = None) -> int:
    from kombu.exceptions import OperationalError as BrokerError
    from pydantic import ValidationError
    from redis.exceptions import RedisError
    from sqlalchemy.exc import SQLAlchemyError

    from tasks.errors import EmbeddedError, NotConfigured, VolchainError

    try:
        args = build_parser().parse_args(argv)
        level = LOG_LEVELS[min(args.verbose, len(LOG_LEVELS) - 1)]
        logs.configure(level)
        return run(args)
    except SystemExit as exc:  # --help and friends
        return exc.code if isinstance(exc.code, int) else 0
    except UsageError as exc:
        return _fail(str(exc))
    except VolchainError as exc:
        return _fail(f"{PROG}: error: {exc.type_name}: {exc}")
    except (EmbeddedError, NotConfigured) as exc:
        return _fail(f"{PROG} {args.command}: error: {exc}")
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        first_line = (str(cause).splitlines() or [""])[0]
        return _fail(f"{PROG}: error: database: {type(cause).__name__}: {first_line} "
                     "(is the database reachable, and migrated with `volchain db upgrade`?)")
    except (BrokerError, RedisError) as exc:
        return _fail(f"{PROG}: error: broker: {type(exc).__name__}: {exc} (is VOLCHAIN_BROKER_URL reachable?)")
    except ValidationError as exc:  # a setting from the environment is wrong
        return _fail(f"{PROG}: error: invalid settings: " + "; ".join(_setting_error(e) for e in exc.errors()))
    except KeyboardInterrupt:
        return 130


def _setting_error(error: dict) -> str:
    """`VOLCHAIN_<FIELD>: what is wrong` (a rule across fields names its variables itself)."""
    field = "_".join(map(str, error["loc"])).upper()
    return (f"VOLCHAIN_{field}: " if field else "") + error["msg"].removeprefix("Value error, ")


if __name__ == "__main__":
    sys.exit(main())
