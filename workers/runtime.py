"""Per-process runtime: the session factory, the StepEnv built from settings, and the step runner.

The runner is tasks.runner.run_step, or, when VOLCHAIN_FAILURE_INJECTION is on (tests only),
workers.failure_injection.run_step around it (and its compensation_steps around the reverts).

Built lazily in the process that uses it, and dropped after a fork, so pool children never
share database connections with their parent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

from celery.signals import worker_init, worker_process_init
from sqlalchemy.orm import Session, sessionmaker

from models.db import dispose_all, session_factory
from tasks import errors, runner
from tasks.quota_engine import QuotaConfig
from tasks.runner import CastMessage, StepEnv
from workers.settings import Settings, get_settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    factory: sessionmaker[Session]
    env: StepEnv
    run_step: Callable  # tasks.runner.run_step, or the failure-injecting one (tests)
    compensation_steps: Callable[[list], list]  # the steps a compensation reverts (tests may wrap them)


_runtime: Runtime | None = None
_lock = threading.Lock()


def quota_config(settings: Settings) -> QuotaConfig:
    return QuotaConfig(
        reservation_expire=settings.reservation_expire_seconds,
        until_refresh=settings.until_refresh,
        max_age=settings.max_age,
        no_snapshot_gb_quota=settings.no_snapshot_gb_quota,
    )


def volume_driver(settings: Settings):
    """This volume service's driver (None in any other process)."""
    if settings.service != "volume":
        return None
    from drivers import load

    if not settings.volume_host or "@" not in settings.volume_host:
        raise errors.NotConfigured(setting="VOLCHAIN_VOLUME_HOST", reason="a volume service needs host@backend")
    if settings.volume_path is None:
        raise errors.NotConfigured(setting="VOLCHAIN_VOLUME_PATH", reason="the file driver needs a directory")
    return load(settings.volume_driver, settings.volume_host.split("@", 1)[1], path=str(settings.volume_path),
                capacity_gb=settings.volume_capacity_gb)


def step_env(settings: Settings, publish=None) -> StepEnv:
    return StepEnv(
        quota=quota_config(settings),
        storage_availability_zone=settings.storage_availability_zone,
        default_availability_zone=settings.default_availability_zone,
        allow_availability_zone_fallback=settings.allow_availability_zone_fallback,
        default_volume_type=settings.default_volume_type,
        snapshot_same_host=settings.snapshot_same_host,
        cloned_volume_same_az=settings.cloned_volume_same_az,
        az_cache_seconds=settings.az_cache_seconds,
        scheduler_queue=settings.scheduler_queue,
        service_down_time=settings.service_down_time,
        publish=publish,
        driver=volume_driver(settings),
        host=settings.volume_host,
    )


def publish_cast(message: CastMessage) -> None:
    """Send a cast as a Celery task message on its queue; returns once the broker has it."""
    from workers.app import app

    app.send_task(
        message.task_name,
        args=[message.body],
        queue=message.queue,
        task_id=message.message_id,
        argsrepr=f"(volume={message.body['volume_id']}, flow={message.body['flow_id']})",
        retry=True,
        retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 1},
    )


_threads = 0  # step threads of a threads-pool worker: each may hold a connection at once


@worker_init.connect
def _size_pool_for_threads(sender=None, **_kwargs) -> None:
    """A threads-pool worker (`-P threads -c N`) gets a pool of at least N connections."""
    global _threads
    pool = getattr(sender, "pool_cls", None)
    if pool is not None and "thread" in getattr(pool, "__module__", str(pool)):
        _threads = int(getattr(sender, "concurrency", 0) or 0)


def _step_runner(settings: Settings) -> tuple[Callable, Callable[[list], list]]:
    if settings.failure_injection:
        from workers import failure_injection

        return failure_injection.run_step, failure_injection.compensation_steps
    return runner.run_step, list


def require_database(settings: Settings) -> str:
    """The configured database URL, or one clear error when there is none (a worker or an API
    started without VOLCHAIN_DATABASE_URL: only the CLI has an embedded default)."""
    if not settings.database_url:
        raise errors.NotConfigured(setting="VOLCHAIN_DATABASE_URL",
                                   reason="set it to a PostgreSQL URL, postgresql+psycopg://user@host/db")
    return settings.database_url


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                settings = get_settings()
                require_database(settings)
                run_step, compensation_steps = _step_runner(settings)
                _runtime = Runtime(
                    settings=settings,
                    factory=session_factory(settings.database_url, max(settings.db_pool_size, _threads)),
                    env=step_env(settings, publish_cast),
                    run_step=run_step,
                    compensation_steps=compensation_steps,
                )
    return _runtime


def reset_runtime(close: bool = True) -> None:
    """Forget the runtime and its pooled connections (after fork; in tests)."""
    global _runtime
    with _lock:
        _runtime = None
    dispose_all(close=close)


@worker_process_init.connect
def _after_fork(**_kwargs) -> None:
    reset_runtime(close=False)
