"""The quota engine as plain functions on the real PostgreSQL test database.

Each test owns a fresh project id, so rows of other tests never count. The steps use this
engine and no other (there is one path), so these tests cover what every create does.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, func, select, update

from models import utcnow
from models.quota import QuotaClass, QuotaUsage, Reservation
from models.snapshot import Snapshot
from tasks import errors, quota_engine as qe
from tests import factories

CONFIG = qe.QuotaConfig()
INT_MAX = 2147483647


# -- helpers -----------------------------------------------------------------------------------------

def usage(db, project_id: str, resource: str) -> tuple[int, int] | None:
    """(in_use, reserved) of one usage row, or None when the row does not exist."""
    with db() as s:
        row = s.scalar(select(QuotaUsage).where(QuotaUsage.project_id == project_id, QuotaUsage.resource == resource))
        return None if row is None else (row.in_use, row.reserved)


def set_usage(db, project_id: str, resource: str, in_use: int, reserved: int = 0, **extra) -> None:
    """Write a usage row directly (a project whose usage is already known)."""
    with db() as s, s.begin():
        row = s.scalar(select(QuotaUsage).where(QuotaUsage.project_id == project_id, QuotaUsage.resource == resource))
        if row is None:
            s.add(QuotaUsage(project_id=project_id, resource=resource, in_use=in_use, reserved=reserved, **extra))
        else:
            row.in_use, row.reserved = in_use, reserved
            for k, v in extra.items():
                setattr(row, k, v)


def pending(db, project_id: str) -> dict[str, tuple[str, int]]:
    """The project's reservations: {uuid: (resource, delta)}."""
    with db() as s:
        rows = s.execute(select(Reservation.uuid, Reservation.resource, Reservation.delta)
                         .where(Reservation.project_id == project_id)).all()
    return {r.uuid: (r.resource, r.delta) for r in rows}


def reserve(db, project_id: str, deltas: dict[str, int], config: qe.QuotaConfig = CONFIG, **kw) -> list[str]:
    with db() as s, s.begin():
        return qe.reserve(s, project_id, deltas, config, **kw)


def commit(db, uuids) -> int:
    with db() as s, s.begin():
        return qe.commit(s, uuids)


def rollback(db, uuids) -> int:
    with db() as s, s.begin():
        return qe.rollback(s, uuids)


def over_quota(db, project_id: str, deltas: dict[str, int]) -> errors.OverQuota:
    with pytest.raises(errors.OverQuota) as info:
        reserve(db, project_id, deltas)
    return info.value


def expire_all(db, now: datetime | None = None) -> int:
    """Run expire() until nothing is left (it works in batches, oldest first, over every project)."""
    total = 0
    while True:
        with db() as s, s.begin():
            done = qe.expire(s, now=now)
        if not done:
            return total
        total += done


def near(a: datetime, b: datetime, seconds: float = 5.0) -> bool:
    return abs((a - b).total_seconds()) < seconds


# -- reserve / commit / rollback arithmetic -------------------------------------------------------------

def test_reserve_holds_positive_deltas_and_returns_uuids_in_delta_order(db, project):
    before = utcnow()
    uuids = reserve(db, project, {"volumes": 1, "gigabytes": 5})
    assert len(uuids) == 2
    assert pending(db, project) == {uuids[0]: ("volumes", 1), uuids[1]: ("gigabytes", 5)}
    assert usage(db, project, "volumes") == (0, 1)
    assert usage(db, project, "gigabytes") == (0, 5)
    with db() as s:
        expires = s.scalars(select(Reservation.expire).where(Reservation.project_id == project)).all()
    assert all(near(e, before + timedelta(seconds=CONFIG.reservation_expire)) for e in expires)


