"""Updating a volume (name, description, metadata) and its metadata items, against the live API:
Cinder's bodies and messages, merge against replace, ETags, isolation, policy, statuses, the row lock,
and python-cinderclient's `cinder rename` / `cinder metadata` / `cinder metadata-update-all`."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid

import pytest
from sqlalchemy import select

from models.volume import Volume, VolumeMetadata
from tests import factories
from tests.api.helpers import assert_fault, client, new_project
from tests.api.test_real_clients import cinder_noauth, props, run

MISMATCH = "Request body and URI mismatch"
KEYS = "'^[a-zA-Z0-9-_:. /]{1,255}$'"  # the key pattern, as jsonschema quotes it


def add_metadata(db, volume_id: str, **items: str) -> None:
    with db() as session, session.begin():
        session.add_all(VolumeMetadata(volume_id=volume_id, key=k, value=x) for k, x in items.items())


def stored(db, volume_id: str) -> tuple[dict[str, str], Volume]:
    """The volume's metadata rows and its row, as the database has them."""
    with db() as session:
        rows = session.execute(select(VolumeMetadata.key, VolumeMetadata.value)
                               .where(VolumeMetadata.volume_id == volume_id)).all()
        return dict(rows), session.get(Volume, volume_id)


def not_found(resp, volume_id: str) -> None:
    assert_fault(resp, 404, "itemNotFound", f"Volume {volume_id} could not be found.")


def forbidden(resp, action: str) -> None:
    assert_fault(resp, 403, "forbidden", f"Policy doesn't allow {action} to be performed.")


def bad_request(resp, message: str) -> None:
    assert_fault(resp, 400, "badRequest", message)


# -- PUT /volumes/{id} ---------------------------------------------------------------------------------

def test_a_member_renames_a_volume_and_get_shows_the_new_name(api_url, project, issue_token, db):
    vol = factories.volume(db, project)
    add_metadata(db, vol.id, old="1", kept="2")
    with client(api_url, issue_token(project)) as c:
        updated = c.put(f"/v3/{project}/volumes/{vol.id}", json={"volume": {
            "name": "  renamed  ", "description": " about it ", "metadata": {"kept": "20", "new": "3"}}})
        shown = c.get(f"/v3/{project}/volumes/{vol.id}")
    assert updated.status_code == 200, updated.text
    view = updated.json()["volume"]
    assert (view["id"], view["name"], view["description"]) == (vol.id, "renamed", "about it")
    assert view["metadata"] == {"kept": "20", "new": "3"}  # the update's metadata replaces all of it
    assert view["updated_at"] is not None and view["status"] == "available"
    assert shown.json()["volume"]["name"] == "renamed"
    assert shown.json()["volume"]["metadata"] == {"kept": "20", "new": "3"}
    metadata, row = stored(db, vol.id)
    assert metadata == {"kept": "20", "new": "3"}
    assert (row.display_name, row.display_description) == ("renamed", "about it")
    assert row.updated_at is not None and row.updated_at.isoformat() == view["updated_at"]


def test_the_v1_names_work_name_wins_and_null_clears(api_url, project, issue_token, db):
    vol = factories.volume(db, project)
    add_metadata(db, vol.id, k="v")
    url = f"/v3/{project}/volumes/{vol.id}"
    with client(api_url, issue_token(project)) as c:
        first = c.put(url, json={"volume": {"display_name": "d1", "display_description": "dd"}}).json()["volume"]
        both = c.put(url, json={"volume": {"name": "n2", "display_name": "ignored"}}).json()["volume"]
        cleared = c.put(url, json={"volume": {"description": None}}).json()["volume"]
    assert (first["name"], first["description"]) == ("d1", "dd")
    assert (both["name"], both["description"]) == ("n2", "dd")
    assert (cleared["name"], cleared["description"]) == ("n2", None)
    assert cleared["metadata"] == {"k": "v"}  # no `metadata` key: left alone


def test_an_admins_update_answer_has_no_extension_attributes(api_url, project, issue_token, db):
    vol = factories.volume(db, project)
    with client(api_url, issue_token(project, role="admin")) as c:
        updated = c.put(f"/v3/{project}/volumes/{vol.id}", json={"volume": {"name": "a"}}).json()["volume"]
        shown = c.get(f"/v3/{project}/volumes/{vol.id}").json()["volume"]
    assert "os-vol-tenant-attr:tenant_id" not in updated and "migration_status" in updated
    assert shown["os-vol-tenant-attr:tenant_id"] == project


