"""Over-quota creates fail with Cinder's 413 errors and leave nothing behind."""

from __future__ import annotations

from sqlalchemy import func, select

from models.flow_log import FlowRun
from models.quota import QuotaUsage, Reservation
from models.volume import Volume
from tests import factories
from workers.submit import submit_create_volume, wait_for_flow


def _create(project: str, **request):
    sub = submit_create_volume(factories.member(project), **request)
    return sub, wait_for_flow(sub.flow_id, timeout=30)


def _assert_left_nothing_behind(db, redis_client, project: str, sub) -> None:
    with db() as s:
        reservations = s.scalar(select(func.count()).select_from(Reservation).where(Reservation.project_id == project))
        vol = s.scalar(select(Volume).where(Volume.id == sub.volume_id))
        steps = {name: r["state"] for name, r in (s.get(FlowRun, sub.flow_id).steps or {}).items()}
    assert reservations == 0
    assert vol is None or vol.deleted is True
    # Only the validation step took effect; it is reverted along with the flow.
    assert steps == {"extract_volume_request": "reverted"}
    assert factories.casts_for(redis_client, "scheduler", sub.volume_id) == []


def _usage(db, project: str) -> dict[str, tuple[int, int]]:
    with db() as s:
        return {u.resource: (u.in_use, u.reserved)
                for u in s.scalars(select(QuotaUsage).where(QuotaUsage.project_id == project))}


def test_the_third_volume_over_a_limit_of_two_fails_with_volume_limit_exceeded(
    workers, db, redis_client, project, check_invariant
):
    factories.set_quota(db, project, volumes=2)
    for _ in range(2):
        _, ok = _create(project, size=1)
        assert ok.state == "succeeded", ok.error

    sub, out = _create(project, size=1)
    assert out.state == "reverted"
    assert out.error == {
        "type": "VolumeLimitExceeded",
        "code": 413,
        "message": "Maximum number of volumes allowed (2) exceeded for quota 'volumes'.",
    }
    _assert_left_nothing_behind(db, redis_client, project, sub)
    assert _usage(db, project)["volumes"] == (2, 0)
    check_invariant(project)


def test_a_create_over_the_gigabytes_quota_names_requested_quota_and_consumed(
    workers, db, redis_client, project, check_invariant
):
    factories.set_quota(db, project, gigabytes=5)
    _, ok = _create(project, size=2)
    assert ok.state == "succeeded", ok.error

    sub, out = _create(project, size=6)
    assert out.state == "reverted"
    assert out.error == {
        "type": "VolumeSizeExceedsAvailableQuota",
        "code": 413,
        "message": "Requested volume or snapshot exceeds allowed gigabytes quota. "
        "Requested 6G, quota is 5G and 2G has been consumed.",
    }
    _assert_left_nothing_behind(db, redis_client, project, sub)
    assert _usage(db, project)["gigabytes"] == (2, 0)
    check_invariant(project)


def test_the_gigabytes_error_wins_when_both_volumes_and_gigabytes_are_over(
    workers, db, redis_client, project, check_invariant
):
    """Cinder walks the sorted overs: `gigabytes` comes before `volumes`."""
    factories.set_quota(db, project, volumes=1, gigabytes=3)
    _, ok = _create(project, size=1)
    assert ok.state == "succeeded", ok.error

    sub, out = _create(project, size=3)
    assert out.state == "reverted"
    assert out.error == {
        "type": "VolumeSizeExceedsAvailableQuota",
        "code": 413,
        "message": "Requested volume or snapshot exceeds allowed gigabytes quota. "
        "Requested 3G, quota is 3G and 1G has been consumed.",
    }
    _assert_left_nothing_behind(db, redis_client, project, sub)
    check_invariant(project)


def test_the_default_types_volume_quota_is_named_in_the_error(
    workers, db, redis_client, project, check_invariant
):
    factories.set_quota(db, project, volumes___DEFAULT__=1)
    _, ok = _create(project, size=1)
    assert ok.state == "succeeded", ok.error

    sub, out = _create(project, size=1)
    assert out.state == "reverted"
    assert out.error == {
        "type": "VolumeLimitExceeded",
        "code": 413,
        "message": "Maximum number of volumes allowed (1) exceeded for quota 'volumes___DEFAULT__'.",
    }
    _assert_left_nothing_behind(db, redis_client, project, sub)
    assert _usage(db, project)["volumes___DEFAULT__"] == (1, 0)
    check_invariant(project)


def test_a_types_gigabytes_quota_is_named_in_the_error_and_other_types_are_unaffected(
    workers, db, redis_client, project, check_invariant
):
    vtype = factories.volume_type(db)
    factories.set_quota(db, project, **{f"gigabytes_{vtype.name}": 3})

    sub, out = _create(project, size=4, volume_type=vtype.name)
    assert out.state == "reverted"
    assert out.error == {
        "type": "VolumeSizeExceedsAvailableQuota",
        "code": 413,
        "message": f"Requested volume or snapshot exceeds allowed gigabytes_{vtype.name} quota. "
        "Requested 4G, quota is 3G and 0G has been consumed.",
    }
    _assert_left_nothing_behind(db, redis_client, project, sub)

    # The same size in the default type is not limited by the other type's quota.
    _, ok = _create(project, size=4)
    assert ok.state == "succeeded", ok.error
    usage = _usage(db, project)
    assert usage.get(f"gigabytes_{vtype.name}", (0, 0)) == (0, 0)
    assert usage["gigabytes"] == (4, 0)
    check_invariant(project)


def test_a_volume_larger_than_per_volume_gigabytes_fails_with_volume_size_exceeds_limit(
    workers, db, redis_client, project, check_invariant
):
    factories.set_quota(db, project, per_volume_gigabytes=10)

    sub, out = _create(project, size=11)
    assert out.state == "reverted"
    assert out.error == {
        "type": "VolumeSizeExceedsLimit",
        "code": 413,
        "message": "Requested volume size 11G is larger than maximum allowed limit 10G.",
    }
    _assert_left_nothing_behind(db, redis_client, project, sub)
    # The limit is checked before anything is reserved: no usage rows were even needed.
    assert _usage(db, project).get("gigabytes", (0, 0)) == (0, 0)

    _, ok = _create(project, size=10)
    assert ok.state == "succeeded", ok.error
    check_invariant(project)
