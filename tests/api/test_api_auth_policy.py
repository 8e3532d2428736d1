"""Who may do what: signed tokens, URL scoping, cross-project isolation, admin-only APIs, noauth."""

from __future__ import annotations

import json
import time
import uuid

import httpx
from sqlalchemy import select

from api.auth import TokenSigner, _b64, _unb64, database_secret
from models.flow_log import FlowRun
from models.quota import Quota
from models.volume import Volume
from tests import factories
from tests.api.helpers import assert_fault, client, new_project

UNAUTHORIZED = {"unauthorized": {"code": 401, "message": "The request you have made requires authentication."}}


def forbidden(resp: httpx.Response, action: str) -> None:
    assert_fault(resp, 403, "forbidden", f"Policy doesn't allow {action} to be performed.")


def signer(db) -> TokenSigner:
    with db() as s:
        return TokenSigner(database_secret(s))


def live_volume_ids(db, project: str) -> set[str]:
    with db() as s:
        return set(s.scalars(select(Volume.id).where(Volume.project_id == project, Volume.deleted.is_(False))))


# -- tokens -----------------------------------------------------------------------------------------

def _with_payload(token: str, **changes) -> str:
    prefix, payload, signature = token.split(".")
    data = json.loads(_unb64(payload))
    data.update(changes)
    return f"{prefix}.{_b64(json.dumps(data, separators=(',', ':')).encode())}.{signature}"


def _signed(sign: TokenSigner, payload: bytes) -> str:
    signed_part = f"vc1.{_b64(payload)}"
    return f"{signed_part}.{sign._sign(signed_part)}"


def bad_tokens(db, project: str) -> dict[str, str | None]:
    real = signer(db)
    good = real.issue(project, "u1", "member", 3600)
    prefix, payload, signature = good.split(".")
    now = time.time()
    return {
        "missing": None,
        "empty": "",
        "forged-signature": TokenSigner("not-this-deployment's-secret").issue(project, "u1", "admin", 3600),
        "tampered-role": _with_payload(good, r=["admin", "member", "reader"]),
        "tampered-project": _with_payload(good, p=new_project()),
        "tampered-expiry": _with_payload(good, exp=int(now) + 10**6),
        "signature-of-another-token": f"{prefix}.{payload}.{real.issue(project, 'u2', 'member', 3600).split('.')[2]}",
        "expired": real.issue(project, "u1", "member", 60, now=now - 3600),
        "expires-now": real.issue(project, "u1", "member", 1, now=now - 1),
        "other-prefix": f"vc2.{payload}.{signature}",
        "two-parts": f"{prefix}.{payload}",
        "four-parts": f"{good}.x",
        "garbage": "not a token at all",
        "user-colon-project": f"admin:{project}",  # noauth syntax means nothing to a token deployment
        "too-long": good + "A" * 5000,
        # Signed with the real secret but not a usable payload: still 401, never 500.
        "signed-non-json": _signed(real, b"\xff not json"),
        "signed-list": _signed(real, b"[1, 2, 3]"),
        "signed-no-expiry": _signed(real, json.dumps({"p": project, "u": "u1", "r": ["member"]}).encode()),
        "signed-bad-expiry": _signed(real, json.dumps({"p": project, "u": "u1", "r": ["member"],
                                                       "exp": "soon"}).encode()),
    }


def test_a_bad_token_is_a_401_everywhere(api_url, project, db, check_invariant):
    tokens = bad_tokens(db, project)
    for name, token in tokens.items():
        with client(api_url, token) as c:
            answers = [
                c.get(f"/v3/{project}/volumes"),
                c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1}}),
                c.put(f"/v3/{project}/os-quota-sets/{project}", json={"quota_set": {"volumes": 99}}),
                c.get("/v3/volumes/detail"),
            ]
        for answer in answers:
            assert answer.status_code == 401, (name, answer.request.url, answer.text)
            assert answer.json() == UNAUTHORIZED, name
            assert answer.headers.get("X-OpenStack-Request-Id", "").startswith("req-")
    assert live_volume_ids(db, project) == set()
    with db() as s:
        assert s.scalars(select(FlowRun.id).where(FlowRun.project_id == project)).all() == []
        assert s.scalars(select(Quota.hard_limit).where(Quota.project_id == project)).all() == []
    check_invariant(project)


