"""The ASGI app: routers, Cinder-shaped errors, request ids and microversion headers."""

from __future__ import annotations

import logging
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from api import errors
from api.microversion import HEADER, MIN_VERSION, SERVICE, InvalidVersionString, VersionNotAcceptable, negotiate
from api.routers import limits, quotas, versions, volume_types, volumes, zones
from api.waiter import FlowWaiter
from workers.runtime import get_runtime

log = logging.getLogger(__name__)

RESOURCE_ROUTERS = (volumes.router, volume_types.router, quotas.router, limits.router, zones.router)


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
    for router in RESOURCE_ROUTERS:
        app.include_router(router, prefix="/v3/{project_id}")
        app.include_router(router, prefix="/v3", include_in_schema=False)  # project-less URLs (3.67)
    app.include_router(versions.router)  # last: `/v3/{project_id}` must not shadow `/v3/volumes`

    @app.middleware("http")
    async def openstack_headers(request: Request, call_next):
        request_id = f"req-{uuid.uuid4()}"
        header = request.headers.get(HEADER)
        try:
            request.state.version = negotiate(header)
            response = None
        except (VersionNotAcceptable, InvalidVersionString) as exc:
            response = errors.fault(406 if isinstance(exc, VersionNotAcceptable) else 400, str(exc))
            echoed = f"{SERVICE} {exc.requested}"
        if response is None:
            limit = get_runtime().settings.api_max_body_bytes
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                response = errors.fault(413, "Request is too large.")
                echoed = f"{SERVICE} {request.state.version}"
            else:
                try:
                    response = await call_next(request)
                except Exception:  # unexpected: still a Cinder-shaped 500 with our headers
                    log.exception("unexpected error on %s %s", request.method, request.url.path)
                    response = errors.fault(500, errors.GENERIC_500)
                echoed = f"{SERVICE} {request.state.version}"
        response.headers["X-OpenStack-Request-Id"] = request_id
        response.headers["X-Compute-Request-Id"] = request_id
        response.headers[HEADER] = echoed
        response.headers["Vary"] = HEADER
        return response

    return app


app = create_app()
__all__ = ["app", "create_app", "MIN_VERSION"]
