"""Crash-proof, deterministically: a worker SIGKILLed at a chosen point of a flow, and a Redis
killed under load, leave no quota, volume or message lost (issue 12).

A stack of real processes (bench/stack.py) runs on a Redis server of its own: step workers, the
scheduler, a volume service, the sweeper and the API, each restarted by a supervisor when it dies
(compose's restart policy). A worker dies where VOLCHAIN_KILL_AT says (workers/failure_injection.py):
SIGKILL of its whole process group, inside the step's transaction or right after its commit. The
short timeouts keep it quick: a dead worker's message comes back after 5 s, the sweeper finishes
a flow stuck 12 s.

Every case ends with: every flow terminal, no volume left `creating`, no reservation pending,
usage equal to the rows, at most one backend file per volume and none for a volume that is not
live there, and every worker answering.
"""

from __future__ import annotations

import threading
from collections import Counter
import time

import pytest
from sqlalchemy import func, select

from bench.stack import Stack
from tasks import allocation
from models.flow_log import TERMINAL_STATES, FlowRun
from models.quota import Reservation
from models.volume import Volume
from tests.conftest import sessions_of, wait_until

TERMINAL = {state.value for state in TERMINAL_STATES}
STACK_ENV = {
    "VOLCHAIN_FAILURE_INJECTION": "true",
    "VOLCHAIN_VISIBILITY_TIMEOUT": "5",
    "VOLCHAIN_UNACKED_RESTORE_SECONDS": "1",
    "VOLCHAIN_FLOW_DEADLINE_SECONDS": "12",
    "VOLCHAIN_SWEEP_INTERVAL_SECONDS": "1",
    "VOLCHAIN_REPORT_INTERVAL": "1",
    # Longer than a volume service takes to restart: a service that restarts is not "down" (its
    # queue keeps its messages meanwhile), as with the 60 s default.
    "VOLCHAIN_SERVICE_DOWN_TIME": "20",
    "VOLCHAIN_AZ_CACHE_SECONDS": "0",
    "VOLCHAIN_STORAGE_AVAILABILITY_ZONE": "crash",
    "VOLCHAIN_API_WAIT_SECONDS": "0",
    "VOLCHAIN_TASK_EVENTS": "false",
}


@pytest.fixture(scope="module")
def crash_db(stack):
    with sessions_of(stack.database_url) as factory:
        yield factory


@pytest.fixture(scope="module")
def stack(own_database, tmp_path_factory):
    s = Stack(own_database, tmp_path_factory.mktemp("crash"), env=STACK_ENV)
    s.add_steps()
    s.add_scheduler()
    s.host = s.add_volume("crashnode", "crash")
    s.add_sweeper()
    s.add_api()
    try:
        s.start()
        yield s
    finally:
        s.stop()


def settle(stack: Stack, db, project: str, timeout: float = 60.0) -> dict[str, str]:
    """Wait until every flow of `project` has ended and no volume of it is `creating`; then check
    everything the issue asks of an end state. Returns volume id -> status (live volumes)."""

    def settled():
        with db() as s:
            states = set(s.scalars(select(FlowRun.state).where(FlowRun.project_id == project)))
            creating = s.scalar(select(func.count()).select_from(Volume).where(
                Volume.project_id == project, Volume.status == "creating", Volume.deleted.is_(False)))
        return states and states <= TERMINAL and not creating

    wait_until(settled, timeout, 0.25, what=f"every flow of project {project} ending")
    with db() as s:
        from tests.invariant import assert_quota_consistent

        assert_quota_consistent(s, project)
        assert allocation.drift(s) == {}, "a backend's allocation counter differs from its rows"
        assert s.scalar(select(func.count()).select_from(Reservation).where(
            Reservation.project_id == project)) == 0, "a reservation is still pending"
        live = {v.id: v for v in s.scalars(select(Volume).where(Volume.project_id == project,
                                                                  Volume.deleted.is_(False)))}
    files = stack.backend_files()[stack.host]
    for volume_id in files:  # no backend volume left behind by a create that did not end on it
        if _project_of(db, volume_id) == project:
            assert volume_id in live and live[volume_id].host, f"backend file of volume {volume_id}, not live there"
    for volume_id, vol in live.items():
        if vol.status == "available":
            assert volume_id in files, f"available volume {volume_id} has no backend file"
    wait_until(lambda: stack.pings() == stack.celery_roles(), 60, 0.5, what="every worker answering a ping")
    return {volume_id: vol.status for volume_id, vol in live.items()}


def _project_of(db, volume_id: str) -> str | None:
    with db() as s:
        return s.scalar(select(Volume.project_id).where(Volume.id == volume_id))


def _flow(db, flow_id: str) -> FlowRun:
    with db() as s:
        return s.get(FlowRun, flow_id)


# (role, kill point, request) -> the end the create must reach.
KILLS = {
    "between reserve and commit": ("steps", "quota_commit:before", {}, "available"),
    "inside entry_create": ("steps", "entry_create:before_commit", {}, "available"),
    "after quota_commit": ("steps", "quota_commit:after_commit", {}, "available"),
    "during the cast": ("steps", "volume_cast:before_commit", {}, "available"),
    "during a compensation": ("steps", "entry_create:revert", {"_inject": {"step": "volume_cast", "when": "before"}},
                              "error"),
    "inside the scheduler": ("scheduler", "schedule_volume:before_commit", {}, "available"),
    "inside the volume manager": ("crashnode", "create_on_backend:before_commit", {}, "available"),
}