def test_commit_moves_reserved_into_in_use_exactly_once(db, project):
    uuids = reserve(db, project, {"volumes": 1, "gigabytes": 5})
    reserve(db, project, {"gigabytes": 2})  # another pending reservation stays held
    assert commit(db, uuids) == 2
    assert usage(db, project, "volumes") == (1, 0)
    assert usage(db, project, "gigabytes") == (5, 2)
    assert commit(db, uuids) == 0
    assert usage(db, project, "gigabytes") == (5, 2)
    assert sorted(pending(db, project).values()) == [("gigabytes", 2)]


def test_rollback_releases_reserved_and_leaves_in_use_alone(db, project):
    commit(db, reserve(db, project, {"gigabytes": 3}))
    uuids = reserve(db, project, {"volumes": 1, "gigabytes": 4})
    assert usage(db, project, "gigabytes") == (3, 4)
    assert rollback(db, uuids) == 2
    assert usage(db, project, "volumes") == (0, 0)
    assert usage(db, project, "gigabytes") == (3, 0)
    assert rollback(db, uuids) == 0
    assert usage(db, project, "gigabytes") == (3, 0)
    assert pending(db, project) == {}


def test_an_over_quota_reserve_holds_nothing_and_reports_sorted_overs(db, project):
    factories.set_quota(db, project, volumes=1, gigabytes=10)
    reserve(db, project, {"gigabytes": 4})
    with db() as s, s.begin():
        with pytest.raises(errors.OverQuota) as info:
            qe.reserve(s, project, {"volumes": 2, "gigabytes": 7}, CONFIG)
        # Nothing was written by the failed call, even inside the caller's transaction.
        assert s.scalar(select(func.count()).select_from(Reservation).where(Reservation.project_id == project)) == 1
        assert s.scalar(select(QuotaUsage.reserved).where(QuotaUsage.project_id == project,
                                                          QuotaUsage.resource == "volumes")) == 0
    exc = info.value
    assert exc.overs == ["gigabytes", "volumes"]
    assert exc.quotas == {"volumes": 1, "gigabytes": 10}
    assert exc.usages == {"volumes": {"in_use": 0, "reserved": 0}, "gigabytes": {"in_use": 0, "reserved": 4}}
    # Exactly at the limit is allowed.
    reserve(db, project, {"volumes": 1, "gigabytes": 6})
    assert usage(db, project, "gigabytes") == (0, 10)


def test_a_new_usage_row_starts_from_the_rows_that_consume_quota(db, project):
    for size in (3, 4):
        factories.volume(db, project, size=size, use_quota=True)
    factories.volume(db, project, size=50, use_quota=False)  # not counted
    snap_source = factories.volume(db, project, size=2)
    with db() as s, s.begin():
        s.add(Snapshot(project_id=project, volume_id=snap_source.id, volume_size=2,
                       volume_type_id=snap_source.volume_type_id, use_quota=True))
    reserve(db, project, {"volumes": 1, "gigabytes": 1, "snapshots": 1})
    assert usage(db, project, "volumes") == (2, 1)
    assert usage(db, project, "gigabytes") == (3 + 4 + 2, 1)  # snapshots count in gigabytes
    assert usage(db, project, "snapshots") == (1, 1)
    reserve(db, project, {"gigabytes": 1}, qe.QuotaConfig(no_snapshot_gb_quota=True))
    assert usage(db, project, "gigabytes") == (9, 2)  # an existing row is not re-synced


# -- negative deltas -------------------------------------------------------------------------------------

def test_a_negative_delta_holds_nothing_and_commit_stops_in_use_at_zero(db, project):
    set_usage(db, project, "volumes", in_use=2)
    small = reserve(db, project, {"volumes": -1})
    assert usage(db, project, "volumes") == (2, 0)
    assert rollback(db, small) == 1
    assert usage(db, project, "volumes") == (2, 0)
    big = reserve(db, project, {"volumes": -5})  # unders only warn
    assert usage(db, project, "volumes") == (2, 0)
    assert commit(db, big) == 1
    assert usage(db, project, "volumes") == (0, 0)


