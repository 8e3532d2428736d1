"""The quota reconciler as a task: `volchain.quota.reconcile`, for Celery beat, one pass at a time.

Beat runs it every `reconcile_interval_seconds`; `volchain quota check --sync` runs the same pass
on demand. Both first take one PostgreSQL advisory lock, so two passes never act at once: a
scheduled pass that finds it taken does nothing, an operator's waits for it. (The row locks of
tasks/reconcile.repair keep two passes correct anyway; the advisory lock keeps them from doing
the work twice.)
"""

from __future__ import annotations

import logging

from sqlalchemy import text

from models.db import engine_of
from models.quota_repair import RepairSource
from tasks import reconcile
from workers.app import app
from workers.runtime import get_runtime, quota_config

log = logging.getLogger(__name__)

LOCK_ID = 0x766F6C71  # "volq" (the sweeper's is "volc")


def reconcile_once(source: RepairSource, project_id: str | None = None,
                   wait: bool = False) -> list[reconcile.Repair] | None:
    """Repair quota drift under the reconciler's lock; None when another pass holds it (and not `wait`)."""
    rt = get_runtime()
    with engine_of(rt.factory).connect() as conn:
        if wait:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_ID})
        elif not conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_ID}):
            return None
        conn.commit()  # the lock is the session's; no transaction stays open while the pass runs
        try:
            repairs = reconcile.sync(rt.factory, quota_config(rt.settings), project_id, source)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_ID})
            conn.commit()
    for r in repairs:
        log.warning("quota reconciler (%s): project %s %s %s %s -> %s", source.value, r.project_id, r.resource,
                    r.field, "no row" if r.old is None else r.old, r.new)
    return repairs


@app.task(name="volchain.quota.reconcile", acks_late=True)
def reconcile_task(project_id: str | None = None) -> dict:
    """Recount quota usage from the rows and repair drift (for Celery beat)."""
    repairs = reconcile_once(RepairSource.SCHEDULED, project_id)
    if repairs is None:
        return {"leader": False}
    return {"leader": True, "repairs": [r.to_dict() for r in repairs]}
