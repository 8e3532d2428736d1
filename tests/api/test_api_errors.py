"""Every error class of the create flow, answered with Cinder's fault body and messages.

Each failing create ends with the invariant (quota usage equals the rows) and no live volume row
for the project. Messages are Cinder's exact ones (max version: volchain's 3.67).
"""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from sqlalchemy import select

from models.flow_log import FlowRun
from models.volume import Volume
from tests import conftest, factories
from tests.api.helpers import assert_fault, client

MALFORMED = "The server could not comply with the request since it is either malformed or otherwise incorrect."
REQ_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
NO_SUCH_UUID = "944671bd-8d26-4a69-bcd8-87055ca31728"
HEADER = "OpenStack-API-Version"


def assert_openstack_headers(resp: httpx.Response, version: str = "3.0") -> str:
    rid = resp.headers.get("X-OpenStack-Request-Id")
    assert rid is not None and REQ_ID.match(rid), resp.headers
    assert resp.headers.get("X-Compute-Request-Id") == rid
    assert resp.headers.get(HEADER) == f"volume {version}"
    assert resp.headers.get("Vary") == HEADER
    return rid


def live_volumes(db, project: str) -> list[Volume]:
    with db() as s:
        return list(s.scalars(select(Volume).where(Volume.project_id == project, Volume.deleted.is_(False))))


def assert_nothing_left(db, check_invariant, project: str) -> None:
    assert live_volumes(db, project) == []
    check_invariant(project)


# -- 400 ---------------------------------------------------------------------------------------------

BAD_REQUESTS = [
    pytest.param({"volume": {"size": 0, "name": "v0"}},
                 "Invalid input for field/attribute size. Value: 0. 0 is less than the minimum of 1", id="size-0"),
    pytest.param({"volume": {"size": -1, "name": "vneg"}},
                 "Invalid input for field/attribute size. Value: -1. -1 is less than the minimum of 1", id="size-neg"),
    pytest.param({"volume": {"size": "abc", "name": "vabc"}},
                 "Invalid input for field/attribute size. Value: abc. 'abc' does not match '^[0-9]+$'", id="size-abc"),
    pytest.param({"volume": {"size": 1.5, "name": "vfloat"}},
                 "Invalid input for field/attribute size. Value: 1.5. 1.5 is not of type 'integer', 'string', 'null'",
                 id="size-float"),
    pytest.param({"volume": {"size": 2147483648}},
                 "Invalid input for field/attribute size. Value: 2147483648. "
                 "2147483648 is greater than the maximum of 2147483647", id="size-over-int-max"),
    pytest.param({"volume": {"name": "nosize"}}, MALFORMED, id="size-missing"),
    pytest.param({"volume": {"size": None, "name": "nullsize"}}, MALFORMED, id="size-null"),
    pytest.param({"size": 1}, "'volume' is a required property", id="no-volume-key"),
    pytest.param({"volume": {"size": 1}, "bogus": 1}, "Additional properties are not allowed ('bogus' was unexpected)",
                 id="unknown-top-level-key"),
    pytest.param({"volume": {"size": 1, "name": "x" * 256}},
                 "Invalid input received: name has 256 characters, more than 255.", id="name-256"),
    pytest.param({"volume": {"size": 1, "display_name": "  " + "y" * 256 + "  "}},
                 "Invalid input received: name has 256 characters, more than 255.", id="display-name-256"),
    pytest.param({"volume": {"size": 1, "description": "d" * 256}},
                 "Invalid input received: description has 256 characters, more than 255.", id="description-256"),
    pytest.param({"volume": {"size": 1, "snapshot_id": "not-a-uuid"}},
                 "Invalid input for field/attribute snapshot_id. Value: not-a-uuid. "
                 "'not-a-uuid' is not valid under any of the given schemas", id="snapshot-not-uuid"),
    pytest.param({"volume": {"size": 1, "availability_zone": "no-such-az"}},
                 "Availability zone 'no-such-az' is invalid.", id="unknown-az"),
    pytest.param({"volume": {"size": 1, "imageRef": "27d43022-db65-4476-84ec-15b2f4072e47"}},
                 "Invalid image identifier or unable to access requested image.", id="unknown-imageRef"),
    pytest.param({"volume": {"size": 1, "multiattach": True}},
                 "multiattach parameter has been removed. The default behavior is to use multiattach enabled "
                 "volume types. Contact your administrator to create a multiattach enabled volume type and use "
                 "it to create multiattach volumes.", id="multiattach-removed"),
]