def test_a_project_over_its_quota_may_shrink_but_not_hold_zero_or_more(db, project):
    factories.set_quota(db, project, volumes=1)
    set_usage(db, project, "volumes", in_use=3)
    commit(db, reserve(db, project, {"volumes": -1}))
    assert usage(db, project, "volumes") == (2, 0)
    assert over_quota(db, project, {"volumes": 0}).overs == ["volumes"]
    exc = over_quota(db, project, {"volumes": 1})
    assert (exc.overs, exc.quotas, exc.usages) == (["volumes"], {"volumes": 1},
                                                    {"volumes": {"in_use": 2, "reserved": 0}})


# -- limits ------------------------------------------------------------------------------------------------

def test_limits_come_from_the_project_then_the_default_class_then_the_config(db, project):
    other = f"{project}-other"
    vt = factories.volume_type(db)
    per_type = f"volumes_{vt.name}"
    with db() as s:
        assert qe.get_limits(s, project, ["volumes", "gigabytes", per_type], CONFIG) == {
            "volumes": 10, "gigabytes": 1000, per_type: -1}
    with db() as s, s.begin():
        qe.set_class_limits(s, {per_type: 7})
        qe.set_limits(s, project, {per_type: 3, "gigabytes": 20})
    with db() as s:
        assert qe.get_limits(s, project, [per_type, "gigabytes"], CONFIG) == {per_type: 3, "gigabytes": 20}
        assert qe.get_limits(s, other, [per_type, "gigabytes"], CONFIG) == {per_type: 7, "gigabytes": 1000}
    # Without a default-class row the config default applies (rolled back: the class is shared).
    with db() as s:
        s.begin()
        s.execute(delete(QuotaClass).where(QuotaClass.class_name == "default", QuotaClass.resource == "gigabytes"))
        assert qe.get_limits(s, other, ["gigabytes"], qe.QuotaConfig(defaults={"gigabytes": 42})) == {"gigabytes": 42}
        assert qe.get_limits(s, other, ["gigabytes"], CONFIG) == {"gigabytes": 1000}
        assert qe.get_limits(s, other, ["gigabytes"], qe.QuotaConfig(defaults={})) == {"gigabytes": -1}
        s.rollback()
    # The limits found are the ones enforced.
    assert over_quota(db, project, {per_type: 4}).quotas == {per_type: 3}
    reserve(db, other, {per_type: 7})
    assert over_quota(db, other, {per_type: 1}).overs == [per_type]


def test_a_per_type_resource_without_any_limit_is_unlimited(db, project):
    vt = factories.volume_type(db)
    deltas = qe.per_type_deltas({"gigabytes": 900}, vt.name)
    assert deltas == {"gigabytes": 900, f"gigabytes_{vt.name}": 900}
    reserve(db, project, deltas)
    reserve(db, project, {f"gigabytes_{vt.name}": 5000})
    assert usage(db, project, f"gigabytes_{vt.name}") == (0, 5900)


@pytest.mark.parametrize(
    "deltas, unknown",
    [
        ({"volumes": 1, "bogus": 1}, ["bogus"]),
        ({"per_volume_gigabytes": 1}, ["per_volume_gigabytes"]),  # a limit, not reservable
        ({"volumes_no-such-type": 1}, ["volumes_no-such-type"]),
    ],
    ids=["bogus", "limit-only", "unknown-type"],
)
def test_an_unknown_resource_cannot_be_reserved(db, project, deltas, unknown):
    with pytest.raises(errors.QuotaResourceUnknown) as info:
        reserve(db, project, deltas)
    assert info.value.to_dict() == {"type": "QuotaResourceUnknown", "code": 404,
                                    "message": f"Unknown quota resources {unknown}."}
    assert usage(db, project, "volumes") is None


