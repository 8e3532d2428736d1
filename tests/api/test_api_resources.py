"""The resources around a create: types (+ extra specs), quotas, quota classes, limits, zones, volume
lists (pagination, sort, filters, summary), os-reset_status, project-less URLs and the OpenAPI document."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import delete, or_, select

from models.quota import QuotaClass
from models.service import Service
from models.volume_type import VolumeType, VolumeTypeProject
from tests import factories
from tests.api.helpers import assert_fault, client, new_project

DEFAULT_TYPE_ID = factories.DEFAULT_TYPE_ID
BASE_ORDER = ["volumes", "per_volume_gigabytes", "snapshots", "gigabytes", "backups", "backup_gigabytes"]
DEFAULT_LIMITS = {"volumes": 10, "per_volume_gigabytes": -1, "snapshots": 10, "gigabytes": 1000, "backups": 10,
                  "backup_gigabytes": 1000, "groups": 10}


def type_names(db, visible_to: str | None = None) -> list[str]:
    """Live type names, in the database's own name order; with `visible_to`, only the public ones
    and the private ones that project may use (what a non-admin's quota lists)."""
    query = select(VolumeType.name).where(VolumeType.deleted.is_(False)).order_by(VolumeType.name)
    if visible_to is not None:
        query = query.where(or_(VolumeType.is_public.is_(True), VolumeType.id.in_(
            select(VolumeTypeProject.volume_type_id).where(VolumeTypeProject.project_id == visible_to))))
    with db() as s:
        return list(s.scalars(query))


def expected_quota_keys(db, visible_to: str | None = None) -> list[str]:
    """Cinder's order: the base resources, a (volumes, gigabytes, snapshots) triple per type, groups."""
    keys = list(BASE_ORDER)
    for name in type_names(db, visible_to):
        keys += [f"volumes_{name}", f"gigabytes_{name}", f"snapshots_{name}"]
    return keys + ["groups"]


def assert_quota_key_order(keys: list[str], db, visible_to: str | None = None) -> None:
    assert keys[:6] == BASE_ORDER
    assert keys[-1] == "groups"
    middle = keys[6:-1]
    assert len(middle) % 3 == 0
    triples = [middle[i:i + 3] for i in range(0, len(middle), 3)]
    names = []
    for vol, gb, snap in triples:
        name = vol.removeprefix("volumes_")
        assert [vol, gb, snap] == [f"volumes_{name}", f"gigabytes_{name}", f"snapshots_{name}"]
        names.append(name)
    assert sorted(names) == sorted(type_names(db, visible_to))
    assert "__DEFAULT__" in names


# -- volume types -----------------------------------------------------------------------------------

def test_an_admin_manages_types_and_extra_specs(api_url, project, issue_token, db):
    name = f"gold-{uuid.uuid4().hex[:8]}"
    admin = client(api_url, issue_token(project, user="root", role="admin"))
    member = client(api_url, issue_token(project))
    with admin, member:
        created = admin.post(f"/v3/{project}/types", json={"volume_type": {
            "name": name, "description": "fast", "extra_specs": {"volume_backend_name": "lvm", "a": "1"}}})
        assert created.status_code == 200, created.text
        vt = created.json()["volume_type"]
        assert vt == {"id": vt["id"], "name": name, "description": "fast", "is_public": True,
                      "extra_specs": {"volume_backend_name": "lvm", "a": "1"}, "qos_specs_id": None,
                      "os-volume-type-access:is_public": True}
        t = f"/v3/{project}/types/{vt['id']}"

        duplicate = admin.post(f"/v3/{project}/types", json={"volume_type": {"name": name}})
        assert_fault(duplicate, 409, "conflictingRequest", f"Volume Type {name} already exists.")
        assert name in [x["name"] for x in member.get(f"/v3/{project}/types").json()["volume_types"]]
        shown = member.get(t).json()["volume_type"]
        assert (shown["id"], shown["name"], shown["is_public"]) == (vt["id"], name, True)

        # Extra specs: set (add + change), list, show one, update one, delete one.
        assert admin.post(f"{t}/extra_specs", json={"extra_specs": {"b": "2", "a": "10"}}).json() == {
            "extra_specs": {"b": "2", "a": "10"}}
        assert member.get(f"{t}/extra_specs").json() == {
            "extra_specs": {"volume_backend_name": "lvm", "a": "10", "b": "2"}}
        assert member.get(f"{t}/extra_specs/a").json() == {"a": "10"}
        updated = admin.put(f"{t}/extra_specs/b", json={"b": "3"})
        assert updated.status_code == 200 and updated.json() == {"b": "3"}
        assert_fault(admin.put(f"{t}/extra_specs/b", json={"c": "3"}), 400, "badRequest",
                     "Request body and URI mismatch")
        assert admin.delete(f"{t}/extra_specs/a").status_code == 202
        assert_fault(member.get(f"{t}/extra_specs/a"), 404, "itemNotFound",
                     f"Volume Type {vt['id']} has no extra specs with key a.")
        assert_fault(admin.delete(f"{t}/extra_specs/a"), 404, "itemNotFound",
                     f"Volume Type {vt['id']} has no extra specs with key a.")
        assert member.get(t).json()["volume_type"]["extra_specs"] == {"volume_backend_name": "lvm", "b": "3"}

        # The new type is a quota resource of its own.
        quota = member.get(f"/v3/{project}/os-quota-sets/{project}").json()["quota_set"]
        assert (quota[f"volumes_{name}"], quota[f"gigabytes_{name}"], quota[f"snapshots_{name}"]) == (-1, -1, -1)

        deleted = admin.delete(t)
        assert deleted.status_code == 202
        assert_fault(member.get(t), 404, "itemNotFound", f"Volume type {vt['id']} could not be found.")
        assert_fault(admin.delete(t), 404, "itemNotFound", f"Volume type {vt['id']} could not be found.")
        assert name not in [x["name"] for x in member.get(f"/v3/{project}/types").json()["volume_types"]]
        assert f"volumes_{name}" not in member.get(f"/v3/{project}/os-quota-sets/{project}").json()["quota_set"]


def test_the_default_type_is___DEFAULT___and_cannot_be_deleted(api_url, project, issue_token):
    with client(api_url, issue_token(project, role="admin")) as admin:
        default = admin.get(f"/v3/{project}/types/default")
        refused = admin.delete(f"/v3/{project}/types/{DEFAULT_TYPE_ID}")
        still = admin.get(f"/v3/{project}/types/{DEFAULT_TYPE_ID}")
    assert default.status_code == 200
    vt = default.json()["volume_type"]
    assert (vt["id"], vt["name"], vt["description"], vt["is_public"]) == (
        DEFAULT_TYPE_ID, "__DEFAULT__", "Default Volume Type", True)
    assert refused.status_code == 400 and "badRequest" in refused.json()
    assert still.status_code == 200


def test_a_type_in_use_cannot_be_deleted(api_url, project, issue_token, db):
    vt = factories.volume_type(db)
    factories.volume(db, project, volume_type_id=vt.id)
    with client(api_url, issue_token(project, role="admin")) as admin:
        refused = admin.delete(f"/v3/{project}/types/{vt.id}")
        still = admin.get(f"/v3/{project}/types/{vt.id}")
    assert_fault(refused, 400, "badRequest",
                 f"Volume Type {vt.id} deletion is not allowed with volumes present with the type.")
    assert still.status_code == 200


def test_a_private_type_is_visible_to_its_projects_and_to_admins(api_url, issue_token, db, check_invariant):
    a, b, admin_project = new_project(), new_project(), new_project()
    private = factories.volume_type(db, is_public=False, projects=[a])
    with client(api_url, issue_token(a)) as c:
        listed_a = {t["id"] for t in c.get(f"/v3/{a}/types").json()["volume_types"]}
        shown_a = c.get(f"/v3/{a}/types/{private.id}")
    with client(api_url, issue_token(b)) as c:
        listed_b = {t["id"] for t in c.get(f"/v3/{b}/types").json()["volume_types"]}
        listed_b_all = {t["id"] for t in c.get(f"/v3/{b}/types", params={"is_public": "None"}).json()["volume_types"]}
        shown_b = c.get(f"/v3/{b}/types/{private.id}")
    with client(api_url, issue_token(admin_project, role="admin")) as c:
        shown_admin = c.get(f"/v3/{admin_project}/types/{private.id}")
        listed_admin_all = {t["id"] for t in c.get(f"/v3/{admin_project}/types",
                                                    params={"is_public": "None"}).json()["volume_types"]}
        listed_admin_private = c.get(f"/v3/{admin_project}/types", params={"is_public": "false"}).json()
        created = c.post(f"/v3/{admin_project}/types", json={"volume_type": {
            "name": f"hidden-{uuid.uuid4().hex[:8]}", "os-volume-type-access:is_public": False}})
    assert private.id in listed_a and shown_a.status_code == 200
    assert shown_a.json()["volume_type"]["os-volume-type-access:is_public"] is False
    assert private.id not in listed_b and private.id not in listed_b_all  # is_public is an admin-only filter
    assert DEFAULT_TYPE_ID in listed_b
    assert_fault(shown_b, 404, "itemNotFound", f"Volume type {private.id} could not be found.")
    assert shown_admin.status_code == 200
    assert {private.id, DEFAULT_TYPE_ID} <= listed_admin_all
    assert private.id in {t["id"] for t in listed_admin_private["volume_types"]}
    assert all(t["is_public"] is False for t in listed_admin_private["volume_types"])
    assert created.status_code == 200 and created.json()["volume_type"]["is_public"] is False
    hidden = created.json()["volume_type"]["id"]
    with client(api_url, issue_token(b)) as c:
        assert hidden not in {t["id"] for t in c.get(f"/v3/{b}/types").json()["volume_types"]}
        assert c.get(f"/v3/{b}/types/{hidden}").status_code == 404
    with client(api_url, issue_token(admin_project, role="admin")) as c:
        assert c.delete(f"/v3/{admin_project}/types/{hidden}").status_code == 202


def test_an_admins_default_type_list_shows_only_public_types(api_url, issue_token, db):
    """Cinder: without is_public, even an admin lists public types (and those its project was given)."""
    a, admin_project = new_project(), new_project()
    private = factories.volume_type(db, is_public=False, projects=[a])
    shared = factories.volume_type(db, is_public=False, projects=[admin_project])
    with client(api_url, issue_token(admin_project, role="admin")) as c:
        listed = {t["id"] for t in c.get(f"/v3/{admin_project}/types").json()["volume_types"]}
    assert DEFAULT_TYPE_ID in listed and shared.id in listed
    assert private.id not in listed


# -- quotas -----------------------------------------------------------------------------------------

def test_quota_show_with_usage_has_cinders_structure_and_order(api_url, project, issue_token, db, check_invariant):
    with client(api_url, issue_token(project)) as c:
        empty = c.get(f"/v3/{project}/os-quota-sets/{project}", params={"usage": "True"})
        created = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 2}})
        assert created.status_code == 202, created.text
        used = c.get(f"/v3/{project}/os-quota-sets/{project}", params={"usage": "true"}).json()["quota_set"]
        plain = c.get(f"/v3/{project}/os-quota-sets/{project}").json()["quota_set"]
    assert empty.status_code == 200
    body = empty.json()["quota_set"]
    keys = list(body)
    assert keys[-1] == "id" and body["id"] == project
    assert_quota_key_order(keys[:-1], db, visible_to=project)
    assert keys[:-1] == expected_quota_keys(db, visible_to=project)
    for name in keys[:-1]:
        assert list(body[name]) == ["limit", "in_use", "reserved"], name
        limit = DEFAULT_LIMITS.get(name, -1)
        assert body[name] == {"limit": limit, "in_use": 0, "reserved": 0}, name
    assert list(used) == keys
    for name, in_use in (("volumes", 1), ("gigabytes", 2), ("volumes___DEFAULT__", 1), ("gigabytes___DEFAULT__", 2)):
        assert used[name] == {"limit": DEFAULT_LIMITS.get(name, -1), "in_use": in_use, "reserved": 0}
    assert used["snapshots"]["in_use"] == 0
    assert list(plain) == keys
    assert plain == {**{k: DEFAULT_LIMITS.get(k, -1) for k in keys[:-1]}, "id": project}
    check_invariant(project)