def test_a_token_stops_working_when_it_expires(api_url, project, issue_token):
    token = issue_token(project, ttl=2)
    exp = json.loads(_unb64(token.split(".")[1]))["exp"]  # iat is truncated: 1 to 2 s of life left
    with client(api_url, token) as c:
        before = c.get(f"/v3/{project}/volumes")
        time.sleep(max(0.0, exp - time.time()) + 0.3)
        after = c.get(f"/v3/{project}/volumes")
    assert before.status_code == 200, before.text
    assert after.status_code == 401
    assert after.json() == UNAUTHORIZED


# -- URL scoping ------------------------------------------------------------------------------------

def test_a_token_for_one_project_used_on_another_is_a_malformed_url(api_url, project, issue_token, db):
    other = new_project()
    with client(api_url, issue_token(project, role="admin")) as c:  # even an admin must name its own project
        answers = [
            c.get(f"/v3/{other}/volumes"),
            c.post(f"/v3/{other}/volumes", json={"volume": {"size": 1}}),
            c.get(f"/v3/{other}/os-quota-sets/{other}"),
            c.get(f"/v3/{other}/limits"),
            c.get(f"/v3/{other}/types"),
        ]
    for answer in answers:
        assert_fault(answer, 400, "badRequest", "Malformed request url")
    assert live_volume_ids(db, project) == live_volume_ids(db, other) == set()


def test_a_project_id_that_is_not_hex_is_not_a_route(api_url, issue_token):
    with client(api_url, issue_token("demo")) as c:
        for answer in (c.get("/v3/demo/volumes"), c.post("/v3/demo/volumes", json={"volume": {"size": 1}}),
                       c.get("/v3/demo/limits")):
            assert_fault(answer, 404, "itemNotFound", "The resource could not be found.")


# -- cross-project isolation ------------------------------------------------------------------------

