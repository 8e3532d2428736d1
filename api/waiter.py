"""Wait for many flows at once in one API process, without polling the database per request.

One Redis pub/sub subscription per process receives every "flow finished" announcement and
wakes the requests waiting for that flow. The flow log stays the truth for failures: a request
woken by anything but `succeeded` reads its outcome (the error) from the database. A success
needs no read here: workers announce it only after the flow's final step committed, and the
caller reads the new volume row next anyway. A request that hears nothing (a missed pub/sub
message) re-reads the log every `fallback_seconds` until its own deadline.

Announcements are also kept for a few seconds (a bounded map), so a request that starts waiting
after its flow was announced needs no first read of the log either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict

import redis.asyncio as aioredis
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from models.flow_log import FlowState
from workers import outcome

log = logging.getLogger(__name__)

RECENT_MAX = 10_000  # announcements remembered per API process
RECENT_SECONDS = 30.0


class FlowWaiter:
    def __init__(self, factory: sessionmaker[Session], broker_url: str, fallback_seconds: float = 2.0) -> None:
        self._factory = factory
        self._broker_url = broker_url
        self._fallback = fallback_seconds
        self._waiting: dict[str, set[asyncio.Future]] = {}
        self._recent: OrderedDict[str, tuple[str, float]] = OrderedDict()  # flow id -> (state, heard at)
        self._task: asyncio.Task | None = None
        self._redis: aioredis.Redis | None = None
        self._subscribed = asyncio.Event()

    @property
    def uses_pubsub(self) -> bool:
        return self._broker_url.startswith(("redis://", "rediss://", "unix://"))

    async def start(self) -> None:
        if not self.uses_pubsub:
            self._fallback = 0.05  # embedded broker: nothing announces across processes; re-read often
            return
        self._redis = aioredis.Redis.from_url(self._broker_url)
        self._task = asyncio.create_task(self._listen(), name="volchain-flow-waiter")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), timeout=5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._redis is not None:
            await self._redis.aclose()

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(outcome.CHANNEL)
                self._subscribed.set()
                async for message in pubsub.listen():
                    flow_id, _, state = message["data"].decode().partition(" ")
                    self._remember(flow_id, state)
                    for fut in self._waiting.get(flow_id, ()):
                        if not fut.done():
                            fut.set_result(state)
            except asyncio.CancelledError:
                raise
            except Exception:  # reconnect; waiters meanwhile fall back to reading the log
                log.warning("flow waiter: subscription lost; reconnecting", exc_info=True)
                await asyncio.sleep(0.5)

    def _remember(self, flow_id: str, state: str) -> None:
        now = time.monotonic()
        self._recent[flow_id] = (state, now)
        self._recent.move_to_end(flow_id)
        while self._recent:
            _state, oldest = next(iter(self._recent.values()))
            if len(self._recent) <= RECENT_MAX and oldest >= now - RECENT_SECONDS:
                break
            self._recent.popitem(last=False)

    async def wait(self, flow_id: str, timeout: float, volume_id: str | None = None,
                   just_submitted: bool = False) -> outcome.FlowOutcome:
        """The flow's outcome once it is finished, or its current state after `timeout` seconds.

        `volume_id`, when the caller knows it, lets an announced success answer without a read.
        `just_submitted` (the caller started this flow a moment ago, so it cannot have been
        announced before this process subscribed) skips the first read of the log.
        """
        deadline = time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._waiting.setdefault(flow_id, set()).add(fut)
        try:
            # Registered before the first look, so an announcement in between is not lost.
            heard = self._recent.get(flow_id)
            if heard is not None:
                fut.set_result(heard[0])
            elif not (self.uses_pubsub and just_submitted):
                result = await run_in_threadpool(outcome.read_outcome, self._factory, flow_id)
                if result.finished:
                    return result
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or fut.done():
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), timeout=min(left, self._fallback))
                if fut.done():
                    break
                result = await run_in_threadpool(outcome.read_outcome, self._factory, flow_id)
                if result.finished:
                    return result
            if fut.done() and fut.result() == FlowState.SUCCEEDED.value and volume_id is not None:
                return outcome.FlowOutcome(flow_id, volume_id, FlowState.SUCCEEDED.value, None, None)
            return await run_in_threadpool(outcome.read_outcome, self._factory, flow_id)
        finally:
            waiters = self._waiting.get(flow_id)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    self._waiting.pop(flow_id, None)
