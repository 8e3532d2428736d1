"""os-services, capabilities, extensions, resource filters and user messages, against the live API:
admin-only policies, up/down from the last heartbeat, project isolation of messages, paging, and
`cinder service-list` / `openstack volume service list` on the same rows."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import delete

from models import utcnow
from models.message import Message
from models.service import SCHEDULER_BINARY, VOLUME_BINARY, Service
from models.volume import Volume, VolumeMetadata
from tasks import user_messages
from tasks.user_messages import Action, Detail
from tests import factories
from tests.api.helpers import assert_fault, client
from tests.api.test_real_clients import OPENSTACK, USER, cinder_noauth, listing, run_parallel

LONG_AGO = 3600  # seconds: far beyond any service_down_time the tests run with
NOT_FOUND = ("itemNotFound", "The resource could not be found.")
CAPS = {"volume_backend_name": "lvm-1", "vendor_name": "volchain", "driver_version": "1.0",
        "storage_protocol": ["iSCSI", "iscsi"], "total_capacity_gb": 100, "free_capacity_gb": 90,
        "pools": [{"pool_name": "lvm-1", "total_capacity_gb": 100, "free_capacity_gb": 90}]}


@pytest.fixture
def add_service(db):
    """add_service(host, binary=cinder-volume, age=0, **fields): a service row whose last heartbeat
    was `age` seconds ago (zone nova), removed after the test."""
    made: list[int] = []

    def add(host: str, binary: str = VOLUME_BINARY, age: float = 0, **fields) -> Service:
        seen = utcnow() - timedelta(seconds=age)
        row = Service(host=host, binary=binary, availability_zone="nova", report_count=1, created_at=seen,
                      updated_at=seen, **fields)
        with db() as session, session.begin():
            session.add(row)
        made.append(row.id)
        return row

    yield add
    with db() as session, session.begin():
        session.execute(delete(Service).where(Service.id.in_(made)))


def host_name() -> str:
    return f"node-{uuid.uuid4().hex[:8]}"


# -- os-services ---------------------------------------------------------------------------------

def test_only_admins_list_services_and_state_follows_the_last_heartbeat(api_url, project, issue_token, add_service):
    node = host_name()
    up = add_service(f"{node}@lvm", capabilities=CAPS)
    down = add_service(f"{node}@ceph", age=LONG_AGO, capabilities=CAPS, disabled=True, disabled_reason="maintenance")
    scheduler = add_service(node, SCHEDULER_BINARY)
    admin, member = issue_token(project, role="admin"), issue_token(project)

    with client(api_url, member) as c:
        assert_fault(c.get(f"/v3/{project}/os-services"), 403, "forbidden",
                     "Policy doesn't allow volume_extension:services:index to be performed.")
    with client(api_url, admin) as c:
        listed = c.get(f"/v3/{project}/os-services", params={"host": node})
    assert listed.status_code == 200, listed.text
    stamp = {svc.host + svc.binary: svc.updated_at.strftime("%Y-%m-%dT%H:%M:%S.%f") for svc in (up, down, scheduler)}
    assert listed.json() == {"services": [
        {"binary": "cinder-volume", "host": f"{node}@lvm", "zone": "nova", "status": "enabled", "state": "up",
         "updated_at": stamp[f"{node}@lvmcinder-volume"], "disabled_reason": None, "replication_status": "disabled",
         "active_backend_id": None, "frozen": False},
        {"binary": "cinder-volume", "host": f"{node}@ceph", "zone": "nova", "status": "disabled", "state": "down",
         "updated_at": stamp[f"{node}@cephcinder-volume"], "disabled_reason": "maintenance",
         "replication_status": "disabled", "active_backend_id": None, "frozen": False},
        {"binary": "cinder-scheduler", "host": node, "zone": "nova", "status": "enabled", "state": "up",
         "updated_at": stamp[f"{node}cinder-scheduler"], "disabled_reason": None},
    ]}

    # 3.7 adds cluster; 3.49 adds backend_state to volume services (null where the scheduler knows no pools).
    with client(api_url, admin, "3.49") as c:
        newer = c.get("/v3/os-services", params={"host": node}).json()["services"]
        schedulers = c.get("/v3/os-services", params={"host": node, "binary": "cinder-scheduler"}).json()["services"]
        one_backend = c.get("/v3/os-services", params={"host": f"{node}@lvm"}).json()["services"]
    assert [(x["host"], x["cluster"], x.get("backend_state", "absent")) for x in newer] == [
        (f"{node}@lvm", None, "up"), (f"{node}@ceph", None, None), (node, None, "absent")]
    assert [x["host"] for x in schedulers] == [node]
    assert [x["host"] for x in one_backend] == [f"{node}@lvm"]


def test_an_admin_disables_and_enables_a_service_and_its_state_stays(api_url, project, issue_token, db, add_service):
    node = host_name()
    svc = add_service(f"{node}@lvm")
    body = {"host": f"{node}@lvm", "binary": "cinder-volume"}
    with client(api_url, issue_token(project)) as member:
        assert_fault(member.put(f"/v3/{project}/os-services/disable", json=body), 403, "forbidden",
                     "Policy doesn't allow volume_extension:services:update to be performed.")

    with client(api_url, issue_token(project, role="admin")) as c:
        reason = c.put(f"/v3/{project}/os-services/disable-log-reason", json={**body, "disabled_reason": "disk swap"})
        assert reason.status_code == 200, reason.text
        assert reason.json() == {"host": f"{node}@lvm", "service": "", "binary": "cinder-volume",
                                 "status": "disabled", "disabled": True, "disabled_reason": "disk swap"}
        [shown] = c.get(f"/v3/{project}/os-services", params={"host": node}).json()["services"]
        assert (shown["status"], shown["state"], shown["disabled_reason"]) == ("disabled", "up", "disk swap")
        with db() as session:
            row = session.get(Service, svc.id)
        assert (row.disabled, row.disabled_reason, row.updated_at) == (True, "disk swap", svc.updated_at)

        # A plain disable keeps the reason; enable clears it.
        disabled = c.put(f"/v3/{project}/os-services/disable", json=body)
        assert disabled.json() == {"host": f"{node}@lvm", "service": "", "binary": "cinder-volume",
                                   "status": "disabled", "disabled": True}
        assert c.get("/v3/os-services", params={"host": node}).json()["services"][0]["disabled_reason"] == "disk swap"
        enabled = c.put(f"/v3/{project}/os-services/enable", json=body)
        assert enabled.status_code == 200
        assert enabled.json() == {"host": f"{node}@lvm", "service": "", "binary": "cinder-volume",
                                  "status": "enabled", "disabled": False}
        [shown] = c.get(f"/v3/{project}/os-services", params={"host": node}).json()["services"]
        assert (shown["status"], shown["state"], shown["disabled_reason"]) == ("enabled", "up", None)

        assert_fault(c.put(f"/v3/{project}/os-services/disable", json={**body, "host": f"{node}@nope"}), 404,
                     "itemNotFound", f"Service cinder-volume could not be found on host {node}@nope.")
        assert_fault(c.put(f"/v3/{project}/os-services/disable", json={"binary": "cinder-volume"}), 400,
                     "badRequest", "Invalid input received: Host field is missing.")
        assert_fault(c.put(f"/v3/{project}/os-services/disable", json={"host": f"{node}@lvm"}), 400, "badRequest",
                     f"{{'host': '{node}@lvm'}} is not valid under any of the given schemas")
        assert_fault(c.put(f"/v3/{project}/os-services/disable-log-reason", json={**body, "disabled_reason": "  "}),
                     400, "badRequest", "Invalid input received: disabled_reason has 0 characters, less than 1.")
        assert_fault(c.put(f"/v3/{project}/os-services/reboot", json=body), 400, "badRequest",
                     "Invalid input received: Unknown action")
    with db() as session:
        assert session.get(Service, svc.id).disabled is False


def test_capabilities_show_what_the_backend_reported_to_admins_only(api_url, project, issue_token, add_service):
    node = host_name()
    add_service(f"{node}@lvm", capabilities=CAPS)
    with client(api_url, issue_token(project)) as member:
        assert_fault(member.get(f"/v3/{project}/capabilities/{node}@lvm"), 403, "forbidden",
                     "Policy doesn't allow volume_extension:capabilities to be performed.")
    with client(api_url, issue_token(project, role="admin")) as c:
        shown = c.get(f"/v3/{project}/capabilities/{node}@lvm")
        by_host = c.get(f"/v3/capabilities/{node}")  # a host name matches its backends, as in Cinder
        unknown = c.get(f"/v3/{project}/capabilities/{node}@nope")
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert {k: v for k, v in body.items() if k != "properties"} == {
        "namespace": f"OS::Storage::Capabilities::{node}@lvm", "vendor_name": "volchain",
        "volume_backend_name": "lvm-1", "pool_name": None, "driver_version": "1.0", "storage_protocol": "iSCSI",
        "display_name": None, "description": None, "visibility": None, "replication_targets": []}
    assert set(body["properties"]) == {"thin_provisioning", "compression", "qos", "replication_enabled"}
    assert body["properties"]["qos"] == {"title": "QoS", "description": "Enables QoS.", "type": "boolean"}
    assert by_host.json() == body
    assert_fault(unknown, 404, "itemNotFound", f"Can't find service: {node}@nope")


# -- discovery -----------------------------------------------------------------------------------

def test_extensions_list_cinders_aliases(api_url, project, issue_token):
    with client(api_url, issue_token(project)) as c:
        listed = c.get(f"/v3/{project}/extensions")
        one = c.get(f"/v3/{project}/extensions/os-services")
        projectless = c.get("/v3/extensions/capabilities")
        missing = c.get(f"/v3/{project}/extensions/os-no-such")
    assert listed.status_code == 200
    extensions = listed.json()["extensions"]
    aliases = {e["alias"] for e in extensions}
    assert {"os-extended-snapshot-attributes", "os-vol-host-attr", "os-vol-tenant-attr", "os-availability-zone",
            "os-services", "os-quota-sets", "os-types-manage", "os-volume-actions", "os-admin-actions",
            "os-extended-services", "capabilities", "OS-SCH-HNT"} <= aliases
    assert all(set(e) == {"alias", "description", "links", "name", "updated"} and e["links"] == [] for e in extensions)
    assert one.json() == {"extension": {"alias": "os-services", "description": "Services support.", "links": [],
                                        "name": "Services", "updated": "2012-10-28T00:00:00-00:00"}}
    assert projectless.json()["extension"]["name"] == "Capabilities"
    assert_fault(missing, 404, *NOT_FOUND)


def test_resource_filters_name_what_the_volume_list_honours(api_url, project, issue_token, db):
    with client(api_url, issue_token(project), "3.34") as c:
        everything = c.get(f"/v3/{project}/resource_filters").json()["resource_filters"]
        snapshot = c.get("/v3/resource_filters", params={"resource": "snapshot"}).json()
        unknown = c.get("/v3/resource_filters", params={"resource": "backup"}).json()
    with client(api_url, issue_token(project), "3.32") as c:
        assert_fault(c.get(f"/v3/{project}/resource_filters"), 404, *NOT_FOUND)
    with client(api_url, issue_token(project), "3.33") as c:
        at_333 = c.get(f"/v3/{project}/resource_filters", params={"resource": "volume"}).json()
    filters = {f["resource"]: f["filters"] for f in everything}
    assert filters["volume"] == ["name", "name~", "status", "availability_zone", "metadata"]
    assert filters["message"] == ["resource_uuid", "resource_type", "event_id", "request_id", "message_level"]
    assert snapshot == {"resource_filters": [{"resource": "snapshot", "filters": ["name", "status", "volume_id"]}]}
    assert unknown == {"resource_filters": []}
    assert at_333["resource_filters"][0]["filters"] == ["name", "status", "availability_zone", "metadata"]

    # Every advertised volume filter narrows the list to the one volume that matches it.
    rows = []
    with db() as session, session.begin():
        for name, status, zone, meta in (("alpha-one", "available", "nova", "x"), ("beta-two", "error", "zone-b", "y")):
            vol = Volume(project_id=project, size=1, status=status, availability_zone=zone, display_name=name,
                         volume_type_id=factories.DEFAULT_TYPE_ID, use_quota=False)
            session.add(vol)
            session.flush()
            session.add(VolumeMetadata(volume_id=vol.id, key="k", value=meta))
            rows.append(vol.id)
    alpha = {"name": "alpha-one", "name~": "pha-o", "status": "available", "availability_zone": "nova",
             "metadata": json.dumps({"k": "x"})}
    assert set(alpha) == set(filters["volume"])
    with client(api_url, issue_token(project), "3.34") as c:
        for key, value in alpha.items():
            found = c.get(f"/v3/{project}/volumes", params={key: value}).json()["volumes"]
            assert [x["id"] for x in found] == [rows[0]], key


# -- messages ------------------------------------------------------------------------------------

def add_message(db, project_id: str, *, age: float = 0, expired: bool = False, deleted: bool = False,
                action=Action.SCHEDULE_ALLOCATE_VOLUME, detail=Detail.NO_BACKEND_AVAILABLE,
                resource_type: str = user_messages.VOLUME) -> Message:
    with db() as session, session.begin():
        message_id = user_messages.record(session, project_id=project_id, resource_type=resource_type,
                                          resource_uuid=str(uuid.uuid4()), action=action, detail=detail,
                                          request_id=f"req-{uuid.uuid4()}")
        session.flush()
        msg = session.get(Message, message_id)
        msg.created_at -= timedelta(seconds=age)
        if expired:
            msg.expires_at = utcnow() - timedelta(seconds=1)
        msg.deleted = deleted
    return msg


def test_a_project_reads_only_its_own_live_messages(api_url, project, issue_token, db):
    other = uuid.uuid4().hex
    mine = add_message(db, project)
    theirs = add_message(db, other)
    expired = add_message(db, project, expired=True)
    deleted = add_message(db, project, deleted=True)
    base = f"/v3/{project}/messages"

    with client(api_url, issue_token(project), "3.3") as c:
        listed = c.get(base)
        shown = c.get(f"{base}/{mine.id}")
        hidden = {m.id: c.get(f"{base}/{m.id}") for m in (theirs, expired, deleted)}
        missing_id = str(uuid.uuid4())
        missing = c.get(f"{base}/{missing_id}")
    assert listed.status_code == 200, listed.text
    assert [m["id"] for m in listed.json()["messages"]] == [mine.id]
    assert "messages_links" not in listed.json()
    assert shown.json() == {"message": {
        "id": mine.id, "event_id": "VOLUME_VOLUME_001_003",
        "user_message": "schedule allocate volume:Could not find any available weighted backend.",
        "message_level": "ERROR", "created_at": mine.created_at.strftime("%Y-%m-%dT%H:%M:%S.%f"),
        "guaranteed_until": mine.expires_at.strftime("%Y-%m-%dT%H:%M:%S.%f"), "request_id": mine.request_id,
        "resource_type": "VOLUME", "resource_uuid": mine.resource_uuid,
        "links": [{"rel": "self", "href": f"{api_url}/v3/{project}/messages/{mine.id}"},
                  {"rel": "bookmark", "href": f"{api_url}/{project}/messages/{mine.id}"}]}}
    assert listed.json()["messages"][0] == shown.json()["message"]
    # Another project's message is answered exactly like one that does not exist.
    for message_id, answer in hidden.items():
        assert_fault(answer, 404, "itemNotFound", f"Message {message_id} could not be found.")
    assert_fault(missing, 404, "itemNotFound", f"Message {missing_id} could not be found.")

    # Admins see every project's messages.
    with client(api_url, issue_token(project, user="root", role="admin"), "3.3") as admin:
        assert admin.get(f"{base}/{theirs.id}").json()["message"]["id"] == theirs.id
        assert {mine.id, theirs.id} <= {m["id"] for m in admin.get(base).json()["messages"]}

    # Below 3.3 messages do not exist.
    with client(api_url, issue_token(project)) as c:
        assert_fault(c.get(base), 404, *NOT_FOUND)
        assert_fault(c.get(f"{base}/{mine.id}"), 404, *NOT_FOUND)
        assert_fault(c.delete(f"{base}/{mine.id}"), 404, *NOT_FOUND)


def test_a_member_deletes_a_message_and_a_reader_may_not(api_url, project, issue_token, db):
    msg = add_message(db, project, action=Action.SNAPSHOT_DELETE, detail=Detail.SNAPSHOT_DELETE_ERROR,
                      resource_type=user_messages.SNAPSHOT)
    other = add_message(db, uuid.uuid4().hex)
    with client(api_url, issue_token(project, role="reader"), "3.3") as reader:
        shown = reader.get(f"/v3/messages/{msg.id}").json()["message"]
        assert (shown["event_id"], shown["user_message"], shown["resource_type"]) == (
            "VOLUME_VOLUME_SNAPSHOT_010_016", "delete snapshot:Snapshot failed to delete.", "VOLUME_SNAPSHOT")
        assert_fault(reader.delete(f"/v3/messages/{msg.id}"), 403, "forbidden",
                     "Policy doesn't allow message:delete to be performed.")
    with client(api_url, issue_token(project), "3.3") as member:
        assert_fault(member.delete(f"/v3/messages/{other.id}"), 404, "itemNotFound",
                     f"Message {other.id} could not be found.")
        gone = member.delete(f"/v3/messages/{msg.id}")
        assert gone.status_code == 204 and gone.content == b""
        assert_fault(member.get(f"/v3/messages/{msg.id}"), 404, "itemNotFound", f"Message {msg.id} could not be found.")
        assert_fault(member.delete(f"/v3/messages/{msg.id}"), 404, "itemNotFound",
                     f"Message {msg.id} could not be found.")
    with db() as session:
        row = session.get(Message, msg.id)
        assert row.deleted and row.deleted_at is not None
        assert session.get(Message, other.id).deleted is False


def test_the_message_list_pages_sorts_and_filters(api_url, project, issue_token, db):
    oldest_first = [add_message(db, project, age=age) for age in (50, 40, 30, 20, 10)]
    snap = add_message(db, project, age=5, action=Action.SNAPSHOT_CREATE, detail=Detail.SNAPSHOT_CREATE_ERROR,
                       resource_type=user_messages.SNAPSHOT)
    base = f"/v3/{project}/messages"
    with client(api_url, issue_token(project), "3.5") as c:
        newest_first = [m["id"] for m in c.get(base).json()["messages"]]
        assert newest_first == [snap.id] + [m.id for m in reversed(oldest_first)]

        pages, url, params = [], base, {"limit": "2", "sort": "created_at:asc"}
        while url:
            page = c.get(url, params=params).json()
            pages.append([m["id"] for m in page["messages"]])
            link = page.get("messages_links", [{}])[0].get("href")
            url, params = (urlsplit(link).path, parse_qs(urlsplit(link).query)) if link else (None, None)
        assert pages == [[oldest_first[0].id, oldest_first[1].id], [oldest_first[2].id, oldest_first[3].id],
                         [oldest_first[4].id, snap.id], []]
        assert [m["id"] for m in c.get(base, params={"limit": "2", "offset": "1", "sort": "created_at:asc"})
                .json()["messages"]] == [oldest_first[1].id, oldest_first[2].id]

        by_type = c.get(base, params={"resource_type": "VOLUME_SNAPSHOT"}).json()["messages"]
        assert [m["id"] for m in by_type] == [snap.id]
        by_event = c.get(base, params={"event_id": "VOLUME_VOLUME_001_003", "sort_key": "created_at",
                                       "sort_dir": "asc", "limit": "1"}).json()
        assert [m["id"] for m in by_event["messages"]] == [oldest_first[0].id]
        assert "messages_links" in by_event

        assert_fault(c.get(base, params={"limit": "x"}), 400, "badRequest", "limit param must be an integer")
        assert_fault(c.get(base, params={"sort": "size"}), 400, "badRequest",
                     "Invalid input received: Invalid sort key: size")
        missing = str(uuid.uuid4())
        assert_fault(c.get(base, params={"marker": missing}), 404, "itemNotFound",
                     f"Message {missing} could not be found.")
    # From 3.31 a project may filter only on what resource_filters lists for messages.
    with client(api_url, issue_token(project), "3.31") as c:
        assert_fault(c.get(base, params={"detail_id": "016"}), 400, "badRequest",
                     "Invalid filters detail_id are found in query options.")
        assert [m["id"] for m in c.get(base, params={"resource_uuid": snap.resource_uuid}).json()["messages"]] == [
            snap.id]


# -- real clients --------------------------------------------------------------------------------

def test_cinder_and_openstack_clients_list_services(noauth_api_url, project, add_service):
    node = host_name()
    add_service(f"{node}@lvm", capabilities=CAPS)
    add_service(f"{node}@ceph", age=LONG_AGO, disabled=True, disabled_reason="broken")
    osc = [OPENSTACK, "--os-auth-type", "admin_token", "--os-token", f"{USER}:{project}",
           "--os-endpoint", f"{noauth_api_url}/v3/{project}"]
    cinder, openstack = run_parallel(
        cinder_noauth(noauth_api_url, project, "service-list", "--host", node),
        [*osc, "volume", "service", "list", "--host", node, "--long", "-f", "json"])
    rows = listing(cinder.stdout)  # cinder sorts its table
    assert sorted((r["Binary"], r["Host"], r["Zone"], r["Status"], r["State"], r["Disabled Reason"],
                   r["Backend State"]) for r in rows) == [
        ("cinder-volume", f"{node}@ceph", "nova", "disabled", "down", "broken", "-"),
        ("cinder-volume", f"{node}@lvm", "nova", "enabled", "up", "-", "up")]
    assert [(r["Binary"], r["Host"], r["Status"], r["State"], r["Disabled Reason"])
            for r in json.loads(openstack.stdout)] == [("cinder-volume", f"{node}@lvm", "enabled", "up", None),
                                                        ("cinder-volume", f"{node}@ceph", "disabled", "down", "broken")]