def test_a_project_never_sees_or_uses_another_projects_rows(api_url, issue_token, db, check_invariant):
    a, b = new_project(), new_project()
    vol_a = factories.volume(db, a, size=1)
    snap_a = factories.snapshot(db, a, vol_a)
    private_a = factories.volume_type(db, is_public=False, projects=[a])
    image_a = factories.image(db, owner=a, visibility="private")

    with client(api_url, issue_token(b)) as c:
        shown = c.get(f"/v3/{b}/volumes/{vol_a.id}")
        shown_no_project = c.get(f"/v3/volumes/{vol_a.id}")
        listed = c.get(f"/v3/{b}/volumes").json()["volumes"]
        detailed = c.get(f"/v3/{b}/volumes/detail").json()["volumes"]
        summary = c.get(f"/v3/{b}/volumes/summary").json()
        from_source = c.post(f"/v3/{b}/volumes", json={"volume": {"size": 1, "source_volid": vol_a.id}})
        from_snapshot = c.post(f"/v3/{b}/volumes", json={"volume": {"snapshot_id": snap_a.id}})
        by_type_name = c.post(f"/v3/{b}/volumes", json={"volume": {"size": 1, "volume_type": private_a.name}})
        by_type_id = c.post(f"/v3/{b}/volumes", json={"volume": {"size": 1, "volume_type": private_a.id}})
        from_image = c.post(f"/v3/{b}/volumes", json={"volume": {"size": 1, "imageRef": image_a.id}})
        type_shown = c.get(f"/v3/{b}/types/{private_a.id}")
        type_specs = c.get(f"/v3/{b}/types/{private_a.id}/extra_specs")
        types_b = [t["id"] for t in c.get(f"/v3/{b}/types").json()["volume_types"]]
        quota_a = c.get(f"/v3/{b}/os-quota-sets/{a}")
        quota_a_defaults = c.get(f"/v3/{b}/os-quota-sets/{a}/defaults")
        reset = c.post(f"/v3/{b}/volumes/{vol_a.id}/action", json={"os-reset_status": {"status": "error"}})

    not_found = f"Volume {vol_a.id} could not be found."
    assert_fault(shown, 404, "itemNotFound", not_found)
    assert_fault(shown_no_project, 404, "itemNotFound", not_found)
    assert vol_a.id not in {v["id"] for v in listed + detailed}
    assert summary == {"volume-summary": {"total_size": 0, "total_count": 0}}
    assert_fault(from_source, 404, "itemNotFound", not_found)
    assert_fault(from_snapshot, 404, "itemNotFound", f"Snapshot {snap_a.id} could not be found.")
    assert_fault(by_type_name, 404, "itemNotFound", f"Volume type with name {private_a.name} could not be found.")
    assert_fault(by_type_id, 404, "itemNotFound", f"Volume type {private_a.id} could not be found.")
    assert_fault(from_image, 400, "badRequest", "Invalid image identifier or unable to access requested image.")
    assert_fault(type_shown, 404, "itemNotFound", f"Volume type {private_a.id} could not be found.")
    assert_fault(type_specs, 404, "itemNotFound", f"Volume type {private_a.id} could not be found.")
    assert private_a.id not in types_b
    forbidden(quota_a, "volume_extension:quotas:show")
    forbidden(quota_a_defaults, "volume_extension:quotas:show")
    forbidden(reset, "volume_extension:volume_admin_actions:reset_status")
    assert live_volume_ids(db, b) == set()
    check_invariant(b)

    # The same references work for their owner: the 404s above are isolation, not absence.
    with client(api_url, issue_token(a)) as c:
        own = c.post(f"/v3/{a}/volumes", json={"volume": {"size": 1, "volume_type": private_a.name}})
        shown_a = c.get(f"/v3/{a}/volumes/{vol_a.id}")
        type_a = c.get(f"/v3/{a}/types/{private_a.id}")
        types_a = [t["id"] for t in c.get(f"/v3/{a}/types").json()["volume_types"]]
    assert own.status_code == 202, own.text
    assert own.json()["volume"]["volume_type"] == private_a.name
    assert shown_a.status_code == 200 and shown_a.json()["volume"]["status"] == "available"
    assert type_a.status_code == 200 and type_a.json()["volume_type"]["is_public"] is False
    assert private_a.id in types_a
    check_invariant(a)


def test_an_owner_can_clone_its_own_volume_and_snapshot(api_url, project, issue_token, db, check_invariant):
    vol = factories.volume(db, project, size=2)
    snap = factories.snapshot(db, project, vol)
    with client(api_url, issue_token(project)) as c:
        from_source = c.post(f"/v3/{project}/volumes", json={"volume": {"source_volid": vol.id}})
        from_snapshot = c.post(f"/v3/{project}/volumes", json={"volume": {"snapshot_id": snap.id}})
    assert from_source.status_code == 202, from_source.text
    assert from_snapshot.status_code == 202, from_snapshot.text
    assert (from_source.json()["volume"]["source_volid"], from_source.json()["volume"]["size"]) == (vol.id, 2)
    assert (from_snapshot.json()["volume"]["snapshot_id"], from_snapshot.json()["volume"]["size"]) == (snap.id, 2)
    assert len(live_volume_ids(db, project)) == 3
    check_invariant(project)


# -- admin-only APIs --------------------------------------------------------------------------------