def test_an_admin_sets_a_projects_quota(api_url, issue_token, db, check_invariant):
    admin_project, target = new_project(), new_project()
    with client(api_url, issue_token(target)) as c:
        assert c.post(f"/v3/{target}/volumes", json={"volume": {"size": 3}}).status_code == 202
    with client(api_url, issue_token(admin_project, role="admin")) as c:
        put = c.put(f"/v3/{admin_project}/os-quota-sets/{target}",
                    json={"quota_set": {"volumes": 5, "gigabytes": "50", "volumes___DEFAULT__": 4}})
        at_usage = c.put(f"/v3/{admin_project}/os-quota-sets/{target}", json={"quota_set": {"gigabytes": 3}})
        unlimited = c.put(f"/v3/{admin_project}/os-quota-sets/{target}", json={"quota_set": {"snapshots": -1}})
        unknown = c.put(f"/v3/{admin_project}/os-quota-sets/{target}", json={"quota_set": {"bogus": 1}})
        too_small = c.put(f"/v3/{admin_project}/os-quota-sets/{target}", json={"quota_set": {"backups": -2}})
        not_a_number = c.put(f"/v3/{admin_project}/os-quota-sets/{target}", json={"quota_set": {"backups": "x"}})
        no_quota_set = c.put(f"/v3/{admin_project}/os-quota-sets/{target}", json={"volumes": 1})
        shown = c.get(f"/v3/{admin_project}/os-quota-sets/{target}").json()["quota_set"]
    assert put.status_code == 200, put.text
    keys = expected_quota_keys(db)
    expected = {k: DEFAULT_LIMITS.get(k, -1) for k in keys}
    expected.update(volumes=5, gigabytes=50, volumes___DEFAULT__=4)
    assert list(put.json()["quota_set"]) == keys  # no id in the PUT answer, as Cinder answers
    assert put.json()["quota_set"] == expected
    assert at_usage.status_code == 200 and at_usage.json()["quota_set"]["gigabytes"] == 3  # equal to usage is fine
    assert unlimited.status_code == 200 and unlimited.json()["quota_set"]["snapshots"] == -1
    assert unknown.status_code == 400
    assert unknown.json()["badRequest"]["message"].endswith("Bad key(s) in quota set: bogus")
    for refused in (too_small, not_a_number, no_quota_set):
        assert refused.status_code == 400 and "badRequest" in refused.json(), refused.text
    assert shown == {**expected, "gigabytes": 3, "snapshots": -1, "id": target}
    check_invariant(target)

    with client(api_url, issue_token(admin_project, role="admin")) as c:
        reset = c.delete(f"/v3/{admin_project}/os-quota-sets/{target}")
        after = c.get(f"/v3/{admin_project}/os-quota-sets/{target}").json()["quota_set"]
    assert reset.status_code in (200, 202)
    assert after == {**{k: DEFAULT_LIMITS.get(k, -1) for k in keys}, "id": target}