@pytest.mark.parametrize("version, body, message", [
    (None, {}, "'volume' is a required property"),
    (None, {"volume": {"name": "x"}, "extra": 1}, "Additional properties are not allowed ('extra' was unexpected)"),
    (None, {"volume": {"size": 2}},
     "Invalid input for field/attribute volume. Value: {'size': 2}. "
     "Additional properties are not allowed ('size' was unexpected)"),
    (None, {"volume": []}, "Invalid input for field/attribute volume. Value: []. [] is not of type 'object'"),
    (None, {"volume": {"name": 5}},
     "Invalid input for field/attribute name. Value: 5. 5 is not of type 'string', 'null'"),
    (None, {"volume": {"name": "x" * 256}}, "Invalid input received: name has 256 characters, more than 255."),
    (None, {"volume": {"display_description": "d" * 300}},
     "Invalid input received: description has 300 characters, more than 255."),
    (None, {"volume": {"metadata": {"k": 1}}},
     "Invalid input for field/attribute k. Value: 1. 1 is not of type 'string'"),
    (None, {"volume": {"metadata": None}},
     "Invalid input for field/attribute metadata. Value: None. None is not of type 'object'"),
    ("3.53", {"volume": {}}, "Invalid input for field/attribute volume. Value: {}. {} is not valid under any of the "
                             "given schemas"),
])
def test_a_bad_update_is_a_400_with_cinders_message(api_url, project, issue_token, db, version, body, message):
    vol = factories.volume(db, project)
    with client(api_url, issue_token(project), version) as c:
        resp = c.put(f"/v3/{project}/volumes/{vol.id}", json=body)
    bad_request(resp, message)
    assert stored(db, vol.id)[1].updated_at is None


