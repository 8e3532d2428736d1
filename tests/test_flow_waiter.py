"""The API's flow waiter: one pub/sub subscription, announcements remembered, the log as fallback."""

import asyncio
import contextlib
import uuid

import pytest

from api import waiter as waiter_module
from api.waiter import FlowWaiter
from tests.conftest import REDIS_URL
from workers import outcome


class _NoReads:
    """A session factory that fails the test if the waiter reads the flow log."""

    def __call__(self):
        raise AssertionError("the waiter read the flow log")


def _run(coro):
    return asyncio.run(coro)


@contextlib.asynccontextmanager
async def _running(**kwargs):
    """A started waiter that may not read the flow log (tests patch `read_outcome` where it should)."""
    waiter = FlowWaiter(_NoReads(), REDIS_URL, **kwargs)
    await waiter.start()
    try:
        yield waiter
    finally:
        await waiter.stop()


def test_an_announced_success_answers_without_reading_the_log():
    flow_id, volume_id = str(uuid.uuid4()), str(uuid.uuid4())

    async def scenario():
        async with _running() as waiter:
            pending = asyncio.create_task(waiter.wait(flow_id, 5, volume_id=volume_id, just_submitted=True))
            await asyncio.sleep(0.05)
            assert not pending.done()
            outcome.notify(REDIS_URL, flow_id, "succeeded")
            return await asyncio.wait_for(pending, 2)

    result = _run(scenario())
    assert (result.flow_id, result.volume_id, result.state, result.error) == (flow_id, volume_id, "succeeded", None)


def test_an_announcement_heard_before_the_wait_began_is_not_lost():
    flow_id, volume_id = str(uuid.uuid4()), str(uuid.uuid4())

    async def scenario():
        async with _running() as waiter:
            outcome.notify(REDIS_URL, flow_id, "succeeded")
            for _ in range(100):  # until the subscription has delivered it
                if flow_id in waiter._recent:
                    break
                await asyncio.sleep(0.01)
            started = asyncio.get_running_loop().time()
            result = await waiter.wait(flow_id, 5, volume_id=volume_id, just_submitted=True)
            return result, asyncio.get_running_loop().time() - started

    result, took = _run(scenario())
    assert result.state == "succeeded"
    assert took < 0.5  # not the 2 s fallback


def test_a_failure_announcement_is_read_from_the_log(monkeypatch):
    flow_id = str(uuid.uuid4())
    reads = []
    failed = outcome.FlowOutcome(flow_id, "v", "reverted", {"code": 413, "message": "over"}, None)
    monkeypatch.setattr(outcome, "read_outcome", lambda factory, fid: reads.append(fid) or failed)

    async def scenario():
        async with _running() as waiter:
            pending = asyncio.create_task(waiter.wait(flow_id, 5, volume_id="v", just_submitted=True))
            await asyncio.sleep(0.05)
            outcome.notify(REDIS_URL, flow_id, "reverted")
            return await asyncio.wait_for(pending, 2)

    assert _run(scenario()) == failed
    assert reads == [flow_id]


def test_remembered_announcements_are_bounded(monkeypatch):
    monkeypatch.setattr(waiter_module, "RECENT_MAX", 3)
    waiter = FlowWaiter(_NoReads(), REDIS_URL)
    for i in range(5):
        waiter._remember(f"flow-{i}", "succeeded")
    assert list(waiter._recent) == ["flow-2", "flow-3", "flow-4"]


@pytest.mark.parametrize("replayed", [True, False])
def test_without_an_announcement_the_log_is_read_after_the_fallback(monkeypatch, replayed):
    flow_id = str(uuid.uuid4())
    done = outcome.FlowOutcome(flow_id, "v", "succeeded", None, None)
    reads = []
    monkeypatch.setattr(outcome, "read_outcome", lambda factory, fid: reads.append(fid) or done)

    async def scenario():
        async with _running(fallback_seconds=0.2) as waiter:
            started = asyncio.get_running_loop().time()
            result = await waiter.wait(flow_id, 5, volume_id="v", just_submitted=not replayed)
            return result, asyncio.get_running_loop().time() - started

    result, took = _run(scenario())
    assert result == done
    assert reads == [flow_id]
    # A replayed submission may have finished long ago: it is read at once; a fresh one after the fallback.
    assert took < 0.15 if replayed else took >= 0.2