@pytest.mark.parametrize("body, message", BAD_REQUESTS)
def test_a_bad_create_is_a_400_with_cinders_message(api_url, project, issue_token, db, check_invariant, body, message):
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes", json=body)
    assert_fault(resp, 400, "badRequest", message)
    assert_openstack_headers(resp)
    assert_nothing_left(db, check_invariant, project)


@pytest.mark.parametrize("size, message", [
    pytest.param("0", "Invalid input for field/attribute size. Value: 0. 0 is less than the minimum of 1", id="zero"),
    pytest.param("2147483648", "Invalid input for field/attribute size. Value: 2147483648. "
                 "2147483648 is greater than the maximum of 2147483647", id="over-int-max"),
])
def test_a_size_string_is_bounded_by_the_schema_like_an_integer(api_url, project, issue_token, db, check_invariant,
                                                                 size, message):
    """Cinder's _SchemaValidator applies minimum/maximum to numeric strings too ('0', '2147483648')."""
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes", json={"volume": {"size": size}})
    assert_fault(resp, 400, "badRequest", message)
    assert_nothing_left(db, check_invariant, project)


@pytest.mark.parametrize("raw", [b'{"volume": {"size": 1', b"not json", b"\xff\xfe"])
def test_a_body_that_is_not_json_is_malformed(api_url, project, issue_token, db, check_invariant, raw):
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes", content=raw, headers={"Content-Type": "application/json"})
    assert_fault(resp, 400, "badRequest", "Malformed request body")
    assert_openstack_headers(resp)
    assert_nothing_left(db, check_invariant, project)


def test_unknown_volume_keys_are_refused_from_3_53_and_ignored_before(api_url, project, issue_token, db,
                                                                       check_invariant):
    token = issue_token(project)
    body = {"volume": {"size": 1, "bogus_field": 1}}
    with client(api_url, token, "3.53") as c:
        refused = c.post(f"/v3/{project}/volumes", json=body)
    assert_fault(refused, 400, "badRequest", "Invalid input for field/attribute volume. Value: "
                 "{'size': 1, 'bogus_field': 1}. Additional properties are not allowed ('bogus_field' was unexpected)")
    assert_openstack_headers(refused, "3.53")
    assert_nothing_left(db, check_invariant, project)

    for version in ("3.0", "3.52"):
        with client(api_url, token, version) as c:
            accepted = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "user_id": "evil",
                                                                          "status": "available"}})
        assert accepted.status_code == 202, accepted.text
        vol = accepted.json()["volume"]
        assert (vol["status"], vol["user_id"]) == ("creating", "u1")
    assert len(live_volumes(db, project)) == 2
    check_invariant(project)


def test_a_name_is_trimmed_before_its_length_is_checked(api_url, project, issue_token, db, check_invariant):
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes", json={"volume": {"size": "1", "name": "  " + "n" * 255 + "\t"}})
    assert resp.status_code == 202, resp.text
    vol = resp.json()["volume"]
    assert (vol["name"], vol["size"]) == ("n" * 255, 1)  # size string "1" answered as the integer 1
    assert [v.id for v in live_volumes(db, project)] == [vol["id"]]
    check_invariant(project)


# -- 403 ---------------------------------------------------------------------------------------------

def test_a_reader_may_not_create(api_url, project, issue_token, db, check_invariant):
    image = factories.image(db)
    with client(api_url, issue_token(project, role="reader")) as c:
        plain = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1}})
        from_image = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "imageRef": image.id}})
    assert_fault(plain, 403, "forbidden", "Policy doesn't allow volume:create to be performed.")
    assert_openstack_headers(plain)
    assert_fault(from_image, 403, "forbidden", "Policy doesn't allow volume:create_from_image to be performed.")
    assert_nothing_left(db, check_invariant, project)
    with db() as s:  # refused before any flow was recorded
        assert s.scalars(select(FlowRun.id).where(FlowRun.project_id == project)).all() == []