def test_a_quota_below_current_usage_is_refused_with_cinders_message(api_url, project, issue_token, db,
                                                                      check_invariant):
    """cinder/api/contrib/quotas.py raises HTTPBadRequest(explanation=msg): no "Invalid input received" prefix."""
    with client(api_url, issue_token(project)) as c:
        assert c.post(f"/v3/{project}/volumes", json={"volume": {"size": 3}}).status_code == 202
    with client(api_url, issue_token(project, user="root", role="admin")) as c:
        below = c.put(f"/v3/{project}/os-quota-sets/{project}", json={"quota_set": {"volumes": 0}})
        below_gb = c.put(f"/v3/{project}/os-quota-sets/{project}", json={"quota_set": {"volumes": 9, "gigabytes": 2}})
        shown = c.get(f"/v3/{project}/os-quota-sets/{project}").json()["quota_set"]
    assert (shown["volumes"], shown["gigabytes"]) == (10, 1000)  # nothing was changed, not even volumes=9
    assert_fault(below, 400, "badRequest", "Quota volumes limit must be equal or greater than existing resources. "
                 "Current usage is 1 and the requested limit is 0.")
    assert_fault(below_gb, 400, "badRequest", "Quota gigabytes limit must be equal or greater than existing "
                 "resources. Current usage is 3 and the requested limit is 2.")
    check_invariant(project)


