"""`volchain create`: submit a create-volume flow; optionally wait for its outcome.

Exit status: 0 submitted (or, with --wait, succeeded); 1 the create failed or did not finish
within --timeout. With the in-process broker (no VOLCHAIN_BROKER_URL) a worker thread runs the
chain, and the command always waits, since the queued steps live only in this process.

`--count N` makes N volumes alike (named NAME-1 ... NAME-N) and waits, within --timeout in all,
until each is `available` or failed (its create reverted, or the volume in `error`); with no
volume service up nothing would make them available, so then a create ends when its chain has
handed the volume on. Progress goes to stderr (a bar on a terminal, a line per volume elsewhere),
the summary to stdout. Exit status 1 if any failed or did not end in time.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from typing import Any

from cli import render
from cli.flows import error_line
from cli.parsing import UsageError, key_value, non_negative_float, positive_int

ROLES = ("admin", "member", "reader")
POLL_SECONDS = 0.25  # --count: how often the flows and volumes are read
SHOWN = {"handed_on": "handed on", "unfinished": "under way"}  # --count's ends, as the progress line says them


def register(sub) -> None:
    p = sub.add_parser("create", help="create a volume (runs the five-step chain)")
    p.add_argument("--project", required=True, help="the project the volume is for (its quota is charged)")
    p.add_argument("--size", type=int, help="GB; may be left out with --snapshot-id or --source-volid")
    p.add_argument("--name", help="the volume's name (with --count, NAME-1 ... NAME-N)")
    p.add_argument("--description", help="the volume's description")
    p.add_argument("--volume-type", help="name or id")
    p.add_argument("--snapshot-id", help="make the volume from this snapshot")
    p.add_argument("--source-volid", help="make the volume as a clone of this volume")
    p.add_argument("--image-id", help="image id or name")
    p.add_argument("--availability-zone", help="zone of the volume (default: VOLCHAIN_DEFAULT_AVAILABILITY_ZONE)")
    p.add_argument("--metadata", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="a metadata item of the volume (repeat for more)")
    p.add_argument("--user", help="the user id recorded as the creator")
    p.add_argument("--role", choices=ROLES, default="member", help="the caller's role (default member)")
    p.add_argument("--idempotency-key", help="a repeat with the same key returns the first create")
    p.add_argument("--wait", action="store_true", help="wait for the outcome; exit 1 if the create failed")
    p.add_argument("--timeout", type=non_negative_float, default=30.0, help="seconds to wait (default 30)")
    p.add_argument("--count", type=positive_int, default=1,
                   help="make N volumes alike and wait until each is available or failed, showing progress "
                   "on stderr and a summary (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
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
    if args.count > 1 and args.idempotency_key:
        raise UsageError("volchain create", "--idempotency-key names one create; leave it out with --count")
    with worker_thread(settings) if in_process else nullcontext():
        if args.count > 1:
            return create_many(args)
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


def _end(state: str, status: str | None, wait_available: bool) -> str | None:
    """Where one of --count's creates ended: available, failed, handed_on; None while under way."""
    from models.flow_log import FlowState

    if state in (FlowState.REVERTED.value, FlowState.NEEDS_ATTENTION.value) or status == "error":
        return "failed"
    if status == "available":
        return "available"
    if state == FlowState.SUCCEEDED.value and not wait_available:
        return "handed_on"
    return None


def create_many(args: argparse.Namespace) -> int:
    """--count: submit the creates, then follow their flows and volumes (one query a poll) to the end."""
    from sqlalchemy import select

    from models.flow_log import FlowRun
    from models.service import VOLUME_BINARY
    from models.volume import Volume
    from tasks.services import up_services
    from workers.runtime import get_runtime
    from workers.submit import submit_create_volume

    rt = get_runtime()
    with rt.factory() as session:
        wait_available = bool(up_services(session, VOLUME_BINARY, rt.settings.service_down_time))
    progress = render.Progress(args.count)
    started = time.monotonic()
    creates: dict[str, dict[str, Any]] = {}
    for number in range(1, args.count + 1):
        request = request_from(args)
        if args.name is not None:
            request["name"] = f"{args.name}-{number}"
        sub = submit_create_volume(context_from(args), **request)
        creates[sub.flow_id] = {"number": number, "flow_id": sub.flow_id, "volume_id": sub.volume_id,
                                "state": "running", "status": None, "error": None, "end": None}
    query = (select(FlowRun.id, FlowRun.state, FlowRun.error, Volume.status)
             .outerjoin(Volume, Volume.id == FlowRun.volume_id).where(FlowRun.id.in_(list(creates))))
    deadline = started + args.timeout
    while True:
        with rt.factory() as session:
            rows = session.execute(query).all()
        just_ended = []
        for flow_id, state, error, status in rows:
            create = creates[flow_id]
            if create["end"] is None:
                create.update(state=state, error=error, status=status, end=_end(state, status, wait_available))
                if create["end"] is not None:
                    just_ended.append(create)
        ended = [c for c in creates.values() if c["end"] is not None]
        counts = _counts(creates.values())
        progress.update(len(ended), ", ".join(f"{n} {SHOWN.get(what, what)}" for what, n in counts.items() if n),
                        [_line(c, args.count) for c in sorted(just_ended, key=lambda c: c["number"])])
        if len(ended) == len(creates) or time.monotonic() >= deadline:
            break
        time.sleep(POLL_SECONDS)
    progress.close()
    return _summary(args, list(creates.values()), time.monotonic() - started, wait_available)


def _counts(creates) -> dict[str, int]:
    counts = {"available": 0, "failed": 0, "handed_on": 0, "unfinished": 0}
    for create in creates:
        counts[create["end"] or "unfinished"] += 1
    return counts


def _line(create: dict[str, Any], total: int) -> str:
    what = create["end"].replace("_", " ")
    if create["end"] == "failed":
        what += ": " + (error_line(create["error"]) or "the volume is in error")
    return f"create {create['number']}/{total}  volume {create['volume_id']}  {what}"


def _summary(args: argparse.Namespace, creates: list[dict[str, Any]], seconds: float, wait_available: bool) -> int:
    counts = _counts(creates)
    if args.json:
        print(render.to_json({"count": len(creates), "elapsed_seconds": round(seconds, 3), **counts,
                              "waited_for_available": wait_available,
                              "creates": [{k: v for k, v in c.items() if k != "number"} for c in creates]}))
    else:
        said = [f"{counts['available']} available", f"{counts['failed']} failed"]
        if counts["handed_on"]:
            said.append(f"{counts['handed_on']} handed on (no volume service is up to make them available)")
        if counts["unfinished"]:
            said.append(f"{counts['unfinished']} not ended after {args.timeout:g} s")
        print(f"{len(creates)} creates in {seconds:.1f} s: " + ", ".join(said))
    return 1 if counts["failed"] or counts["unfinished"] else 0
