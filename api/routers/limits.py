"""`/v3/{project_id}/limits`: the absolute limits and what the project uses of them."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from api.deps import Scope, scope
from tasks import quota_engine
from workers.runtime import get_runtime

router = APIRouter(tags=["limits"])

# Cinder's absolute-limit names: (limit name, used name, resource)
ABSOLUTE = (
    ("maxTotalVolumes", "totalVolumesUsed", "volumes"),
    ("maxTotalSnapshots", "totalSnapshotsUsed", "snapshots"),
    ("maxTotalVolumeGigabytes", "totalGigabytesUsed", "gigabytes"),
    ("maxTotalBackups", "totalBackupsUsed", "backups"),
    ("maxTotalBackupGigabytes", "totalBackupGigabytesUsed", "backup_gigabytes"),
)


@router.get("/limits", summary="Absolute limits and usage of the caller's project")
async def limits(s: Scope = Depends(scope)):
    def run():
        rt = get_runtime()
        with rt.factory() as session:
            report = quota_engine.usage_report(session, s.project_id, rt.env.quota)
        absolute = {}
        for limit_name, used_name, resource in ABSOLUTE:
            absolute[limit_name] = report[resource]["limit"]
            absolute[used_name] = report[resource]["in_use"]
        return {"limits": {"rate": [], "absolute": absolute}}

    return await run_in_threadpool(run)