def test_quota_defaults_ignore_the_projects_own_limits(api_url, project, issue_token, db):
    factories.set_quota(db, project, volumes=3)
    with client(api_url, issue_token(project)) as c:
        defaults = c.get(f"/v3/{project}/os-quota-sets/{project}/defaults")
        own = c.get(f"/v3/{project}/os-quota-sets/{project}").json()["quota_set"]
    assert own["volumes"] == 3
    assert defaults.status_code == 200, defaults.text
    keys = expected_quota_keys(db, visible_to=project)
    assert list(defaults.json()["quota_set"]) == keys + ["id"]
    assert defaults.json()["quota_set"] == {**{k: DEFAULT_LIMITS.get(k, -1) for k in keys}, "id": project}


@pytest.fixture
def restore_default_class(db):
    """The default quota class is shared by every test: put its rows back exactly as they were."""
    with db() as s:
        before = dict(s.execute(select(QuotaClass.resource, QuotaClass.hard_limit)
                                .where(QuotaClass.class_name == "default")).all())
    yield before
    with db() as s, s.begin():
        s.execute(delete(QuotaClass).where(QuotaClass.class_name == "default"))
        s.add_all(QuotaClass(class_name="default", resource=r, hard_limit=v) for r, v in before.items())


def test_an_admin_reads_and_sets_the_default_quota_class(api_url, issue_token, db, restore_default_class):
    admin_project, fresh = new_project(), new_project()
    keys = expected_quota_keys(db)
    with client(api_url, issue_token(admin_project, role="admin")) as c:
        shown = c.get(f"/v3/{admin_project}/os-quota-class-sets/default")
        put = c.put(f"/v3/{admin_project}/os-quota-class-sets/default",
                    json={"quota_class_set": {"volumes": 11, "gigabytes": 1100}})
        fresh_quota = c.get(f"/v3/{admin_project}/os-quota-sets/{fresh}").json()["quota_set"]
        unknown = c.put(f"/v3/{admin_project}/os-quota-class-sets/default", json={"quota_class_set": {"bogus": 1}})
    assert [shown.status_code, put.status_code] == [200, 200], (shown.text, put.text)
    assert shown.json() == {"quota_class_set": {**{k: DEFAULT_LIMITS.get(k, -1) for k in keys}, "id": "default"}}
    assert put.json()["quota_class_set"]["volumes"] == 11
    assert put.json()["quota_class_set"]["gigabytes"] == 1100
    assert (fresh_quota["volumes"], fresh_quota["gigabytes"]) == (11, 1100)  # the class applies to every project
    assert unknown.status_code == 400


