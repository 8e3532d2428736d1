"""The quota reconciler on the real PostgreSQL test database: check finds drift, sync repairs it.

Drift is made by editing quota_usages directly, after usage was charged the way flows charge it
(reserve, then commit in the transaction that inserts the row). Each test owns its projects.
"""

from __future__ import annotations

import json
import threading
import time

from sqlalchemy import delete, select, text, update

from models import new_id
from models.flow_log import FlowRun
from models.quota import QuotaUsage
from models.quota_repair import QuotaRepair, RepairSource
from models.snapshot import Snapshot
from models.volume import Volume
from tasks import quota_engine as qe, reconcile, usage
from tests import factories
from tests.test_cli import assert_one_line_error, volchain

CONFIG = qe.QuotaConfig()
TYPE = "__DEFAULT__"  # factories.DEFAULT_TYPE_ID's name: every volume also charges volumes___DEFAULT__ etc.


# -- helpers -----------------------------------------------------------------------------------------

def charge(db, project: str, deltas: dict[str, int], row=None) -> None:
    """Reserve and commit `deltas`, inserting `row` in the same transaction (a flow's quota change)."""
    with db() as s, s.begin():
        uuids = qe.reserve(s, project, deltas, CONFIG)
        if row is not None:
            s.add(row)
        qe.commit(s, uuids)


def new_volume(db, project: str, size: int) -> Volume:
    vol = Volume(id=new_id(), project_id=project, size=size, status="available", host="node1@lvm#pool",
                 volume_type_id=factories.DEFAULT_TYPE_ID, use_quota=True)
    charge(db, project, usage.volume_deltas(TYPE, size), vol)
    return vol


def new_snapshot(db, project: str, vol: Volume) -> None:
    snap = Snapshot(project_id=project, volume_id=vol.id, volume_size=vol.size,
                    volume_type_id=vol.volume_type_id, use_quota=True)
    charge(db, project, usage.snapshot_deltas(TYPE, vol.size, CONFIG), snap)


def set_usage(db, project: str, resource: str, **values: int) -> None:
    with db() as s, s.begin():
        s.execute(update(QuotaUsage).where(QuotaUsage.project_id == project, QuotaUsage.resource == resource)
                  .values(**values))


def usage_of(db, project: str, resource: str) -> tuple[int, int] | None:
    with db() as s:
        row = s.execute(select(QuotaUsage.in_use, QuotaUsage.reserved)
                        .where(QuotaUsage.project_id == project, QuotaUsage.resource == resource)).first()
    return None if row is None else tuple(row)


def check(db, project: str | None = None) -> list[reconcile.Drift]:
    with reconcile.consistent_session(db) as s:
        return reconcile.check(s, CONFIG, project)


def repairs_recorded(db, project: str) -> list[tuple]:
    with db() as s:
        return [tuple(r) for r in s.execute(
            select(QuotaRepair.resource, QuotaRepair.field, QuotaRepair.old, QuotaRepair.new, QuotaRepair.source)
            .where(QuotaRepair.project_id == project).order_by(QuotaRepair.resource, QuotaRepair.field))]


def drifting_project(db, project: str) -> None:
    """Volumes of 3 and 4 GB, a snapshot of the first, 5 GB held by a pending reservation; then
    volumes in_use too high, gigabytes in_use too low, snapshots reserved wrong, and the
    volumes___DEFAULT__ usage row gone."""
    vol = new_volume(db, project, 3)
    new_volume(db, project, 4)
    new_snapshot(db, project, vol)
    with db() as s, s.begin():
        qe.reserve(s, project, {"gigabytes": 5}, CONFIG)
    assert check(db, project) == []
    set_usage(db, project, "volumes", in_use=5)
    set_usage(db, project, "gigabytes", in_use=7)
    set_usage(db, project, "snapshots", reserved=2)
    with db() as s, s.begin():
        s.execute(delete(QuotaUsage).where(QuotaUsage.project_id == project, QuotaUsage.resource == f"volumes_{TYPE}"))


EXPECTED_DRIFT = [
    # resource, stored in_use, stored reserved, expected in_use, expected reserved
    ("gigabytes", 7, 5, 10, 5),
    ("snapshots", 1, 2, 1, 0),
    ("volumes", 5, 0, 2, 0),
    (f"volumes_{TYPE}", None, None, 2, 0),
]


def as_rows(drifts: list[reconcile.Drift]) -> list[tuple]:
    return [(d.resource, d.in_use, d.reserved, d.expected_in_use, d.expected_reserved) for d in drifts]


# -- check and sync ------------------------------------------------------------------------------------

