"""The whole volume lifecycle driven by the real clients (`cinder`, `openstack`, openstacksdk),
pinned in pyproject.toml, against the `lifecycle` fixture's API: step workers, the scheduler and
two volume services (file driver, zones az1 and az2) on real Redis and PostgreSQL.

The clients use `vc1.` tokens (keystoneauth's admin_token plugin): a member of a fresh project,
an admin where Cinder's policy wants one. Each test follows the clients' answers into the rows
and the backend's files, and ends with the quota invariant and no pending reservation. Client runs
that do not depend on each other run at once (each CLI spends a second or more starting up).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from models.quota import QuotaUsage, Reservation
from models.service import SCHEDULER_BINARY, VOLUME_BINARY
from models.volume import VolumeMetadata
from tests.api.test_real_clients import CINDER, OPENSTACK, _sdk, listing, props, rows, run, run_parallel
from tests.conftest import wait_until
from tests.test_lifecycle import backend_file, messages_about, wait_snapshot, wait_status

GIB = 1024 ** 3
NO_VALID_BACKEND = "Could not find any available weighted backend"


class Clients:
    """Command lines for one project: `cinder` and `openstack` as its member, or as an admin."""

    def __init__(self, api_url: str, project: str, member: str, admin: str) -> None:
        self.api_url, self.project, self.member, self.admin = api_url, project, member, admin

    def cinder(self, *args: str, admin: bool = False) -> list[str]:
        """`cinder` on the project-less endpoint: it negotiates the highest version (3.67)."""
        return [CINDER, "--os-auth-type", "admin_token", "--os_token", self.admin if admin else self.member,
                "--os-project-id", self.project, "--os-endpoint", f"{self.api_url}/v3", *args]

    def openstack(self, *args: str, admin: bool = False) -> list[str]:
        return [OPENSTACK, "--os-auth-type", "admin_token", "--os-token", self.admin if admin else self.member,
                "--os-endpoint", f"{self.api_url}/v3/{self.project}", *args]


@pytest.fixture
def clients(lifecycle, db, issue_token, project, check_invariant):
    """Clients of a fresh project; afterwards the quota invariant holds and nothing is reserved."""
    yield Clients(lifecycle.api_url, project, issue_token(project, role="member"),
                  issue_token(project, user="admin1", role="admin"))
    check_invariant(project)
    with db() as session:
        pending = session.scalar(select(func.count()).select_from(Reservation)
                                 .where(Reservation.project_id == project))
    assert pending == 0, "a reservation is still pending"


def poll(cmd: list[str], parse: Callable[[str], dict], status: str, timeout: float = 30) -> dict:
    """Run a `show` command until the resource it prints has `status`; fail on an error status."""
    deadline = time.monotonic() + timeout
    while True:
        shown = parse(run(cmd).stdout)
        if shown["status"] == status:
            return shown
        assert not shown["status"].startswith("error"), f"{cmd[-3:]} reached {shown['status']}: {shown}"
        assert time.monotonic() < deadline, f"{cmd[-3:]} still {shown['status']} after {timeout}s, not {status}"
        time.sleep(0.2)


def props_multiline(text: str) -> dict[str, str]:
    """A Property | Value table whose values may span lines (`cinder show` prints metadata one
    `key : value` a line): continuation rows join their property's value with newlines."""
    table = rows(text)
    assert table and table[0] == ["Property", "Value"], text
    out: dict[str, str] = {}
    for key, value in table[1:]:
        if key:
            last = key
            out[key] = value
        else:
            out[last] += "\n" + value
    return out


def usage(db, project: str) -> dict[str, int]:
    with db() as session:
        found = session.scalars(select(QuotaUsage).where(QuotaUsage.project_id == project))
        return {u.resource: u.in_use for u in found}


def assert_file(lifecycle, vol, size_gb: int) -> None:
    path = backend_file(lifecycle, vol)
    assert vol.provider_location == str(path)
    assert os.stat(path).st_size == size_gb * GIB


