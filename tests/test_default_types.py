"""Per-project default volume types (3.62): the API's bodies, policy and errors, and creates through
the live API and real workers that name no type getting the project's default, until it is
deleted or becomes private to other projects, when they get the configured default again."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import delete, select

from models.default_type import DefaultType
from models.volume import Volume
from models.volume_type import VolumeType, VolumeTypeProject
from tests import factories
from tests.api.helpers import assert_fault, client

FORBIDDEN = ("forbidden", "You are not authorized to perform this operation.")


@pytest.fixture
def admin(api_url, project, issue_token):
    with client(api_url, issue_token(project, user="root", role="admin"), "3.62") as c:
        yield c


def test_an_admin_sets_shows_lists_and_unsets_a_projects_default_type(api_url, project, issue_token, db, admin):
    gold = factories.volume_type(db, name=f"gold-{uuid.uuid4().hex[:8]}")
    silver = factories.volume_type(db, name=f"silver-{uuid.uuid4().hex[:8]}")
    target = uuid.uuid4().hex
    url = f"/v3/{project}/default-types/{target}"

    by_name = admin.put(url, json={"default_type": {"volume_type": gold.name}})
    assert by_name.status_code == 200, by_name.text
    assert by_name.json() == {"default_type": {"project_id": target, "volume_type_id": gold.id}}
    by_id = admin.put(f"/v3/default-types/{target}", json={"default_type": {"volume_type": silver.id}})
    assert by_id.json() == {"default_type": {"project_id": target, "volume_type_id": silver.id}}
    assert admin.get(url).json() == {"default_type": {"project_id": target, "volume_type_id": silver.id}}
    listed = admin.get(f"/v3/{project}/default-types").json()["default_types"]
    assert {"project_id": target, "volume_type_id": silver.id} in listed
    with db() as session:
        assert session.scalar(select(DefaultType.volume_type_id).where(DefaultType.project_id == target)) == silver.id

    assert_fault(admin.put(url, json={"default_type": {"volume_type": "no-such"}}), 400, "badRequest",
                 "Volume type with name no-such could not be found.")
    missing = str(uuid.uuid4())
    assert_fault(admin.put(url, json={"default_type": {"volume_type": missing}}), 400, "badRequest",
                 f"Volume type {missing} could not be found.")
    assert_fault(admin.put(url, json={"default_type": {}}), 400, "badRequest",
                 "Invalid input for field/attribute default_type. Value: {}. 'volume_type' is a required property")

    gone = admin.delete(url)
    assert gone.status_code == 204 and gone.content == b""
    assert_fault(admin.get(url), 404, "itemNotFound", f"Default type for project {target} not found.")
    assert admin.delete(url).status_code == 204  # nothing to unset is not an error

    with client(api_url, issue_token(project, user="root", role="admin"), "3.61") as old:
        assert_fault(old.get(url), 404, "itemNotFound", "The resource could not be found.")
        assert_fault(old.put(url, json={"default_type": {"volume_type": gold.name}}), 404, "itemNotFound",
                     "The resource could not be found.")


def test_a_project_reads_only_its_own_default_and_changes_none(api_url, project, issue_token, db, admin):
    gold = factories.volume_type(db)
    other = uuid.uuid4().hex
    assert admin.put(f"/v3/{project}/default-types/{project}", json={"default_type": {"volume_type": gold.id}}
                     ).status_code == 200
    assert admin.put(f"/v3/{project}/default-types/{other}", json={"default_type": {"volume_type": gold.id}}
                     ).status_code == 200
    with client(api_url, issue_token(project), "3.62") as member:
        own = member.get(f"/v3/{project}/default-types/{project}")
        assert own.json() == {"default_type": {"project_id": project, "volume_type_id": gold.id}}
        assert_fault(member.get(f"/v3/{project}/default-types/{other}"), 403, *FORBIDDEN)
        assert_fault(member.get(f"/v3/{project}/default-types"), 403, *FORBIDDEN)
        assert_fault(member.put(f"/v3/{project}/default-types/{project}",
                                json={"default_type": {"volume_type": "__DEFAULT__"}}), 403, *FORBIDDEN)
        assert_fault(member.delete(f"/v3/{project}/default-types/{project}"), 403, *FORBIDDEN)
    with db() as session:
        assert session.get(DefaultType, project).volume_type_id == gold.id


def create(api_url: str, token: str, project: str) -> dict:
    with client(api_url, token) as c:
        resp = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1}})
    assert resp.status_code == 202, resp.text
    return resp.json()["volume"]


def test_creates_naming_no_type_use_the_projects_default_while_it_may(api_url, project, issue_token, db, admin,
                                                                      redis_client, check_invariant):
    token = issue_token(project)
    private = factories.volume_type(db, name=f"private-{uuid.uuid4().hex[:8]}", is_public=False, projects=[project])
    assert admin.put(f"/v3/{project}/default-types/{project}", json={"default_type": {"volume_type": private.name}}
                     ).status_code == 200

    # A private type shared with the project is its default: the create gets it, and casts it.
    first = create(api_url, token, project)
    assert first["volume_type"] == private.name
    [cast] = factories.casts_for(redis_client, "scheduler", first["id"])
    assert cast["args"][0]["request_spec"]["volume_type"]["name"] == private.name
    # Another project is untouched by it.
    stranger = uuid.uuid4().hex
    assert create(api_url, issue_token(stranger), stranger)["volume_type"] == "__DEFAULT__"

    # No longer shared with the project: the configured default again.
    with db() as session, session.begin():
        session.execute(delete(VolumeTypeProject).where(VolumeTypeProject.volume_type_id == private.id))
    assert create(api_url, token, project)["volume_type"] == "__DEFAULT__"

    # A type deleted after it was made the default is passed over as well.
    doomed = factories.volume_type(db)
    assert admin.put(f"/v3/{project}/default-types/{project}", json={"default_type": {"volume_type": doomed.id}}
                     ).status_code == 200
    assert create(api_url, token, project)["volume_type"] == doomed.name
    with db() as session, session.begin():
        session.get(VolumeType, doomed.id).deleted = True
    last = create(api_url, token, project)
    assert last["volume_type"] == "__DEFAULT__"

    with db() as session:
        types = session.execute(select(Volume.volume_type_id).where(Volume.project_id == project)
                                .order_by(Volume.created_at)).scalars().all()
    assert types == [private.id, factories.DEFAULT_TYPE_ID, doomed.id, factories.DEFAULT_TYPE_ID]
    check_invariant(project)


def test_types_default_shows_the_projects_default(api_url, project, issue_token, db, admin):
    gold = factories.volume_type(db, name=f"gold-{uuid.uuid4().hex[:8]}")
    with client(api_url, issue_token(project, role="member")) as member:
        assert member.get(f"/v3/{project}/types/default").json()["volume_type"]["name"] == "__DEFAULT__"
        assert admin.put(f"/v3/{project}/default-types/{project}",
                         json={"default_type": {"volume_type": gold.name}}).status_code == 200
        assert member.get(f"/v3/{project}/types/default").json()["volume_type"]["id"] == gold.id
