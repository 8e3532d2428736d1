"""`volchain flower`: Flower on the configured broker, with its HTTP API usable as documented.

Flower shows the workers, every chain's steps by their dotted names with their flow id (a step's
only argument: never a token or a secret), runtimes, and failures with their compensation. It
reads the task events the workers send (VOLCHAIN_TASK_EVENTS, on by default).

Flower answers its HTTP API (`/api/workers`, `/api/tasks`, ...) only to authenticated callers,
unless FLOWER_UNAUTHENTICATED_API is set. Listening on a loopback address, `volchain flower` sets
it, so the API works as Flower documents it; anywhere else it asks for `--basic-auth USER:PASSWORD`
(or Flower's own FLOWER_BASIC_AUTH / OAuth settings, or FLOWER_UNAUTHENTICATED_API set by the
operator, as compose does behind a port published on 127.0.0.1 only).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from cli.parsing import UsageError, port_number

FLOWER_AUTH_SETTINGS = ("FLOWER_BASIC_AUTH", "FLOWER_AUTH", "FLOWER_UNAUTHENTICATED_API")


def register(sub) -> None:
    p = sub.add_parser("flower", help="Flower on the configured broker: workers, each chain's steps, runtimes, "
                       "failures (web UI and HTTP API)",
                       description="Runs `celery -A workers.app flower` on VOLCHAIN_BROKER_URL.")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=5555, help="port to listen on (default 5555)")
    p.add_argument("--basic-auth", metavar="USER:PASSWORD",
                   help="credentials for the UI and the HTTP API (needed to listen beyond loopback)")
    p.set_defaults(handler=run)


def _loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def flower_argv(args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--address={args.address}",
            f"--port={args.port}"]
    if args.basic_auth:
        argv.append(f"--basic-auth={args.basic_auth}")
    return argv


def run(args: argparse.Namespace) -> int:
    from workers.embedded import is_embedded
    from workers.settings import get_settings

    settings = get_settings()
    if is_embedded(settings):
        raise UsageError("volchain flower", f"broker {settings.broker_url} exists only inside one process; "
                         "set VOLCHAIN_BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    if args.basic_auth is not None and ":" not in args.basic_auth:
        raise UsageError("volchain flower", "--basic-auth takes USER:PASSWORD")
    env = dict(os.environ)
    if not args.basic_auth and not any(env.get(name) for name in FLOWER_AUTH_SETTINGS):
        if not _loopback(args.address):
            raise UsageError("volchain flower", f"listening on {args.address}, Flower needs --basic-auth "
                             "USER:PASSWORD (or FLOWER_BASIC_AUTH, Flower's OAuth settings, or "
                             "FLOWER_UNAUTHENTICATED_API=true behind a trusted network)")
        env["FLOWER_UNAUTHENTICATED_API"] = "true"  # loopback only: the HTTP API as Flower documents it
    print(f"volchain flower: http://{args.address}:{args.port} (broker from VOLCHAIN_BROKER_URL)", file=sys.stderr,
          flush=True)
    argv = flower_argv(args)
    os.execve(argv[0], argv, env)
    return 0  # not reached
