"""Operator commands on the flow log: `volchain flow list|resume|abort`, run in process through cli.main."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from sqlalchemy import select, update

from cli.main import main
from models import utcnow
from models.flow_log import FlowRun
from models.volume import Volume
from tasks.create.flow import STEPS
from tasks.runner import run_step
from tests import factories
from workers.runtime import get_runtime


def _run_until(db, ctx, last_step: str | None) -> None:
    env = get_runtime().env
    for step in STEPS:
        run_step(db, step, ctx.flow_id, env, final=step is STEPS[-1])
        if step.name == last_step:
            return


def _flow(db, project, last_step: str | None = None):
    ctx = factories.start_flow_directly(db, factories.member(project), size=2)
    if last_step:
        _run_until(db, ctx, last_step)
    return ctx


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _cli_json(capsys, *args: str):
    code, out, err = _cli(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def _assert_one_line_error(result: tuple[int, str, str], fragment: str) -> None:
    code, out, err = result
    assert code == 2, (out, err)
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert fragment in err, err


def _volume(db, volume_id):
    with db() as s:
        return s.get(Volume, volume_id)


def test_resume_drives_a_committed_flow_forward_and_casts_it(db, redis_client, project, capsys, check_invariant):
    ctx = _flow(db, project, "quota_commit")
    shown = _cli_json(capsys, "flow", "resume", ctx.flow_id)
    assert (shown["action"], shown["state"], shown["error"]) == ("resumed", "succeeded", None)
    assert _volume(db, ctx.volume_id).status == "creating"
    assert len(factories.casts_for(redis_client, "scheduler", ctx.volume_id)) == 1
    check_invariant(project)


def test_resume_drives_forward_a_flow_that_never_committed(db, redis_client, project, capsys, check_invariant):
    ctx = _flow(db, project, "entry_create")
    shown = _cli_json(capsys, "flow", "resume", ctx.flow_id)
    assert (shown["action"], shown["state"], shown["error"]) == ("resumed", "succeeded", None)
    assert _volume(db, ctx.volume_id).status == "creating"
    assert len(factories.casts_for(redis_client, "scheduler", ctx.volume_id)) == 1
    check_invariant(project)


def test_abort_gives_back_the_quota_of_a_running_flow(db, project, capsys, check_invariant):
    ctx = _flow(db, project, "quota_commit")
    shown = _cli_json(capsys, "flow", "abort", ctx.flow_id)
    assert (shown["action"], shown["state"], shown["error"]["type"]) == ("aborted", "reverted", "FlowAborted")
    assert {s["state"] for s in shown["steps"]} == {"reverted", "not run"}
    vol = _volume(db, ctx.volume_id)
    assert (vol.status, vol.use_quota) == ("error", False)
    check_invariant(project)


def test_abort_refuses_a_flow_that_succeeded(db, redis_client, project, capsys, check_invariant):
    ctx = _flow(db, project, "volume_cast")
    _assert_one_line_error(_cli(capsys, "flow", "abort", ctx.flow_id), f"Flow {ctx.flow_id} succeeded")
    assert _volume(db, ctx.volume_id).status == "creating"
    check_invariant(project)


def test_resume_and_abort_refuse_a_missing_or_finished_flow(db, project, capsys):
    missing = str(uuid.uuid4())
    for action in ("resume", "abort"):
        _assert_one_line_error(_cli(capsys, "flow", action, missing), f"Flow {missing} could not be found.")
    ctx = _flow(db, project)
    assert _cli_json(capsys, "flow", "abort", ctx.flow_id)["state"] == "reverted"
    for action in ("resume", "abort"):
        _assert_one_line_error(_cli(capsys, "flow", action, ctx.flow_id), "has already ended (reverted)")


def test_flow_list_stuck_shows_only_flows_past_their_deadline(db, project, capsys, check_invariant):
    stuck, fresh = _flow(db, project), _flow(db, project)
    deadline = get_runtime().settings.flow_deadline_seconds
    with db() as s, s.begin():
        s.execute(update(FlowRun).where(FlowRun.id == stuck.flow_id)
                  .values(progress_at=utcnow() - timedelta(seconds=deadline + 5)))
    listed = _cli_json(capsys, "flow", "list", "--stuck", "--project", project)
    assert [f["id"] for f in listed] == [stuck.flow_id]
    running = _cli_json(capsys, "flow", "list", "--state", "running", "--project", project)
    assert {f["id"] for f in running} == {stuck.flow_id, fresh.flow_id}
    code, out, _ = _cli(capsys, "flow", "list", "--stuck", "--project", project)
    assert code == 0 and stuck.flow_id in out and fresh.flow_id not in out
    for ctx in (stuck, fresh):  # leave nothing running behind
        _cli_json(capsys, "flow", "resume", ctx.flow_id)
    with db() as s:
        states = s.scalars(select(FlowRun.state).where(FlowRun.project_id == project)).all()
    assert states == ["succeeded", "succeeded"]
    check_invariant(project)


def test_every_flow_option_has_help_text():
    from cli.main import build_parser

    parser = build_parser()
    flow = parser._subparsers._group_actions[0].choices["flow"]
    for name, sub in flow._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            assert action.help, (name, action.dest)
