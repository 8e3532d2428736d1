"""Each backend's allocated capacity is a counter the scheduler reads in one row (tasks/allocation.py),
kept in the transactions that change what a backend holds; the reconciler puts it right."""

import uuid

import pytest
from sqlalchemy import create_engine, text

from bench.harness import create_database, drop_database
from models.allocation import Allocation
from tasks import allocation, reconcile
from tasks.quota_engine import QuotaConfig
from tests import factories
from tests.conftest import PG_BASE


def _host() -> str:
    return f"alloc-{uuid.uuid4().hex[:8]}@file"


def test_a_pool_counts_its_own_volumes_and_those_recorded_without_a_pool(db):
    host = _host()
    with db() as s, s.begin():
        allocation.charge(s, f"{host}#a", 5)
        allocation.charge(s, f"{host}#a", 3)
        allocation.charge(s, f"{host}#b", 2)
        allocation.charge(s, host, 1)  # a volume recorded without its pool
        allocation.charge(s, f"{host}#a", -4)
        allocation.charge(s, None, 7)  # no host: nothing is held anywhere
    with db() as s:
        assert allocation.allocated(s, [f"{host}#a", f"{host}#b", f"{host}#c"]) == {
            f"{host}#a": 5, f"{host}#b": 3, f"{host}#c": 1}


def test_repair_sets_each_counter_to_what_the_rows_hold(db, project):
    host = f"{_host()}#pool"
    vol = factories.volume(db, project, size=4, host=host)  # made without the chain: not counted
    factories.snapshot(db, project, vol)  # 4 GB more on the same backend
    gone = factories.volume(db, project, size=9, host=host, status="deleted")
    with db() as s, s.begin():
        s.get(type(gone), gone.id).deleted = True
        allocation.charge(s, host, 100)  # a counter gone wrong
    with db() as s:
        assert allocation.drift(s)[host] == (100, 8)
    with db() as s, s.begin():
        assert allocation.repair(s)[host] == (100, 8)
    with db() as s:
        assert host not in allocation.drift(s)
        assert s.get(Allocation, host).allocated_gb == 8


def test_quota_sync_of_the_whole_deployment_repairs_the_counters_too(db, project):
    host = f"{_host()}#pool"
    factories.volume(db, project, size=6, host=host)
    reconcile.sync(db, QuotaConfig())
    with db() as s:
        assert s.get(Allocation, host).allocated_gb == 6


@pytest.fixture
def fresh_empty_database():
    """A database with no schema, dropped afterwards."""
    name, admin = create_database(PG_BASE)
    try:
        yield f"{PG_BASE}/{name}"
    finally:
        drop_database(admin, name)


def test_upgrading_from_0009_fills_the_counters(fresh_empty_database):
    from models.migrate import upgrade

    upgrade(fresh_empty_database, "0009")
    engine = create_engine(fresh_empty_database)
    try:
        with engine.begin() as conn:
            for vid, size, host, deleted in (("v1", 3, "n1@file#p", False), ("v2", 5, "n1@file#p", False),
                                              ("v3", 7, "n1@file#p", True), ("v4", 2, None, False),
                                              ("v5", 4, "n2@file", False)):
                conn.execute(text(
                    "INSERT INTO volumes (id, project_id, size, status, host, deleted, attach_status, use_quota, "
                    "multiattach, bootable, shared_targets, created_at, volume_type_id) VALUES (:id, 'p', :size, 'available', :host, "
                    ":deleted, 'detached', true, false, false, true, now(), (SELECT id FROM volume_types LIMIT 1))"),
                    {"id": vid, "size": size, "host": host, "deleted": deleted})
            conn.execute(text(
                "INSERT INTO snapshots (id, project_id, volume_id, volume_size, status, deleted, use_quota, "
                "created_at) VALUES ('s1', 'p', 'v1', 3, 'available', false, true, now())"))
        upgrade(fresh_empty_database)
        with engine.connect() as conn:
            counted = dict(conn.execute(text("SELECT host, allocated_gb FROM allocations")).all())
    finally:
        engine.dispose()
    assert counted == {"n1@file#p": 11, "n2@file": 4}