# -- limits and zones -------------------------------------------------------------------------------

def test_absolute_limits_follow_quota_and_usage(api_url, project, issue_token, db, check_invariant):
    factories.set_quota(db, project, volumes=7, gigabytes=70)
    with client(api_url, issue_token(project)) as c:
        before = c.get(f"/v3/{project}/limits")
        assert c.post(f"/v3/{project}/volumes", json={"volume": {"size": 3}}).status_code == 202
        after = c.get(f"/v3/{project}/limits")
    absolute = {"maxTotalVolumes": 7, "totalVolumesUsed": 0, "maxTotalSnapshots": 10, "totalSnapshotsUsed": 0,
                "maxTotalVolumeGigabytes": 70, "totalGigabytesUsed": 0, "maxTotalBackups": 10, "totalBackupsUsed": 0,
                "maxTotalBackupGigabytes": 1000, "totalBackupGigabytesUsed": 0}
    assert before.status_code == 200
    assert before.json() == {"limits": {"rate": [], "absolute": absolute}}
    assert after.json() == {"limits": {"rate": [], "absolute": {**absolute, "totalVolumesUsed": 1,
                                                                 "totalGigabytesUsed": 3}}}
    check_invariant(project)


def test_availability_zones_list_nova_and_registered_zones(api_url, project, issue_token, db):
    zone = f"az-{uuid.uuid4().hex[:8]}"
    svc = factories.service(db, f"host-{uuid.uuid4().hex[:8]}", zone)
    try:
        with client(api_url, issue_token(project)) as c:
            resp = c.get(f"/v3/{project}/os-availability-zone")
    finally:
        with db() as s, s.begin():
            s.execute(delete(Service).where(Service.id == svc.id))
    assert resp.status_code == 200
    zones = resp.json()["availabilityZoneInfo"]
    assert {"zoneName": "nova", "zoneState": {"available": True}} in zones
    assert {"zoneName": zone, "zoneState": {"available": True}} in zones
    assert all(set(z) == {"zoneName", "zoneState"} for z in zones)