def test_an_empty_update_changes_nothing_before_3_53(api_url, project, issue_token, db):
    vol = factories.volume(db, project)
    with client(api_url, issue_token(project), "3.52") as c:
        resp = c.put(f"/v3/{project}/volumes/{vol.id}", json={"volume": {}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["volume"]["name"] is None and stored(db, vol.id)[1].updated_at is None


def test_a_name_is_trimmed_before_its_length_is_checked(api_url, project, issue_token, db):
    vol = factories.volume(db, project)
    with client(api_url, issue_token(project)) as c:
        resp = c.put(f"/v3/{project}/volumes/{vol.id}", json={"volume": {"name": "  " + "n" * 255 + "  "}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["volume"]["name"] == "n" * 255


# -- /volumes/{id}/metadata ----------------------------------------------------------------------------

def test_post_merges_put_replaces_and_items_are_set_shown_and_deleted(api_url, project, issue_token, db):
    vol = factories.volume(db, project)
    m = f"/v3/{project}/volumes/{vol.id}/metadata"
    with client(api_url, issue_token(project)) as c:
        assert c.get(m).json() == {"metadata": {}}
        created = c.post(m, json={"metadata": {"a": "1", "b": "2"}})
        merged = c.post(m, json={"metadata": {"b": "20", "c": "3"}})
        after_merge = c.get(m).json()
        replaced = c.put(m, json={"metadata": {"c": "30", "d": "4"}})
        after_replace = c.get(m).json()
        item = c.get(f"{m}/c")
        set_item = c.put(f"{m}/d", json={"meta": {"d": "40"}})
        new_item = c.put(f"{m}/e", json={"meta": {"e": "5"}})
        deleted = c.delete(f"{m}/d")
        after_delete = c.get(m).json()
        missing_show = c.get(f"{m}/d")
        missing_delete = c.delete(f"{m}/d")
        in_volume = c.get(f"/v3/{project}/volumes/{vol.id}").json()["volume"]["metadata"]
    assert (created.status_code, created.json()) == (200, {"metadata": {"a": "1", "b": "2"}})
    assert (merged.status_code, merged.json()) == (200, {"metadata": {"a": "1", "b": "20", "c": "3"}})
    assert after_merge == {"metadata": {"a": "1", "b": "20", "c": "3"}}
    assert (replaced.status_code, replaced.json()) == (200, {"metadata": {"c": "30", "d": "4"}})
    assert after_replace == {"metadata": {"c": "30", "d": "4"}}
    assert (item.status_code, item.json()) == (200, {"meta": {"c": "30"}})
    assert (set_item.status_code, set_item.json()) == (200, {"meta": {"d": "40"}})
    assert (new_item.status_code, new_item.json()) == (200, {"meta": {"e": "5"}})
    assert (deleted.status_code, deleted.content) == (200, b"")
    assert after_delete == {"metadata": {"c": "30", "e": "5"}}
    for resp in (missing_show, missing_delete):
        assert_fault(resp, 404, "itemNotFound", f"Volume {vol.id} has no metadata with key d.")
    assert in_volume == {"c": "30", "e": "5"}
    metadata, row = stored(db, vol.id)
    assert metadata == {"c": "30", "e": "5"} and row.updated_at is not None


def test_a_replace_with_nothing_clears_the_metadata(api_url, project, issue_token, db):
    vol = factories.volume(db, project)
    add_metadata(db, vol.id, a="1", b="2")
    with client(api_url, issue_token(project)) as c:
        resp = c.put(f"/v3/{project}/volumes/{vol.id}/metadata", json={"metadata": {}})
    assert (resp.status_code, resp.json()) == (200, {"metadata": {}})
    assert stored(db, vol.id)[0] == {}


@pytest.mark.parametrize("key, body, message", [
    ("a", {"meta": {"b": "1"}}, MISMATCH),
    ("a", {"meta": {"a": "1", "b": "2"}},
     "Invalid input for field/attribute meta. Value: {'a': '1', 'b': '2'}. "
     "{'a': '1', 'b': '2'} has too many properties"),
    ("a", {"meta": {}}, "Invalid input for field/attribute meta. Value: {}. {} should be non-empty"),
    ("a", {"meta": {"a": 1}}, "Invalid input for field/attribute a. Value: 1. 1 is not of type 'string'"),
    ("a", {"meta": {"a": "v" * 256}},
     f"Invalid input for field/attribute a. Value: {'v' * 256}. '{'v' * 256}' is too long"),
    ("a", {"metadata": {"a": "1"}}, "'meta' is a required property"),
    ("a", {"meta": None}, "Invalid input for field/attribute meta. Value: None. None is not of type 'object'"),
])
def test_a_bad_item_update_is_a_400_with_cinders_message(api_url, project, issue_token, db, key, body, message):
    vol = factories.volume(db, project)
    add_metadata(db, vol.id, a="old")
    with client(api_url, issue_token(project)) as c:
        resp = c.put(f"/v3/{project}/volumes/{vol.id}/metadata/{key}", json=body)
    bad_request(resp, message)
    assert stored(db, vol.id)[0] == {"a": "old"}


@pytest.mark.parametrize("body, message", [
    ({}, "'metadata' is a required property"),
    ({"metadata": None}, "Invalid input for field/attribute metadata. Value: None. None is not of type 'object'"),
    ({"metadata": {"": "v"}},
     f"Invalid input for field/attribute metadata. Value: {{'': 'v'}}. '' does not match any of the regexes: {KEYS}"),
    ({"metadata": {"k" * 256: "v"}},
     f"Invalid input for field/attribute metadata. Value: {{'{'k' * 256}': 'v'}}. '{'k' * 256}' does not match any "
     f"of the regexes: {KEYS}"),
    ({"metadata": {"bad*key": "v"}},
     f"Invalid input for field/attribute metadata. Value: {{'bad*key': 'v'}}. 'bad*key' does not match any of the "
     f"regexes: {KEYS}"),
    ({"metadata": {"k": ["v"]}}, "Invalid input for field/attribute k. Value: ['v']. ['v'] is not of type 'string'"),
    ({"metadata": {"k": "v"}, "meta": {}}, "Additional properties are not allowed ('meta' was unexpected)"),
])
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_bad_metadata_is_a_400_with_cinders_message(api_url, project, issue_token, db, method, body, message):
    vol = factories.volume(db, project)
    with client(api_url, issue_token(project)) as c:
        resp = c.request(method, f"/v3/{project}/volumes/{vol.id}/metadata", json=body)
    bad_request(resp, message)


def test_keys_and_values_of_255_characters_are_accepted(api_url, project, issue_token, db):
    vol = factories.volume(db, project)
    key, value = "K" * 255, "V" * 255
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes/{vol.id}/metadata", json={"metadata": {key: value, "a-_:. /9": ""}})
    assert resp.status_code == 200, resp.text
    assert stored(db, vol.id)[0] == {key: value, "a-_:. /9": ""}


def test_a_body_that_is_not_json_is_malformed(api_url, project, issue_token, db):
    vol = factories.volume(db, project)
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes/{vol.id}/metadata", content=b"{not json",
                      headers={"Content-Type": "application/json"})
    bad_request(resp, "Malformed request body")


# -- ETags (3.15) --------------------------------------------------------------------------------------

def test_from_3_15_the_list_has_an_etag_and_a_stale_if_match_is_412(api_url, project, issue_token, db):
    vol = factories.volume(db, project)
    add_metadata(db, vol.id, a="1")
    m = f"/v3/{project}/volumes/{vol.id}/metadata"
    with client(api_url, issue_token(project), "3.14") as old, client(api_url, issue_token(project), "3.15") as c:
        assert "etag" not in old.get(m).headers
        listed = c.get(m)
        etag = listed.headers["etag"]
        assert etag == hashlib.md5(listed.content).hexdigest() == hashlib.md5(
            json.dumps({"metadata": {"a": "1"}}).encode()).hexdigest()
        assert c.post(m, json={"metadata": {"b": "2"}}).status_code == 200  # POST ignores If-Match, as Cinder
        stale_all = c.put(m, json={"metadata": {}}, headers={"If-Match": etag})
        stale_item = c.put(f"{m}/a", json={"meta": {"a": "x"}}, headers={"If-Match": etag})
        current = c.get(m).headers["etag"]
        fresh = c.put(f"{m}/a", json={"meta": {"a": "x"}}, headers={"If-Match": f'"{current}"'})
        without = c.put(m, json={"metadata": {"z": "1"}})
    assert (stale_all.status_code, stale_all.content) == (412, b"")
    assert stale_item.status_code == 412
    assert current != etag
    assert fresh.status_code == 200 and fresh.json() == {"meta": {"a": "x"}}
    assert without.status_code == 200
    assert stored(db, vol.id)[0] == {"z": "1"}


# -- isolation, policy, status ------------------------------------------------------------------------

def test_another_projects_volume_is_a_404_exactly_like_a_missing_one(api_url, issue_token, db):
    owner, other = new_project(), new_project()
    vol = factories.volume(db, owner)
    add_metadata(db, vol.id, k="v")
    missing = str(uuid.uuid4())
    with client(api_url, issue_token(other)) as c:
        for volume_id in (vol.id, missing):
            base = f"/v3/{other}/volumes/{volume_id}"
            for resp in (c.put(base, json={"volume": {"name": "stolen"}}),
                         c.get(f"{base}/metadata"),
                         c.post(f"{base}/metadata", json={"metadata": {"k": "stolen"}}),
                         c.put(f"{base}/metadata", json={"metadata": {}}),
                         c.get(f"{base}/metadata/k"),
                         c.put(f"{base}/metadata/k", json={"meta": {"k": "stolen"}}),
                         c.delete(f"{base}/metadata/k")):
                not_found(resp, volume_id)
    metadata, row = stored(db, vol.id)
    assert metadata == {"k": "v"} and row.display_name is None and row.updated_at is None


def test_an_admin_of_another_project_may_update_it(api_url, issue_token, db):
    owner, admin_project = new_project(), new_project()
    vol = factories.volume(db, owner)
    with client(api_url, issue_token(admin_project, role="admin")) as c:
        resp = c.post(f"/v3/{admin_project}/volumes/{vol.id}/metadata", json={"metadata": {"by": "admin"}})
    assert (resp.status_code, resp.json()) == (200, {"metadata": {"by": "admin"}})


def test_a_reader_reads_but_may_not_write(api_url, project, issue_token, db):
    vol = factories.volume(db, project)
    add_metadata(db, vol.id, k="v")
    base = f"/v3/{project}/volumes/{vol.id}"
    with client(api_url, issue_token(project, role="reader")) as c:
        assert c.get(f"{base}/metadata").json() == {"metadata": {"k": "v"}}
        assert c.get(f"{base}/metadata/k").json() == {"meta": {"k": "v"}}
        forbidden(c.put(base, json={"volume": {"name": "r"}}), "volume:update")
        forbidden(c.post(f"{base}/metadata", json={"metadata": {"k": "r"}}), "volume:create_volume_metadata")
        forbidden(c.put(f"{base}/metadata", json={"metadata": {}}), "volume:update_volume_metadata")
        forbidden(c.put(f"{base}/metadata/k", json={"meta": {"k": "r"}}), "volume:update_volume_metadata")
        forbidden(c.delete(f"{base}/metadata/k"), "volume:delete_volume_metadata")
    metadata, row = stored(db, vol.id)
    assert metadata == {"k": "v"} and row.display_name is None and row.updated_at is None


@pytest.mark.parametrize("status, update_reason", [
    ("maintenance", "The volume cannot be updated during maintenance."),
    ("deleting", "The volume cannot be updated while it is being deleted."),
])
def test_a_volume_in_maintenance_or_being_deleted_is_not_changed(api_url, project, issue_token, db, status,
                                                                 update_reason):
    vol = factories.volume(db, project, status=status)
    add_metadata(db, vol.id, k="v")
    base = f"/v3/{project}/volumes/{vol.id}"
    updating = f"Invalid volume: Updating volume metadata is not allowed for volumes in {status} status."
    with client(api_url, issue_token(project)) as c:
        bad_request(c.put(base, json={"volume": {"name": "x"}}), f"Invalid volume: {update_reason}")
        bad_request(c.post(f"{base}/metadata", json={"metadata": {"a": "1"}}), updating)
        bad_request(c.put(f"{base}/metadata", json={"metadata": {}}), updating)
        bad_request(c.put(f"{base}/metadata/k", json={"meta": {"k": "x"}}), updating)
        bad_request(c.delete(f"{base}/metadata/k"),
                    f"Invalid volume: Deleting volume metadata is not allowed for volumes in {status} status.")
        assert c.get(f"{base}/metadata").json() == {"metadata": {"k": "v"}}  # reading is fine
    metadata, row = stored(db, vol.id)
    assert metadata == {"k": "v"} and row.display_name is None and row.updated_at is None


def test_a_write_locks_the_volume_row_before_its_checks(api_url, project, issue_token, db):
    """A write waits for another transaction holding the volume row, then checks what that one
    committed: here a switch to maintenance, so the write is refused and nothing changes."""
    vol = factories.volume(db, project)
    token = issue_token(project)
    answers = []

    def post() -> None:
        with client(api_url, token) as c:
            answers.append(c.post(f"/v3/{project}/volumes/{vol.id}/metadata", json={"metadata": {"k": "v"}}))

    with db() as session, session.begin():
        held = session.scalar(select(Volume).where(Volume.id == vol.id).with_for_update())
        held.status = "maintenance"
        session.flush()
        writer = threading.Thread(target=post)
        writer.start()
        time.sleep(1.5)
        assert writer.is_alive() and not answers  # waiting for the lock
    writer.join(30)
    assert answers, "the write did not finish"
    bad_request(answers[0],
                "Invalid volume: Updating volume metadata is not allowed for volumes in maintenance status.")
    assert stored(db, vol.id)[0] == {}


def test_project_less_urls_work_too(api_url, project, issue_token, db):
    vol = factories.volume(db, project)
    with client(api_url, issue_token(project), "3.67") as c:
        assert c.post(f"/v3/volumes/{vol.id}/metadata", json={"metadata": {"k": "v"}}).status_code == 200
        assert c.put(f"/v3/volumes/{vol.id}", json={"volume": {"name": "pl"}}).json()["volume"]["name"] == "pl"
        assert c.get(f"/v3/volumes/{vol.id}/metadata/k").json() == {"meta": {"k": "v"}}


# -- python-cinderclient ------------------------------------------------------------------------------

def test_cinder_cli_renames_and_sets_unsets_and_replaces_metadata(noauth_api_url, project, db):
    vol = factories.volume(db, project)
    run(cinder_noauth(noauth_api_url, project, "rename", vol.id, "cli-renamed", "--description", "from cinder"))
    run(cinder_noauth(noauth_api_url, project, "metadata", vol.id, "set", "a=1", "b=2", "c=3"))
    assert stored(db, vol.id)[0] == {"a": "1", "b": "2", "c": "3"}
    run(cinder_noauth(noauth_api_url, project, "metadata", vol.id, "unset", "a", "c"))  # 3.67: GET, PUT with If-Match
    shown = props(run(cinder_noauth(noauth_api_url, project, "show", vol.id)).stdout)
    assert (shown["name"], shown["description"]) == ("cli-renamed", "from cinder")
    assert shown["metadata"] == "b : 2"
    listed = props(run(cinder_noauth(noauth_api_url, project, "metadata-show", vol.id)).stdout.replace(
        "Metadata-property", "Property"))
    assert listed == {"b": "2"}
    run(cinder_noauth(noauth_api_url, project, "metadata-update-all", vol.id, "x=9"))
    metadata, row = stored(db, vol.id)
    assert metadata == {"x": "9"}
    assert (row.display_name, row.display_description) == ("cli-renamed", "from cinder")


def test_cinder_cli_reports_cinders_error_for_a_volume_in_maintenance(noauth_api_url, project, db):
    vol = factories.volume(db, project, status="maintenance")
    renamed = run(cinder_noauth(noauth_api_url, project, "rename", vol.id, "x"), ok=False)
    tagged = run(cinder_noauth(noauth_api_url, project, "metadata", vol.id, "set", "a=1"), ok=False)
    assert "Invalid volume: The volume cannot be updated during maintenance. (HTTP 400)" in renamed.stderr
    assert ("Invalid volume: Updating volume metadata is not allowed for volumes in maintenance status. (HTTP 400)"
            in tagged.stderr)
    metadata, row = stored(db, vol.id)
    assert metadata == {} and row.display_name is None