def test_admin_only_apis_are_forbidden_to_members(api_url, project, issue_token, db, check_invariant):
    vt = factories.volume_type(db, extra_specs={"k": "v"})
    vol = factories.volume(db, project)
    t = f"/v3/{project}/types/{vt.id}"
    with client(api_url, issue_token(project)) as c:
        cases = [
            (c.put(f"/v3/{project}/os-quota-sets/{project}", json={"quota_set": {"volumes": 99}}),
             "volume_extension:quotas:update"),
            (c.delete(f"/v3/{project}/os-quota-sets/{project}"), "volume_extension:quotas:delete"),
            (c.get(f"/v3/{project}/os-quota-class-sets/default"), "volume_extension:quota_classes"),
            (c.put(f"/v3/{project}/os-quota-class-sets/default", json={"quota_class_set": {"volumes": 99}}),
             "volume_extension:quota_classes:update"),
            (c.post(f"/v3/{project}/types", json={"volume_type": {"name": f"m-{uuid.uuid4().hex[:8]}"}}),
             "volume_extension:types_manage"),
            (c.delete(t), "volume_extension:types_manage"),
            (c.post(f"{t}/extra_specs", json={"extra_specs": {"k": "changed"}}),
             "volume_extension:types_extra_specs:create"),
            (c.put(f"{t}/extra_specs/k", json={"k": "changed"}), "volume_extension:types_extra_specs:update"),
            (c.delete(f"{t}/extra_specs/k"), "volume_extension:types_extra_specs:delete"),
            (c.get(f"/v3/{project}/volumes", params={"all_tenants": "1"}), "volume:get_all_tenants"),
            (c.get(f"/v3/{project}/volumes/detail", params={"all_tenants": "true"}), "volume:get_all_tenants"),
            (c.get(f"/v3/{project}/volumes/summary", params={"all_tenants": "1"}), "volume:get_all_tenants"),
            (c.post(f"/v3/{project}/volumes/{vol.id}/action", json={"os-reset_status": {"status": "error"}}),
             "volume_extension:volume_admin_actions:reset_status"),
        ]
        for resp, action in cases:
            forbidden(resp, action)
        # Nothing changed.
        assert c.get(t).json()["volume_type"]["extra_specs"] == {"k": "v"}
        assert c.get(f"/v3/{project}/volumes/{vol.id}").json()["volume"]["status"] == "available"
        assert c.get(f"/v3/{project}/os-quota-sets/{project}").json()["quota_set"]["volumes"] == 10
    with db() as s:
        assert s.scalars(select(Quota.hard_limit).where(Quota.project_id == project)).all() == []
    check_invariant(project)


def test_a_member_reads_its_own_quota_and_limits(api_url, project, issue_token):
    with client(api_url, issue_token(project)) as c:
        quota = c.get(f"/v3/{project}/os-quota-sets/{project}", params={"usage": "true"})
        defaults = c.get(f"/v3/{project}/os-quota-sets/{project}/defaults")
        limits = c.get(f"/v3/{project}/limits")
    assert quota.status_code == 200 and quota.json()["quota_set"]["id"] == project
    assert defaults.status_code == 200 and defaults.json()["quota_set"]["id"] == project
    assert limits.status_code == 200 and "absolute" in limits.json()["limits"]


def test_a_reader_reads_but_does_not_write(api_url, project, issue_token, db, check_invariant):
    with client(api_url, issue_token(project)) as c:
        created = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "name": "by-member"}})
    assert created.status_code == 202, created.text
    vid = created.json()["volume"]["id"]
    with client(api_url, issue_token(project, user="r1", role="reader")) as c:
        refused = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1}})
        listed = c.get(f"/v3/{project}/volumes")
        detailed = c.get(f"/v3/{project}/volumes/detail")
        shown = c.get(f"/v3/{project}/volumes/{vid}")
        summary = c.get(f"/v3/{project}/volumes/summary")
        types = c.get(f"/v3/{project}/types")
        quota = c.get(f"/v3/{project}/os-quota-sets/{project}")
    forbidden(refused, "volume:create")
    assert [v["id"] for v in listed.json()["volumes"]] == [vid]
    assert [v["id"] for v in detailed.json()["volumes"]] == [vid]
    assert shown.status_code == 200 and shown.json()["volume"]["name"] == "by-member"
    assert summary.json() == {"volume-summary": {"total_size": 1, "total_count": 1}}
    assert types.status_code == 200 and quota.status_code == 200
    assert live_volume_ids(db, project) == {vid}
    check_invariant(project)


ADMIN_FIELDS = {"os-vol-tenant-attr:tenant_id", "os-vol-mig-status-attr:migstat", "os-vol-mig-status-attr:name_id",
                "os-vol-host-attr:host", "migration_status"}