# -- volume lists -----------------------------------------------------------------------------------

@pytest.fixture
def three_volumes(api_url, project, issue_token):
    """b-vol (1 GB, gold), a-vol (2 GB, silver), c-vol (3 GB, gold), created in that order."""
    ids = {}
    with client(api_url, issue_token(project)) as c:
        for name, size, tier in (("b-vol", 1, "gold"), ("a-vol", 2, "silver"), ("c-vol", 3, "gold")):
            resp = c.post(f"/v3/{project}/volumes", json={"volume": {"size": size, "name": name,
                                                                      "metadata": {"tier": tier}}})
            assert resp.status_code == 202, resp.text
            ids[name] = resp.json()["volume"]["id"]
    return ids


def _names(resp: httpx.Response, ids: dict[str, str]) -> list[str]:
    assert resp.status_code == 200, resp.text
    by_id = {v: k for k, v in ids.items()}
    return [by_id[v["id"]] for v in resp.json()["volumes"]]


def test_lists_sort_filter_and_summarise(api_url, project, issue_token, three_volumes, check_invariant):
    ids = three_volumes
    base = f"/v3/{project}/volumes"
    with client(api_url, issue_token(project)) as c:
        assert _names(c.get(base), ids) == ["c-vol", "a-vol", "b-vol"]  # created_at desc
        assert _names(c.get(base, params={"sort": "name:asc"}), ids) == ["a-vol", "b-vol", "c-vol"]
        assert _names(c.get(base, params={"sort_key": "size", "sort_dir": "desc"}), ids) == ["c-vol", "a-vol", "b-vol"]
        assert _names(c.get(f"{base}/detail", params={"sort": "name:desc"}), ids) == ["c-vol", "b-vol", "a-vol"]
        assert _names(c.get(base, params={"name": "a-vol"}), ids) == ["a-vol"]
        assert _names(c.get(base, params={"status": "creating", "sort": "name"}), ids) == ["c-vol", "b-vol", "a-vol"]
        assert _names(c.get(base, params={"status": "available"}), ids) == []
        gold = c.get(f"{base}/detail", params={"metadata": json.dumps({"tier": "gold"}), "sort": "name:asc"})
        assert _names(gold, ids) == ["b-vol", "c-vol"]
        assert all(v["metadata"] == {"tier": "gold"} for v in gold.json()["volumes"])
        assert _names(c.get(base, params={"metadata": "{'tier': 'silver'}"}), ids) == ["a-vol"]
        listed = c.get(base).json()["volumes"][0]
        assert set(listed) == {"id", "links", "name"}
        summary = c.get(f"{base}/summary")
        summary_336 = c.get(f"{base}/summary", headers={"OpenStack-API-Version": "volume 3.36"})
    assert summary.json() == {"volume-summary": {"total_size": 6, "total_count": 3}}
    s336 = summary_336.json()["volume-summary"]
    assert (s336["total_size"], s336["total_count"]) == (6, 3)
    assert {k: sorted(v) for k, v in s336["metadata"].items()} == {"tier": ["gold", "silver"]}
    check_invariant(project)