def test_check_finds_exactly_the_usage_rows_that_differ_from_the_rows(db, project):
    drifting_project(db, project)
    drifts = check(db, project)
    assert {d.project_id for d in drifts} == {project}
    assert as_rows(drifts) == EXPECTED_DRIFT
    # Checking every project finds the same for this one.
    assert as_rows([d for d in check(db) if d.project_id == project]) == EXPECTED_DRIFT


def test_sync_repairs_the_drift_records_each_repair_and_a_second_sync_repairs_nothing(db, project, check_invariant):
    drifting_project(db, project)
    repairs = reconcile.sync(db, CONFIG, project, RepairSource.SCHEDULED)
    expected = [
        ("gigabytes", "in_use", 7, 10, "scheduled"),
        ("snapshots", "reserved", 2, 0, "scheduled"),
        ("volumes", "in_use", 5, 2, "scheduled"),
        (f"volumes_{TYPE}", "in_use", None, 2, "scheduled"),
    ]
    assert sorted((r.resource, r.field, r.old, r.new, "scheduled") for r in repairs) == expected
    assert repairs_recorded(db, project) == expected
    assert usage_of(db, project, "gigabytes") == (10, 5)
    assert usage_of(db, project, f"volumes_{TYPE}") == (2, 0)
    assert check(db, project) == []
    check_invariant(project)
    assert reconcile.sync(db, CONFIG, project) == []
    assert len(repairs_recorded(db, project)) == 4


def test_check_and_sync_of_one_project_leave_the_others_alone(db):
    mine, other = new_id(), new_id()
    for p in (mine, other):
        new_volume(db, p, 2)
        set_usage(db, p, "volumes", in_use=9)
    assert [d.resource for d in check(db, mine)] == ["volumes"]
    assert [r.project_id for r in reconcile.sync(db, CONFIG, mine)] == [mine]
    assert check(db, mine) == []
    assert usage_of(db, other, "volumes") == (9, 0)


def test_a_create_between_entry_create_and_quota_commit_is_not_drift(db, project, check_invariant):
    """Its volume row exists and counts once committed; until then its amount is in `reserved`."""
    deltas = usage.volume_deltas(TYPE, 3)
    with db() as s, s.begin():
        uuids = qe.reserve(s, project, deltas, CONFIG)
    vol = Volume(id=new_id(), project_id=project, size=3, status="creating",
                 volume_type_id=factories.DEFAULT_TYPE_ID, use_quota=True)
    flow = FlowRun(id=new_id(), volume_id=vol.id, project_id=project, request={},
                   steps={"quota_reserve": {"state": "done"}, "entry_create": {"state": "done"}})
    with db() as s, s.begin():
        s.add_all([flow, vol])
    assert check(db, project) == []
    assert reconcile.sync(db, CONFIG, project) == []
    with db() as s, s.begin():
        qe.commit(s, uuids)
        s.get(FlowRun, flow.id).steps = {**flow.steps, "quota_commit": {"state": "done"}}
    assert check(db, project) == []
    assert usage_of(db, project, "gigabytes") == (3, 0)
    check_invariant(project)


# -- racing live quota changes -------------------------------------------------------------------------