# -- 404 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("volume, message", [
    pytest.param({"size": 1, "name": "vt", "volume_type": "no-such-type"},
                 "Volume type with name no-such-type could not be found.", id="type-by-name"),
    pytest.param({"size": 1, "volume_type": NO_SUCH_UUID}, f"Volume type {NO_SUCH_UUID} could not be found.",
                 id="type-by-id"),
    pytest.param({"size": 1, "snapshot_id": NO_SUCH_UUID}, f"Snapshot {NO_SUCH_UUID} could not be found.",
                 id="snapshot"),
    pytest.param({"size": 1, "source_volid": NO_SUCH_UUID}, f"Volume {NO_SUCH_UUID} could not be found.",
                 id="source-volume"),
])
def test_an_unknown_reference_is_a_404(api_url, project, issue_token, db, check_invariant, volume, message):
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes", json={"volume": volume})
    assert_fault(resp, 404, "itemNotFound", message)
    assert_openstack_headers(resp)
    assert_nothing_left(db, check_invariant, project)


def test_showing_an_unknown_volume_is_a_404(api_url, project, issue_token):
    vid = str(uuid.uuid4())
    with client(api_url, issue_token(project)) as c:
        resp = c.get(f"/v3/{project}/volumes/{vid}")
        not_a_uuid = c.get(f"/v3/{project}/volumes/not-a-uuid")
    assert_fault(resp, 404, "itemNotFound", f"Volume {vid} could not be found.")
    assert_openstack_headers(resp)
    assert_fault(not_a_uuid, 404, "itemNotFound", "Volume not-a-uuid could not be found.")


def test_an_unknown_route_is_a_cinder_404(api_url, project, issue_token):
    with client(api_url, issue_token(project)) as c:
        resp = c.get(f"/v3/{project}/no-such-collection")
    assert_fault(resp, 404, "itemNotFound", "The resource could not be found.")
    assert_openstack_headers(resp)


# -- 409 ---------------------------------------------------------------------------------------------

def test_an_image_name_matching_two_images_is_a_409(api_url, project, issue_token, db, check_invariant):
    name = f"twin-{uuid.uuid4().hex[:8]}"
    factories.image(db, name=name)
    factories.image(db, name=name)
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "imageRef": name}})
    assert_fault(resp, 409, "conflictingRequest",
                 f"Multiple matches found for '{name}', use an ID to be more specific.")
    assert_openstack_headers(resp)
    assert_nothing_left(db, check_invariant, project)


# -- 413 ---------------------------------------------------------------------------------------------

def assert_over_limit(resp: httpx.Response, message: str) -> None:
    assert resp.status_code == 413, resp.text
    assert resp.headers.get("Retry-After") == "0"
    assert resp.json() == {"overLimit": {"code": 413, "message": message, "retryAfter": "0"}}
    assert_openstack_headers(resp)


def test_over_quota_is_a_413_with_the_exception_name_and_retry_after(api_url, project, issue_token, db,
                                                                      check_invariant):
    factories.set_quota(db, project, volumes=10, gigabytes=5)
    with client(api_url, issue_token(project)) as c:
        first = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 2, "name": "q1"}})
        assert first.status_code == 202, first.text
        for size in (6, 4):
            big = c.post(f"/v3/{project}/volumes", json={"volume": {"size": size, "name": "big"}})
            assert_over_limit(big, "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed "
                              f"gigabytes quota. Requested {size}G, quota is 5G and 2G has been consumed.")
        factories.set_quota(db, project, volumes=1)
        third = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "name": "q3"}})
        assert_over_limit(third, "VolumeLimitExceeded: Maximum number of volumes allowed (1) exceeded for quota "
                          "'volumes'.")
        usage = c.get(f"/v3/{project}/os-quota-sets/{project}", params={"usage": "true"}).json()["quota_set"]
    assert [v.id for v in live_volumes(db, project)] == [first.json()["volume"]["id"]]
    assert (usage["volumes"]["in_use"], usage["volumes"]["reserved"]) == (1, 0)
    assert (usage["gigabytes"]["in_use"], usage["gigabytes"]["reserved"]) == (2, 0)
    check_invariant(project)


def test_a_body_over_the_size_limit_is_a_413(api_url, project, issue_token, db, check_invariant):
    big = b'{"volume": {"size": 1, "description": "' + b"x" * (300 * 1024) + b'"}}'
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes", content=big, headers={"Content-Type": "application/json"})
        chunked = c.post(f"/v3/{project}/volumes", content=iter([big[:1000], big[1000:]]),
                         headers={"Content-Type": "application/json"})
    for answer in (resp, chunked):
        assert answer.status_code == 413, answer.text
        assert answer.json() == {"overLimit": {"code": 413, "message": "Request is too large.", "retryAfter": "0"}}
        assert answer.headers.get("Retry-After") == "0"
        assert_openstack_headers(answer)
    assert_nothing_left(db, check_invariant, project)


