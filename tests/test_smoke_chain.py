"""The whole chain on real Redis, PostgreSQL and worker processes: the happy path."""

from sqlalchemy import select

from models.volume import Volume
from tests import factories
from workers.submit import submit_create_volume, wait_for_flow


def test_a_create_is_routed_to_the_scheduler_queue(workers, db, redis_client, project, check_invariant):
    sub = submit_create_volume(factories.member(project), size=2, name="  v1  ", metadata={"k": "v"})
    out = wait_for_flow(sub.flow_id, timeout=30)
    assert out.state == "succeeded", out.error
    assert out.cast["queue"] == "scheduler"
    [msg] = factories.casts_for(redis_client, "scheduler", sub.volume_id)
    assert msg["headers"]["task"] == "volchain.scheduler.create_volume"
    body = msg["args"][0]
    assert body["message_id"] == msg["headers"]["id"] == out.cast["message_id"]
    assert body["request_spec"]["size"] == 2
    assert body["request_spec"]["volume_type"]["name"] == "__DEFAULT__"
    with db() as s:
        vol = s.scalar(select(Volume).where(Volume.id == sub.volume_id))
    assert (vol.status, vol.display_name, vol.availability_zone, vol.size) == ("creating", "v1", "nova", 2)
    check_invariant(project)
