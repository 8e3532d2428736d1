"""`Prefer: respond-async` and `Idempotency-Key` on POST /volumes."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from models import utcnow
from models.flow_log import FlowRun
from models.quota import QuotaUsage
from models.volume import Volume
from tests import conftest, factories
from tests.api.helpers import client

ASYNC = {"Prefer": "respond-async"}
PARKED_QUEUE = f"volchain.steps.parked-{uuid.uuid4().hex[:8]}"
PARKED_WAIT_SECONDS = 5


def live_volumes(db, project: str) -> list[Volume]:
    with db() as s:
        return list(s.scalars(select(Volume).where(Volume.project_id == project, Volume.deleted.is_(False))))


def flows(db, project: str) -> list[FlowRun]:
    with db() as s:
        return list(s.scalars(select(FlowRun).where(FlowRun.project_id == project)))


def usage(db, project: str, resource: str) -> tuple[int, int]:
    with db() as s:
        row = s.scalar(select(QuotaUsage).where(QuotaUsage.project_id == project, QuotaUsage.resource == resource))
        return (row.in_use, row.reserved) if row else (0, 0)


def wait_for_flow(db, flow_id: str, timeout: float = 30.0) -> FlowRun:
    deadline = time.monotonic() + timeout
    while True:
        with db() as s:
            flow = s.get(FlowRun, flow_id)
        if flow is not None and flow.state in ("succeeded", "reverted", "needs_attention"):
            return flow
        if time.monotonic() > deadline:
            pytest.fail(f"flow {flow_id} did not finish within {timeout}s (state {flow and flow.state})")
        time.sleep(0.1)


def flow_of(db, volume_id: str) -> FlowRun:
    with db() as s:
        return s.scalar(select(FlowRun).where(FlowRun.volume_id == volume_id))


# -- Prefer: respond-async --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def parked_api(database_url, redis_client, tmp_path_factory):
    """An API whose chains go to a queue no worker reads: every flow it starts stays `running`."""
    port = conftest.free_port()
    env = {"VOLCHAIN_STEP_QUEUE": PARKED_QUEUE, "VOLCHAIN_API_WAIT_SECONDS": str(PARKED_WAIT_SECONDS)}
    proc = conftest.start_api(port, "token", extra_env=env, log_path=tmp_path_factory.mktemp("parked") / "api.log")
    base = f"http://127.0.0.1:{port}"
    started: list[str] = []
    try:
        conftest.wait_for_http(base + "/")
        yield base, started
    finally:
        conftest.stop_worker(proc)
        # Leave nothing running for other tests' sweeps: drop the parked chains and finish their flows.
        from tasks.create.flow import STEPS
        from tasks.sweeper import sweep
        from workers.runtime import get_runtime

        redis_client.delete(PARKED_QUEUE)
        factory = get_runtime().factory
        with factory() as s, s.begin():
            s.execute(update(FlowRun).where(FlowRun.project_id.in_(started), FlowRun.state == "running")
                      .values(progress_at=utcnow() - timedelta(days=2)))
        sweep(factory, STEPS, get_runtime().env, 86400)
        with factory() as s:
            left = s.scalars(select(FlowRun.id).where(FlowRun.project_id.in_(started), FlowRun.state == "running"))
            assert list(left) == []


def test_respond_async_answers_at_once_with_the_preallocated_id(parked_api, api_url, project, issue_token, db):
    base, started = parked_api
    started.append(project)
    token = issue_token(project)
    with client(base, token) as c:
        t0 = time.monotonic()
        resp = c.post(f"/v3/{project}/volumes", headers=ASYNC,
                      json={"volume": {"size": 2, "name": "later", "metadata": {"k": "v"}}})
        elapsed = time.monotonic() - t0
    assert resp.status_code == 202, resp.text
    assert elapsed < PARKED_WAIT_SECONDS / 2, elapsed  # it did not wait for the chain
    assert resp.headers.get("Preference-Applied") == "respond-async"
    vol = resp.json()["volume"]
    assert (vol["status"], vol["size"], vol["name"], vol["metadata"], vol["volume_type"], vol["user_id"]) == (
        "creating", 2, "later", {"k": "v"}, "__DEFAULT__", "u1")
    flow = flow_of(db, vol["id"])
    assert flow is not None and flow.project_id == project and flow.state == "running"
    assert live_volumes(db, project) == []  # no step ran: the id was allocated before the chain
    with client(api_url, token) as c:  # any API process shows it
        shown = c.get(f"/v3/{project}/volumes/{vol['id']}")
    assert shown.status_code == 200, shown.text
    assert (shown.json()["volume"]["id"], shown.json()["volume"]["status"]) == (vol["id"], "creating")


def test_a_waited_create_answered_before_its_outcome_can_be_shown(parked_api, api_url, project, issue_token, db):
    """A 202 `creating` answer names a volume the caller can GET (Cinder's row exists by then)."""
    base, started = parked_api
    started.append(project)
    token = issue_token(project)
    with client(base, token) as c:
        t0 = time.monotonic()
        resp = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "name": "slow"}})
        elapsed = time.monotonic() - t0
    assert resp.status_code == 202, resp.text
    assert elapsed >= PARKED_WAIT_SECONDS - 0.5
    assert "Preference-Applied" not in resp.headers
    vol = resp.json()["volume"]
    assert (vol["status"], vol["name"]) == ("creating", "slow")
    assert flow_of(db, vol["id"]).state == "running"
    with client(api_url, token) as c:
        shown = c.get(f"/v3/{project}/volumes/{vol['id']}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["volume"]["status"] == "creating"


def test_a_waited_create_answered_creating_that_fails_later_shows_as_error(parked_api, api_url, project,
                                                                          issue_token, db, check_invariant):
    """Accepted means visible: a create answered 202 `creating` because the wait ran out, then
    failed (here: its chain lost, and by the time the sweeper drives it forward the project's
    quota is gone), is `error` on GET, never a 404, and a user message says why."""
    from tasks.create.flow import STEPS
    from tasks.sweeper import sweep
    from workers.runtime import get_runtime

    base, started = parked_api
    started.append(project)
    token = issue_token(project)
    with client(base, token) as c:
        resp = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "name": "lost"}})
    assert resp.status_code == 202 and resp.json()["volume"]["status"] == "creating", resp.text
    vid = resp.json()["volume"]["id"]
    flow = flow_of(db, vid)
    assert flow.caller["respond_async"] is True  # marked: its caller was answered before the outcome
    factory = get_runtime().factory
    factories.set_quota(db, project, volumes=0)
    with factory() as s, s.begin():
        s.execute(update(FlowRun).where(FlowRun.id == flow.id).values(progress_at=utcnow() - timedelta(days=1)))
    sweep(factory, STEPS, get_runtime().env, 3600)
    assert wait_for_flow(db, flow.id).state == "reverted"
    with client(api_url, token) as c:
        shown = c.get(f"/v3/{project}/volumes/{vid}")
        messages = c.get(f"/v3/{project}/messages", headers={"OpenStack-API-Version": "volume 3.3"})
    assert shown.status_code == 200, shown.text
    assert (shown.json()["volume"]["status"], shown.json()["volume"]["name"]) == ("error", "lost")
    assert [(m["resource_uuid"], m["user_message"]) for m in messages.json()["messages"]] == [
        (vid, "create volume:Not enough quota resource for operation.")]  # Cinder joins them with ":"
    check_invariant(project)