@pytest.mark.parametrize("case", list(KILLS))
def test_a_worker_killed_mid_flow_is_redelivered_and_the_flow_ends(stack, crash_db, project, case):
    db = crash_db
    role, point, request, end = KILLS[case]
    stack.restart(role, VOLCHAIN_KILL_AT=point)
    try:
        stack.wait_ready()
        restarts = stack.roles[role].restarts
        redelivered = stack.log_count(role, "redelivered: ")
        marks = lambda: len(list(stack.workdir.glob(f"*.{point.replace(':', '.')}")))  # noqa: E731 (a kill, a mark)
        killed_before = marks()
        flow_id, volume_id = stack.submit(project, size=1, **request)

        statuses = settle(stack, db, project)
        assert marks() == killed_before + 1, f"nothing was killed at {point}"
        assert stack.roles[role].restarts == restarts + 1, f"{role} did not die at {point}"
        # Finished by the message coming back to the restarted worker, not by the sweeper.
        assert stack.log_count(role, "redelivered: ") > redelivered, f"no message came back to {role}"
        if end == "available":
            assert statuses == {volume_id: "available"}
            assert _flow(db, flow_id).state == "succeeded"
        else:  # the compensation finished after the kill: the committed volume is kept as `error`
            assert statuses == {volume_id: "error"}
            assert _flow(db, flow_id).state == "reverted"
    finally:
        stack.restart(role)


def _under_load(stack: Stack, project: str, hurt) -> list[str]:
    """Creates through the API from two clients while `hurt()` runs; the ids of the accepted ones.
    A create refused meanwhile must be refused with 503 (the broker is away), nothing else."""
    accepted: list[str] = []
    refused: list[tuple[int, dict]] = []
    stop = threading.Event()
    status, body = stack.api("PUT", f"/os-quota-sets/{project}", project,
                             {"quota_set": {"volumes": -1, "gigabytes": -1}})
    assert status == 200, body

    def load():
        while not stop.is_set():
            status, body = stack.api("POST", "/volumes", project, {"volume": {"size": 1}})
            if status == 202:
                accepted.append(body["volume"]["id"])
            else:
                refused.append((status, body))
            time.sleep(0.05)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        hurt()
        time.sleep(3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert accepted, "no create was accepted"
    assert {status for status, _ in refused} <= {503}, f"a create refused with something other than 503: {refused}"
    for _, body in refused:  # an outage is told in general words: no host, port or class of ours
        assert body == {"serviceUnavailable": {"code": 503, "message": body["serviceUnavailable"]["message"]}}
        assert "127.0.0.1" not in body["serviceUnavailable"]["message"]
        assert str(stack.redis.port) not in body["serviceUnavailable"]["message"]
        assert "Error" not in body["serviceUnavailable"]["message"]
    return accepted


def _every_accepted_create_ends_available(stack: Stack, db, project: str, accepted: list[str]) -> None:
    statuses = settle(stack, db, project, timeout=120)
    ends = {}
    for volume_id in accepted:  # accepted means it ends, visible: never a 404
        status, body = stack.api("GET", f"/volumes/{volume_id}", project)
        assert status == 200, (volume_id, status, body)
        ends[volume_id] = body["volume"]["status"]
    # A lost message is re-driven or finished by the sweeper, never failed for being lost.
    failed = [v for v, status in ends.items() if status != "available"]
    if failed:
        with db() as s:
            why = Counter((f.kind, f.state, f.failed_step, (f.error or {}).get("type"), (f.error or {}).get("message"))
                          for f in s.scalars(select(FlowRun).where(FlowRun.volume_id.in_(failed))))
        pytest.fail(f"{len(failed)} of {len(ends)} accepted creates ended in error: {dict(why)}")
    assert set(accepted) <= set(statuses)
    # A worker that gave up on the broker exited non-zero, for its supervisor to restart it.
    for role in stack.roles.values():
        assert 0 not in role.exits, f"{role.name} exited 0 after losing the broker: no supervisor would restart it"
    # And every worker consumes again: one more create ends `available`.
    status, body = stack.api("POST", "/volumes", project, {"volume": {"size": 1}})
    assert status == 202, body
    assert settle(stack, db, project)[body["volume"]["id"]] == "available"


def test_redis_killed_twice_within_15_s_under_load_loses_nothing(stack, crash_db, project):
    db = crash_db
    """Redis SIGKILLed and restarted empty twice within 15 s: queued messages are lost."""

    def twice():
        started = time.monotonic()
        stack.redis.restart(down=2)
        time.sleep(3)
        stack.redis.restart(down=2)
        assert time.monotonic() - started < 15

    _every_accepted_create_ends_available(stack, db, project, _under_load(stack, project, twice))


def test_redis_killed_with_unacked_messages_in_flight_loses_nothing(stack, crash_db, project):
    db = crash_db
    """Redis SIGKILLed at a moment when workers hold delivered, unacknowledged messages."""
    seen = []

    def with_unacked():
        wait_until(lambda: seen.append(stack.redis.unacked()) or seen[-1] > 0, 30, 0.01,
                   what="a message delivered and not acknowledged")
        stack.redis.restart(down=2)

    _every_accepted_create_ends_available(stack, db, project, _under_load(stack, project, with_unacked))
