"""Quota under contention: many concurrent creates for one project never overrun its limit."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from models.quota import QuotaUsage, Reservation
from models.volume import Volume
from tests import factories
from workers.submit import submit_create_volume, wait_for_flow

CREATES = 200
LIMIT = 50
THREADS = 16
TOTAL_TIMEOUT = 120.0


def test_two_hundred_concurrent_creates_against_a_limit_of_fifty_make_exactly_fifty_volumes(
    workers, db, redis_client, project, check_invariant
):
    factories.set_quota(db, project, volumes=LIMIT)
    ctx = factories.member(project)

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        submissions = list(pool.map(lambda i: submit_create_volume(ctx, size=1, name=f"race-{i}"), range(CREATES)))
    assert len({s.flow_id for s in submissions}) == CREATES

    deadline = time.monotonic() + TOTAL_TIMEOUT
    outcomes = [wait_for_flow(s.flow_id, timeout=max(deadline - time.monotonic(), 0.1)) for s in submissions]

    states = Counter(o.state for o in outcomes)
    assert states == {"succeeded": LIMIT, "reverted": CREATES - LIMIT}, states
    expected_error = {
        "type": "VolumeLimitExceeded",
        "code": 413,
        "message": f"Maximum number of volumes allowed ({LIMIT}) exceeded for quota 'volumes'.",
    }
    for o in outcomes:
        if o.state == "reverted":
            assert o.error == expected_error

    succeeded = {o.volume_id for o in outcomes if o.state == "succeeded"}
    with db() as s:
        live = set(s.scalars(select(Volume.id).where(Volume.project_id == project, Volume.deleted.is_(False))))
        all_rows = s.scalar(select(func.count()).select_from(Volume).where(Volume.project_id == project))
        usage = {u.resource: (u.in_use, u.reserved)
                 for u in s.scalars(select(QuotaUsage).where(QuotaUsage.project_id == project))}
        reservations = s.scalar(select(func.count()).select_from(Reservation).where(Reservation.project_id == project))
    assert live == succeeded
    assert all_rows == LIMIT  # the refused creates never inserted a row
    assert usage["volumes"] == (LIMIT, 0)
    assert usage["gigabytes"] == (LIMIT, 0)
    assert usage["volumes___DEFAULT__"] == (LIMIT, 0)
    assert reservations == 0
    assert sum(len(factories.casts_for(redis_client, "scheduler", v)) for v in succeeded) == LIMIT
    check_invariant(project)