def test_an_async_create_is_shown_creating_then_as_its_row(api_url, project, issue_token, db, check_invariant):
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes", headers=ASYNC, json={"volume": {"size": 1, "name": "a1"}})
        assert resp.status_code == 202, resp.text
        vid = resp.json()["volume"]["id"]
        first = c.get(f"/v3/{project}/volumes/{vid}")
        assert first.status_code == 200 and first.json()["volume"]["status"] == "creating"
        flow = wait_for_flow(db, flow_of(db, vid).id)
        assert flow.state == "succeeded"
        final = c.get(f"/v3/{project}/volumes/{vid}")
        listed = [v["id"] for v in c.get(f"/v3/{project}/volumes").json()["volumes"]]
    assert final.status_code == 200
    assert (final.json()["volume"]["id"], final.json()["volume"]["status"], final.json()["volume"]["name"]) == (
        vid, "creating", "a1")
    assert listed == [vid]
    assert [v.id for v in live_volumes(db, project)] == [vid]
    assert usage(db, project, "volumes") == (1, 0)
    check_invariant(project)


def test_an_async_create_that_fails_shows_as_error(api_url, project, issue_token, db, check_invariant):
    factories.set_quota(db, project, volumes=0)
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes", headers=ASYNC, json={"volume": {"size": 1, "name": "nope"}})
        assert resp.status_code == 202, resp.text  # answered before the quota step ran
        vid = resp.json()["volume"]["id"]
        flow = wait_for_flow(db, flow_of(db, vid).id)
        shown = c.get(f"/v3/{project}/volumes/{vid}")
        listed = c.get(f"/v3/{project}/volumes").json()["volumes"]
    assert flow.state == "reverted" and flow.error["type"] == "VolumeLimitExceeded"
    assert shown.status_code == 200, shown.text
    view = shown.json()["volume"]
    assert (view["id"], view["status"], view["name"], view["size"]) == (vid, "error", "nope", 1)
    assert listed == []
    assert live_volumes(db, project) == []
    assert usage(db, project, "volumes") == (0, 0)
    check_invariant(project)


def test_a_waited_create_that_fails_leaves_no_volume_to_show(api_url, project, issue_token, db, check_invariant):
    factories.set_quota(db, project, volumes=0)
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1}})
        assert resp.status_code == 413, resp.text
        (flow,) = flows(db, project)
        shown = c.get(f"/v3/{project}/volumes/{flow.volume_id}")
    assert flow.state == "reverted"
    assert shown.status_code == 404
    assert shown.json() == {"itemNotFound": {"code": 404, "message": f"Volume {flow.volume_id} could not be found."}}
    assert live_volumes(db, project) == []
    check_invariant(project)