def test_limit_check_enforces_per_volume_gigabytes(db, project):
    with db() as s:
        qe.limit_check(s, project, CONFIG, per_volume_gigabytes=10**6)  # -1 by default: unlimited
    factories.set_quota(db, project, per_volume_gigabytes=10)
    with db() as s:
        qe.limit_check(s, project, CONFIG, per_volume_gigabytes=10)
        with pytest.raises(errors.OverQuota) as info:
            qe.limit_check(s, project, CONFIG, per_volume_gigabytes=11)
        assert (info.value.overs, info.value.quotas, info.value.usages) == (
            ["per_volume_gigabytes"], {"per_volume_gigabytes": 10}, {})
        with pytest.raises(errors.InvalidQuotaValue) as bad:
            qe.limit_check(s, project, CONFIG, per_volume_gigabytes=-1)
        assert bad.value.http_status == 400
        assert bad.value.msg.startswith("Change would make usage less than 0 for the following resources:")
        with pytest.raises(errors.QuotaResourceUnknown):
            qe.limit_check(s, project, CONFIG, volumes=1)


# -- expiration, overflow --------------------------------------------------------------------------------

@pytest.mark.parametrize("expire", ["60", 1.5, True, [60]], ids=["str", "float", "bool", "list"])
def test_an_expiration_must_be_seconds_a_timedelta_or_a_datetime(db, project, expire):
    with pytest.raises(errors.InvalidReservationExpiration) as info:
        reserve(db, project, {"volumes": 1}, expire=expire)
    assert info.value.to_dict() == {"type": "InvalidReservationExpiration", "code": 400,
                                    "message": f"Invalid reservation expiration {expire}."}
    assert pending(db, project) == {}


def test_each_expiration_form_sets_the_deadline(db, project):
    when = datetime(2031, 1, 2, 3, 4, 5)
    now = utcnow()
    forms = {"volumes": 60, "gigabytes": timedelta(minutes=5), "snapshots": when}
    expected = {"volumes": now + timedelta(seconds=60), "gigabytes": now + timedelta(minutes=5), "snapshots": when}
    for resource, expire in forms.items():
        reserve(db, project, {resource: 1}, expire=expire)
    with db() as s:
        got = dict(s.execute(select(Reservation.resource, Reservation.expire)
                             .where(Reservation.project_id == project)).all())
    assert got["snapshots"] == when
    assert near(got["volumes"], expected["volumes"]) and near(got["gigabytes"], expected["gigabytes"])


def test_usage_may_not_overflow_its_counter(db, project):
    factories.set_quota(db, project, gigabytes=-1)
    set_usage(db, project, "gigabytes", in_use=INT_MAX - 10)
    reserve(db, project, {"gigabytes": 10})  # total exactly INT_MAX
    with pytest.raises(errors.QuotaUsageOverflow) as info:
        reserve(db, project, {"gigabytes": 1})
    assert (info.value.http_status, info.value.type_name) == (413, "QuotaUsageOverflow")
    assert usage(db, project, "gigabytes") == (INT_MAX - 10, 10)
    # A negative delta is never an overflow.
    reserve(db, project, {"gigabytes": -5})


def test_the_overflow_check_comes_before_the_limit_check(db, project):
    with pytest.raises(errors.QuotaUsageOverflow):
        reserve(db, project, {"gigabytes": INT_MAX + 1})  # also far over the 1000 GB default


def test_expire_releases_only_reservations_past_their_deadline(db, project):
    set_usage(db, project, "gigabytes", in_use=5)
    old = reserve(db, project, {"volumes": 1, "gigabytes": 2}, expire=-60)
    shrink = reserve(db, project, {"gigabytes": -1}, expire=timedelta(seconds=-60))
    fresh = reserve(db, project, {"volumes": 1}, expire=3600)
    assert expire_all(db) >= len(old) + len(shrink)
    assert set(pending(db, project)) == set(fresh)
    assert usage(db, project, "volumes") == (0, 1)
    assert usage(db, project, "gigabytes") == (5, 0)  # the negative one just disappears
    assert commit(db, old) == 0  # too late to commit an expired reservation


