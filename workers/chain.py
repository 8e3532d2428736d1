"""Build the create chain: the five steps in order, one errback that starts compensation."""

from __future__ import annotations

from celery import chain
from celery.canvas import Signature

from tasks.flow import STEP_NAMES
from workers.steps import STEP_TASKS, compensate_flow


def build_create_chain(flow_id: str, volume_id: str) -> Signature:
    """`extract | reserve | entry_create | commit | cast`, with compensation on any failure.

    The first step's task id is the flow id, so Flower's root id of every step names the flow.
    The errback is a real task (acks_late, retried, visible in Flower), not an inline callback.
    """
    label = f"(flow={flow_id}, volume={volume_id})"
    sigs = []
    for i, name in enumerate(STEP_NAMES):
        task = STEP_TASKS[name]
        sig = task.s(flow_id) if i == 0 else task.s()  # each step returns the flow id
        sig.set(argsrepr=label)
        if i == 0:
            sig.set(task_id=flow_id)
        sigs.append(sig)
    flow = chain(*sigs)
    flow.on_error(compensate_flow.si(flow_id).set(argsrepr=f"(flow={flow_id})"))
    return flow