def test_cinder_and_openstack_create_available_volumes_and_delete_them(lifecycle, db, clients):
    c = clients
    made, osc = run_parallel(c.cinder("create", "1", "--name", "v"),
                             c.openstack("volume", "create", "--size", "1", "osc-v", "-f", "json"))
    made, osc = props(made.stdout), json.loads(osc.stdout)
    assert (made["status"], made["name"], made["size"]) == ("creating", "v", "1")
    assert (osc["status"], osc["name"], osc["size"]) == ("creating", "osc-v", 1)
    with ThreadPoolExecutor(2) as pool:
        shown, osc_shown = pool.map(lambda args: poll(*args), [
            (c.cinder("show", made["id"]), props, "available"),
            (c.openstack("volume", "show", osc["id"], "-f", "json"), json.loads, "available")])
    assert (shown["name"], osc_shown["name"], osc_shown["size"]) == ("v", "osc-v", 1)
    vols = [wait_status(db, vid, "available") for vid in (made["id"], osc["id"])]
    for vol in vols:
        assert vol.host.split("#")[0] == lifecycle.host1 and vol.availability_zone == "az1"
        assert_file(lifecycle, vol, 1)
    used = usage(db, c.project)
    assert (used["volumes"], used["gigabytes"]) == (2, 2)

    run_parallel(c.cinder("delete", made["id"]), c.openstack("volume", "delete", osc["id"]))
    for vol in vols:
        assert wait_status(db, vol.id, "deleted").deleted
        assert not backend_file(lifecycle, vol).exists()
    quota, listed = run_parallel(c.cinder("quota-usage", c.project), c.cinder("list"))
    quota = {r["Type"]: r for r in listing(quota.stdout)}
    assert [(quota[k]["In_use"], quota[k]["Reserved"]) for k in ("volumes", "gigabytes")] == [("0", "0")] * 2
    assert listing(listed.stdout) == []


def test_snapshots_and_a_volume_from_one_on_the_source_host(lifecycle, db, clients):
    c = clients
    source = props(run(c.cinder("create", "1", "--name", "src", "--availability-zone", "az2")).stdout)
    src = wait_status(db, source["id"], "available")
    assert src.host.split("#")[0] == lifecycle.host2
    with open(backend_file(lifecycle, src), "r+b") as f:  # data the copy must carry
        f.seek(3 * 1024 * 1024)
        f.write(b"volchain")
    s1, s2 = run_parallel(c.cinder("snapshot-create", "--name", "s1", source["id"]),
                          c.openstack("volume", "snapshot", "create", "--volume", source["id"], "s2", "-f", "json"))
    s1, s2 = props(s1.stdout), json.loads(s2.stdout)
    for snap in (s1, s2):
        assert wait_snapshot(db, snap["id"], "available").volume_id == source["id"]
    listed = {s["ID"]: s for s in listing(run(c.cinder("snapshot-list")).stdout)}
    assert {(s["Name"], s["Status"], s["Size"], s["Volume ID"]) for s in listed.values()} == {
        ("s1", "available", "1", source["id"]), ("s2", "available", "1", source["id"])}

    made = json.loads(run(c.openstack("volume", "create", "--snapshot", s2["id"], "--size", "2", "v2",
                                      "-f", "json")).stdout)
    assert made["snapshot_id"] == s2["id"]
    poll(c.openstack("volume", "show", made["id"], "-f", "json"), json.loads, "available")
    vol = wait_status(db, made["id"], "available")
    assert vol.host == src.host and vol.snapshot_id == s2["id"]
    assert_file(lifecycle, vol, 2)
    with open(backend_file(lifecycle, vol), "rb") as f:
        f.seek(3 * 1024 * 1024)
        assert f.read(8) == b"volchain"

    run(c.cinder("snapshot-delete", s1["id"], s2["id"]))
    for snap in (s1, s2):
        wait_snapshot(db, snap["id"], "deleted")
    listed, _ = run_parallel(c.cinder("snapshot-list"), c.cinder("delete", made["id"], source["id"]))
    assert listing(listed.stdout) == []
    for v in (vol, src):
        wait_status(db, v.id, "deleted")
        assert not backend_file(lifecycle, v).exists()


