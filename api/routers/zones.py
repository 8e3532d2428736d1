"""`/v3/{project_id}/os-availability-zone`: the zones a create may name."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from api.deps import Scope, scope
from models.service import VOLUME_BINARY, Service
from workers.runtime import get_runtime

router = APIRouter(tags=["availability zones"])


@router.get("/os-availability-zone", summary="Availability zones and whether they are usable")
async def zones(s: Scope = Depends(scope)):
    def run():
        rt = get_runtime()
        with rt.factory() as session:
            rows = session.execute(select(Service.availability_zone, Service.disabled)
                                   .where(Service.binary == VOLUME_BINARY)).all()
        state: dict[str, bool] = {rt.settings.storage_availability_zone: True}
        for zone, disabled in rows:
            state[zone] = state.get(zone, False) or not disabled
        return {"availabilityZoneInfo": [{"zoneName": z, "zoneState": {"available": up}}
                                         for z, up in sorted(state.items())]}

    return await run_in_threadpool(run)
