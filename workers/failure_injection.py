"""Failure injection, a test facility: fail a create where its request's `_inject` key says.

Installed only when VOLCHAIN_FAILURE_INJECTION is true (workers/runtime.py picks this module's
`run_step` instead of the runner's); production workers never load it, and no step knows of it.
A request's `_inject` is one {"step": <step name>, "when": <when>} or a list of them:

    before         the step raises before its effect
    before_commit  its effect is done, then it raises: the transaction rolls the effect back
    after_commit   its effect and record committed, then the task raises

A step replayed from its record (a redelivery) is not failed again after its commit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from tasks import errors, runner
from tasks.context import CreateContext
from tasks.runner import Step, StepEnv


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
        _fail_if_asked(ctx, self.name, "before")
        provided = self.step.run(session, ctx, env)
        self.ran = True
        _fail_if_asked(ctx, self.name, "before_commit")
        return provided

    def revert(self, session: Session, ctx: CreateContext, result: dict[str, Any], env: StepEnv) -> None:
        self.step.revert(session, ctx, result, env)


def run_step(factory: sessionmaker[Session], step: Step, flow_id: str, env: StepEnv,
             final: bool = False, **options: Any) -> CreateContext:
    """tasks.runner.run_step, failing where the flow's request asks."""
    injecting = _InjectingStep(step)
    ctx = runner.run_step(factory, injecting, flow_id, env, final, **options)
    if injecting.ran:
        _fail_if_asked(ctx, step.name, "after_commit")
    return ctx