def test_extend_rename_and_metadata(lifecycle, db, clients):
    c = clients
    made = props(run(c.cinder("create", "1", "--name", "grow")).stdout)
    vid = made["id"]
    vol = wait_status(db, vid, "available")
    run(c.cinder("extend", vid, "2"))
    wait_until(lambda: (v := wait_status(db, vid, "available", "extending")).status == "available" and v.size == 2,
               what="extended to 2 GiB")
    assert_file(lifecycle, vol, 2)
    run(c.openstack("volume", "set", "--size", "3", vid))
    wait_until(lambda: (v := wait_status(db, vid, "available", "extending")).status == "available" and v.size == 3,
               what="extended to 3 GiB")
    assert_file(lifecycle, vol, 3)
    assert usage(db, c.project)["gigabytes"] == 3

    # The name and metadata endpoints (api/routers/volume_metadata.py): each problem is reported.
    renamed, meta, prop = run_parallel(c.cinder("rename", vid, "grown"), c.cinder("metadata", vid, "set", "k=v"),
                                       c.openstack("volume", "set", "--property", "k2=v2", vid), ok=None)
    problems = [f"{cmd} exited {p.returncode}: {p.stderr.strip()[-500:]}"
                for cmd, p in (("cinder rename", renamed), ("cinder metadata set", meta),
                               ("openstack volume set --property", prop)) if p.returncode]
    assert not problems, "\n".join(problems)
    with db() as session:
        items = dict(session.execute(select(VolumeMetadata.key, VolumeMetadata.value)
                                     .where(VolumeMetadata.volume_id == vid)).all())
    vol = wait_status(db, vid, "available")
    assert (vol.display_name, items) == ("grown", {"k": "v", "k2": "v2"})
    shown = props_multiline(run(c.cinder("show", vid)).stdout)
    assert (shown["name"], shown["size"], shown["metadata"]) == ("grown", "3", "k : v\nk2 : v2"), shown
    run(c.cinder("delete", vid))
    wait_status(db, vid, "deleted")
    assert not backend_file(lifecycle, vol).exists()


def test_service_lists_show_the_scheduler_and_volume_services_up(lifecycle, clients):
    c = clients
    expected = sorted([(SCHEDULER_BINARY, socket.gethostname(), "az1", "enabled", "up"),  # workers/heartbeat.py
                       (VOLUME_BINARY, lifecycle.host1, "az1", "enabled", "up"),
                       (VOLUME_BINARY, lifecycle.host2, "az2", "enabled", "up")])
    ours = {(binary, host) for binary, host, *_ in expected}
    cli, osc, refused = run_parallel(c.cinder("service-list", admin=True),
                                     c.openstack("volume", "service", "list", "-f", "json", admin=True),
                                     c.cinder("service-list"), ok=None)  # the last as a member
    problems = [f"{cmd} exited {p.returncode}: {p.stderr.strip()[-500:]}"
                for cmd, p in (("cinder service-list", cli), ("openstack volume service list", osc)) if p.returncode]
    assert not problems, "\n".join(problems)

    def seen(services: list[dict[str, str]]) -> list[tuple[str, str, str, str, str]]:
        """(binary, host, zone, status, state) of the lifecycle's own services (the session's
        database may hold others, e.g. a stopped volume service of another test)."""
        return sorted((s["Binary"], s["Host"], s["Zone"], s["Status"], s["State"]) for s in services
                      if (s["Binary"], s["Host"]) in ours)

    assert seen(listing(cli.stdout)) == expected, cli.stdout
    assert seen(json.loads(osc.stdout)) == expected, osc.stdout
    assert refused.returncode == 1
    assert "Policy doesn't allow volume_extension:services:index to be performed. (HTTP 403)" in refused.stderr


