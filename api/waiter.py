"""Wait for many flows at once in one API process, without polling the database per request.

One Redis pub/sub subscription per process receives every "flow finished" announcement and
wakes the requests waiting for that flow. The flow log stays the truth: a woken request reads
its outcome from the database, and a request that hears nothing (a missed pub/sub message)
re-reads it every `fallback_seconds` until its own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from workers import outcome

log = logging.getLogger(__name__)


class FlowWaiter:
    def __init__(self, factory: sessionmaker[Session], broker_url: str, fallback_seconds: float = 2.0) -> None:
        self._factory = factory
        self._broker_url = broker_url
        self._fallback = fallback_seconds
        self._waiting: dict[str, set[asyncio.Future]] = {}
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
                    flow_id = message["data"].decode().split(" ", 1)[0]
                    for fut in self._waiting.get(flow_id, ()):
                        if not fut.done():
                            fut.set_result(None)
            except asyncio.CancelledError:
                raise
            except Exception:  # reconnect; waiters meanwhile fall back to reading the log
                log.warning("flow waiter: subscription lost; reconnecting", exc_info=True)
                await asyncio.sleep(0.5)

    async def wait(self, flow_id: str, timeout: float) -> outcome.FlowOutcome:
        """The flow's outcome once it is finished, or its current state after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()
        self._waiting.setdefault(flow_id, set()).add(fut)
        try:
            # Registered before the first read, so an announcement in between is not lost.
            result = await run_in_threadpool(outcome.read_outcome, self._factory, flow_id)
            while not result.finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), timeout=min(left, self._fallback))
                result = await run_in_threadpool(outcome.read_outcome, self._factory, flow_id)
            return result
        finally:
            waiters = self._waiting.get(flow_id)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    self._waiting.pop(flow_id, None)