def test_an_admin_lists_all_tenants_with_the_admin_fields(api_url, issue_token, db):
    a, b, admin_project = new_project(), new_project(), new_project()
    vol_a = factories.volume(db, a, host="hostA@lvm#pool")
    vol_b = factories.volume(db, b, host="hostB@lvm#pool")
    with client(api_url, issue_token(admin_project, user="root", role="admin")) as c:
        own_only = c.get(f"/v3/{admin_project}/volumes/detail").json()["volumes"]
        everyone = c.get(f"/v3/{admin_project}/volumes/detail", params={"all_tenants": "1"}).json()["volumes"]
        names = c.get(f"/v3/{admin_project}/volumes", params={"all_tenants": "True"}).json()["volumes"]
        not_all = c.get(f"/v3/{admin_project}/volumes/detail", params={"all_tenants": "0"}).json()["volumes"]
        shown = c.get(f"/v3/{admin_project}/volumes/{vol_a.id}", headers={"OpenStack-API-Version": "volume 3.67"})
        summary = c.get(f"/v3/{admin_project}/volumes/summary", params={"all_tenants": "1"})
    assert own_only == [] and not_all == []
    by_id = {v["id"]: v for v in everyone}
    assert {vol_a.id, vol_b.id} <= set(by_id)
    assert {vol_a.id, vol_b.id} <= {v["id"] for v in names}
    for vol, project, host in ((vol_a, a, "hostA@lvm#pool"), (vol_b, b, "hostB@lvm#pool")):
        view = by_id[vol.id]
        assert ADMIN_FIELDS <= set(view)
        assert (view["os-vol-tenant-attr:tenant_id"], view["os-vol-host-attr:host"]) == (project, host)
    assert shown.status_code == 200
    detail = shown.json()["volume"]
    assert ADMIN_FIELDS | {"provider_id", "cluster_name"} <= set(detail)
    assert summary.json()["volume-summary"]["total_count"] >= 2
    with client(api_url, issue_token(a)) as c:
        member_view = c.get(f"/v3/{a}/volumes/{vol_a.id}").json()["volume"]
    assert ADMIN_FIELDS.isdisjoint(member_view)


# -- noauth mode ------------------------------------------------------------------------------------

def test_noauth_makes_every_caller_an_admin_of_the_project_it_names(noauth_api_url, project, db):
    with client(noauth_api_url, f"user1:{project}") as c:
        put = c.put(f"/v3/{project}/os-quota-sets/{project}", json={"quota_set": {"volumes": 2}})
        created = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "name": "na"}})
        assert created.status_code == 202, created.text
        vid = created.json()["volume"]["id"]
        shown = c.get(f"/v3/{project}/volumes/{vid}").json()["volume"]
        mismatch = c.get(f"/v3/{new_project()}/volumes")
    assert put.status_code == 200, put.text
    assert put.json()["quota_set"]["volumes"] == 2
    assert created.json()["volume"]["user_id"] == "user1"
    assert (shown["os-vol-tenant-attr:tenant_id"], shown["user_id"]) == (project, "user1")
    assert_fault(mismatch, 400, "badRequest", "Malformed request url")
    with client(noauth_api_url, project) as c:  # no ':': the project is the user
        alone = c.get(f"/v3/{project}/volumes/{vid}")
    assert alone.status_code == 200
    assert live_volume_ids(db, project) == {vid}


def test_noauth_answers_tokenless_version_discovery(noauth_api_url, api_url, project):
    for base in (noauth_api_url, api_url):
        root = httpx.get(base + "/", timeout=30)
        assert root.status_code == 300
        assert root.json()["versions"][0]["version"] == "3.67"
        assert root.json()["versions"][0]["min_version"] == "3.0"
        for path in ("/v3/", "/v3"):
            v3 = httpx.get(base + path, timeout=30)
            assert v3.status_code == 200, (base, path, v3.status_code)
            doc = v3.json()["versions"][0]
            assert (doc["id"], doc["status"], doc["version"], doc["min_version"]) == ("v3.0", "CURRENT", "3.67", "3.0")
            assert {"rel": "self", "href": f"{base}/v3/"} in doc["links"]
        for path in (f"/v3/{project}", f"/v3/{project}/"):
            at_project = httpx.get(base + path, timeout=30)
            assert at_project.status_code == 200, (base, path, at_project.status_code)
            assert at_project.json()["version"]["version"] == "3.67"
    assert httpx.get(api_url + f"/v3/{project}/volumes", timeout=30).status_code == 401