def test_expire_honours_the_time_it_is_given(db, project):
    uuids = reserve(db, project, {"volumes": 1}, expire=600)
    expire_all(db, now=utcnow() + timedelta(seconds=300))
    assert set(pending(db, project)) == set(uuids)
    expire_all(db, now=utcnow() + timedelta(seconds=900))
    assert pending(db, project) == {}
    assert usage(db, project, "volumes") == (0, 0)


def test_release_gives_back_committed_usage_but_never_below_zero(db, project):
    commit(db, reserve(db, project, {"volumes": 2, "gigabytes": 5}))
    with db() as s, s.begin():
        qe.release(s, project, {"volumes": 1, "gigabytes": 10, "snapshots": 1})
    assert usage(db, project, "volumes") == (1, 0)
    assert usage(db, project, "gigabytes") == (0, 0)
    assert usage(db, project, "snapshots") is None  # no row, nothing to give back


# -- refresh --------------------------------------------------------------------------------------------------

def test_a_negative_in_use_is_resynced_from_the_rows(db, project):
    factories.volume(db, project, size=2, use_quota=True)
    set_usage(db, project, "volumes", in_use=-1)
    reserve(db, project, {"volumes": 1})
    assert usage(db, project, "volumes") == (1, 1)


def test_max_age_resyncs_a_stale_usage_row(db, project):
    factories.volume(db, project, size=2, use_quota=True)
    set_usage(db, project, "volumes", in_use=7, updated_at=utcnow() - timedelta(seconds=120))
    reserve(db, project, {"volumes": 1}, qe.QuotaConfig(max_age=3600))
    assert usage(db, project, "volumes") == (7, 1)  # young enough: kept
    with db() as s, s.begin():
        s.execute(update(QuotaUsage).where(QuotaUsage.project_id == project)
                  .values(updated_at=utcnow() - timedelta(seconds=120)))
    reserve(db, project, {"volumes": 1}, qe.QuotaConfig(max_age=60))
    assert usage(db, project, "volumes") == (1, 2)


# -- OverQuota -> the user's error ---------------------------------------------------------------------------

def test_a_gigabytes_over_wins_over_a_volumes_over(db, project):
    factories.set_quota(db, project, volumes=1, gigabytes=10)
    commit(db, reserve(db, project, {"gigabytes": 3}))
    reserve(db, project, {"volumes": 1, "gigabytes": 1})
    exc = over_quota(db, project, {"volumes": 1, "gigabytes": 7})
    assert exc.overs == ["gigabytes", "volumes"]
    with pytest.raises(errors.VolumeSizeExceedsAvailableQuota) as info:
        qe.raise_for_over_quota(exc, 7)
    assert info.value.to_dict() == {
        "type": "VolumeSizeExceedsAvailableQuota", "code": 413,
        "message": "Requested volume or snapshot exceeds allowed gigabytes quota. Requested 7G, quota is 10G "
                   "and 4G has been consumed."}
    assert info.value.headers == {"Retry-After": "0"}


def test_a_volumes_over_alone_is_a_volume_limit_error(db, project):
    factories.set_quota(db, project, volumes=1)
    reserve(db, project, {"volumes": 1})
    exc = over_quota(db, project, {"volumes": 1, "gigabytes": 1})
    with pytest.raises(errors.VolumeLimitExceeded) as info:
        qe.raise_for_over_quota(exc, 1)
    assert info.value.to_dict() == {"type": "VolumeLimitExceeded", "code": 413,
                                    "message": "Maximum number of volumes allowed (1) exceeded for quota 'volumes'."}


