"""os-services and a volume service's capabilities (admin only), answered as Cinder answers them.

A service's `state` is up while its last heartbeat (`updated_at`) is younger than
`VOLCHAIN_SERVICE_DOWN_TIME` (tasks/services.py); `status` is whether an admin disabled it. The
scheduler places new volumes only on enabled services that are up. Enabling or disabling a
service leaves its heartbeat alone, so it does not change its state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import or_, select
from starlette.concurrency import run_in_threadpool

from api.deps import Scope, require_admin, scope
from api.microversion import APIVersion, v
from api.routers.volumes import json_body
from api.openapi import answers, query, request_body
from api.schemas import validate
from models import utcnow
from models.service import VOLUME_BINARY, Service
from tasks import errors, services
from workers.runtime import get_runtime

router = APIRouter(tags=["services"])

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"  # how Cinder's JSON renders a timestamp
STRING_255 = {"type": "string", "minLength": 1, "maxLength": 255}
NULLABLE_STRING = {"type": ["string", "null"], "minLength": 0, "maxLength": 255}
CINDER_HOST = {"type": ["string", "null"], "minLength": 1, "maxLength": 255, "pattern": r"^[a-zA-Z0-9-._#@:/+\[\]]*$"}
ENABLE_OR_DISABLE = {
    "type": "object",
    "properties": {"binary": STRING_255, "host": CINDER_HOST, "cluster": NULLABLE_STRING, "service": STRING_255},
    "anyOf": [{"required": ["binary"]}, {"required": ["service"]}],
    "additionalProperties": False,
}
DISABLE_LOG_REASON = {
    **ENABLE_OR_DISABLE,
    "properties": {**ENABLE_OR_DISABLE["properties"], "disabled_reason": STRING_255},
}
# Cinder's other os-services actions: volchain has no replication, clusters or remote log levels.
NOT_SUPPORTED = {"freeze": "Freezing a host", "thaw": "Thawing a host", "failover_host": "Failing over a host",
                 "failover": "Failing over a host", "set-log": "Setting log levels", "get-log": "Reading log levels"}
# What every Cinder driver reports as its standard properties (the keys an admin may set as extra specs).
STANDARD_PROPERTIES = {
    "thin_provisioning": {"title": "Thin Provisioning", "description": "Sets thin provisioning.", "type": "boolean"},
    "compression": {"title": "Compression", "description": "Enables compression.", "type": "boolean"},
    "qos": {"title": "QoS", "description": "Enables QoS.", "type": "boolean"},
    "replication_enabled": {"title": "Replication", "description": "Enables replication.", "type": "boolean"},
}


def _ts(value: datetime | None) -> str | None:
    return value.strftime(TIME_FORMAT) if value else None


def host_matches(column, value: str):
    """Cinder's host match: `node1` also matches `node1@backend` and `node1#pool`, `node1@backend`
    also matches its pools, and `node1@backend#pool` only itself."""
    conditions = [column == value]
    if "#" not in value:
        conditions.append(column.startswith(f"{value}#", autoescape=True))
        if "@" not in value:
            conditions.append(column.startswith(f"{value}@", autoescape=True))
    return or_(*conditions)


def _backend_state(svc: Service, up: bool) -> str | None:
    """What the scheduler knows of a backend (3.49): only enabled volume services that are up
    and reported capabilities are in its pools; for any other Cinder answers null."""
    caps = svc.capabilities
    if svc.disabled or not up or not caps:
        return None
    pools = caps.get("pools") or [{}]
    return caps.get("backend_state") or pools[0].get("backend_state") or "up"


def service_view(svc: Service, version: APIVersion, down_time: float, now: datetime) -> dict[str, Any]:
    up = services.is_up(svc, down_time, now)
    view: dict[str, Any] = {
        "binary": svc.binary,
        "host": svc.host,
        "zone": svc.availability_zone,
        "status": "disabled" if svc.disabled else "enabled",
        "state": "up" if up else "down",
        "updated_at": _ts(svc.updated_at),
        "disabled_reason": svc.disabled_reason,
    }
    if svc.binary == VOLUME_BINARY:
        caps = svc.capabilities
        view["replication_status"] = ("not-capable" if caps is None
                                      else "enabled" if caps.get("replication_enabled") else "disabled")
        view["active_backend_id"] = None
        view["frozen"] = False
        if version >= v("3.49"):
            view["backend_state"] = _backend_state(svc, up)
    if version >= v("3.7"):
        view["cluster"] = None
    return view


@router.get("/os-services", summary="List services, filtered by ?host= and ?binary= (admin)", responses=answers(403),
            openapi_extra=query(host="Only services of this host", binary="Only this binary (cinder-volume, ...)"))
async def list_services(request: Request, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:services:index")
    host = request.query_params.get("host")
    binary = request.query_params.get("binary")

    def run():
        rt = get_runtime()
        query = select(Service).order_by(Service.id)
        if host:
            query = query.where(host_matches(Service.host, host))
        if binary:
            query = query.where(Service.binary == binary)
        with rt.factory() as session:
            rows = session.scalars(query).all()
        now = utcnow()
        return {"services": [service_view(svc, s.version, rt.settings.service_down_time, now) for svc in rows]}

    return await run_in_threadpool(run)


def _set_disabled(body: dict, *, disabled: bool, reason: str | None = None) -> dict[str, Any]:
    """Enable or disable the first service matching the body's host and binary; Cinder's answer."""
    host = body.get("host")
    if not host:
        raise errors.InvalidInput(reason="Host field is missing.")
    service, binary = body.get("service", ""), body.get("binary", "")
    binary_key = binary or service  # `service` is the deprecated name of `binary`
    with get_runtime().factory() as session, session.begin():
        svc = session.scalar(select(Service).where(host_matches(Service.host, host), Service.binary == binary_key)
                             .order_by(Service.id).limit(1).with_for_update())
        if svc is None:
            raise errors.NotFound(f"Service {binary_key} could not be found on host {host}.")
        svc.disabled = disabled
        if not disabled:
            svc.disabled_reason = None
        elif reason:
            svc.disabled_reason = reason
    return {"host": host, "service": service, "binary": binary, "status": "disabled" if disabled else "enabled",
            "disabled": disabled}


@router.put("/os-services/enable", summary="Enable a service (admin)", responses=answers(403),
            openapi_extra=request_body(ENABLE_OR_DISABLE))
async def enable(request: Request, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:services:update")
    body = await json_body(request)
    validate(ENABLE_OR_DISABLE, body)
    return await run_in_threadpool(_set_disabled, body, disabled=False)


@router.put("/os-services/disable", summary="Disable a service (admin)", responses=answers(403),
            openapi_extra=request_body(ENABLE_OR_DISABLE))
async def disable(request: Request, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:services:update")
    body = await json_body(request)
    validate(ENABLE_OR_DISABLE, body)
    return await run_in_threadpool(_set_disabled, body, disabled=True)


@router.put("/os-services/disable-log-reason", summary="Disable a service and say why (admin)", responses=answers(403),
            openapi_extra=request_body(DISABLE_LOG_REASON))
async def disable_log_reason(request: Request, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:services:update")
    body = await json_body(request)
    validate(DISABLE_LOG_REASON, body)
    reason = body.get("disabled_reason")
    if reason is not None and not reason.strip():
        raise errors.InvalidInput(reason="disabled_reason has 0 characters, less than 1.")
    answer = await run_in_threadpool(_set_disabled, body, disabled=True, reason=reason)
    return {**answer, "disabled_reason": reason}


@router.put("/os-services/{action}", summary="Other os-services actions (admin; not supported)", responses=answers(403))
async def other_action(action: str, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:services:update")
    if action in NOT_SUPPORTED:
        raise errors.UnsupportedRequest(feature=NOT_SUPPORTED[action])
    raise errors.InvalidInput(reason="Unknown action")


def capabilities_view(svc: Service) -> dict[str, Any]:
    """Cinder's capabilities view of what the service's driver reported last."""
    caps = svc.capabilities or {}
    protocol = caps.get("storage_protocol")
    if isinstance(protocol, list):  # Cinder keeps the variants; users see the preferred first one
        protocol = protocol[0] if protocol else None
    return {
        "namespace": f"OS::Storage::Capabilities::{svc.host}",
        "vendor_name": caps.get("vendor_name"),
        "volume_backend_name": caps.get("volume_backend_name"),
        "pool_name": caps.get("pool_name"),
        "driver_version": caps.get("driver_version"),
        "storage_protocol": protocol,
        "display_name": caps.get("display_name"),
        "description": caps.get("description"),
        "visibility": caps.get("visibility"),
        "replication_targets": caps.get("replication_targets", []),
        "properties": caps.get("properties") or STANDARD_PROPERTIES,
    }


@router.get("/capabilities/{host}", summary="What a volume service's backend reports (admin)", responses=answers(403))
async def show_capabilities(host: str, s: Scope = Depends(scope)):
    require_admin(s, "volume_extension:capabilities")

    def run():
        with get_runtime().factory() as session:
            svc = session.scalar(select(Service)
                                 .where(Service.binary == VOLUME_BINARY, host_matches(Service.host, host))
                                 .order_by(Service.id).limit(1))
            if svc is None:
                raise errors.NotFound(f"Can't find service: {host}")
            return capabilities_view(svc)

    return await run_in_threadpool(run)
