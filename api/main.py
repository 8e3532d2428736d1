"""The ASGI app: routers, Cinder-shaped errors, and the OpenStack headers middleware."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api import errors, openapi
from api.microversion import MIN_VERSION
from api.deps import project_in_path
from api.middleware import OpenStackHeaders
from api.routers import (default_types, discovery, health, limits, messages, quotas, services, snapshots, versions,
                         volume_metadata, volume_types, volumes, zones)
from api.waiter import FlowWaiter
from workers.runtime import get_runtime

log = logging.getLogger(__name__)

RESOURCE_ROUTERS = (volumes.router, volume_metadata.router, snapshots.router, volume_types.router, default_types.router,
                    quotas.router, limits.router, zones.router, services.router, messages.router, discovery.router)


@asynccontextmanager
async def lifespan(app: FastAPI):
    rt = get_runtime()
    if rt.settings.auth_strategy == "noauth":
        log.warning("=" * 72)
        log.warning("VOLCHAIN_AUTH_STRATEGY=noauth: every caller is an admin of the project it names. "
                    "Development only; never expose this API.")
        log.warning("=" * 72)
    waiter = FlowWaiter(rt.factory, rt.settings.broker_url)
    await waiter.start()
    app.state.waiter = waiter
    try:
        yield
    finally:
        await waiter.stop()


def create_app() -> FastAPI:
    app = FastAPI(title="volchain", version="3", description="Cinder-compatible block storage API (v3), "
                  "creating volumes through volchain's Celery chain.", lifespan=lifespan,
                  openapi_url="/openapi.json", docs_url=None, redoc_url=None)
    errors.install(app)
    # Project-less URLs (3.67) first: `/v3/extensions/os-services` must not be taken for the
    # os-services of a project named "extensions" (project ids are hex; collection names are not).
    for router in RESOURCE_ROUTERS:
        app.include_router(router, prefix="/v3", include_in_schema=False)
    for router in RESOURCE_ROUTERS:
        app.include_router(router, prefix="/v3/{project_id}", dependencies=[Depends(project_in_path)])
    app.include_router(versions.router)  # last: `/v3/{project_id}` must not shadow `/v3/volumes`
    app.include_router(health.router, include_in_schema=False)  # /healthz, /readyz, /metrics: for operators

    app.add_middleware(OpenStackHeaders)
    app.openapi = lambda: openapi.document(app)
    return app


app = create_app()
__all__ = ["app", "create_app", "MIN_VERSION"]