def test_another_project_cannot_see_an_async_create(api_url, project, issue_token, db):
    with client(api_url, issue_token(project)) as c:
        vid = c.post(f"/v3/{project}/volumes", headers=ASYNC, json={"volume": {"size": 1}}).json()["volume"]["id"]
    other = uuid.uuid4().hex
    with client(api_url, issue_token(other)) as c:
        shown = c.get(f"/v3/{other}/volumes/{vid}")
    assert shown.status_code == 404
    wait_for_flow(db, flow_of(db, vid).id)


# -- Idempotency-Key --------------------------------------------------------------------------------

def test_the_same_key_twice_creates_one_volume(api_url, project, issue_token, db, check_invariant):
    key = f"key-{uuid.uuid4()}"
    with client(api_url, issue_token(project)) as c:
        first = c.post(f"/v3/{project}/volumes", headers={"Idempotency-Key": key},
                       json={"volume": {"size": 1, "name": "once"}})
        second = c.post(f"/v3/{project}/volumes", headers={"Idempotency-Key": key},
                        json={"volume": {"size": 1, "name": "once"}})
        unkeyed = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "name": "once"}})
    assert first.status_code == second.status_code == unkeyed.status_code == 202
    vid = first.json()["volume"]["id"]
    assert second.json()["volume"]["id"] == vid
    assert second.json()["volume"]["name"] == "once"
    assert unkeyed.json()["volume"]["id"] != vid
    assert len([f for f in flows(db, project) if f.idempotency_key == key]) == 1
    assert {v.id for v in live_volumes(db, project)} == {vid, unkeyed.json()["volume"]["id"]}
    assert usage(db, project, "volumes") == (2, 0)
    check_invariant(project)


def test_the_same_key_in_another_project_is_another_volume(api_url, issue_token, db, check_invariant):
    key = f"key-{uuid.uuid4()}"
    ids = {}
    for project in (uuid.uuid4().hex, uuid.uuid4().hex):
        with client(api_url, issue_token(project)) as c:
            resp = c.post(f"/v3/{project}/volumes", headers={"Idempotency-Key": key}, json={"volume": {"size": 1}})
        assert resp.status_code == 202, resp.text
        ids[project] = resp.json()["volume"]["id"]
    assert len(set(ids.values())) == 2
    for project, vid in ids.items():
        assert [v.id for v in live_volumes(db, project)] == [vid]
        assert usage(db, project, "volumes") == (1, 0)
        check_invariant(project)


def test_concurrent_posts_with_one_key_create_one_volume(api_url, project, issue_token, db, check_invariant):
    key = f"key-{uuid.uuid4()}"
    token = issue_token(project)

    def post(_):
        with client(api_url, token) as c:
            return c.post(f"/v3/{project}/volumes", headers={"Idempotency-Key": key},
                          json={"volume": {"size": 1, "name": "race"}})

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    assert [a.status_code for a in answers] == [202] * 8, [a.text for a in answers if a.status_code != 202]
    ids = {a.json()["volume"]["id"] for a in answers}
    assert len(ids) == 1
    assert len(flows(db, project)) == 1
    assert [v.id for v in live_volumes(db, project)] == list(ids)
    assert usage(db, project, "volumes") == (1, 0)
    with client(api_url, token) as c:
        listed = c.get(f"/v3/{project}/volumes").json()["volumes"]
    assert [v["id"] for v in listed] == list(ids)
    check_invariant(project)


def test_a_key_replays_an_async_create_and_a_failed_one(api_url, project, issue_token, db, check_invariant):
    key = f"key-{uuid.uuid4()}"
    with client(api_url, issue_token(project)) as c:
        early = c.post(f"/v3/{project}/volumes", headers={**ASYNC, "Idempotency-Key": key},
                       json={"volume": {"size": 1}})
        waited = c.post(f"/v3/{project}/volumes", headers={"Idempotency-Key": key}, json={"volume": {"size": 1}})
    assert early.status_code == waited.status_code == 202
    assert early.json()["volume"]["id"] == waited.json()["volume"]["id"]
    assert len(live_volumes(db, project)) == 1

    failing = uuid.uuid4().hex
    factories.set_quota(db, failing, volumes=0)
    with client(api_url, issue_token(failing)) as c:
        answers = [c.post(f"/v3/{failing}/volumes", headers={"Idempotency-Key": key}, json={"volume": {"size": 1}})
                   for _ in range(2)]
    for answer in answers:
        assert answer.status_code == 413
        assert answer.json()["overLimit"]["message"].startswith("VolumeLimitExceeded: ")
    assert len(flows(db, failing)) == 1  # the retry replayed the first outcome
    assert live_volumes(db, failing) == []
    check_invariant(project)
    check_invariant(failing)


@pytest.mark.parametrize("key", ["", "k" * 256])
def test_an_idempotency_key_must_be_1_to_255_characters(api_url, project, issue_token, db, key):
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes", headers={"Idempotency-Key": key}, json={"volume": {"size": 1}})
    assert resp.status_code == 400
    assert resp.json() == {"badRequest": {"code": 400, "message":
                                          "Invalid input received: Idempotency key must be 1 to 255 characters."}}
    assert flows(db, project) == []
