"""The volume lifecycle end to end, on real processes: step workers, the scheduler, two volume
services (file driver, zones az1 and az2) and the API, on real Redis and PostgreSQL.

Each test drives the REST API with a member token of a fresh project and follows what happened
into the rows, the flow log and the backend's files; each ends with the quota invariant (usage
equals the live volume and snapshot rows, nothing reserved).
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
from sqlalchemy import func, select

from models.flow_log import FlowRun
from models.message import Message
from models.quota import Reservation
from models.snapshot import Snapshot
from models.volume import Volume
from tasks import casts
from tests import factories
from tests.api.helpers import client
from tests.conftest import LIFECYCLE_REDIS, services_up, wait_until

GIB = 1024 ** 3


@pytest.fixture
def env(lifecycle, db, issue_token, project, check_invariant):
    """(http client as a member of a fresh project, project id); checks the invariant afterwards."""
    http = client(lifecycle.api_url, issue_token(project, role="member"), version="3.65")
    yield http, project
    check_invariant(project)
    with db() as session:
        pending = session.scalar(select(func.count()).select_from(Reservation)
                                 .where(Reservation.project_id == project))
    assert pending == 0, "a reservation is still pending"


def _volume(db, volume_id: str) -> Volume:
    with db() as session:
        return session.get(Volume, volume_id)


def _snapshot(db, snapshot_id: str) -> Snapshot:
    with db() as session:
        return session.get(Snapshot, snapshot_id)


def wait_status(db, volume_id: str, *statuses: str, timeout: float = 30) -> Volume:
    return wait_until(lambda: (v := _volume(db, volume_id)) is not None and v.status in statuses and v,
                      timeout, what=f"volume {volume_id} reaching {statuses}")


def wait_snapshot(db, snapshot_id: str, *statuses: str, timeout: float = 30) -> Snapshot:
    return wait_until(lambda: (s := _snapshot(db, snapshot_id)) is not None and s.status in statuses and s,
                      timeout, what=f"snapshot {snapshot_id} reaching {statuses}")


def create(http, project: str, **volume) -> str:
    resp = http.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, **volume}})
    assert resp.status_code == 202, resp.text
    return resp.json()["volume"]["id"]


def backend_file(lifecycle, vol: Volume):
    return lifecycle.path_of(vol.host) / "volumes" / f"volume-{vol.id}"


def flows_of(db, volume_id: str) -> dict[str, list[FlowRun]]:
    with db() as session:
        out: dict[str, list[FlowRun]] = {}
        for flow in session.scalars(select(FlowRun).where(FlowRun.volume_id == volume_id)):
            out.setdefault(flow.kind, []).append(flow)
        return out


def messages_about(db, resource_id: str) -> list[Message]:
    with db() as session:
        return list(session.scalars(select(Message).where(Message.resource_uuid == resource_id)))


def test_create_lands_available_on_a_backend_in_its_zone(lifecycle, db, env):
    http, project = env
    first = create(http, project, name="in-az1")
    second = create(http, project, size=2, availability_zone="az2")
    vol1, vol2 = wait_status(db, first, "available"), wait_status(db, second, "available")
    assert vol1.host.split("#")[0] == lifecycle.host1 and vol1.availability_zone == "az1"
    assert vol2.host.split("#")[0] == lifecycle.host2 and vol2.availability_zone == "az2"
    for vol in (vol1, vol2):
        path = backend_file(lifecycle, vol)
        assert vol.provider_location == str(path)
        stat = os.stat(path)
        assert stat.st_size == vol.size * GIB
        assert stat.st_blocks * 512 < 1024 * 1024, "the file driver wrote zeros instead of a sparse file"
        assert vol.scheduled_at is not None
    shown = http.get(f"/v3/{project}/volumes/{first}").json()["volume"]
    assert shown["status"] == "available"


def test_from_snapshot_and_from_source_go_straight_to_the_source_backend(lifecycle, db, env):
    http, project = env
    source_id = create(http, project, size=1, availability_zone="az2")
    source = wait_status(db, source_id, "available")
    with open(backend_file(lifecycle, source), "r+b") as f:  # data the copies must carry
        f.seek(5 * 1024 * 1024)
        f.write(b"volchain")
    resp = http.post(f"/v3/{project}/snapshots", json={"snapshot": {"volume_id": source_id, "name": "s"}})
    assert resp.status_code == 202, resp.text
    snap = resp.json()["snapshot"]
    assert snap["status"] == "creating" and snap["size"] == 1
    wait_snapshot(db, snap["id"], "available")
    from_snap = create(http, project, size=2, snapshot_id=snap["id"])
    clone = create(http, project, size=3, source_volid=source_id)
    for vid, size in ((from_snap, 2), (clone, 3)):
        vol = wait_status(db, vid, "available")
        assert vol.host == source.host
        path = backend_file(lifecycle, vol)
        assert os.stat(path).st_size == size * GIB
        with open(path, "rb") as f:
            f.seek(5 * 1024 * 1024)
            assert f.read(8) == b"volchain"
        kinds = flows_of(db, vid)
        assert "schedule_volume" not in kinds, "a pinned create passed the scheduler"
        assert [f.state for f in kinds["provision_volume"]] == ["succeeded"]
    # A volume with snapshots cannot be deleted (Cinder's 400) ...
    resp = http.delete(f"/v3/{project}/volumes/{source_id}")
    assert resp.status_code == 400, resp.text
    assert "have snapshots" in resp.json()["badRequest"]["message"]
    # ... until the snapshot is gone; then everything goes, files included.
    assert http.delete(f"/v3/{project}/snapshots/{snap['id']}").status_code == 202
    wait_until(lambda: _snapshot(db, snap["id"]).deleted, what="snapshot deleted")
    for vid in (from_snap, clone, source_id):
        path = backend_file(lifecycle, _volume(db, vid))
        assert http.delete(f"/v3/{project}/volumes/{vid}").status_code == 202
        wait_status(db, vid, "deleted")
        assert not path.exists()


def test_delete_returns_quota_and_removes_the_file(lifecycle, db, env):
    http, project = env
    vid = create(http, project, size=2)
    vol = wait_status(db, vid, "available")
    path = backend_file(lifecycle, vol)
    assert path.exists()
    usage = http.get(f"/v3/{project}/os-quota-sets/{project}?usage=true").json()["quota_set"]
    assert usage["gigabytes"]["in_use"] == 2 and usage["volumes"]["in_use"] == 1
    assert http.delete(f"/v3/{project}/volumes/{vid}").status_code == 202
    wait_until(lambda: _volume(db, vid).deleted, what="volume deleted")
    assert not path.exists()
    assert http.get(f"/v3/{project}/volumes/{vid}").status_code == 404
    usage = http.get(f"/v3/{project}/os-quota-sets/{project}?usage=true").json()["quota_set"]
    assert usage["gigabytes"]["in_use"] == 0 and usage["volumes"]["in_use"] == 0


def test_too_big_for_any_backend_is_error_with_a_message_and_its_quota_back(lifecycle, db, env):
    http, project = env
    vid = create(http, project, size=500)
    vol = wait_status(db, vid, "error")
    assert vol.host is None and vol.use_quota is False
    usage = http.get(f"/v3/{project}/os-quota-sets/{project}?usage=true").json()["quota_set"]
    assert usage["gigabytes"]["in_use"] == 0
    messages = http.get(f"/v3/{project}/messages", headers={"OpenStack-API-Version": "volume 3.3"}).json()
    about = [m for m in messages["messages"] if m["resource_uuid"] == vid]
    assert len(about) == 1 and "Could not find any available weighted backend" in about[0]["user_message"]
    # Deleting it gives nothing back twice.
    assert http.delete(f"/v3/{project}/volumes/{vid}").status_code == 202
    assert _volume(db, vid).deleted


def test_extend_grows_the_file_and_past_quota_is_413(lifecycle, db, env):
    http, project = env
    factories.set_quota(db, project, gigabytes=4)
    vid = create(http, project, size=1)
    vol = wait_status(db, vid, "available")
    resp = http.post(f"/v3/{project}/volumes/{vid}/action", json={"os-extend": {"new_size": 3}})
    assert resp.status_code == 202, resp.text
    wait_until(lambda: _volume(db, vid).size == 3 and _volume(db, vid).status == "available", what="extended")
    assert os.stat(backend_file(lifecycle, vol)).st_size == 3 * GIB
    resp = http.post(f"/v3/{project}/volumes/{vid}/action", json={"os-extend": {"new_size": 5}})
    assert resp.status_code == 413, resp.text
    assert resp.json()["overLimit"]["message"].startswith(
        "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota.")
    assert _volume(db, vid).status == "available"
    resp = http.post(f"/v3/{project}/volumes/{vid}/action", json={"os-extend": {"new_size": 2}})
    assert resp.status_code == 400
    assert "New size for extend must be greater than current size" in resp.json()["badRequest"]["message"]


def test_a_duplicated_cast_creates_one_backend_volume(lifecycle, db, env):
    from workers.app import make_celery
    from workers.settings import Settings

    http, project = env
    vid = create(http, project)
    vol = wait_status(db, vid, "available")
    flows = flows_of(db, vid)
    (create_flow,) = flows["create_volume"]
    (scheduled,) = flows["schedule_volume"]
    app = make_celery(Settings(broker_url=LIFECYCLE_REDIS))
    # The same scheduler message again (the same message id), and a second cast of the create
    # straight to the volume's backend under a new message id.
    body = dict(scheduled.request)
    app.send_task(casts.SCHEDULER_CREATE, args=[body], queue="scheduler", task_id=body["message_id"])
    again = {**body, "message_id": str(uuid.uuid4()), "queue": casts.backend_queue(vol.host), "host": vol.host}
    app.send_task(casts.VOLUME_CREATE, args=[again], queue=again["queue"], task_id=again["message_id"])
    again_flow = casts.consumer_flow_id(again)
    wait_until(lambda: any(f.id == again_flow for f in flows_of(db, vid).get("provision_volume", [])),
               what="the second cast consumed")
    flows = flows_of(db, vid)
    assert len(flows["schedule_volume"]) == 1, "the repeated scheduler message ran twice"
    provisions = {f.id: f for f in flows["provision_volume"]}
    assert provisions[again_flow].steps["create_on_backend"]["result"] == {"skipped": "volume is available"}
    assert _volume(db, vid).status == "available"
    files = list((lifecycle.path_of(vol.host) / "volumes").glob(f"volume-{vid}*"))
    assert [p.name for p in files] == [f"volume-{vid}"]


def test_a_stopped_volume_service_keeps_its_messages_and_its_zone_is_down(lifecycle, db, env, issue_token):
    http, project = env
    admin = client(lifecycle.api_url, issue_token(project, user="root", role="admin"), version="3.65")
    host3 = lifecycle.start_volume_service("node3", "az3")
    wait_until(lambda: services_up(db, [host3]), 60, what="node3 up")
    source_id = create(http, project, availability_zone="az3")
    source = wait_status(db, source_id, "available")
    doomed_id = create(http, project, availability_zone="az3")
    doomed = wait_status(db, doomed_id, "available")
    grown_id = create(http, project, availability_zone="az3")
    dropped_id = create(http, project, availability_zone="az3")
    for vid in (grown_id, dropped_id):
        wait_status(db, vid, "available")
    lifecycle.stop_volume_service(host3)
    wait_until(lambda: not services_up(db, [host3]), 30, what="node3 down")
    # Its zone has no service up: a create there fails with a message and its quota back.
    lost = create(http, project, availability_zone="az3")
    vol = wait_status(db, lost, "error")
    assert vol.use_quota is False
    assert any("Could not find any available weighted backend" in m
               for m in [http.get(f"/v3/{project}/messages/{msg.id}", headers={"OpenStack-API-Version": "volume 3.3"})
                         .json()["message"]["user_message"] for msg in messages_about(db, lost)])
    # Work for it waits in its queue: a clone of its volume, a delete, an extend, and an extend
    # overtaken by an admin's force delete (its reservation must not outlive it).
    clone = create(http, project, source_volid=source_id)
    assert http.delete(f"/v3/{project}/volumes/{doomed_id}").status_code == 202
    for vid in (grown_id, dropped_id):
        assert http.post(f"/v3/{project}/volumes/{vid}/action", json={"os-extend": {"new_size": 2}}).status_code == 202
    assert admin.post(f"/v3/{project}/volumes/{dropped_id}/action", json={"os-force_delete": {}}).status_code == 202
    assert _volume(db, clone).status == "creating" and _volume(db, doomed_id).status == "deleting"
    assert _volume(db, grown_id).status == "extending" and _volume(db, dropped_id).status == "deleting"
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Reservation)
                              .where(Reservation.project_id == project)) == 4  # gigabytes and per type, twice
    doomed_path = backend_file(lifecycle, doomed)
    lifecycle.restart_volume_service(host3)
    cloned = wait_status(db, clone, "available", timeout=60)
    assert cloned.host == source.host and backend_file(lifecycle, cloned).exists()
    wait_until(lambda: _volume(db, doomed_id).deleted, 60, what="the waiting delete done")
    assert not doomed_path.exists()
    wait_until(lambda: _volume(db, grown_id).size == 2 and _volume(db, grown_id).status == "available", 60,
               what="the waiting extend done")
    wait_until(lambda: _volume(db, dropped_id).deleted, 60, what="the force delete done")
    for vid in (source_id, clone, lost, grown_id):
        assert http.delete(f"/v3/{project}/volumes/{vid}").status_code == 202
    wait_until(lambda: all(_volume(db, v).deleted for v in (source_id, clone, lost, grown_id)), 30,
               what="all deleted")
    lifecycle.stop_volume_service(host3)


def test_a_cast_that_arrives_before_its_sender_commits_is_not_lost(lifecycle, db, env):
    """A create cast straight to a backend is published inside the sending transaction, which
    sets the volume's host. If that transaction rolls back, the consumer must record nothing, so
    that the same message, sent again when the sender commits, still makes the volume."""
    from sqlalchemy import update

    from workers.app import make_celery
    from workers.settings import Settings

    http, project = env
    vol = factories.volume(db, project, status="creating", host=None, availability_zone="az1")
    host = f"{lifecycle.host1}#file"
    body = {"version": "1.0", "message_id": str(uuid.uuid4()), "flow_id": str(uuid.uuid4()), "volume_id": vol.id,
            "project_id": project, "queue": casts.backend_queue(host), "host": host,
            "request_spec": {"size": 1}, "sent_at": "2026-12-06T00:00:00"}
    app = make_celery(Settings(broker_url=LIFECYCLE_REDIS))
    flow_id = casts.consumer_flow_id(body)
    for commit in (False, True):
        with db() as session, session.begin():
            session.execute(update(Volume).where(Volume.id == vol.id).values(host=host))
            app.send_task(casts.VOLUME_CREATE, args=[body], queue=body["queue"], task_id=body["message_id"])
            time.sleep(1.0)  # the consumer is waiting on the row's lock
            if not commit:
                session.rollback()
        if not commit:
            time.sleep(0.5)
            assert "provision_volume" not in flows_of(db, vol.id), "a cast was recorded for a rolled-back send"
    done = wait_status(db, vol.id, "available")
    assert [f.id for f in flows_of(db, vol.id)["provision_volume"]] == [flow_id]
    assert backend_file(lifecycle, done).exists()
    assert http.delete(f"/v3/{project}/volumes/{vol.id}").status_code == 202
    wait_until(lambda: _volume(db, vol.id).deleted, 30, what="deleted")


def test_ids_that_cannot_exist_are_404s(lifecycle, db, env):
    http, project = env
    for method, path, status in (("DELETE", "volumes/%00", 400), ("GET", "volumes/%00", 400),
                                 ("GET", "snapshots/%00", 400), ("DELETE", "snapshots/not-a-uuid", 404),
                                 ("GET", "volumes/not-a-uuid/metadata", 404), ("POST", "volumes/x%00/action", 400),
                                 ("POST", "volumes/not-a-uuid/action", 404)):
        resp = http.request(method, f"/v3/{project}/{path}",
                            json={"os-extend": {"new_size": 2}} if method == "POST" else None)
        assert resp.status_code == status, (method, path, resp.text)  # a NUL anywhere in the URL: 400
    resp = http.get(f"/v3/{project}/messages/not-a-uuid", headers={"OpenStack-API-Version": "volume 3.3"})
    assert resp.status_code == 404
    vid = create(http, project)
    wait_status(db, vid, "available")
    resp = http.post(f"/v3/{project}/volumes/{vid}/action", json={"os-extend": {"new_size": "²"}})
    assert resp.status_code == 400, resp.text
    assert http.delete(f"/v3/{project}/volumes/{vid}").status_code == 202
    wait_until(lambda: _volume(db, vid).deleted, 30, what="deleted")


def test_a_volume_from_an_image_copies_its_file_and_a_driver_failure_is_an_error_with_a_message(
        lifecycle, db, env, tmp_path):
    http, project = env
    image_file = tmp_path / "image.raw"
    with open(image_file, "wb") as f:
        f.seek(3 * 1024 * 1024)
        f.write(b"bootloader")
    good = factories.image(db, size_gb=0.01, location=str(image_file))
    missing = factories.image(db, size_gb=0.01, location=str(tmp_path / "gone.raw"))
    from_image = create(http, project, imageRef=good.id)
    vol = wait_status(db, from_image, "available")
    with open(backend_file(lifecycle, vol), "rb") as f:
        f.seek(3 * 1024 * 1024)
        assert f.read(10) == b"bootloader"
    assert os.stat(backend_file(lifecycle, vol)).st_size == GIB
    broken = create(http, project, imageRef=missing.id)
    vol = wait_status(db, broken, "error")
    assert vol.use_quota is True, "a volume the driver failed stays charged until it is deleted (Cinder)"
    (message,) = messages_about(db, broken)
    shown = http.get(f"/v3/{project}/messages/{message.id}", headers={"OpenStack-API-Version": "volume 3.3"})
    assert shown.json()["message"]["user_message"].startswith("copy image to volume")
    for vid in (from_image, broken):
        assert http.delete(f"/v3/{project}/volumes/{vid}").status_code == 202
    wait_until(lambda: all(_volume(db, v).deleted for v in (from_image, broken)), 30, what="both deleted")


def test_a_message_a_consumer_cannot_handle_is_parked_not_dropped(lifecycle, db, env):
    from workers.app import make_celery
    from workers.settings import Settings

    http, project = env
    host = f"{lifecycle.host1}#file"
    vol = factories.volume(db, project, status="creating", host=host, availability_zone="az1")
    body = {"version": "1.0", "message_id": str(uuid.uuid4()), "flow_id": str(uuid.uuid4()), "volume_id": vol.id,
            "project_id": project, "queue": casts.backend_queue(host), "host": host,
            "request_spec": "not a request spec", "sent_at": "2026-12-06T00:00:00"}
    make_celery(Settings(broker_url=LIFECYCLE_REDIS)).send_task(
        casts.VOLUME_CREATE, args=[body], queue=body["queue"], task_id=body["message_id"])
    flow = wait_until(lambda: next((f for f in flows_of(db, vol.id).get("provision_volume", [])
                                    if f.state == "needs_attention"), None), 30, what="the flow parked")
    assert flow.id == casts.consumer_flow_id(body)
    assert flow.error["consumer_error"].startswith("AttributeError")
    assert _volume(db, vol.id).status == "creating"  # nothing half done; an operator decides
    assert http.delete(f"/v3/{project}/volumes/{vol.id}").status_code == 400  # creating, on a backend
