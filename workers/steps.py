"""Thin Celery tasks around the plain steps: the flow id in, the flow id out.

Task names read well in Flower: `volchain.create.<step>` and `volchain.create.compensate`.
The logic lives in `tasks/`; what Celery adds is configured here with its own options:
late acks, `throws` for the errors a step raises on purpose (logged without a traceback),
`autoretry_for` + `retry_backoff` for transient database errors, and for compensation a retry
of any error, then `on_failure`, which parks the flow. A step's message carries only its flow
id: the step reads its inputs from the flow row it locks, and hands the id to the next step.
"""

from __future__ import annotations

import logging

from celery.exceptions import Ignore
from sqlalchemy.exc import OperationalError

from tasks import errors
from tasks.create.flow import FINAL_STEP, STEPS
from tasks.runner import compensate, error_dict, park, record_failure
from workers import outcome
from workers.app import VolchainTask, app
from workers.runtime import get_runtime
from workers.settings import get_settings

log = logging.getLogger(__name__)

# Worth another try: the database's deadlock, serialization failure or lost connection, and the
# broker away while a cast is sent (a retry needs the broker too; if it is still away, the flow
# stays running and the sweeper finishes it).
TRANSIENT = (OperationalError, errors.ServiceUnavailable)


class StepTask(VolchainTask):
    """A chain step: retried on transient database errors (1 s, 2 s, 4 s ... with jitter)."""

    throws = errors.EXPECTED_ERRORS
    autoretry_for = TRANSIENT
    retry_backoff = True
    retry_backoff_max = 10
    max_retries = 5


def _make_step_task(step):
    final = step.name == FINAL_STEP

    @app.task(name=f"volchain.create.{step.name}", bind=True, base=StepTask)
    def step_task(self, flow_id: str) -> str:
        if isinstance(flow_id, dict):  # a message queued by a release that passed the whole context
            flow_id = flow_id["flow_id"]
        rt = get_runtime()
        try:
            rt.run_step(rt.factory, step, flow_id, rt.env, final=final)
        except errors.FlowNotRunning as exc:
            log.info("%s", exc)
            raise Ignore() from exc  # the flow ended already: stop this copy of the chain quietly
        except TRANSIENT as exc:
            if self.request.retries >= self.max_retries:  # Celery retries it unless this was the last try
                _record(rt, flow_id, step.name, exc.to_dict() if isinstance(exc, errors.VolchainError)
                        else error_dict(exc))
            raise
        except errors.VolchainError as exc:
            _record(rt, flow_id, step.name, exc.to_dict())
            raise
        except Exception as exc:
            _record(rt, flow_id, step.name, error_dict(exc))
            raise
        if final:
            _notify(rt, flow_id, "succeeded")
        return flow_id

    step_task.__doc__ = (step.__doc__ or "").split("\n", 1)[0]
    return step_task


def _record(rt, flow_id: str, step: str, error: dict) -> None:
    """Record why the flow stopped. In the task's body, not in `on_failure`: Celery sends the
    chain's errback (the compensation) before it calls `on_failure`."""
    try:
        record_failure(rt.factory, flow_id, step, error)
    except Exception:  # the flow stays running: the errback leaves it, the sweeper finishes it
        log.exception("flow %s: could not record the failure of %s", flow_id, step)


def _notify(rt, flow_id: str, state: str) -> None:
    try:
        outcome.notify(rt.settings.broker_url, flow_id, state)
    except Exception:  # waiters fall back to reading the flow log
        log.warning("flow %s: could not announce its end", flow_id, exc_info=True)


STEP_TASKS = {step.name: _make_step_task(step) for step in STEPS}


class CompensateTask(VolchainTask):
    """Compensation: any error is retried with backoff; when the retries run out, `on_failure`
    parks the flow as needs_attention (never dropped) and announces it."""

    autoretry_for = (Exception,)
    retry_backoff = True
    retry_backoff_max = 30
    max_retries = get_settings().compensate_max_retries

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        flow_id = args[0]
        rt = get_runtime()
        log.error("flow %s: compensation keeps failing; parked as needs_attention", flow_id)
        park(rt.factory, flow_id, f"{type(exc).__name__}: {exc}")
        _notify(rt, flow_id, "needs_attention")


@app.task(name="volchain.create.compensate", bind=True, base=CompensateTask)
def compensate_flow(self, flow_id: str) -> str:
    """Undo every recorded step of a failed create, in reverse; idempotent. A flow with no failure
    recorded is not compensated (tasks/runner.compensate, `only_failed`)."""
    rt = get_runtime()
    try:
        state = compensate(rt.factory, flow_id, rt.compensation_steps(STEPS), rt.env, only_failed=True)
    except errors.FlowNotFound:
        log.error("flow %s: nothing to compensate, no such flow", flow_id)
        return "missing"
    if state == "running":
        log.warning("flow %s: a step failed without recording why (a retry the broker could not take); "
                    "not compensated: it goes on, or the sweeper finishes it", flow_id)
        return state
    _notify(rt, flow_id, state)
    return state


@app.task(name="volchain.sweeper.sweep", acks_late=True)
def sweep_task() -> dict:
    """Expire stale reservations and finish stuck flows (for Celery beat deployments)."""
    from workers.sweeper import sweep_once

    report = sweep_once()
    if report is None:
        return {"leader": False}
    return {"leader": True, "expired_reservations": report.expired_reservations,
            "resumed": report.resumed, "compensated": report.compensated, "parked": report.parked,
            "pruned": report.pruned, "redriven": report.redriven}
