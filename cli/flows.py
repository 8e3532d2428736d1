"""`volchain flow list|show|resume|abort`: read the durable flow log, and finish or stop a create.

`resume` finishes a running or compensating create now, by the sweeper's own rule
(tasks/sweeper.finish_flow: a running one forward, its remaining steps run here; a step that
refuses fails it and it is compensated; a compensating one backward); `abort`
records FlowAborted on a running create and compensates it. Both refuse a flow that ended.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli import render
from cli.parsing import positive_int
from models.flow_log import FlowState

STATES = tuple(state.value for state in FlowState)


def register(sub) -> None:
    flow = sub.add_parser("flow", help="create flows (the flow log): list, show, resume, abort")
    flow_sub = flow.add_subparsers(dest="flow_command", required=True, metavar="ACTION")

    show = flow_sub.add_parser("show", help="a flow's state, error and steps")
    show.add_argument("flow_id", metavar="ID", help="the flow's id")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.set_defaults(handler=show_flow)

    list_ = flow_sub.add_parser("list", help="recent flows, newest first")
    list_.add_argument("--state", choices=STATES, help="only flows in this state")
    list_.add_argument("--stuck", action="store_true",
                       help="only running or compensating flows with no progress for VOLCHAIN_FLOW_DEADLINE_SECONDS")
    list_.add_argument("--project", help="only this project's flows")
    list_.add_argument("--limit", type=positive_int, default=20, help="at most this many flows (default 20)")
    list_.add_argument("--json", action="store_true", help="print JSON instead of text")
    list_.set_defaults(handler=list_flows)

    resume = flow_sub.add_parser(
        "resume", help="finish a running or compensating create now, as the sweeper would: a running one "
        "forward (compensated if a step refuses), a compensating one backward")
    resume.add_argument("flow_id", metavar="ID", help="the flow's id")
    resume.add_argument("--json", action="store_true", help="print JSON instead of text")
    resume.set_defaults(handler=resume_flow)

    abort = flow_sub.add_parser(
        "abort", help="stop a running create (FlowAborted) and give back what it took; a flow that succeeded "
        "cannot be aborted (delete its volume)")
    abort.add_argument("flow_id", metavar="ID", help="the flow's id")
    abort.add_argument("--json", action="store_true", help="print JSON instead of text")
    abort.set_defaults(handler=abort_flow)


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


def print_flow(flow: dict[str, Any], as_json: bool, action: str | None = None) -> None:
    """A flow as `flow show` prints it; `action` (resumed, compensated, aborted) first when given."""
    if as_json:
        print(render.to_json({**flow, "action": action} if action else flow))
        return
    head = [("action", action)] if action else []
    print(render.fields(head + [
        ("flow", flow["id"]), ("volume", flow["volume_id"]), ("project", flow["project_id"]),
        ("state", flow["state"]), ("error", error_line(flow["error"])), ("failed step", flow["failed_step"]),
        ("created", flow["created_at"]), ("finished", flow["finished_at"]),
    ]))
    print()
    rows = [(s["step"], s["state"], s["done_at"], s["reverted_at"]) for s in flow["steps"]]
    print(render.table(("STEP", "STATE", "DONE_AT", "REVERTED_AT"), rows))


def show_flow(args: argparse.Namespace) -> int:
    print_flow(load_flow(args.flow_id), args.json)
    return 0


def list_flows(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from sqlalchemy import select

    from models import utcnow
    from models.flow_log import FlowRun
    from tasks.sweeper import UNFINISHED
    from workers.runtime import get_runtime

    rt = get_runtime()
    query = select(FlowRun).order_by(FlowRun.created_at.desc(), FlowRun.id).limit(args.limit)
    if args.state:
        query = query.where(FlowRun.state == args.state)
    if args.stuck:
        cutoff = utcnow() - timedelta(seconds=rt.settings.flow_deadline_seconds)
        query = query.where(FlowRun.state.in_(UNFINISHED), FlowRun.progress_at < cutoff)
    if args.project:
        query = query.where(FlowRun.project_id == args.project)
    with rt.factory() as session:
        runs = session.scalars(query).all()
    if args.json:
        print(render.to_json([
            {"id": r.id, "kind": r.kind, "volume_id": r.volume_id, "project_id": r.project_id, "state": r.state,
             "error": r.error, "created_at": r.created_at, "progress_at": r.progress_at, "finished_at": r.finished_at}
            for r in runs]))
        return 0
    rows = [(r.id, r.kind, r.project_id, r.state, r.created_at, r.progress_at, error_line(r.error)) for r in runs]
    print(render.table(("FLOW", "KIND", "PROJECT", "STATE", "CREATED", "PROGRESS", "ERROR"), rows))
    return 0


def _unfinished_create(flow_id: str, action: str) -> dict[str, Any]:
    """The flow, if it is a create still running or compensating; else one clear error."""
    from tasks import errors
    from tasks.sweeper import CREATE_KIND, UNFINISHED

    flow = load_flow(flow_id)
    if flow["kind"] != CREATE_KIND:
        raise errors.InvalidInput(reason=f"flow {flow_id} is a {flow['kind']} flow; only {CREATE_KIND} flows "
                                  "can be resumed or aborted.")
    if flow["state"] not in UNFINISHED:
        raise _ended(flow_id, flow["state"], action)
    return flow


def _ended(flow_id: str, state: str, action: str):
    from tasks import errors

    if state == FlowState.SUCCEEDED.value and action == "abort":
        return errors.FlowNotRunning(f"Flow {flow_id} succeeded: its volume was handed on and the create cannot be "
                                     "aborted; delete the volume instead.")
    return errors.FlowNotRunning(f"Flow {flow_id} has already ended ({state}); there is nothing to {action}.")


def resume_flow(args: argparse.Namespace) -> int:
    from tasks.create.flow import STEPS
    from tasks.sweeper import finish_flow
    from workers.runtime import get_runtime
    from workers.sweeper import announce_end

    rt = get_runtime()
    _unfinished_create(args.flow_id, "resume")
    action = finish_flow(rt.factory, args.flow_id, STEPS, rt.env)
    flow = load_flow(args.flow_id)
    if action is None:  # it ended between the check and now
        raise _ended(args.flow_id, flow["state"], "resume")
    announce_end(rt, args.flow_id)
    print_flow(flow, args.json, action)
    return 0


def abort_flow(args: argparse.Namespace) -> int:
    from tasks import errors
    from tasks.create.flow import STEPS
    from tasks.runner import compensate, record_failure
    from workers.runtime import get_runtime
    from workers.sweeper import announce_end

    rt = get_runtime()
    flow = _unfinished_create(args.flow_id, "abort")
    record_failure(rt.factory, args.flow_id, None, errors.FlowAborted(volume_id=flow["volume_id"]).to_dict())
    state = compensate(rt.factory, args.flow_id, STEPS, rt.env)
    if state == FlowState.SUCCEEDED.value:  # its last step committed between the check and now
        raise _ended(args.flow_id, state, "abort")
    announce_end(rt, args.flow_id)
    print_flow(load_flow(args.flow_id), args.json, "aborted")
    return 0
