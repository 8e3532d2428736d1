"""`volchain flow show|list`: read the durable flow log."""

from __future__ import annotations

import argparse
from typing import Any

from cli import render
from cli.parsing import positive_int
from models.flow_log import FlowState

STATES = tuple(state.value for state in FlowState)


def register(sub) -> None:
    flow = sub.add_parser("flow", help="create flows (the flow log)")
    flow_sub = flow.add_subparsers(dest="flow_command", required=True, metavar="ACTION")

    show = flow_sub.add_parser("show", help="a flow's state, error and steps")
    show.add_argument("flow_id", metavar="ID")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=show_flow)

    list_ = flow_sub.add_parser("list", help="recent flows, newest first")
    list_.add_argument("--state", choices=STATES)
    list_.add_argument("--project")
    list_.add_argument("--limit", type=positive_int, default=20)
    list_.set_defaults(handler=list_flows)


def error_line(error: dict[str, Any] | None) -> str | None:
    """A recorded failure as Cinder words it: `Type: message`."""
    if not error:
        return None
    return f"{error.get('type', 'VolchainError')}: {error.get('message', '')}"


def load_flow(flow_id: str) -> dict[str, Any]:
    """The flow row and its steps, in chain order (steps that never ran included)."""
    from models.flow_log import FlowRun
    from tasks import errors
    from tasks.create.flow import STEP_NAMES
    from workers.runtime import get_runtime

    with get_runtime().factory() as session:
        run = session.get(FlowRun, flow_id)
        if run is None:
            raise errors.FlowNotFound(flow_id=flow_id)
    recorded = run.steps or {}
    steps = []
    for name in STEP_NAMES:
        rec = recorded.get(name)
        state = rec["state"] if rec else ("failed" if name == run.failed_step else "not run")
        steps.append({"step": name, "state": state, "done_at": rec["done_at"] if rec else None,
                      "reverted_at": rec.get("reverted_at") if rec else None, "result": rec["result"] if rec else None})
    return {
        "id": run.id, "kind": run.kind, "volume_id": run.volume_id, "project_id": run.project_id,
        "user_id": run.user_id, "state": run.state, "error": run.error, "failed_step": run.failed_step,
        "request": run.request, "created_at": run.created_at, "progress_at": run.progress_at,
        "finished_at": run.finished_at, "compensation_attempts": run.compensation_attempts, "steps": steps,
    }


def show_flow(args: argparse.Namespace) -> int:
    flow = load_flow(args.flow_id)
    if args.json:
        print(render.to_json(flow))
        return 0
    print(render.fields([
        ("flow", flow["id"]), ("volume", flow["volume_id"]), ("project", flow["project_id"]),
        ("state", flow["state"]), ("error", error_line(flow["error"])), ("failed step", flow["failed_step"]),
        ("created", flow["created_at"]), ("finished", flow["finished_at"]),
    ]))
    print()
    rows = [(s["step"], s["state"], s["done_at"], s["reverted_at"]) for s in flow["steps"]]
    print(render.table(("STEP", "STATE", "DONE_AT", "REVERTED_AT"), rows))
    return 0


def list_flows(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from models.flow_log import FlowRun
    from workers.runtime import get_runtime

    query = select(FlowRun).order_by(FlowRun.created_at.desc(), FlowRun.id).limit(args.limit)
    if args.state:
        query = query.where(FlowRun.state == args.state)
    if args.project:
        query = query.where(FlowRun.project_id == args.project)
    with get_runtime().factory() as session:
        runs = session.scalars(query).all()
    rows = [(r.id, r.project_id, r.state, r.created_at, error_line(r.error)) for r in runs]
    print(render.table(("FLOW", "PROJECT", "STATE", "CREATED", "ERROR"), rows))
    return 0