def test_message_list_explains_a_create_too_big_for_any_backend(lifecycle, db, clients):
    c = clients
    made = props(run(c.cinder("create", "500", "--name", "huge")).stdout)
    assert made["status"] == "creating"
    vol = wait_status(db, made["id"], "error")
    assert vol.host is None and vol.use_quota is False
    wait_until(lambda: messages_about(db, vol.id), what="a user message")
    shown, messages = run_parallel(c.cinder("show", vol.id), c.cinder("message-list"))
    assert props(shown.stdout)["status"] == "error"
    about = [m for m in listing(messages.stdout) if m["Resource UUID"] == vol.id]
    assert len(about) == 1, messages.stdout
    assert about[0]["Resource Type"] == "VOLUME" and NO_VALID_BACKEND in about[0]["User Message"]
    assert usage(db, c.project).get("gigabytes", 0) == 0
    run(c.cinder("delete", vol.id))
    wait_status(db, vol.id, "deleted")


def test_openstacksdk_creates_waits_and_deletes(lifecycle, db, clients):
    c = clients
    conn = _sdk(c.member, f"{c.api_url}/v3/{c.project}")
    block = conn.block_storage
    volume = block.create_volume(size=1, name="sdk")
    assert volume.status == "creating"
    volume = block.wait_for_status(volume, "available", failures=["error"], interval=0.2, wait=30)
    assert (volume.status, volume.size) == ("available", 1)
    vol = wait_status(db, volume.id, "available")
    assert vol.host.split("#")[0] == lifecycle.host1
    assert_file(lifecycle, vol, 1)
    block.delete_volume(volume)
    block.wait_for_delete(volume, interval=0.2, wait=30)
    assert wait_status(db, volume.id, "deleted").deleted
    assert not backend_file(lifecycle, vol).exists()
    used = usage(db, c.project)
    assert (used["volumes"], used["gigabytes"]) == (0, 0)


def test_clones_cascade_force_delete_and_messages_with_the_other_commands(lifecycle, db, clients):
    """The rest of docs/lifecycle.md's table: clones with both CLIs, a cascade delete of a volume
    with a snapshot, an admin's force delete, `openstack volume message list`, rename."""
    c = clients
    source = props(run(c.cinder("create", "1", "--name", "src")).stdout)
    wait_status(db, source["id"], "available")
    clone, osc_clone = run_parallel(
        c.cinder("create", "1", "--source-volid", source["id"]),
        c.openstack("volume", "create", "--source", source["id"], "--size", "2", "osc-clone", "-f", "json"))
    clone, osc_clone = props(clone.stdout)["id"], json.loads(osc_clone.stdout)["id"]
    src = wait_status(db, source["id"], "available")
    for vid, size in ((clone, 1), (osc_clone, 2)):
        vol = wait_status(db, vid, "available")
        assert vol.host == src.host
        assert_file(lifecycle, vol, size)
    run(c.openstack("volume", "set", "--name", "renamed", osc_clone))
    assert props(run(c.cinder("show", osc_clone)).stdout)["name"] == "renamed"
    snap = props(run(c.cinder("snapshot-create", "--name", "s", source["id"])).stdout)
    wait_snapshot(db, snap["id"], "available")
    refused = run(c.cinder("delete", source["id"]), ok=False)
    assert "have snapshots" in refused.stdout + refused.stderr, (refused.stdout, refused.stderr)
    run(c.cinder("delete", "--cascade", source["id"]))
    wait_status(db, source["id"], "deleted")
    src_path = backend_file(lifecycle, src)
    assert not src_path.exists()
    refused = run(c.cinder("force-delete", clone), ok=False)
    assert "Policy doesn't allow" in refused.stdout + refused.stderr, (refused.stdout, refused.stderr)
    run(c.cinder("force-delete", clone, admin=True))
    run(c.openstack("volume", "delete", "--force", osc_clone, admin=True))
    for vid in (clone, osc_clone):
        wait_status(db, vid, "deleted")
    too_big = props(run(c.cinder("create", "500")).stdout)["id"]
    wait_status(db, too_big, "error")
    listed = json.loads(run(c.openstack("--os-volume-api-version", "3.3", "volume", "message", "list",
                                        "-f", "json")).stdout)
    about = [m for m in listed if too_big in json.dumps(m)]
    assert len(about) == 1 and NO_VALID_BACKEND in json.dumps(about[0]), listed
    run(c.cinder("delete", too_big))
    wait_status(db, too_big, "deleted")
