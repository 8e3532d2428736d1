"""A service's heartbeat: the scheduler or a volume service reports itself every `report_interval`.

Started in the Celery worker's main process when it is ready (not in pool children), stopped when
it shuts down. A volume service's report carries its driver's capabilities (capacity, backend
name, pools); the scheduler reads them, and `os-services` shows the service up or down by the
age of its last report (tasks/services.py).
"""

from __future__ import annotations

import logging
import socket
import threading

from celery.signals import worker_ready, worker_shutdown

from models.service import SCHEDULER_BINARY, VOLUME_BINARY
from tasks import services
from workers.settings import Settings, get_settings

log = logging.getLogger(__name__)

_stop = threading.Event()


def identity(settings: Settings) -> tuple[str, str, str] | None:
    """(host, binary, zone) of the service this worker runs, or None for a step worker."""
    zone = settings.volume_availability_zone or settings.storage_availability_zone
    if settings.service == "volume":
        return settings.volume_host or "", VOLUME_BINARY, zone
    if settings.service == "scheduler":
        return socket.gethostname(), SCHEDULER_BINARY, settings.storage_availability_zone
    return None


def report_once() -> None:
    from workers.runtime import get_runtime

    rt = get_runtime()
    found = identity(rt.settings)
    if found is None:
        return
    host, binary, zone = found
    capabilities = rt.env.driver.capabilities() if rt.env.driver is not None else None
    with rt.factory.begin() as session:
        services.heartbeat(session, host, binary, zone, capabilities)


def _loop(interval: float) -> None:
    while not _stop.is_set():
        try:
            report_once()
        except Exception:  # the database is away: the service shows down until the next report lands
            log.warning("heartbeat failed", exc_info=True)
        _stop.wait(interval)


@worker_ready.connect
def _start(**_kwargs) -> None:
    settings = get_settings()
    if identity(settings) is None:
        return
    _stop.clear()
    threading.Thread(target=_loop, args=(settings.report_interval,), name="volchain-heartbeat", daemon=True).start()


@worker_shutdown.connect
def _stop_reporting(**_kwargs) -> None:
    _stop.set()