def wait_for_lock_wait(db, timeout: float = 10.0) -> None:
    """Until some backend of this database waits for a row lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db() as s:
            if s.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                             "AND wait_event_type = 'Lock'")):
                return
        time.sleep(0.02)
    raise AssertionError("the repair never waited for the usage row lock")


def test_a_repair_waiting_on_a_reserve_counts_what_it_reserved(db, project, check_invariant):
    """The repair's check saw reserved 0; the reserve commits while the repair waits for its lock;
    the recount under the lock sees the reservation and repairs only in_use."""
    new_volume(db, project, 2)
    set_usage(db, project, "gigabytes", in_use=9)
    result: list = []
    with db() as s, s.begin():
        qe.reserve(s, project, {"gigabytes": 3}, CONFIG)  # holds the gigabytes row until commit
        repairer = threading.Thread(target=lambda: result.append(reconcile.sync(db, CONFIG, project)))
        repairer.start()
        wait_for_lock_wait(db)
    repairer.join(10)
    assert [(r.resource, r.field, r.old, r.new) for r in result[0]] == [("gigabytes", "in_use", 9, 2)]
    assert usage_of(db, project, "gigabytes") == (2, 3)
    assert check(db, project) == []
    check_invariant(project)


def test_repairs_racing_reserves_and_commits_leave_no_drift(db, project, check_invariant):
    factories.set_quota(db, project, volumes=-1, gigabytes=-1)
    new_volume(db, project, 1)
    set_usage(db, project, "volumes", in_use=7)
    stop = threading.Event()
    errors: list[BaseException] = []

    def flows() -> None:
        try:
            for size in range(1, 31):
                with db() as s, s.begin():  # reserve: the amount is pending
                    uuids = qe.reserve(s, project, usage.volume_deltas(TYPE, size), CONFIG)
                vol = Volume(id=new_id(), project_id=project, size=size, status="available",
                             volume_type_id=factories.DEFAULT_TYPE_ID, use_quota=True)
                with db() as s, s.begin():  # the row and the commit together
                    s.add(vol)
                    qe.commit(s, uuids)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            stop.set()

    def repairs() -> None:
        try:
            while not stop.is_set():
                reconcile.sync(db, CONFIG, project)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=flows), threading.Thread(target=repairs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert check(db, project) == []
    assert usage_of(db, project, "volumes") == (31, 0)
    check_invariant(project)
    # The only repair took away the 6 volumes added on purpose (flows may have committed first).
    assert [(res, field, old - new, source) for res, field, old, new, source in repairs_recorded(db, project)] == [
        ("volumes", "in_use", 6, "manual")]


# -- the scheduled task --------------------------------------------------------------------------------

def test_the_scheduled_task_repairs_and_stands_aside_while_another_pass_holds_the_lock(db, project):
    from workers.reconciler import LOCK_ID, reconcile_task

    new_volume(db, project, 2)
    set_usage(db, project, "volumes", in_use=4)
    with db() as s:
        s.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_ID})
        assert reconcile_task(project_id=project) == {"leader": False}
        s.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_ID})
    done = reconcile_task(project_id=project)
    assert done["leader"] is True
    assert [(r["resource"], r["old"], r["new"]) for r in done["repairs"]] == [("volumes", 4, 1)]
    assert repairs_recorded(db, project) == [("volumes", "in_use", 4, 1, "scheduled")]


# -- volchain quota check ------------------------------------------------------------------------------

def test_quota_check_exits_1_on_drift_and_sync_repairs_it(database_url, db, project, check_invariant):
    drifting_project(db, project)
    found = volchain("quota", "check", "--project", project)
    assert found.returncode == 1, (found.stdout, found.stderr)
    lines = [line.split() for line in found.stdout.splitlines()]
    assert lines[0] == ["PROJECT", "RESOURCE", "IN_USE", "RESERVED", "EXPECTED_IN_USE", "EXPECTED_RESERVED"]
    assert [project, "volumes", "5", "0", "2", "0"] in lines
    assert [project, f"volumes_{TYPE}", "-", "-", "2", "0"] in lines

    as_json = volchain("quota", "check", "--project", project, "--json")
    assert as_json.returncode == 1
    out = json.loads(as_json.stdout)
    assert out["repaired"] == []
    assert [(d["resource"], d["in_use"], d["reserved"], d["expected_in_use"], d["expected_reserved"])
            for d in out["drift"]] == EXPECTED_DRIFT

    synced = volchain("quota", "check", "--project", project, "--sync", "--json")
    assert synced.returncode == 0, (synced.stdout, synced.stderr)
    out = json.loads(synced.stdout)
    assert out["drift"] == []
    assert sorted((r["resource"], r["field"], r["old"], r["new"]) for r in out["repaired"]) == [
        ("gigabytes", "in_use", 7, 10), ("snapshots", "reserved", 2, 0), ("volumes", "in_use", 5, 2),
        (f"volumes_{TYPE}", "in_use", None, 2)]
    assert {r[4] for r in repairs_recorded(db, project)} == {"manual"}
    check_invariant(project)

    clean = volchain("quota", "check", "--project", project, "--sync")
    assert (clean.returncode, clean.stdout) == (0, "no drift\n")
    assert volchain("quota", "check", "--project", project).stdout == "no drift\n"


def test_quota_check_sync_prints_what_it_repaired(database_url, db, project):
    new_volume(db, project, 2)
    set_usage(db, project, "gigabytes", in_use=0)
    proc = volchain("quota", "check", "--project", project, "--sync")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    lines = [line.split() for line in proc.stdout.splitlines()]
    assert lines[:2] == [["repaired:"], ["PROJECT", "RESOURCE", "FIELD", "OLD", "NEW"]]
    assert lines[2:] == [[project, "gigabytes", "in_use", "0", "2"]]


def test_quota_check_reports_bad_input_on_one_line(database_url):
    assert_one_line_error(volchain("quota", "check", "--no-such-option"), "unrecognized arguments")
