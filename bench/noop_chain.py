"""The baseline for bench/chain_throughput.py: a chain of five no-op tasks on volchain's Celery settings.

Same options as `workers.app` (celery_config: JSON, late acks, prefetch 1, no result backend, events
per VOLCHAIN_TASK_EVENTS, default queue `volchain.steps`), so a worker is started exactly like
volchain's: `celery -A bench.noop_chain worker -Q volchain.steps,volchain.compensate`.

Each task returns its argument unchanged. The last one also pushes `"<chain id> <unix time>"` onto
DONE_KEY, one RPUSH: that is how the bench sees a chain end (volchain's last step publishes its cast
and notifies a waiter, so the baseline is not charged for more than volchain is).
"""

from __future__ import annotations

import os
import time
import uuid

import redis
from celery import Celery, chain
from celery.canvas import Signature

from workers.app import celery_config
from workers.settings import get_settings

DONE_KEY = "bench:noop:done"
STEPS = 5

app = Celery("noop_chain")
app.conf.update(celery_config(get_settings()))

_redis: tuple[int, redis.Redis] | None = None


def redis_client() -> redis.Redis:
    """One Redis client per process (pool children must not share their parent's sockets)."""
    global _redis
    if _redis is None or _redis[0] != os.getpid():
        _redis = (os.getpid(), redis.Redis.from_url(get_settings().broker_url))
    return _redis[1]


def _step(payload: dict) -> dict:
    return payload


def _last(payload: dict) -> dict:
    redis_client().rpush(DONE_KEY, f"{payload['id']} {time.time():.6f}")
    return payload


def make_tasks(celery: Celery, prefix: str, step, last) -> list:
    """STEPS tasks named `<prefix>1..5` (late acks, as volchain's steps): `step`, and `last` at the end."""
    return [celery.task(name=f"{prefix}{i}", acks_late=True)(last if i == STEPS else step)
            for i in range(1, STEPS + 1)]


def chain_of(tasks: list, chain_id: str | None = None) -> Signature:
    """The tasks in a row, each handing its payload on; the first task id is the chain id (as
    volchain's flow id)."""
    chain_id = chain_id or str(uuid.uuid4())
    sigs = [tasks[0].s({"id": chain_id}).set(task_id=chain_id)] + [task.s() for task in tasks[1:]]
    return chain(*sigs)


TASKS = make_tasks(app, "bench.noop.step", _step, _last)


def build_chain(chain_id: str | None = None) -> Signature:
    """Five no-op tasks in a row."""
    return chain_of(TASKS, chain_id)
