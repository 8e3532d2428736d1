"""Where volume_cast sends a create, and what the cast message carries (Cinder's Pike routing rule)."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from models.volume import Volume
from tests import factories
from workers.submit import submit_create_volume, wait_for_flow

SCHEDULER_TASK = "volchain.scheduler.create_volume"
VOLUME_TASK = "volchain.volume.create_volume"


def _volume(db, volume_id: str) -> Volume:
    with db() as s:
        return s.scalar(select(Volume).where(Volume.id == volume_id))


def _only_cast(redis_client, queue: str, sub, outcome) -> dict:
    """The one message for this volume on `queue`, checked against the message contract."""
    msgs = factories.casts_for(redis_client, queue, sub.volume_id)
    assert len(msgs) == 1, f"expected one cast on {queue}, found {len(msgs)}"
    [msg] = msgs
    body = msg["args"][0]
    assert body["version"] == "1.0"
    assert body["message_id"] == msg["headers"]["id"] == outcome.cast["message_id"]
    assert body["flow_id"] == sub.flow_id
    assert body["volume_id"] == sub.volume_id == body["request_spec"]["volume_id"]
    assert body["queue"] == queue == outcome.cast["queue"]
    assert msg["headers"]["task"] == outcome.cast["task"]
    return msg


def test_a_plain_create_is_cast_to_the_scheduler_without_a_backend_pin(
    workers, db, redis_client, project, check_invariant
):
    sub = submit_create_volume(factories.member(project), size=3)
    out = wait_for_flow(sub.flow_id, timeout=30)
    assert out.state == "succeeded", out.error

    msg = _only_cast(redis_client, "scheduler", sub, out)
    body = msg["args"][0]
    assert msg["headers"]["task"] == SCHEDULER_TASK
    assert body["allow_reschedule"] is True
    assert body["project_id"] == project
    assert body["request_spec"]["resource_backend"] is None
    assert body["request_spec"]["size"] == 3
    assert body["filter_properties"] == {}
    assert factories.casts_for(redis_client, "volume.node1@lvm", sub.volume_id) == []
    vol = _volume(db, sub.volume_id)
    assert (vol.status, vol.host, vol.scheduled_at) == ("creating", None, None)
    check_invariant(project)


def test_scheduler_hints_travel_in_filter_properties(workers, db, redis_client, project, check_invariant):
    hints = {"same_host": [str(uuid.uuid4())], "query": "x"}
    sub = submit_create_volume(factories.member(project), size=1, scheduler_hints=hints)
    out = wait_for_flow(sub.flow_id, timeout=30)
    assert out.state == "succeeded", out.error

    body = _only_cast(redis_client, "scheduler", sub, out)["args"][0]
    assert body["filter_properties"] == {"scheduler_hints": hints}
    check_invariant(project)


def test_a_create_from_a_snapshot_goes_straight_to_the_parent_volumes_backend_queue(
    workers, db, redis_client, project, check_invariant
):
    parent = factories.volume(db, project, size=2, host="node1@lvm#pool")
    snap = factories.snapshot(db, project, parent)
    sub = submit_create_volume(factories.member(project), snapshot_id=snap.id)
    out = wait_for_flow(sub.flow_id, timeout=30)
    assert out.state == "succeeded", out.error
    assert {k: out.cast[k] for k in ("queue", "task")} == {"queue": "volume.node1@lvm", "task": VOLUME_TASK}
    assert out.cast["body"]["message_id"] == out.cast["message_id"]  # kept whole, to be sent again if lost

    msg = _only_cast(redis_client, "volume.node1@lvm", sub, out)
    body = msg["args"][0]
    assert msg["headers"]["task"] == VOLUME_TASK
    assert body["allow_reschedule"] is False
    assert body["snapshot_id"] == snap.id
    assert body["request_spec"]["resource_backend"] == "node1@lvm#pool"
    assert body["request_spec"]["snapshot_id"] == snap.id
    assert body["request_spec"]["size"] == 2
    assert factories.casts_for(redis_client, "scheduler", sub.volume_id) == []

    vol = _volume(db, sub.volume_id)
    assert vol.status == "creating"
    assert vol.host == "node1@lvm#pool"
    assert vol.scheduled_at is not None
    assert vol.snapshot_id == snap.id
    check_invariant(project)


def test_a_create_from_a_source_volume_goes_to_the_source_backend_queue(
    workers, db, redis_client, project, check_invariant
):
    source = factories.volume(db, project, size=4, host="node2@ceph#fast")
    sub = submit_create_volume(factories.member(project), source_volid=source.id, size=5)
    out = wait_for_flow(sub.flow_id, timeout=30)
    assert out.state == "succeeded", out.error

    msg = _only_cast(redis_client, "volume.node2@ceph", sub, out)
    body = msg["args"][0]
    assert msg["headers"]["task"] == VOLUME_TASK
    assert body["allow_reschedule"] is False
    assert body["request_spec"]["resource_backend"] == "node2@ceph#fast"
    assert body["request_spec"]["source_volid"] == source.id
    assert body["request_spec"]["size"] == 5
    assert factories.casts_for(redis_client, "scheduler", sub.volume_id) == []

    vol = _volume(db, sub.volume_id)
    assert (vol.host, vol.source_volid, vol.size) == ("node2@ceph#fast", source.id, 5)
    assert vol.scheduled_at is not None
    check_invariant(project)


def test_a_create_from_a_source_volume_without_a_host_goes_to_the_scheduler(
    workers, db, redis_client, project, check_invariant
):
    source = factories.volume(db, project, size=1, host=None)
    sub = submit_create_volume(factories.member(project), source_volid=source.id)
    out = wait_for_flow(sub.flow_id, timeout=30)
    assert out.state == "succeeded", out.error

    msg = _only_cast(redis_client, "scheduler", sub, out)
    body = msg["args"][0]
    assert msg["headers"]["task"] == SCHEDULER_TASK
    assert body["allow_reschedule"] is True
    assert body["request_spec"]["resource_backend"] is None
    assert body["request_spec"]["source_volid"] == source.id
    vol = _volume(db, sub.volume_id)
    assert (vol.host, vol.scheduled_at) == (None, None)
    check_invariant(project)


def test_an_image_sourced_create_goes_to_the_scheduler(workers, db, redis_client, project, check_invariant):
    image = factories.image(db, owner=project, visibility="private", size_gb=1)
    sub = submit_create_volume(factories.member(project), size=2, imageRef=image.id)
    out = wait_for_flow(sub.flow_id, timeout=30)
    assert out.state == "succeeded", out.error

    msg = _only_cast(redis_client, "scheduler", sub, out)
    body = msg["args"][0]
    assert msg["headers"]["task"] == SCHEDULER_TASK
    assert body["allow_reschedule"] is True
    assert body["image_id"] == image.id == body["request_spec"]["image_id"]
    assert body["request_spec"]["resource_backend"] is None

    vol = _volume(db, sub.volume_id)
    assert (vol.image_id, vol.host, vol.scheduled_at) == (image.id, None, None)
    check_invariant(project)


def test_the_cast_message_id_is_derived_from_the_flow_id_so_a_resent_cast_can_be_deduplicated(
    workers, db, redis_client, project, check_invariant
):
    from tasks.create.volume_cast import message_id

    sub = submit_create_volume(factories.member(project), size=1)
    out = wait_for_flow(sub.flow_id, timeout=30)
    assert out.state == "succeeded", out.error
    assert out.cast["message_id"] == message_id(sub.flow_id)
    _only_cast(redis_client, "scheduler", sub, out)
    check_invariant(project)