# -- 406 / microversions -------------------------------------------------------------------------------

def test_an_unsupported_microversion_is_a_406_that_echoes_the_request(api_url, project, issue_token, db,
                                                                     check_invariant):
    with client(api_url, issue_token(project), "3.72") as c:
        resp = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1}})
        listing = c.get(f"/v3/{project}/volumes")
    for answer in (resp, listing):
        assert_fault(answer, 406, "computeFault",
                     "Version 3.72 is not supported by the API. Minimum is 3.0 and maximum is 3.67.")
        assert answer.headers[HEADER] == "volume 3.72"
        assert answer.headers["Vary"] == HEADER
        assert REQ_ID.match(answer.headers["X-OpenStack-Request-Id"])
    with client(api_url, issue_token(project), "2.0") as c:
        too_old = c.get(f"/v3/{project}/volumes")
    assert_fault(too_old, 406, "computeFault",
                 "Version 2.0 is not supported by the API. Minimum is 3.0 and maximum is 3.67.")
    with client(api_url, issue_token(project), "3.x") as c:
        garbage = c.get(f"/v3/{project}/volumes")
    assert_fault(garbage, 400, "badRequest",
                 "API Version String 3.x is of invalid format. Must be of format MajorNum.MinorNum.")
    assert_nothing_left(db, check_invariant, project)


def test_latest_negotiates_3_67_and_another_service_is_ignored(api_url, project, issue_token):
    token = issue_token(project)
    with client(api_url, token, "latest") as c:
        latest = c.get(f"/v3/{project}/volumes")
    assert latest.status_code == 200
    assert_openstack_headers(latest, "3.67")
    with httpx.Client(base_url=api_url, timeout=30,
                      headers={"X-Auth-Token": token, HEADER: "compute 2.90, volume 3.50"}) as c:
        mixed = c.get(f"/v3/{project}/volumes")
        other = c.get(f"/v3/{project}/volumes", headers={HEADER: "compute 2.90"})
    assert_openstack_headers(mixed, "3.50")
    assert_openstack_headers(other, "3.0")


# -- views and headers --------------------------------------------------------------------------------

V3_67_EXTRAS = {"group_id", "shared_targets", "service_uuid", "volume_type_id", "consumes_quota"}
ADMIN_EXTRAS = {"provider_id", "cluster_name", "migration_status"}


def test_the_3_67_view_has_the_extra_fields_and_3_0_does_not(api_url, project, issue_token, check_invariant):
    token = issue_token(project)
    with client(api_url, token, "3.67") as c:
        created = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "name": "v2", "description": "d",
                                                                     "metadata": {"k": "v"}}})
        assert created.status_code == 202, created.text
        assert_openstack_headers(created, "3.67")
        vol = created.json()["volume"]
        shown = c.get(f"/v3/{project}/volumes/{vol['id']}").json()["volume"]
    with client(api_url, token) as c:
        old = c.get(f"/v3/{project}/volumes/{vol['id']}").json()["volume"]
    for view in (vol, shown):
        assert V3_67_EXTRAS <= set(view), view
        assert ADMIN_EXTRAS.isdisjoint(view)  # admin-only fields, even at 3.67
        assert (view["group_id"], view["shared_targets"], view["service_uuid"], view["volume_type_id"],
                view["consumes_quota"]) == (None, True, None, factories.DEFAULT_TYPE_ID, True)
        assert (view["volume_type"], view["bootable"], view["encrypted"], view["metadata"], view["description"]) == (
            "__DEFAULT__", "false", False, {"k": "v"}, "d")
    assert V3_67_EXTRAS.isdisjoint(old)
    assert old["id"] == vol["id"]
    check_invariant(project)


