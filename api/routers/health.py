"""The operator's endpoints, outside /v3 and without a token: `/healthz`, `/readyz`, `/metrics`.

`/healthz` answers 200 while the process serves requests. `/readyz` answers 200 when the database
and the broker both answer, else 503 with Cinder's fault body naming what is away (never a host,
a port or a password; the cause goes to the log). `/metrics` is Prometheus's text format: the
flow, step and quota metrics of this API (added up over its uvicorn workers when
PROMETHEUS_MULTIPROC_DIR is set), the queue depths read from the broker and the live volumes by
status read from the database at scrape time (tasks/metrics.py). None of them is in the OpenAPI
document (api/main.py mounts them with include_in_schema=False).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from functools import lru_cache

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from api import errors
from tasks import metrics
from workers.app import app as celery
from workers.runtime import get_runtime

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 2  # connecting to the database or the broker, for /readyz


@lru_cache(maxsize=1)
def exposed() -> CollectorRegistry:
    """What /metrics answers in this process (built once)."""
    rt = get_runtime()
    settings = rt.settings
    state = metrics.StateCollector(
        rt.factory, lambda: celery.connection_for_read(connect_timeout=READY_TIMEOUT_SECONDS),
        (settings.step_queue, settings.compensate_queue, settings.scheduler_queue))
    return metrics.exposition_registry(settings.prometheus_multiproc_dir, state)


@asynccontextmanager
async def lifespan(_app):
    exposed()  # at start-up: the multiprocess directory exists before a flow records anything
    yield


router = APIRouter(tags=["operations"], lifespan=lifespan)


@router.get("/healthz")
async def healthz() -> dict:
    """The process is up and serving."""
    return {"status": "ok"}


@lru_cache(maxsize=1)
def _probe_engine():
    """Connections for /readyz only: opened per probe with a short timeout (never the request
    pool, whose checkout could wait behind busy requests)."""
    return create_engine(get_runtime().settings.database_url, poolclass=NullPool,
                         connect_args={"connect_timeout": READY_TIMEOUT_SECONDS})


def _database_answers() -> bool:
    try:
        with _probe_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception as exc:
        log.warning("readyz: the database does not answer: %s: %s", type(exc).__name__, _cause(exc))
        return False


def _broker_answers() -> bool:
    try:
        with celery.connection_for_read(connect_timeout=READY_TIMEOUT_SECONDS,
                                        transport_options={"socket_timeout": READY_TIMEOUT_SECONDS}) as conn:
            conn.ensure_connection(max_retries=0)
        return True
    except Exception as exc:
        log.warning("readyz: the broker does not answer: %s: %s", type(exc).__name__, _cause(exc))
        return False


def _cause(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0]


@router.get("/readyz")
def readyz() -> Response:
    """200 when the database and the broker answer; 503 (Cinder's fault body) naming what does not."""
    away = [name for name, answers in (("database", _database_answers), ("broker", _broker_answers))
            if not answers()]
    if away:
        return errors.fault(503, f"Not ready: the {' and the '.join(away)} "
                                 f"{'is' if len(away) == 1 else 'are'} unavailable.")
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
def prometheus_metrics(request: Request) -> Response:
    """Prometheus's exposition format (OpenMetrics when the scraper asks for it)."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(exposed()), media_type=content_type)
