"""Embedded mode: SQLite + Celery's in-process `memory://` broker + a worker thread, no servers.

The worker thread runs the real chain and the real errbacks (never eager mode); it consumes the
step and compensate queues only. Casts to `scheduler` / `volume.<host>` stay queued in memory,
since nothing consumes them in embedded mode.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from celery.worker import WorkController

from workers.settings import EMBEDDED_BROKER_URL, Settings, get_settings

BROKER_URL = EMBEDDED_BROKER_URL
ENV_DATABASE_URL = "VOLCHAIN_DATABASE_URL"
ENV_BROKER_URL = "VOLCHAIN_BROKER_URL"
ENV_TASK_EVENTS = "VOLCHAIN_TASK_EVENTS"
WORKER_START_SECONDS = 30.0
WORKER_SHUTDOWN_SECONDS = 10.0


def is_embedded(settings: Settings) -> bool:
    """True when the broker only exists inside this process (so a worker must too)."""
    return settings.broker_url.startswith("memory://")


def _apply_settings() -> Settings:
    """Re-read settings; point the runtime and the already-built Celery app at them."""
    from workers.app import app, celery_config
    from workers.runtime import reset_runtime

    get_settings.cache_clear()
    reset_runtime()
    settings = get_settings()
    app.close()  # drop pooled connections to an earlier broker
    app.conf.update(celery_config(settings))
    return settings


@contextmanager
def configured(database_url: str, broker_url: str = BROKER_URL) -> Iterator[Settings]:
    """Point settings, runtime and `workers.app.app` at `database_url` and `broker_url`.

    The previous environment (and so the previous settings) is restored on exit.
    """
    saved = {k: os.environ.get(k) for k in (ENV_DATABASE_URL, ENV_BROKER_URL, ENV_TASK_EVENTS)}
    os.environ[ENV_DATABASE_URL] = database_url
    os.environ[ENV_BROKER_URL] = broker_url
    os.environ[ENV_TASK_EVENTS] = "false"  # no one listens for events in-process
    try:
        yield _apply_settings()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _apply_settings()


class _ThreadWorker(WorkController):
    """A WorkController that signals when its consumer is ready (it runs in a thread)."""

    def __init__(self, *args, **kwargs) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer) -> None:
        self.ready.set()


@contextmanager
def worker_thread(settings: Settings, pool: str = "solo", concurrency: int = 1) -> Iterator[WorkController]:
    """An in-process Celery worker consuming the step and compensate queues while the block runs."""
    import workers.steps  # noqa: F401  (registers the step and compensate tasks)
    from workers.app import app

    app.finalize()
    # The worker thread has no current app of its own: make sure it finds this one, not a
    # default app on amqp://localhost.
    app.set_current()
    app.set_default()
    worker = _ThreadWorker(
        app=app,
        hostname=f"embedded-{uuid.uuid4().hex[:8]}@{socket.gethostname()}",
        pool=pool,
        concurrency=concurrency,
        loglevel="WARNING",
        queues=[settings.step_queue, settings.compensate_queue],
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
    )
    thread = threading.Thread(target=worker.start, name="volchain-embedded-worker", daemon=True)
    thread.start()
    deadline = time.monotonic() + WORKER_START_SECONDS
    while not worker.ready.wait(0.05):
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the embedded worker did not start")
    try:
        yield worker
    finally:
        # A remote-control shutdown wakes the blocking consumer loop at once.
        app.control.shutdown(destination=[worker.hostname])
        thread.join(WORKER_SHUTDOWN_SECONDS)


@contextmanager
def embedded(database_url: str, pool: str = "solo") -> Iterator[Settings]:
    """Settings on `database_url` + `memory://`, with a worker thread running the chain."""
    with configured(database_url) as settings, worker_thread(settings, pool=pool):
        yield settings