def test_the_create_answer_is_the_wire_sample_view(api_url, project, issue_token, check_invariant):
    with client(api_url, issue_token(project, user="user1")) as c:
        created = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "name": "v1"}})
    assert created.status_code == 202, created.text
    vol = created.json()["volume"]
    assert list(vol) == ["id", "status", "size", "availability_zone", "created_at", "updated_at", "name",
                         "description", "volume_type", "snapshot_id", "source_volid", "metadata", "links", "user_id",
                         "bootable", "encrypted", "replication_status", "consistencygroup_id", "multiattach",
                         "attachments"]
    assert {k: vol[k] for k in ("status", "size", "availability_zone", "updated_at", "name", "description",
                                "volume_type", "snapshot_id", "source_volid", "metadata", "user_id", "bootable",
                                "encrypted", "replication_status", "consistencygroup_id", "multiattach",
                                "attachments")} == {
        "status": "creating", "size": 1, "availability_zone": "nova", "updated_at": None, "name": "v1",
        "description": None, "volume_type": "__DEFAULT__", "snapshot_id": None, "source_volid": None, "metadata": {},
        "user_id": "user1", "bootable": "false", "encrypted": False, "replication_status": None,
        "consistencygroup_id": None, "multiattach": False, "attachments": []}
    assert vol["links"] == [
        {"rel": "self", "href": f"{api_url}/v3/{project}/volumes/{vol['id']}"},
        {"rel": "bookmark", "href": f"{api_url}/{project}/volumes/{vol['id']}"},
    ]
    check_invariant(project)


def test_every_v3_response_carries_request_id_and_version_headers(api_url, project, issue_token):
    token = issue_token(project)
    seen = set()
    with client(api_url, token) as c:
        answers = [
            c.get(f"/v3/{project}/volumes"),                        # 200
            c.get(f"/v3/{project}/volumes/{NO_SUCH_UUID}"),         # 404
            c.post(f"/v3/{project}/volumes", json={"size": 1}),     # 400
            c.get(f"/v3/{uuid.uuid4().hex}/volumes"),               # 400 (other project)
            c.get("/v3/demo/volumes"),                              # 404 (non-hex project)
            c.put(f"/v3/{project}/os-quota-sets/{project}", json={"quota_set": {"volumes": 1}}),  # 403
            c.delete(f"/v3/{project}/volumes"),                     # 405
            c.get("/v3/"),                                          # 200 version document
        ]
        answers.append(httpx.get(f"{api_url}/v3/{project}/volumes", timeout=30))  # 401
    assert [a.status_code for a in answers] == [200, 404, 400, 400, 404, 403, 405, 200, 401]
    for answer in answers:
        seen.add(assert_openstack_headers(answer))
    assert len(seen) == len(answers)  # a new id per request
    assert answers[6].json() == {"badMethod": {"code": 405,
                                               "message": "The method is not allowed for the requested URL."}}


# -- 500 ---------------------------------------------------------------------------------------------

def test_a_missing_default_type_is_a_500_compute_fault(database_url, workers, project, issue_token, db,
                                                       check_invariant, tmp_path):
    """A worker + API pair whose default type does not exist, on queues of their own."""
    assert conftest.DATABASE_URL == database_url  # the helpers target this session's database
    env = {"VOLCHAIN_DEFAULT_VOLUME_TYPE": "no-such-default", "VOLCHAIN_STEP_QUEUE": "volchain.steps.t500",
           "VOLCHAIN_COMPENSATE_QUEUE": "volchain.compensate.t500"}
    worker = conftest.start_worker(1, queues="volchain.steps.t500,volchain.compensate.t500", extra_env=env,
                                   log_path=tmp_path / "worker-t500.log")
    port = conftest.free_port()
    api = conftest.start_api(port, "token", extra_env=env, log_path=tmp_path / "api-t500.log")
    try:
        base = f"http://127.0.0.1:{port}"
        conftest.wait_for_http(base + "/")
        with client(base, issue_token(project)) as c:
            resp = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "name": "nodefault"}})
            typed = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "volume_type": "__DEFAULT__"}})
            default = c.get(f"/v3/{project}/types/default")
    finally:
        conftest.stop_worker(api)
        conftest.stop_worker(worker)
    assert_fault(resp, 500, "computeFault",
                 "The request cannot be fulfilled as the default volume type no-such-default cannot be found.")
    assert_openstack_headers(resp)
    assert typed.status_code == 202, typed.text  # a named type does not need the default
    assert_fault(default, 404, "itemNotFound", "Default volume type can not be found.")
    assert [v.id for v in live_volumes(db, project)] == [typed.json()["volume"]["id"]]
    check_invariant(project)