def test_per_type_overs_name_the_per_type_resource(db, project):
    vt = factories.volume_type(db)
    factories.set_quota(db, project, **{f"gigabytes_{vt.name}": 5, f"volumes_{vt.name}": 1, "volumes": 1})
    reserve(db, project, qe.per_type_deltas({"volumes": 1, "gigabytes": 1}, vt.name))
    exc = over_quota(db, project, qe.per_type_deltas({"volumes": 1, "gigabytes": 5}, vt.name))
    assert exc.overs == sorted([f"gigabytes_{vt.name}", "volumes", f"volumes_{vt.name}"])
    with pytest.raises(errors.VolumeSizeExceedsAvailableQuota) as info:
        qe.raise_for_over_quota(exc, 5)
    assert info.value.msg == (f"Requested volume or snapshot exceeds allowed gigabytes_{vt.name} quota. "
                              "Requested 5G, quota is 5G and 1G has been consumed.")
    only_volumes = over_quota(db, project, {f"volumes_{vt.name}": 1})
    with pytest.raises(errors.VolumeLimitExceeded) as info:
        qe.raise_for_over_quota(only_volumes, 1)
    assert info.value.msg == f"Maximum number of volumes allowed (1) exceeded for quota 'volumes_{vt.name}'."


def test_an_over_on_snapshots_is_cinders_snapshot_limit(db, project):
    factories.set_quota(db, project, snapshots=2)
    exc = over_quota(db, project, {"snapshots": 3})
    with pytest.raises(errors.SnapshotLimitExceeded) as info:
        qe.raise_for_over_quota(exc, 1)
    assert info.value.to_dict() == {"type": "SnapshotLimitExceeded", "code": 413,
                                    "message": "Maximum number of snapshots allowed (2) exceeded"}


def test_an_over_on_another_resource_is_unexpected(db, project):
    factories.set_quota(db, project, backups=0)
    exc = over_quota(db, project, {"backups": 1})
    with pytest.raises(errors.UnexpectedOverQuota) as info:
        qe.raise_for_over_quota(exc, 1)
    assert info.value.to_dict() == {"type": "UnexpectedOverQuota", "code": 413,
                                    "message": "Unexpected over quota on backups."}


# -- concurrency ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "deltas",
    [{"volumes": 1}, qe.per_type_deltas({"volumes": 1, "gigabytes": 2}, "__DEFAULT__")],
    ids=["volumes", "full-create"],
)
def test_concurrent_first_reservations_never_exceed_the_limit(db, project, check_invariant, deltas):
    threads = 20
    factories.set_quota(db, project, volumes=5)
    assert usage(db, project, "volumes") is None  # the usage rows do not exist yet
    barrier = threading.Barrier(threads)

    def one() -> list[str] | str:
        barrier.wait(timeout=30)
        try:
            with db() as s, s.begin():
                return qe.reserve(s, project, deltas, CONFIG)
        except errors.OverQuota as exc:
            assert exc.overs == ["volumes"]
            return "over"

    with ThreadPoolExecutor(threads) as pool:
        results = [f.result(timeout=60) for f in [pool.submit(one) for _ in range(threads)]]
    assert results.count("over") == threads - 5
    assert sum(isinstance(r, list) for r in results) == 5
    assert usage(db, project, "volumes") == (0, 5)
    for resource, delta in deltas.items():
        assert usage(db, project, resource) == (0, 5 * delta)
    assert len(pending(db, project)) == 5 * len(deltas)
    with db() as s:  # one usage row per resource, however many first inserts raced
        assert s.scalar(select(func.count()).select_from(QuotaUsage)
                        .where(QuotaUsage.project_id == project)) == len(deltas)
    check_invariant(project)


# -- settling in scope: what the steps call (their project and resources known) ------------------------

def settle_in_scope(db, project_id: str, uuids: list[str], resources, use: bool) -> int:
    with db() as s, s.begin():
        settle = qe.commit if use else qe.rollback
        return settle(s, uuids, scope=(project_id, list(resources)))


