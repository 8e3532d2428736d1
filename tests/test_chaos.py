"""Chaos in CI (bench/chaos.py, short): creates, deletes and snapshots through the API across two
step workers, the scheduler and two volume services, while workers are SIGKILLed about every
second and Redis restarts twice. Nothing may leak, double or vanish, and every operation ends
within one sweeper period plus the deadline after the chaos stops. `python bench/chaos.py` runs
a longer one."""

import pytest

from bench import chaos


@pytest.mark.chaos
def test_chaos_leaks_nothing_doubles_nothing_and_loses_no_accepted_create(own_database, tmp_path):
    report = chaos.run(own_database, tmp_path, seconds=30, clients=3, kill_every=1.0, broker_restarts=2, seed=12)
    print("\n".join(report.lines()))
    assert sum(report.kills.values()) >= 15, report.kills  # the chaos happened
    assert sum(n for op, n in report.ops.items() if op.startswith(("delete 202", "snapshot 202"))) >= 5, report.ops
    assert report.broker_restarts == 2
    assert report.accepted, report.ops
    assert report.leaked_quota == 0
    assert report.duplicate_backend_volumes == 0
    assert report.vanished == 0
    assert report.settled_after <= report.bound, "an operation took longer than a sweep period plus the deadline"
