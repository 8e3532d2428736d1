"""The Celery app: JSON only, late acks, events for Flower, routes for steps and compensation.

Operators may run `celery -A workers.app worker -Q volchain.steps,volchain.compensate -E`;
`volchain worker` does the same with the queues and options filled in. With
VOLCHAIN_METRICS_PORT, a worker's main process also serves the metrics of all its processes
(tasks/metrics.py); so does the sweeper (`serve_metrics`).
"""

from __future__ import annotations

import logging

from celery import Celery, Task
from celery.signals import worker_init, worker_process_init

from tasks import metrics
from workers.settings import Settings, default_worker_concurrency, get_settings

TASK_MODULES = ["workers.steps", "workers.consumers", "workers.heartbeat", "workers.reconciler"]


def worker_concurrency(settings: Settings) -> int:
    """Pool size a step worker gets unless -c says otherwise: VOLCHAIN_WORKER_CONCURRENCY, else four
    per CPU, at most MAX_DEFAULT_CHILDREN (each child keeps a database connection). A step spends
    much of its time waiting on PostgreSQL while its child can do nothing else; bench/README.md
    has the measured effect of the pool size."""
    return settings.worker_concurrency or default_worker_concurrency()


def celery_config(settings: Settings) -> dict:
    """Every Celery option volchain ships with (docs/design.md and the README say why)."""
    # A worker that died holding a message: Redis hands it on after the visibility timeout; each
    # worker looks for such messages every unacked_restore_seconds (throttle 1: every look scans).
    transport = {"visibility_timeout": settings.visibility_timeout,
                 "unacked_restore_interval": settings.unacked_restore_seconds, "unacked_restore_throttle": 1}
    if settings.broker_url.startswith("memory://"):
        transport = {"polling_interval": 0.01}
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Outcomes live in the flow log, not a result backend.
        "result_backend": None,
        "task_ignore_result": True,
        # A step is acked only after it ran; a killed worker's step is redelivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_concurrency": worker_concurrency(settings),
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_soft_shutdown_timeout": 10.0,
        # Flower.
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "task_track_started": False,
        # Routing: steps and compensation on their own queues; casts name their queue.
        "task_default_queue": settings.step_queue,
        "task_create_missing_queues": True,
        "task_routes": {
            "volchain.create.compensate": {"queue": settings.compensate_queue},
            "volchain.sweeper.*": {"queue": settings.compensate_queue},
            "volchain.quota.*": {"queue": settings.compensate_queue},
            "volchain.create.*": {"queue": settings.step_queue},
            "volchain.scheduler.*": {"queue": settings.scheduler_queue},
        },
        "beat_schedule": {
            "volchain-sweep": {"task": "volchain.sweeper.sweep", "schedule": settings.sweep_interval_seconds},
            **({"volchain-quota-reconcile": {"task": "volchain.quota.reconcile",
                                             "schedule": settings.reconcile_interval_seconds}}
               if settings.reconcile_interval_seconds > 0 else {}),
        },
        "worker_hijack_root_logger": False,
    }


class VolchainTask(Task):
    """Base of every volchain task: acked only after it ran (a worker killed mid-task leaves its
    message to be delivered again), and one WARNING line per message delivered again (its worker
    died holding it, or Redis restored it), which operators and bench/chaos.py count."""

    acks_late = True

    def before_start(self, task_id, args, kwargs) -> None:
        if (self.request.delivery_info or {}).get("redelivered"):
            logging.getLogger("volchain.redelivery").warning("redelivered: %s %s", self.name, task_id)


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery = Celery("volchain", include=TASK_MODULES)
    celery.conf.update(celery_config(settings))
    return celery


app = make_celery()


@worker_init.connect
def _check_settings(**_kwargs) -> None:
    """A worker with no database stops at start-up, naming the setting, instead of failing every
    task. (Celery logs and swallows a receiver's exceptions, so it exits itself.)"""
    from tasks.errors import NotConfigured
    from workers.runtime import require_database

    try:
        require_database(get_settings())
    except NotConfigured as exc:
        raise SystemExit(f"volchain worker: error: {exc}") from None


_metrics_server = None  # this process's metrics server, if it serves one


def serve_metrics(settings: Settings, forks: bool = False) -> None:
    """Serve this worker role's metrics on VOLCHAIN_METRICS_PORT (unset: do nothing), from its
    main process, before it starts any other. A role whose tasks run in forked children (`forks`:
    the prefork pool) needs PROMETHEUS_MULTIPROC_DIR, or the port would show only the parent's
    zeros; the directory is emptied first (this run's processes write there afresh)."""
    global _metrics_server
    directory = settings.prometheus_multiproc_dir
    if directory is not None:
        metrics.clear_multiprocess_dir(directory)
    if settings.metrics_port is None:
        return
    if forks and directory is None:
        raise SystemExit("volchain worker: error: VOLCHAIN_METRICS_PORT with the prefork pool needs "
                         "PROMETHEUS_MULTIPROC_DIR (a directory of this worker's own), or its tasks' metrics "
                         "would not be seen")
    try:
        _metrics_server = metrics.serve(settings.metrics_port, settings.metrics_host, directory)
    except OSError as exc:
        raise SystemExit(f"volchain worker: error: cannot serve metrics on {settings.metrics_host}:"
                         f"{settings.metrics_port}: {exc.strerror or exc}") from None


@worker_init.connect
def _serve_worker_metrics(sender=None, **_kwargs) -> None:
    from celery.concurrency import get_implementation  # here: the pool's module loads after worker_init
    from celery.concurrency.prefork import TaskPool as PreforkPool

    pool = get_implementation(sender.pool_cls) if sender is not None else None
    serve_metrics(get_settings(), forks=isinstance(pool, type) and issubclass(pool, PreforkPool))


@worker_process_init.connect
def _close_inherited_metrics_socket(**_kwargs) -> None:
    """A forked child does not serve metrics: it lets go of its copy of the parent's listening
    socket (so that a child outliving its parent cannot keep the port)."""
    if _metrics_server is not None:
        _metrics_server.server_close()
