"""Settings: every knob volchain reads from the environment, in one place.

Each field is read from `VOLCHAIN_<FIELD>` (upper case). `models/` and `tasks/` never read the
environment; the worker and CLI layers pass values down from here.
"""

from __future__ import annotations

import os

from functools import lru_cache
from typing import Literal
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_DATA_DIR = Path("volchain-data")
EMBEDDED_BROKER_URL = "memory://localhost/"


# Step workers run four pool children per CPU, at most 16, unless told otherwise
# (workers/app.worker_concurrency). Each child keeps one PostgreSQL connection.
CHILDREN_PER_CPU = 4
MAX_DEFAULT_CHILDREN = 16


def cpu_count() -> int:
    """CPUs this process may run on (a container's cpuset, not the host's count, where Linux says)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_worker_concurrency() -> int:
    return min(CHILDREN_PER_CPU * cpu_count(), MAX_DEFAULT_CHILDREN)


DATABASE_DRIVER = "postgresql+psycopg"
BROKER_SCHEMES = ("redis", "rediss", "memory")


class Settings(BaseSettings):
    """volchain configuration; each field maps to `VOLCHAIN_<NAME>`."""

    # hide_input_in_errors: a refused URL may carry a password; the errors name the field, not the value.
    model_config = SettingsConfigDict(env_prefix="VOLCHAIN_", extra="ignore", hide_input_in_errors=True)

    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of PostgreSQL: postgresql+psycopg://user@host/db. Unset: the CLI runs an "
        "embedded PostgreSQL in data_dir for the command's lifetime (workers/embedded.py).",
    )
    data_dir: Path = Field(
        EMBEDDED_DATA_DIR,
        description="Embedded mode (no database_url): the PostgreSQL data directory, made on first use and "
        "kept; relative paths are taken from the working directory.",
    )
    broker_url: str = Field(
        EMBEDDED_BROKER_URL,
        description="Celery broker URL. Production: redis://host:6379/0. "
        "memory://localhost/ works only with an in-process worker (the embedded demo).",
    )
    worker_concurrency: int | None = Field(
        None, ge=1,
        description="Pool children (or threads) per step worker; unset: four per CPU, at most 16, since a "
        "step spends much of its time waiting on PostgreSQL (each child keeps one database connection).",
    )
    db_pool_size: int = Field(5, description="Connections kept per process in the SQLAlchemy pool (a worker "
                              "thread keeps one for its steps; a threads-pool worker raises it to its -c).")

    # Cinder options that shape the create flow (same names, same defaults).
    storage_availability_zone: str = Field("nova", description="Zone of this storage deployment.")
    default_availability_zone: str | None = Field(
        None, description="Zone for creates that name none; falls back to storage_availability_zone."
    )
    allow_availability_zone_fallback: bool = Field(
        False, description="Replace an unknown requested zone with the default instead of failing."
    )
    default_volume_type: str = Field("__DEFAULT__", description="Type used when a create names none.")
    snapshot_same_host: bool = Field(
        True, description="Route creates from a snapshot straight to the snapshot's backend."
    )
    cloned_volume_same_az: bool = Field(
        True, description="A volume made from a snapshot or volume must stay in the source's zone."
    )
    az_cache_seconds: float = Field(
        30.0, description="How long a worker caches the set of valid availability zones."
    )

    # Quota.
    reservation_expire_seconds: int = Field(
        600, description="Age at which a pending reservation is expired (Cinder: 86400)."
    )
    no_snapshot_gb_quota: bool = Field(False, description="Leave snapshots out of gigabytes usage.")
    until_refresh: int = Field(0, description="Reservations before a usage row is re-synced (0: never).")
    max_age: int = Field(0, description="Seconds before a usage row is re-synced (0: never).")

    # Workers.
    step_queue: str = Field("volchain.steps", description="Queue the five chain steps run on.")
    compensate_queue: str = Field("volchain.compensate", description="Queue of compensation tasks.")
    scheduler_queue: str = Field("scheduler", description="Queue that unpinned creates are cast to.")
    # Timeouts, in the order they fire after a worker dies holding a message (docs/failure-model.md):
    # Redis hands the message to another worker after visibility_timeout (checked every
    # unacked_restore_seconds); only a flow still stuck flow_deadline_seconds after its last
    # progress (its message lost with the broker) is finished by the sweeper, within one more
    # sweep_interval_seconds. The settings refuse a deadline that could fire first.
    visibility_timeout: int = Field(
        120, ge=1, description="Seconds before Redis gives an unacked message (its worker died) to another worker; "
        "should exceed the longest step (a longer one is safe: its copy waits on the flow lock and replays)."
    )
    unacked_restore_seconds: int = Field(
        5, ge=1, description="How often each worker looks for unacked messages past the visibility timeout."
    )
    task_events: bool = Field(True, description="Send task events (Flower needs them).")
    flow_deadline_seconds: int = Field(
        180, ge=1, description="A flow with no progress for this long is driven to an end by the sweeper; "
        "must exceed visibility_timeout + unacked_restore_seconds, so redelivery comes first."
    )
    sweep_interval_seconds: float = Field(30.0, description="How often the sweeper runs.")
    sweeper_alive_file: Path | None = Field(
        None, description="The sweeper touches this file after every pass (a container health check reads its age)."
    )
    compensate_max_retries: int = Field(
        20, description="Retries of a failing compensation before its flow is parked as needs_attention."
    )
    sweep_batch_size: int = Field(
        100, ge=1, description="Flows the sweeper finishes per batch; it repeats batches until nothing is due."
    )
    flow_retention_seconds: int = Field(
        7 * 86400, ge=0, description="Finished flows are kept this long in the flow log, then pruned in batches."
    )
    idempotency_key_seconds: int = Field(
        86400, ge=0, description="How long a create's Idempotency-Key is honoured; its flow is kept at least as long."
    )
    prune_batch_size: int = Field(1000, ge=1, description="Finished flows deleted per pruning statement.")
    reconcile_interval_seconds: float = Field(
        3600.0, description="How often the quota reconciler recounts usage from the rows (0: only on demand)."
    )

    # Services (scheduler, volume services).
    report_interval: float = Field(10.0, description="Seconds between a service's heartbeats (Cinder's report_interval).")
    service_down_time: float = Field(
        60.0, description="A service whose last heartbeat is older than this is down (Cinder's service_down_time)."
    )

    # A volume service (`volchain worker volume` sets these for the Celery worker it starts).
    service: str | None = Field(None, description="The service this worker runs: `scheduler`, `volume`, or unset "
                                "(a step worker).")
    volume_host: str | None = Field(None, description="A volume service's host@backend; it consumes "
                                    "volume.<host@backend>.")
    volume_driver: str = Field("file", description="A volume service's driver (drivers/: `file`).")
    volume_path: Path | None = Field(None, description="The file driver's directory.")
    volume_capacity_gb: int | None = Field(None, ge=0, description="The file driver's capacity; unset: the size "
                                           "of the filesystem holding volume_path.")
    volume_availability_zone: str | None = Field(None, description="A volume service's zone; unset: "
                                                 "storage_availability_zone.")

    # HTTP API.
    auth_strategy: str = Field(
        "token", description="`token` (signed tokens, the default) or `noauth` (Cinder's development mode: "
        "X-Auth-Token user:project, every caller admin)."
    )
    token_secret: str | None = Field(
        None, description="Secret that signs tokens; unset: the one generated in the database at `db upgrade`."
    )
    token_ttl_seconds: int = Field(3600, description="Default lifetime of an issued token.")
    project_id_regex: str = Field(r"[0-9a-f\-]+", description="Project ids the URLs accept (Cinder's default).")
    api_wait_seconds: float = Field(
        30.0, description="How long POST /volumes waits for the chain before answering 202 with `creating`."
    )
    api_max_body_bytes: int = Field(256 * 1024, description="Largest request body the API reads.")
    api_public_url: str | None = Field(None, description="Base URL for links; unset: taken from the request.")
    log_format: Literal["text", "json"] = Field("text", description="How the CLI's processes log: text lines, or "
                                                "JSON lines (time, level, logger, message, traceback).")

    # Metrics (tasks/metrics.py). The API serves /metrics on its own port.
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="A worker role (a Celery worker, the sweeper) serves Prometheus metrics "
        "on this port; unset: none."
    )
    metrics_host: str = Field("127.0.0.1", description="Address the metrics port listens on (0.0.0.0 in a "
                              "container that Prometheus scrapes from outside).")
    prometheus_multiproc_dir: Path | None = Field(
        None, validation_alias="PROMETHEUS_MULTIPROC_DIR",
        description="prometheus-client's own variable, read as it is named (no VOLCHAIN_ prefix): a directory, "
        "one per worker instance, where every process of a prefork worker (or a multi-process API) keeps its "
        "values; the metrics port adds them up. Required with metrics_port and the prefork pool; a worker empties "
        "it at start."
    )

    # The servers volchain can use, whoever reads the settings (the CLI, `celery -A workers.app`):
    # PostgreSQL through psycopg 3 (the one driver installed; the models use PostgreSQL's own SQL),
    # and Redis (the API waits on its pub/sub; status and metrics read its queues) or the embedded
    # in-process `memory://`.
    @field_validator("database_url")
    @classmethod
    def _postgresql_through_psycopg(cls, url: str | None) -> str | None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        if url is None:
            return url
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ValueError(f"not a database URL; volchain needs PostgreSQL: {DATABASE_DRIVER}://user@host/db"
                             ) from None
        if parsed.drivername != DATABASE_DRIVER:
            shown = parsed.render_as_string(hide_password=True)
            raise ValueError(f"unsupported database {parsed.drivername}:// (in {shown}); volchain needs PostgreSQL "
                             f"through psycopg: {DATABASE_DRIVER}://user@host/db")
        return url

    @field_validator("broker_url")
    @classmethod
    def _redis(cls, url: str) -> str:
        from kombu.utils.url import maybe_sanitize_url

        if "://" not in url or url.partition("://")[0] not in BROKER_SCHEMES:
            raise ValueError(f"unsupported broker {maybe_sanitize_url(url)}; volchain needs Redis: "
                             "redis://host:6379/0 (or rediss://)")
        return url

    @model_validator(mode="after")
    def _redelivery_before_deadline(self) -> "Settings":
        redelivered_by = self.visibility_timeout + self.unacked_restore_seconds
        if self.flow_deadline_seconds <= redelivered_by:
            raise ValueError(
                f"VOLCHAIN_FLOW_DEADLINE_SECONDS ({self.flow_deadline_seconds}) must exceed VOLCHAIN_VISIBILITY_TIMEOUT + "
                f"VOLCHAIN_UNACKED_RESTORE_SECONDS ({redelivered_by}): a message held by a worker that died must be "
                "redelivered before the sweeper takes its flow over")
        return self

    # Test facility.
    failure_injection: bool = Field(
        False,
        description="Honour a create request's `_inject` key (tests only; workers/failure_injection.py is "
        "installed only then). Off in production.",
    )
    kill_at: str | None = Field(
        None, description="With failure_injection: SIGKILL this worker at `<step>:<when>[,...]` (when: before, "
        "before_commit, after_commit, revert), once per flow (tests only; workers/failure_injection.py)."
    )
    kill_marks_dir: Path | None = Field(None, description="Where kill_at records the kills done; unset: the temp dir.")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