def test_a_commit_in_scope_moves_reserved_into_in_use_exactly_once(db, project):
    uuids = reserve(db, project, {"volumes": 1, "gigabytes": 5})
    other = reserve(db, project, {"gigabytes": 2})  # another flow's reservation stays held
    assert settle_in_scope(db, project, uuids, ["volumes", "gigabytes"], use=True) == 2
    assert usage(db, project, "volumes") == (1, 0)
    assert usage(db, project, "gigabytes") == (5, 2)
    assert settle_in_scope(db, project, uuids, ["volumes", "gigabytes"], use=True) == 0
    assert usage(db, project, "gigabytes") == (5, 2)
    assert set(pending(db, project)) == set(other)


def test_a_rollback_in_scope_releases_its_reservations_only(db, project):
    commit(db, reserve(db, project, {"gigabytes": 3}))
    uuids = reserve(db, project, {"volumes": 1, "gigabytes": 4})
    other = reserve(db, project, {"volumes": 1})
    assert settle_in_scope(db, project, uuids, ["volumes", "gigabytes"], use=False) == 2
    assert usage(db, project, "volumes") == (0, 1)
    assert usage(db, project, "gigabytes") == (3, 0)
    assert set(pending(db, project)) == set(other)
    # A resource outside the scope is not touched even when a uuid names it.
    assert settle_in_scope(db, project, other, ["gigabytes"], use=False) == 0
    assert usage(db, project, "volumes") == (0, 1)


def test_two_reservations_on_one_usage_row_settle_together_in_scope(db, project):
    first, second = reserve(db, project, {"gigabytes": 3}), reserve(db, project, {"gigabytes": 4})
    assert usage(db, project, "gigabytes") == (0, 7)
    assert settle_in_scope(db, project, first + second, ["gigabytes"], use=True) == 2
    assert usage(db, project, "gigabytes") == (7, 0)
    assert pending(db, project) == {}


def test_commits_in_scope_racing_expire_settle_each_reservation_once(db, project):
    """Expired reservations, committed by their flows while the sweeper expires them: each one is
    settled by exactly one of the two, and usage ends equal to what the commits took."""
    factories.set_quota(db, project, volumes=-1, gigabytes=-1)
    flows = [reserve(db, project, {"volumes": 1, "gigabytes": 2}, expire=-1) for _ in range(20)]

    def commit_flow(uuids):
        return settle_in_scope(db, project, uuids, ["volumes", "gigabytes"], use=True)

    with ThreadPoolExecutor(max_workers=6) as pool:
        sweeping = pool.submit(expire_all, db, utcnow() + timedelta(seconds=5))
        committed = list(pool.map(commit_flow, flows))
        sweeping.result()
    assert pending(db, project) == {}
    in_use_volumes, reserved_volumes = usage(db, project, "volumes")
    in_use_gb, reserved_gb = usage(db, project, "gigabytes")
    assert reserved_volumes == 0 and reserved_gb == 0
    # Each reservation a commit took moved its delta into in_use once (1 volume, or 2 gigabytes);
    # the ones expire took moved nothing.
    assert in_use_volumes + in_use_gb // 2 == sum(committed)
    assert in_use_gb % 2 == 0


def test_the_prebuilt_statements_of_a_create_are_cached_by_sqlalchemy():
    """A statement SQLAlchemy cannot cache is compiled again on every call (it once doubled the
    cost of quota_reserve): each prebuilt statement a create runs, from the chain to the backend,
    has a cache key."""
    from tasks import lookups, runner
    from tasks.schedule import filters, schedule_volume

    statements = [qe._LIMITS, qe._LOCK_USAGES, qe._WRITE_USAGES, qe._RESERVE_AND_WRITE_USAGES,
                  qe._LOCK_AND_TAKE_IN_SCOPE, qe._TAKE_RESERVATIONS, runner._LOCK_FLOW, runner._RECORD_STEP,
                  runner._RECORD_FINAL_STEP, runner._START_FLOW, filters._UP_SERVICES, schedule_volume._LOCK_VOLUME,
                  lookups._DEFAULT_TYPE_QUERY, *lookups._TYPE_QUERIES.values()]
    assert all(statement._generate_cache_key() is not None for statement in statements)
