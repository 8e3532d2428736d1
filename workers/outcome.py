"""Flow outcomes: workers announce a finished flow; callers wait for it without busy polling.

With a Redis broker the worker pushes the end state onto a short-lived list and a waiter
blocks on it (BLPOP), so a notification is never missed the way a pub/sub message can be.
An API process serving many waiters at once subscribes once to a pub/sub channel instead
(api/waiter.py). With the in-process broker a condition variable does the same. Either way the flow log is
the truth: a waiter reads the outcome from the database (the API's waiter skips that read only
for an announced success, which workers announce after its final commit), and falls back to
reading it there when no notification arrives in time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.flow_log import FlowRun, FlowState, TERMINAL_STATES
from tasks import errors

KEY_PREFIX = "volchain:flow-done:"
KEY_TTL_SECONDS = 600
CHANNEL = "volchain:flow-done"  # pub/sub: one subscription per API process serves all its waiters


@dataclass(frozen=True)
class FlowOutcome:
    flow_id: str
    volume_id: str
    state: str
    error: dict[str, Any] | None
    cast: dict[str, Any] | None

    @property
    def finished(self) -> bool:
        return FlowState(self.state) in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == FlowState.SUCCEEDED.value


class _LocalBoard:
    """In-process notifications (embedded mode)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._done: dict[str, str] = {}

    def notify(self, flow_id: str, state: str) -> None:
        with self._cond:
            self._done[flow_id] = state
            self._cond.notify_all()

    def wait(self, flow_id: str, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: flow_id in self._done, timeout=timeout)


_local = _LocalBoard()
_clients: dict[str, redis.Redis] = {}


def _redis(broker_url: str) -> redis.Redis | None:
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    client = _clients.get(broker_url)
    if client is None:
        client = redis.Redis.from_url(broker_url, socket_timeout=None, health_check_interval=30)
        _clients[broker_url] = client
    return client


def notify(broker_url: str, flow_id: str, state: str) -> None:
    """Announce that a flow reached a terminal state (best effort: the log is the truth)."""
    client = _redis(broker_url)
    if client is None:
        _local.notify(flow_id, state)
        return
    key = KEY_PREFIX + flow_id
    pipe = client.pipeline(transaction=False)
    pipe.rpush(key, state)
    pipe.expire(key, KEY_TTL_SECONDS)
    pipe.publish(CHANNEL, f"{flow_id} {state}")
    pipe.execute()


def read_outcome(factory: sessionmaker[Session], flow_id: str) -> FlowOutcome:
    with factory() as session:
        row = session.execute(
            select(FlowRun.volume_id, FlowRun.state, FlowRun.error, FlowRun.steps).where(FlowRun.id == flow_id)
        ).first()
    if row is None:
        raise errors.FlowNotFound(flow_id=flow_id)
    cast = ((row.steps or {}).get("volume_cast") or {}).get("result") or {}
    return FlowOutcome(flow_id, row.volume_id, row.state, row.error, cast.get("cast"))


def wait_for_flow(
    factory: sessionmaker[Session], broker_url: str, flow_id: str, timeout: float = 30.0
) -> FlowOutcome:
    """Block until the flow is finished or `timeout` passes; return what the log says."""
    deadline = time.monotonic() + timeout
    outcome = read_outcome(factory, flow_id)
    client = _redis(broker_url)
    while not outcome.finished:
        left = deadline - time.monotonic()
        if left <= 0:
            return outcome
        # Wake on the notification, or re-read the log at least every 2 s.
        slice_ = min(left, 2.0)
        if client is None:
            _local.wait(flow_id, slice_)
        else:
            client.blpop([KEY_PREFIX + flow_id], timeout=max(slice_, 0.01))
        outcome = read_outcome(factory, flow_id)
    return outcome