def test_pagination_with_limit_and_marker(api_url, project, issue_token, three_volumes):
    ids = three_volumes
    with client(api_url, issue_token(project)) as c:
        page1 = c.get(f"/v3/{project}/volumes", params={"limit": 2})
        assert _names(page1, ids) == ["c-vol", "a-vol"]
        links = page1.json()["volumes_links"]
        assert links == [{"rel": "next", "href": links[0]["href"]}]
        href = urlsplit(links[0]["href"])
        assert f"{href.scheme}://{href.netloc}" == api_url
        assert href.path == f"/v3/{project}/volumes"
        assert parse_qs(href.query) == {"limit": ["2"], "marker": [ids["a-vol"]]}
        page2 = c.get(f"{href.path}?{href.query}")
        assert _names(page2, ids) == ["b-vol"]
        assert "volumes_links" not in page2.json()
        detail = c.get(f"/v3/{project}/volumes/detail", params={"limit": 1, "marker": ids["c-vol"]})
        assert _names(detail, ids) == ["a-vol"]
        assert urlsplit(detail.json()["volumes_links"][0]["href"]).path == f"/v3/{project}/volumes/detail"
        everything = c.get(f"/v3/{project}/volumes", params={"limit": 10})
        assert len(everything.json()["volumes"]) == 3 and "volumes_links" not in everything.json()


def test_the_next_link_keeps_the_sort_and_filters(api_url, project, issue_token, three_volumes):
    """Cinder's next link is the request's own query with the marker replaced (sort and filters kept)."""
    ids = three_volumes
    with client(api_url, issue_token(project)) as c:
        page1 = c.get(f"/v3/{project}/volumes", params={"sort": "name:asc", "limit": 2})
        assert _names(page1, ids) == ["a-vol", "b-vol"]
        href = urlsplit(page1.json()["volumes_links"][0]["href"])
        query = parse_qs(href.query)
        assert query["sort"] == ["name:asc"] and query["marker"] == [ids["b-vol"]]
        assert _names(c.get(f"{href.path}?{href.query}"), ids) == ["c-vol"]

        gold1 = c.get(f"/v3/{project}/volumes", params={"metadata": json.dumps({"tier": "gold"}), "limit": 1})
        href = urlsplit(gold1.json()["volumes_links"][0]["href"])
        assert _names(c.get(f"{href.path}?{href.query}"), ids) == ["b-vol"]


@pytest.mark.parametrize("params, message", [
    pytest.param({"limit": "-1"}, "limit param must be positive", id="negative-limit"),
    pytest.param({"limit": "abc"}, "limit param must be an integer", id="limit-not-int"),
])
def test_a_bad_limit_is_a_400_with_cinders_message(api_url, project, issue_token, params, message):
    with client(api_url, issue_token(project)) as c:
        resp = c.get(f"/v3/{project}/volumes", params=params)
    assert_fault(resp, 400, "badRequest", message)


def test_bad_list_parameters_are_400s(api_url, project, issue_token):
    with client(api_url, issue_token(project)) as c:
        for params in ({"sort": "bogus:asc"}, {"sort": "name:sideways"}, {"sort_key": "bogus"}):
            resp = c.get(f"/v3/{project}/volumes", params=params)
            assert resp.status_code == 400, (params, resp.text)
            assert "badRequest" in resp.json()


# -- actions ----------------------------------------------------------------------------------------

def test_an_admin_resets_a_volumes_status(api_url, project, issue_token, db):
    vol = factories.volume(db, project, status="error")
    admin_project = new_project()
    action = f"/v3/{admin_project}/volumes/{vol.id}/action"
    with client(api_url, issue_token(admin_project, role="admin")) as c:
        reset = c.post(action, json={"os-reset_status": {"status": "available"}})
        assert reset.status_code == 202 and reset.content == b""
        shown = c.get(f"/v3/{admin_project}/volumes/{vol.id}").json()["volume"]
        bad_status = c.post(action, json={"os-reset_status": {"status": "sleeping"}})
        empty = c.post(action, json={"os-reset_status": {}})
        unknown_volume = c.post(f"/v3/{admin_project}/volumes/{uuid.uuid4()}/action",
                                json={"os-reset_status": {"status": "available"}})
    assert shown["status"] == "available"
    with client(api_url, issue_token(project)) as c:
        assert c.get(f"/v3/{project}/volumes/{vol.id}").json()["volume"]["status"] == "available"
        assert [v["id"] for v in c.get(f"/v3/{project}/volumes", params={"status": "available"}).json()[
            "volumes"]] == [vol.id]
    assert bad_status.status_code == 400 and empty.status_code == 400
    assert unknown_volume.status_code == 404


