"""Build the create chain: the five steps in order, one errback that starts compensation."""

from __future__ import annotations

from celery import chain
from celery.canvas import Signature

from tasks.create.flow import STEP_NAMES
from workers.steps import STEP_TASKS, compensate_flow


def build_create_chain(flow_id: str, volume_id: str) -> Signature:
    """`extract | reserve | entry_create | commit | cast`, with compensation on any failure.

    The first step's task id is the flow id, so Flower's root id of every step names the flow.
    The errback is a real task (acks_late, retried, visible in Flower), not an inline callback.

    What Flower shows as arguments: the first step is labelled `(flow=…, volume=…)`; the other
    steps get the flow id from the step before them, and the errback has it as its argument, so
    Celery's own rendering of those (`('<flow id>',)`) already names the flow. Every message of a
    chain carries a copy of each later step and of the errback: labels on those copies cost
    measurable CPU on every hop (bench/README.md) and showed nothing more.
    """
    sigs = []
    for i, name in enumerate(STEP_NAMES):
        task = STEP_TASKS[name]
        if i == 0:
            sigs.append(task.s(flow_id).set(task_id=flow_id, argsrepr=f"(flow={flow_id}, volume={volume_id})"))
        else:
            sigs.append(task.s())  # each step returns the flow id
    flow = chain(*sigs)
    flow.on_error(compensate_flow.si(flow_id))
    return flow
