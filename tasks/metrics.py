"""Every Prometheus metric volchain exports, defined once, and how a process exposes them.

Recorded where each event happens, never anywhere else:

    volchain_flows_started_total{kind}                 tasks/runner.py: the log first records a flow
                                                       (its first step's result, or its failure)
    volchain_flows_succeeded_total{kind}               tasks/runner.py run_step: the final step commits
    volchain_flows_failed_total{kind, step, error}     tasks/runner.py record_failure: a running flow
                                                       stops with an error and goes to compensation
    volchain_flows_compensated_total{kind}             tasks/runner.py compensate: a flow ends `reverted`
    volchain_flows_parked_total{kind, why}             tasks/runner.py park: a flow ends `needs_attention`
    volchain_flows_swept_total{kind, outcome}          tasks/sweeper.py: the sweeper finished a stuck flow
                                                       (outcome: resumed, compensated, parked)
    volchain_step_duration_seconds{kind, step}         tasks/runner.py run_step: a step's transaction,
                                                       lock to commit (replays and refusals not counted)
    volchain_flow_duration_seconds{kind, outcome}      tasks/runner.py: created to ended (outcome:
                                                       succeeded, reverted, needs_attention)
    volchain_quota_rejections_total{resource}          tasks/quota_engine.py: a limit refused a request
    volchain_queue_messages{queue}                     read from the broker at scrape time (StateCollector)
    volchain_volumes{status}                           live volumes, read from the database at scrape time

So every flow that started ends in exactly one of succeeded, compensated or parked; failed counts
the flows that went to compensation, by the step and the error class that stopped them. A flow
whose first step is refused in the API process (a delete or extend the rules refuse) leaves no
row and is not a flow here (its quota rejection, if any, is still counted).

Processes: a Celery worker with the prefork pool records in its children, so it needs
prometheus-client's multiprocess mode: `PROMETHEUS_MULTIPROC_DIR` (prometheus-client reads it
when it is imported) names a directory, one per worker instance, where each process keeps its
values in a memory-mapped file; the process serving the metrics adds them up at scrape time
(`exposition_registry`). The same serves the API run with several uvicorn workers. Every metric
here has labels, so no process writes a file before it records something: a worker's main
process can empty the directory at start (`clear_multiprocess_dir`), before its children fork.
A single process (the sweeper, a threads-pool worker, an API with one worker) needs no directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable

from kombu import Connection
from kombu.exceptions import ChannelError
from prometheus_client import (REGISTRY, CollectorRegistry, Counter, Histogram, disable_created_metrics,
                               start_http_server)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from models.service import VOLUME_BINARY, Service
from models.volume import Volume

log = logging.getLogger(__name__)

disable_created_metrics()  # no `_created` series: multiprocess mode has none; every process exports alike

STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FLOW_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
NO_STEP = "none"  # the step label of a failure no step raised (the chain could not be queued)

FLOWS_STARTED = Counter("volchain_flows_started", "Flows the log recorded for the first time.", ["kind"])
FLOWS_SUCCEEDED = Counter("volchain_flows_succeeded", "Flows whose final step committed.", ["kind"])
FLOWS_FAILED = Counter("volchain_flows_failed", "Flows stopped by an error and handed to compensation, "
                       "by the step and the error class that stopped them.", ["kind", "step", "error"])
FLOWS_COMPENSATED = Counter("volchain_flows_compensated", "Flows compensated to the end (reverted).", ["kind"])
FLOWS_PARKED = Counter("volchain_flows_parked", "Flows given up as needs_attention, and why.", ["kind", "why"])
FLOWS_SWEPT = Counter("volchain_flows_swept", "Stuck flows the sweeper finished, and how.", ["kind", "outcome"])
STEP_SECONDS = Histogram("volchain_step_duration_seconds", "A step's transaction, from locking its flow to "
                         "committing its effect and record.", ["kind", "step"], buckets=STEP_BUCKETS)
FLOW_SECONDS = Histogram("volchain_flow_duration_seconds", "A flow from its creation to its end.",
                         ["kind", "outcome"], buckets=FLOW_BUCKETS)
QUOTA_REJECTIONS = Counter("volchain_quota_rejections", "Requests a quota limit refused, by resource.",
                           ["resource"])

VOLUME_COUNT_TIMEOUT_MS = 2000  # a scrape never holds the database longer than this
# Live volumes by status. Without an index on status this reads the whole table: an index
# `(status) WHERE NOT deleted` makes it an index-only scan (docs/monitoring/README.md).
_LIVE_VOLUMES_BY_STATUS = (select(Volume.status, func.count()).where(Volume.deleted.is_(False))
                           .group_by(Volume.status))
_VOLUME_SERVICES = select(Service.host).where(Service.binary == VOLUME_BINARY)


class StateCollector:
    """Gauges read at scrape time: messages waiting in each of our queues (the step, compensation
    and scheduler queues, and every volume service's `volume.<host@backend>`, up or down), and
    live volumes by status. What cannot be read (the broker or the database away) is left out of
    that scrape, and logged."""

    def __init__(self, factory: sessionmaker[Session], connection: Callable[[], Connection],
                 queues: Iterable[str]) -> None:
        self._factory = factory
        self._connection = connection
        self._queues = list(queues)

    def collect(self):
        from tasks.casts import backend_queue  # here: tasks.casts imports the runner, which records metrics

        queues = list(self._queues)
        volumes = GaugeMetricFamily("volchain_volumes", "Live volumes (not deleted) by status.", labels=["status"])
        try:
            with self._factory() as session, session.begin():
                session.execute(text(f"SET LOCAL statement_timeout = {VOLUME_COUNT_TIMEOUT_MS}"))
                for status, count in session.execute(_LIVE_VOLUMES_BY_STATUS):
                    volumes.add_metric([status], count)
                queues += sorted({backend_queue(host) for host in session.scalars(_VOLUME_SERVICES)})
        except Exception as exc:  # the database away: this scrape has no volume counts
            log.warning("metrics: cannot count volumes: %s: %s", type(exc).__name__, _first_line(exc))
        else:
            yield volumes
        depths = GaugeMetricFamily("volchain_queue_messages", "Messages waiting in a broker queue.",
                                   labels=["queue"])
        try:
            with self._connection() as conn:
                conn.ensure_connection(max_retries=0)  # away: no retrying while the scrape waits
                channel = conn.default_channel
                for queue in dict.fromkeys(queues):
                    depths.add_metric([queue], queue_depth(channel, queue))
        except Exception as exc:  # the broker away: this scrape has no queue depths
            log.warning("metrics: cannot read queue depths: %s: %s", type(exc).__name__, _first_line(exc))
        else:
            yield depths


def queue_depth(channel, queue: str) -> int:
    """Messages in `queue`, as the broker's transport counts them (a queue never used is empty);
    also what `volchain status` shows."""
    try:
        return channel.queue_declare(queue=queue, passive=True).message_count
    except ChannelError:  # no such queue yet
        return 0


def _first_line(exc: BaseException) -> str:
    return (str(getattr(exc, "orig", None) or exc).splitlines() or [""])[0]


def exposition_registry(multiprocess_dir: Path | None, *collectors) -> CollectorRegistry:
    """What a scrape of this process answers: the metrics above, added up over every process
    writing to `multiprocess_dir` (or this process's own, when it is None), and `collectors`."""
    exposed = CollectorRegistry()
    if multiprocess_dir is None:
        exposed.register(REGISTRY)
    else:
        multiprocess_dir.mkdir(parents=True, exist_ok=True)
        MultiProcessCollector(exposed, path=str(multiprocess_dir))
    for collector in collectors:
        exposed.register(collector)
    return exposed


def clear_multiprocess_dir(multiprocess_dir: Path) -> None:
    """Forget the values of an earlier run: call in the parent process, before any other process
    writes there (prometheus-client's advice: empty the directory before start-up)."""
    multiprocess_dir.mkdir(parents=True, exist_ok=True)
    for stale in multiprocess_dir.glob("*.db"):
        stale.unlink(missing_ok=True)


def serve(port: int, host: str, multiprocess_dir: Path | None):
    """Serve this process's metrics (and its children's, through `multiprocess_dir`) over HTTP on
    a daemon thread; returns the server."""
    server, _thread = start_http_server(port, addr=host, registry=exposition_registry(multiprocess_dir))
    return server