def test_an_unknown_action_is_a_400(api_url, project, issue_token, db):
    vol = factories.volume(db, project)
    with client(api_url, issue_token(project, role="admin")) as c:
        unknown = c.post(f"/v3/{project}/volumes/{vol.id}/action", json={"os-frobnicate": {}})
        two = c.post(f"/v3/{project}/volumes/{vol.id}/action",
                     json={"os-reset_status": {"status": "error"}, "os-extend": {"new_size": 2}})
        shown = c.get(f"/v3/{project}/volumes/{vol.id}").json()["volume"]
    assert_fault(unknown, 400, "badRequest", "There is no such action: os-frobnicate")
    assert two.status_code == 400
    assert shown["status"] == "available"


# -- project-less URLs and the OpenAPI document -----------------------------------------------------

def test_project_less_urls_act_in_the_tokens_project(api_url, project, issue_token, db, check_invariant):
    with client(api_url, issue_token(project), "3.67") as c:
        created = c.post("/v3/volumes", json={"volume": {"size": 1, "name": "pl"}})
        assert created.status_code == 202, created.text
        vid = created.json()["volume"]["id"]
        shown = c.get(f"/v3/volumes/{vid}")
        detail = c.get("/v3/volumes/detail")
        with_project = c.get(f"/v3/{project}/volumes/detail")
        summary = c.get("/v3/volumes/summary")
        quota = c.get(f"/v3/os-quota-sets/{project}", params={"usage": "true"})
    assert shown.status_code == 200 and shown.json()["volume"]["name"] == "pl"
    assert [v["id"] for v in detail.json()["volumes"]] == [vid]
    assert [v["id"] for v in with_project.json()["volumes"]] == [vid]
    assert summary.json()["volume-summary"]["total_count"] == 1
    assert quota.json()["quota_set"]["volumes"]["in_use"] == 1
    with client(api_url, issue_token(new_project())) as other:
        assert other.get(f"/v3/volumes/{vid}").status_code == 404
        assert other.get("/v3/volumes/detail").json()["volumes"] == []
    check_invariant(project)


def test_project_less_collections_answer_the_collection_not_a_version_document(api_url, project, issue_token,
                                                                                 db, check_invariant):
    vol = factories.volume(db, project)
    with client(api_url, issue_token(project), "3.67") as c:
        answers = {path: c.get(path) for path in ("/v3/volumes", "/v3/types", "/v3/limits",
                                                  "/v3/os-availability-zone")}
    for path, key in (("/v3/volumes", "volumes"), ("/v3/types", "volume_types"), ("/v3/limits", "limits"),
                      ("/v3/os-availability-zone", "availabilityZoneInfo")):
        assert answers[path].status_code == 200, path
        assert list(answers[path].json()) == [key], (path, answers[path].text[:200])
    assert [v["id"] for v in answers["/v3/volumes"].json()["volumes"]] == [vol.id]


def test_the_openapi_document_describes_the_api(api_url):
    resp = httpx.get(f"{api_url}/openapi.json", timeout=30)
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    expected = {
        "/v3/{project_id}/volumes": {"get", "post"},
        "/v3/{project_id}/volumes/detail": {"get"},
        "/v3/{project_id}/volumes/summary": {"get"},
        "/v3/{project_id}/volumes/{volume_id}": {"get"},
        "/v3/{project_id}/volumes/{volume_id}/action": {"post"},
        "/v3/{project_id}/types": {"get", "post"},
        "/v3/{project_id}/types/default": {"get"},
        "/v3/{project_id}/types/{type_id}": {"get", "delete"},
        "/v3/{project_id}/types/{type_id}/extra_specs": {"get", "post"},
        "/v3/{project_id}/os-quota-sets/{target}": {"get", "put", "delete"},
        "/v3/{project_id}/os-quota-sets/{target}/defaults": {"get"},
        "/v3/{project_id}/os-quota-class-sets/{class_name}": {"get", "put"},
        "/v3/{project_id}/limits": {"get"},
        "/v3/{project_id}/os-availability-zone": {"get"},
        "/": {"get"},
        "/v3/": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    assert paths["/v3/{project_id}/volumes"]["post"]["summary"]
