"""`volchain create`: submit a create-volume flow; optionally wait for its outcome.

Exit status: 0 submitted (or, with --wait, succeeded); 1 the create failed or did not finish
within --timeout. With the in-process broker (no VOLCHAIN_BROKER_URL) a worker thread runs the
chain, and the command always waits, since the queued steps live only in this process.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from typing import Any

from cli import render
from cli.flows import error_line
from cli.parsing import key_value, non_negative_float

ROLES = ("admin", "member", "reader")


def register(sub) -> None:
    p = sub.add_parser("create", help="create a volume (runs the five-step chain)")
    p.add_argument("--project", required=True)
    p.add_argument("--size", type=int, help="GB; may be left out with --snapshot-id or --source-volid")
    p.add_argument("--name")
    p.add_argument("--description")
    p.add_argument("--volume-type", help="name or id")
    p.add_argument("--snapshot-id")
    p.add_argument("--source-volid")
    p.add_argument("--image-id", help="image id or name")
    p.add_argument("--availability-zone")
    p.add_argument("--metadata", type=key_value, action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--user")
    p.add_argument("--role", choices=ROLES, default="member")
    p.add_argument("--idempotency-key", help="a repeat with the same key returns the first create")
    p.add_argument("--wait", action="store_true", help="wait for the outcome; exit 1 if the create failed")
    p.add_argument("--timeout", type=non_negative_float, default=30.0, help="seconds to wait (default 30)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run)


def request_from(args: argparse.Namespace) -> dict[str, Any]:
    """The create request body (only the options given)."""
    options = {
        "size": args.size, "name": args.name, "description": args.description, "volume_type": args.volume_type,
        "snapshot_id": args.snapshot_id, "source_volid": args.source_volid, "image_id": args.image_id,
        "availability_zone": args.availability_zone,
    }
    request = {k: v for k, v in options.items() if v is not None}
    if args.metadata:
        request["metadata"] = dict(args.metadata)
    return request


def context_from(args: argparse.Namespace):
    from tasks.context import RequestContext

    if args.role == "admin":
        return RequestContext.admin(args.project, user_id=args.user)
    return RequestContext(project_id=args.project, user_id=args.user, roles=(args.role,))


def run(args: argparse.Namespace) -> int:
    from workers.embedded import is_embedded, worker_thread
    from workers.settings import get_settings

    settings = get_settings()  # already pointed at the embedded servers when no URL is set (cli/main.py)
    in_process = is_embedded(settings)
    with worker_thread(settings) if in_process else nullcontext():
        from workers.submit import submit_create_volume, wait_for_flow

        sub = submit_create_volume(context_from(args), idempotency_key=args.idempotency_key, **request_from(args))
        out = wait_for_flow(sub.flow_id, args.timeout) if args.wait or in_process else None
    return report(args, sub, out)


def report(args: argparse.Namespace, sub, out) -> int:
    data: dict[str, Any] = {"flow_id": sub.flow_id, "volume_id": sub.volume_id, "replayed": sub.replayed}
    if out is not None:
        data.update(state=out.state, error=out.error, cast=out.cast)
    if args.json:
        print(render.to_json(data))
    else:
        pairs = [("flow", sub.flow_id), ("volume", sub.volume_id)]
        if sub.replayed:
            pairs.append(("replayed", "yes (same idempotency key)"))
        if out is not None:
            pairs.append(("state", out.state))
            if out.cast:
                pairs.append(("queue", out.cast["queue"]))
        print(render.fields(pairs))
    if out is None or out.succeeded:
        return 0
    if out.finished:
        print(error_line(out.error) or f"create ended {out.state}", file=sys.stderr)
    else:
        print(f"volchain: flow {out.flow_id} is still {out.state} after {args.timeout:g} s", file=sys.stderr)
    return 1
