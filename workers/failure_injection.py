"""Failure injection, a test facility: fail a create where its request's `_inject` key says.

Installed only when VOLCHAIN_FAILURE_INJECTION is true (workers/runtime.py picks this module's
`run_step` instead of the runner's); production workers never load it, and no step knows of it.
A request's `_inject` is one {"step": <step name>, "when": <when>} or a list of them:

    before         the step raises before its effect
    before_commit  its effect is done, then it raises: the transaction rolls the effect back
    after_commit   its effect and record committed, then the task raises

A step replayed from its record (a redelivery) is not failed again after its commit.

A worker started with VOLCHAIN_KILL_AT="<step>:<when>[,...]" kills itself instead, with SIGKILL,
at those points of any flow it runs (the chain's steps, the scheduler's and the volume services'
steps, and with `revert` the compensation, inside its transaction): the whole worker, its pool's
parent too, as when a machine dies. Each point kills once per flow (a mark file in
VOLCHAIN_KILL_MARKS_DIR), so the worker started after it finishes the flow.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

from billiard.process import current_process
from sqlalchemy.orm import Session, sessionmaker

from tasks import errors, runner
from tasks.context import CreateContext
from tasks.runner import Step, StepEnv
from workers.settings import get_settings

log = logging.getLogger(__name__)


def _kill_if_asked(flow_id: str, step: str, when: str) -> None:
    settings = get_settings()
    if f"{step}:{when}" not in (settings.kill_at or "").split(","):
        return
    marks = Path(settings.kill_marks_dir or tempfile.gettempdir())
    try:  # once per flow and point: the mark outlives this process
        os.close(os.open(marks / f"{flow_id}.{step}.{when}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    log.warning("flow %s: killing this worker at %s:%s (VOLCHAIN_KILL_AT)", flow_id, step, when)
    worker = os.getppid() if current_process().name != "MainProcess" else os.getpid()  # prefork child: its parent
    if os.getpgid(0) == worker:  # the worker leads its process group: every pool child goes with it
        os.killpg(worker, signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _fail_if_asked(ctx: CreateContext, step: str, when: str) -> None:
    wanted = ctx.request.get("_inject") or []
    if isinstance(wanted, dict):
        wanted = [wanted]
    if any(isinstance(item, dict) and item.get("step") == step and item.get("when", "before") == when
           for item in wanted):
        raise errors.InjectedFailure(step=step, when=when)


class _InjectingStep:
    """A step whose `run` fails before or after its effect when asked; it remembers whether it ran."""

    def __init__(self, step: Step) -> None:
        self.step = step
        self.name = step.name
        self.ran = False

    def run(self, session: Session, ctx: CreateContext, env: StepEnv) -> dict[str, Any]:
        _kill_if_asked(ctx.flow_id, self.name, "before")
        _fail_if_asked(ctx, self.name, "before")
        provided = self.step.run(session, ctx, env)
        self.ran = True
        _kill_if_asked(ctx.flow_id, self.name, "before_commit")
        _fail_if_asked(ctx, self.name, "before_commit")
        return provided

    def revert(self, session: Session, ctx: CreateContext, result: dict[str, Any], env: StepEnv) -> None:
        self.step.revert(session, ctx, result, env)
        _kill_if_asked(ctx.flow_id, self.name, "revert")


def compensation_steps(steps: list) -> list:
    """`steps` for a compensation, each revert killing the worker where VOLCHAIN_KILL_AT asks."""
    return [_InjectingStep(step) for step in steps]


def run_step(factory: sessionmaker[Session], step: Step, flow_id: str, env: StepEnv,
             final: bool = False, **options: Any) -> CreateContext:
    """tasks.runner.run_step, failing where the flow's request asks."""
    injecting = _InjectingStep(step)
    ctx = runner.run_step(factory, injecting, flow_id, env, final, **options)
    if injecting.ran:
        _kill_if_asked(flow_id, step.name, "after_commit")
        _fail_if_asked(ctx, step.name, "after_commit")
    return ctx
