"""The sweeper process: one leader (a PostgreSQL advisory lock) sweeping every few seconds.

A pass expires stale reservations, finishes every stuck create flow in batches of
VOLCHAIN_SWEEP_BATCH_SIZE (tasks/sweeper.py), sends again every cast the broker lost
(tasks/redrive.py), then prunes finished flows past their retention
(tasks/retention.py).

`volchain worker sweeper` runs `run_forever`; Celery beat users may schedule the task
`volchain.sweeper.sweep` instead (workers/steps.py registers it). Either way only the
holder of the advisory lock sweeps, so running two sweepers is safe. With
VOLCHAIN_METRICS_PORT, `run_forever` serves its metrics (the flows it finishes, and the steps
and compensations it runs for them: tasks/metrics.py).
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import text

from models.db import engine_of
from tasks.create.flow import STEPS
from tasks.redrive import redrive
from tasks.retention import prune
from tasks.sweeper import SweepReport, sweep
from workers import outcome
from workers.runtime import get_runtime

log = logging.getLogger(__name__)

LEADER_LOCK_ID = 0x766F6C63  # "volc"


def sweep_once() -> SweepReport | None:
    """Sweep if this process can take the leader lock; None when another sweeper holds it."""
    rt = get_runtime()
    with engine_of(rt.factory).connect() as conn:
        if not conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LEADER_LOCK_ID}):
            return None
        try:
            return _sweep(rt)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LEADER_LOCK_ID})
            conn.commit()


def _sweep(rt) -> SweepReport:
    settings = rt.settings
    report = sweep(rt.factory, STEPS, rt.env, settings.flow_deadline_seconds, batch_size=settings.sweep_batch_size)
    report.redriven = redrive(rt.factory, rt.env, settings.flow_deadline_seconds, settings.service_down_time)
    for flow_id in report.finished:
        announce_end(rt, flow_id)
    report.pruned = prune(rt.factory, settings.flow_retention_seconds, settings.idempotency_key_seconds,
                          settings.prune_batch_size)
    if report.expired_reservations or report.finished or report.redriven:
        log.warning("sweeper: expired %d reservations; resumed %d, compensated %d, parked %d flows; "
                    "sent %d lost casts again", report.expired_reservations, len(report.resumed),
                    len(report.compensated), len(report.parked), len(report.redriven))
    if report.pruned:
        log.info("sweeper: pruned %d finished flows from the flow log", report.pruned)
    return report


def announce_end(rt, flow_id: str) -> None:
    """Wake whoever waits for this flow (a POST, `create --wait`); best effort, the log is the truth."""
    try:
        state = outcome.read_outcome(rt.factory, flow_id).state
        outcome.notify(rt.settings.broker_url, flow_id, state)
    except Exception:
        log.warning("sweeper: could not announce the end of flow %s", flow_id, exc_info=True)


def run_forever(interval: float | None = None, stop: threading.Event | None = None) -> None:
    """Sweep every `interval` seconds until `stop` is set; every VOLCHAIN_RECONCILE_INTERVAL_SECONDS
    (unless 0) also run the quota reconciler (workers/reconciler.py; its own lock, so a beat
    schedule of it beside this loop is harmless)."""
    from workers.app import serve_metrics
    from workers.reconciler import RepairSource, reconcile_once

    rt = get_runtime()
    serve_metrics(rt.settings)
    interval = interval or rt.settings.sweep_interval_seconds
    every = rt.settings.reconcile_interval_seconds
    stop = stop or threading.Event()
    next_reconcile = time.monotonic()
    while not stop.is_set():
        try:
            sweep_once()
            if every > 0 and time.monotonic() >= next_reconcile:
                next_reconcile = time.monotonic() + every
                reconcile_once(RepairSource.SCHEDULED)
        except Exception as exc:  # one line per failed pass; the traceback only at debug level
            first = (str(getattr(exc, "orig", None) or exc).splitlines() or [""])[0]
            log.error("sweeper: pass failed (%s: %s); trying again in %.0f s", type(exc).__name__, first, interval)
            log.debug("sweeper: pass failed", exc_info=True)
        if rt.settings.sweeper_alive_file is not None:  # a pass ended, failed or not: the loop is alive
            rt.settings.sweeper_alive_file.touch()
        stop.wait(interval)
