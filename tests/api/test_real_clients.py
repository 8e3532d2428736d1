"""The real OpenStack clients against the live API, real workers, Redis and PostgreSQL.

python-cinderclient (the `cinder` CLI and its Python API), openstacksdk and python-openstackclient
(the `openstack` CLI), pinned in pyproject.toml, drive `volchain api` exactly as they drive Cinder:
in noauth mode (`X-Auth-Token: user:project`) and with `vc1.` tokens (keystoneauth's admin_token
plugin). CLIs run as subprocesses with a bounded timeout. Every create is followed back to the
database and the broker: the row is `creating`, its flow succeeded and the chain cast it to the
scheduler queue; then the project's quota must still agree with its rows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from models.flow_log import FlowRun
from models.volume import Volume
from tests import factories
from tests.conftest import REPO
from workers.submit import wait_for_flow

USER = "user1"
CLI_TIMEOUT = 90
OVER_QUOTA = "VolumeLimitExceeded: Maximum number of volumes allowed (1) exceeded for quota 'volumes'."


def _executable(name: str) -> str:
    beside = Path(sys.executable).parent / name  # the interpreter's own console script: no pyenv shim
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"`{name}` is not installed: pip install -e '.[test]'"
    return found


CINDER = _executable("cinder")
OPENSTACK = _executable("openstack")


def client_env(**extra: str) -> dict[str, str]:
    """The environment without any OS_*/CINDER_* settings or proxies of the caller's own."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("OS_", "CINDER_")) and "proxy" not in k.lower()}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost", **extra)
    return env


def run(cmd: list[str], *, ok: bool | None = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a client; ok=True: it must succeed, False: it must fail, None: the caller looks."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env or client_env(),
                          stdin=subprocess.DEVNULL, cwd=REPO)
    if ok:
        assert proc.returncode == 0, f"{cmd[1:]} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    elif ok is not None:
        assert proc.returncode != 0, f"{cmd[1:]} succeeded but should have failed\nstdout: {proc.stdout}"
    return proc


def run_parallel(*cmds: list[str], **kwargs) -> list[subprocess.CompletedProcess]:
    """Independent client runs at once (each CLI spends a second or more starting up)."""
    with ThreadPoolExecutor(len(cmds)) as pool:
        return list(pool.map(lambda cmd: run(cmd, **kwargs), cmds))


def cinder_noauth(base: str, project: str, *args: str, endpoint: str | None = None) -> list[str]:
    return [CINDER, "--os-auth-type", "noauth", "--os-user-id", USER, "--os-project-id", project,
            "--os-endpoint", endpoint or f"{base}/v3", *args]


def rows(text: str) -> list[list[str]]:
    """The cells of a prettytable (what `cinder` prints), header row first."""
    return [[cell.strip() for cell in line.strip()[1:-1].split("|")]
            for line in text.splitlines() if line.startswith("|")]


def props(text: str) -> dict[str, str]:
    """`cinder create/show/quota-show` output: a Property | Value table."""
    table = rows(text)
    assert table and table[0] == ["Property", "Value"], text
    return {r[0]: r[1] for r in table[1:] if r[0]}


def listing(text: str) -> list[dict[str, str]]:
    table = rows(text)
    assert table, text
    return [dict(zip(table[0], r)) for r in table[1:]]


def requests_sent(stderr: str) -> list[str]:
    """`METHOD URL` of each request a client logged with --debug."""
    return [" ".join(line.split()[5:7]) for line in stderr.splitlines() if line.startswith("REQ: curl")]


@pytest.fixture
def assert_cast(db, redis_client):
    """assert_cast(project, volume_id, name=..., type_name=...): the chain created and cast this volume."""

    def check(project: str, volume_id: str, *, name: str | None = None, type_name: str = "__DEFAULT__") -> None:
        with db() as session:
            flow_id = session.scalar(select(FlowRun.id).where(FlowRun.volume_id == volume_id))
        assert flow_id, f"no flow for volume {volume_id}"
        outcome = wait_for_flow(flow_id, timeout=30)
        assert outcome.state == "succeeded", outcome.error
        assert outcome.cast["queue"] == "scheduler"
        with db() as session:
            vol = session.get(Volume, volume_id)
        assert (vol.project_id, vol.status, vol.size, vol.display_name, vol.deleted) == (
            project, "creating", 1, name, False)
        [msg] = factories.casts_for(redis_client, "scheduler", volume_id)
        assert msg["args"][0]["request_spec"]["volume_type"]["name"] == type_name

    return check


def clouds_yaml(tmp_path: Path, endpoint: str, token: str) -> Path:
    path = tmp_path / "clouds.yaml"
    path.write_text(f"clouds:\n  volchain:\n    auth_type: admin_token\n    auth:\n"
                    f"      endpoint: {endpoint}\n      token: \"{token}\"\n")
    return path


def volume_count(db, project: str) -> int:
    with db() as session:
        return session.scalar(select(func.count()).select_from(Volume).where(
            Volume.project_id == project, Volume.deleted.is_(False)))


# --- python-cinderclient: the `cinder` command ------------------------------------------------


def test_cinder_cli_noauth_creates_shows_and_lists(noauth_api_url, project, db, assert_cast, check_invariant):
    created, named = run_parallel(cinder_noauth(noauth_api_url, project, "--debug", "create", "1"),
                                  cinder_noauth(noauth_api_url, project, "create", "--name", "cli-v1", "1"))
    # discovery at / found 3.67; then project-less URLs (3.67) with the noauth token
    assert "downgrading to 3.67 based on server support" in created.stderr
    assert requests_sent(created.stderr)[:2] == [f"GET {noauth_api_url}/", f"POST {noauth_api_url}/v3/volumes"]
    first = props(created.stdout)
    assert (first["status"], first["size"], first["name"], first["volume_type"], first["user_id"]) == (
        "creating", "1", "None", "__DEFAULT__", USER)
    assert first["os-vol-tenant-attr:tenant_id"] == project  # noauth callers are admins
    assert first["consumes_quota"] == "True"  # a 3.65+ field: the negotiated version is 3.67
    assert_cast(project, first["id"])

    named = props(named.stdout)
    assert (named["status"], named["name"]) == ("creating", "cli-v1")
    assert_cast(project, named["id"], name="cli-v1")

    shown, listed = run_parallel(cinder_noauth(noauth_api_url, project, "show", named["id"]),
                                 cinder_noauth(noauth_api_url, project, "list"))
    shown = props(shown.stdout)
    assert (shown["id"], shown["name"], shown["status"], shown["size"]) == (named["id"], "cli-v1", "creating", "1")
    listed = listing(listed.stdout)
    assert sorted((v["ID"], v["Name"], v["Status"], v["Size"]) for v in listed) == sorted(
        [(first["id"], "-", "creating", "1"), (named["id"], "cli-v1", "creating", "1")])
    check_invariant(project)


def test_cinder_cli_noauth_classic_project_url_at_3_0(noauth_api_url, project, assert_cast, check_invariant):
    classic = dict(endpoint=f"{noauth_api_url}/v3/{project}")
    created = run(cinder_noauth(noauth_api_url, project, "--debug", "--os-volume-api-version", "3.0",
                                "create", "--name", "cli-v3", "1", **classic))
    assert f"POST {noauth_api_url}/v3/{project}/volumes" in requests_sent(created.stderr)
    volume = props(created.stdout)
    assert (volume["status"], volume["name"]) == ("creating", "cli-v3")
    assert "consumes_quota" not in volume  # 3.0 view
    assert_cast(project, volume["id"], name="cli-v3")

    listed, types = run_parallel(
        cinder_noauth(noauth_api_url, project, "--os-volume-api-version", "3.0", "list", **classic),
        cinder_noauth(noauth_api_url, project, "--os-volume-api-version", "3.0", "type-list", **classic))
    assert [(v["ID"], v["Name"], v["Status"]) for v in listing(listed.stdout)] == [(volume["id"], "cli-v3", "creating")]
    assert "__DEFAULT__" in {t["Name"] for t in listing(types.stdout)}
    check_invariant(project)


def test_cinder_cli_reports_cinders_errors(noauth_api_url, project, db, check_invariant):
    zero, no_type = run_parallel(cinder_noauth(noauth_api_url, project, "create", "0"),
                                 cinder_noauth(noauth_api_url, project, "create", "--volume-type", "no-such", "1"),
                                 ok=False)
    assert ("ERROR: Invalid input for field/attribute size. Value: 0. 0 is less than the minimum of 1 (HTTP 400)"
            in zero.stderr), zero.stderr
    assert "ERROR: Volume type with name no-such could not be found. (HTTP 404)" in no_type.stderr, no_type.stderr
    assert volume_count(db, project) == 0
    check_invariant(project)


def test_cinder_cli_over_quota_is_413_volume_limit_exceeded(noauth_api_url, project, db, assert_cast,
                                                            check_invariant):
    # The quota is set directly: `cinder quota-update` is tested on its own below.
    factories.set_quota(db, project, volumes=1)
    first = props(run(cinder_noauth(noauth_api_url, project, "create", "1")).stdout)
    assert_cast(project, first["id"])
    second = run(cinder_noauth(noauth_api_url, project, "create", "1"), ok=False)
    assert f"ERROR: {OVER_QUOTA} (HTTP 413)" in second.stderr, second.stderr
    assert volume_count(db, project) == 1
    check_invariant(project)


def test_cinder_cli_quota_show_usage_and_update(noauth_api_url, project, db, assert_cast, check_invariant):
    factories.set_quota(db, project, volumes=7)
    shown, volume = run_parallel(cinder_noauth(noauth_api_url, project, "quota-show", project),
                                 cinder_noauth(noauth_api_url, project, "create", "1"))
    shown = props(shown.stdout)
    assert (shown["volumes"], shown["gigabytes"], shown["volumes___DEFAULT__"]) == ("7", "1000", "-1")
    volume = props(volume.stdout)
    assert_cast(project, volume["id"])
    usage = {r["Type"]: r for r in listing(run(cinder_noauth(noauth_api_url, project, "quota-usage", project)).stdout)}
    assert (usage["volumes"]["In_use"], usage["volumes"]["Reserved"], usage["volumes"]["Limit"]) == ("1", "0", "7")
    assert (usage["gigabytes"]["In_use"], usage["gigabytes"]["Limit"]) == ("1", "1000")

    # cinderclient sends {"quota_set": {"tenant_id": P, "volumes": 3}}; Cinder ignores tenant_id (and id).
    updated = run(cinder_noauth(noauth_api_url, project, "quota-update", "--volumes", "3", project))
    assert props(updated.stdout)["volumes"] == "3"
    assert props(run(cinder_noauth(noauth_api_url, project, "quota-show", project)).stdout)["volumes"] == "3"
    check_invariant(project)


def test_cinder_cli_type_create_then_create_and_type_list(noauth_api_url, project, assert_cast, check_invariant):
    gold = f"gold-{project[:12]}"  # types are global: one of this test's own
    made = listing(run(cinder_noauth(noauth_api_url, project, "type-create", gold)).stdout)
    assert [(t["Name"], t["Is_Public"]) for t in made] == [(gold, "True")]

    # At 3.67 cinderclient lists types at the project-less GET /v3/types.
    created, types = run_parallel(cinder_noauth(noauth_api_url, project, "create", "--volume-type", gold, "1"),
                                  cinder_noauth(noauth_api_url, project, "type-list"), ok=None)
    assert created.returncode == 0, created.stderr
    volume = props(created.stdout)
    assert (volume["status"], volume["volume_type"], volume["volume_type_id"]) == ("creating", gold, made[0]["ID"])
    assert_cast(project, volume["id"], type_name=gold)
    check_invariant(project)

    assert types.returncode == 0, types.stderr
    assert {"__DEFAULT__", gold} <= {t["Name"] for t in listing(types.stdout)}


def test_cinder_cli_reads_limits_zones_types_and_quota_defaults(noauth_api_url, project, db):
    """At 3.67 these are project-less GETs (/v3/limits, /v3/os-availability-zone, /v3/types); the
    defaults are /v3/os-quota-sets/<P>/defaults. Every answer is checked, then all problems reported."""
    factories.set_quota(db, project, volumes=4)
    fresh = uuid.uuid4().hex  # a project without limits of its own shows the defaults
    answer = httpx.get(f"{noauth_api_url}/v3/{project}/os-quota-sets/{fresh}",
                       headers={"X-Auth-Token": f"{USER}:{project}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    defaults = {k: str(v) for k, v in answer.json()["quota_set"].items() if k != "id"}
    limits, zones, default_type, quota_defaults = run_parallel(
        cinder_noauth(noauth_api_url, project, "absolute-limits"),
        cinder_noauth(noauth_api_url, project, "availability-zone-list"),
        cinder_noauth(noauth_api_url, project, "type-show", "__DEFAULT__"),
        cinder_noauth(noauth_api_url, project, "quota-defaults", project), ok=None)
    problems = []

    def expect(label, proc, check):
        if proc.returncode != 0:
            problems.append(f"cinder {label}: {proc.stderr.strip().splitlines()[-1]}")
            return
        try:
            check(proc.stdout)
        except AssertionError as exc:
            problems.append(f"cinder {label}: {exc}")

    def check_limits(out):
        got = {r["Name"]: r["Value"] for r in listing(out)}
        assert (got["maxTotalVolumes"], got["totalVolumesUsed"], got["maxTotalVolumeGigabytes"]) == (
            "4", "0", defaults["gigabytes"]), got

    def check_zones(out):  # the deployment's own zone, plus any zone a volume service of another test runs in
        zones = [(z["Name"], z["Status"]) for z in listing(out)]
        assert ("nova", "available") in zones and len(zones) == len(set(zones)), out

    def check_type(out):
        got = props(out)
        assert (got["name"], got["id"]) == ("__DEFAULT__", factories.DEFAULT_TYPE_ID), got

    def check_defaults(out):
        assert props(out) == defaults, out

    expect("absolute-limits", limits, check_limits)
    expect("availability-zone-list", zones, check_zones)
    expect("type-show __DEFAULT__", default_type, check_type)
    expect("quota-defaults", quota_defaults, check_defaults)
    assert not problems, "\n".join(problems)


def test_cinder_cli_with_a_signed_token(api_url, project, db, assert_cast, check_invariant):
    issued = subprocess.run([sys.executable, "-m", "cli.main", "token", "issue", "--project", project,
                             "--user", "u1", "--role", "member"], capture_output=True, text=True,
                            timeout=CLI_TIMEOUT, cwd=REPO, stdin=subprocess.DEVNULL)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("vc1.")
    # cinder has no --os-token (only the hidden --os_token) for admin_token; OS_TOKEN works too.
    auth = [CINDER, "--os-auth-type", "admin_token", "--os-project-id", project]
    created = run([*auth, "--os_token", token, "--os-endpoint", f"{api_url}/v3/{project}",
                   "create", "--name", "tok", "1"])
    volume = props(created.stdout)
    assert (volume["status"], volume["name"], volume["user_id"]) == ("creating", "tok", "u1")
    assert "os-vol-tenant-attr:tenant_id" not in volume  # a member sees no admin fields
    assert_cast(project, volume["id"], name="tok")

    shown, listed, forged = run_parallel(
        [*auth, "--os-endpoint", f"{api_url}/v3", "show", volume["id"]],
        [*auth, "--os-endpoint", f"{api_url}/v3", "list"],
        [*auth, "--os_token", token[:-4] + "AAAA", "--os-endpoint", f"{api_url}/v3", "list"],
        env=client_env(OS_TOKEN=token), ok=None)
    assert shown.returncode == listed.returncode == 0, shown.stderr + listed.stderr
    shown = props(shown.stdout)
    assert (shown["id"], shown["status"]) == (volume["id"], "creating")
    assert [(v["ID"], v["Name"]) for v in listing(listed.stdout)] == [(volume["id"], "tok")]
    assert forged.returncode == 1  # --os_token wins over OS_TOKEN: a forged signature is refused
    assert "The request you have made requires authentication. (HTTP 401)" in forged.stderr, forged.stderr
    check_invariant(project)


# --- python-cinderclient: the Python API -------------------------------------------------------


def test_cinderclient_python_api_noauth(noauth_api_url, project, db, assert_cast, check_invariant):
    from cinderclient import client, exceptions
    from cinderclient.contrib.noauth import CinderNoAuthPlugin
    from keystoneauth1 import session

    version = client.get_highest_client_server_version(f"{noauth_api_url}/v3")
    assert version == "3.67"
    # the plugin appends the project: requests go to /v3/<P>/...
    sess = session.Session(auth=CinderNoAuthPlugin(USER, project, endpoint=f"{noauth_api_url}/v3"))
    cinder = client.Client(version, session=sess)
    factories.set_quota(db, project, volumes=1)

    volume = cinder.volumes.create(1, name="py")
    assert (volume.status, volume.size, volume.name, volume.consumes_quota) == ("creating", 1, "py", True)
    assert_cast(project, volume.id, name="py")
    got = cinder.volumes.get(volume.id)
    assert (got.id, got.status, getattr(got, "os-vol-tenant-attr:tenant_id")) == (volume.id, "creating", project)
    assert [v.id for v in cinder.volumes.list()] == [volume.id]

    with pytest.raises(exceptions.OverLimit) as over:
        cinder.volumes.create(1, name="too-many")
    assert over.value.code == 413
    assert over.value.message == OVER_QUOTA
    assert over.value.retry_after == 0
    assert over.value.request_id.startswith("req-")
    assert cinder.quotas.get(project, usage=True).volumes == {"limit": 1, "in_use": 1, "reserved": 0}
    assert volume_count(db, project) == 1
    check_invariant(project)


def test_cinderclient_python_api_with_a_token(api_url, project, issue_token, assert_cast, check_invariant):
    from cinderclient import client, exceptions
    from keystoneauth1 import session
    from keystoneauth1.token_endpoint import Token

    token = issue_token(project, user="u1", role="member")
    made = []
    for version, endpoint in (("3.0", f"{api_url}/v3/{project}"), ("3.67", f"{api_url}/v3")):
        cinder = client.Client(version, session=session.Session(auth=Token(endpoint, token)))
        volume = cinder.volumes.create(1, name=f"tok-{version}")
        assert (volume.status, volume.name, volume.user_id) == ("creating", f"tok-{version}", "u1")
        assert_cast(project, volume.id, name=f"tok-{version}")
        assert cinder.volumes.get(volume.id).status == "creating"
        made.append(volume.id)
        assert sorted(v.id for v in cinder.volumes.list()) == sorted(made)

    def classic(token: str):
        return client.Client("3.0", session=session.Session(auth=Token(f"{api_url}/v3/{project}", token)))

    member, admin = classic(token), classic(issue_token(project, user="a1", role="admin"))
    with pytest.raises(exceptions.Forbidden) as forbidden:  # a member may not set quotas
        member.quotas.update(project, volumes=5)
    assert forbidden.value.code == 403
    assert forbidden.value.message == "Policy doesn't allow volume_extension:quotas:update to be performed."
    with pytest.raises(exceptions.Forbidden):  # nor create types; an admin may
        member.volume_types.create(f"member-{project[:12]}")
    made_type = admin.volume_types.create(f"admin-{project[:12]}")
    assert made_type.name in {t.name for t in member.volume_types.list()}  # public: the member sees it

    forged = client.Client("3.67", session=session.Session(auth=Token(f"{api_url}/v3/{project}", token + "x")))
    with pytest.raises(exceptions.Unauthorized) as unauthorized:
        forged.volumes.list()
    assert unauthorized.value.code == 401
    check_invariant(project)


# --- openstacksdk ------------------------------------------------------------------------------


def _sdk(token: str, endpoint: str):
    import openstack

    return openstack.connect(auth_type="admin_token", auth={"token": token, "endpoint": endpoint},
                             load_yaml_config=False, load_envvars=False)


def test_openstacksdk_noauth_negotiates_microversions(noauth_api_url, project, assert_cast, check_invariant):
    conn = _sdk(f"{USER}:{project}", f"{noauth_api_url}/v3/{project}")
    # Tokenless discovery of /v3/<P>: real Cinder-noauth answers 204 here, volchain a version document.
    data = conn.block_storage.get_endpoint_data()
    assert data.url == f"{noauth_api_url}/v3/{project}"
    assert (data.min_microversion, data.max_microversion) == ((3, 0), (3, 67))

    volume = conn.block_storage.create_volume(size=1, name="sdk")
    assert (volume.status, volume.size, volume.name) == ("creating", 1, "sdk")
    assert volume.microversion == "3.67" and volume.consumes_quota is True
    assert_cast(project, volume.id, name="sdk")
    got = conn.block_storage.get_volume(volume.id)
    assert (got.id, got.status, got.project_id) == (volume.id, "creating", project)
    assert [v.id for v in conn.block_storage.volumes()] == [volume.id]
    check_invariant(project)


def test_openstacksdk_with_a_token_and_clouds_yaml(api_url, project, issue_token, tmp_path, monkeypatch,
                                                   assert_cast, check_invariant):
    import openstack

    token = issue_token(project, user="u1", role="member")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds_yaml(tmp_path, f"{api_url}/v3/{project}", token)))
    conn = openstack.connect(cloud="volchain")
    assert conn.block_storage.get_endpoint_data().max_microversion == (3, 67)
    volume = conn.block_storage.create_volume(size=1, name="sdk-tok")
    assert (volume.status, volume.user_id, volume.microversion) == ("creating", "u1", "3.67")
    assert_cast(project, volume.id, name="sdk-tok")
    assert conn.block_storage.get_volume(volume.id).status == "creating"

    # The project-less endpoint (3.67 URLs) works as well.
    projectless = _sdk(token, f"{api_url}/v3")
    other = projectless.block_storage.create_volume(size=1, name="sdk-v3")
    assert other.status == "creating"
    assert_cast(project, other.id, name="sdk-v3")
    assert sorted(v.id for v in projectless.block_storage.volumes()) == sorted([volume.id, other.id])
    check_invariant(project)
    # GET /v3/types must list types, not answer the version document.
    assert "__DEFAULT__" in {t.name for t in projectless.block_storage.types()}


# --- python-openstackclient: the `openstack` command ------------------------------------------


def test_openstack_cli_noauth_with_and_without_a_microversion(noauth_api_url, project, assert_cast, check_invariant):
    auth = [OPENSTACK, "--os-auth-type", "admin_token", "--os-token", f"{USER}:{project}",
            "--os-endpoint", f"{noauth_api_url}/v3/{project}"]
    # With --os-volume-api-version the SDK must discover versions at the tokenless /v3 (real Cinder-noauth
    # answers 204 there and the command fails with DiscoveryFailure).
    plain, versioned = run_parallel(
        [*auth, "volume", "create", "--size", "1", "osc-v1", "-f", "json"],
        [*auth, "--os-volume-api-version", "3.67", "--debug",
         "volume", "create", "--size", "1", "osc-v2", "-f", "json"])
    created = json.loads(plain.stdout)
    assert (created["status"], created["size"], created["name"], created["type"]) == ("creating", 1, "osc-v1",
                                                                                     "__DEFAULT__")
    assert_cast(project, created["id"], name="osc-v1")
    post = [line for line in versioned.stderr.splitlines() if line.startswith("REQ: curl -g -i -X POST")]
    assert len(post) == 1 and f"{noauth_api_url}/v3/{project}/volumes " in post[0], versioned.stderr[-2000:]
    assert '-H "OpenStack-API-Version: volume 3.67"' in post[0]
    second = json.loads(versioned.stdout)
    assert (second["status"], second["name"]) == ("creating", "osc-v2")
    assert_cast(project, second["id"], name="osc-v2")

    listed, shown = run_parallel([*auth, "volume", "list", "-f", "json"],
                                 [*auth, "--os-volume-api-version", "3.67", "volume", "show", "osc-v1", "-f", "json"])
    assert "Cannot determine endpoint data" not in listed.stderr  # real Cinder-noauth prints this
    assert sorted((v["ID"], v["Name"], v["Status"]) for v in json.loads(listed.stdout)) == sorted(
        [(created["id"], "osc-v1", "creating"), (second["id"], "osc-v2", "creating")])
    shown = json.loads(shown.stdout)
    assert (shown["id"], shown["status"], shown["os-vol-tenant-attr:tenant_id"]) == (created["id"], "creating", project)
    check_invariant(project)


def test_openstack_cli_with_a_token_from_clouds_yaml(api_url, project, issue_token, tmp_path, assert_cast,
                                                     check_invariant):
    token = issue_token(project, user="u1", role="member")
    env = client_env(OS_CLIENT_CONFIG_FILE=str(clouds_yaml(tmp_path, f"{api_url}/v3/{project}", token)))
    cloud = [OPENSTACK, "--os-cloud", "volchain", "--os-volume-api-version", "3.67"]
    created = json.loads(run([*cloud, "volume", "create", "--size", "1", "osc-tok", "-f", "json"], env=env).stdout)
    assert (created["status"], created["name"], created["user_id"]) == ("creating", "osc-tok", "u1")
    assert_cast(project, created["id"], name="osc-tok")

    flags = [OPENSTACK, "--os-auth-type", "admin_token", "--os-token", token,
             "--os-endpoint", f"{api_url}/v3/{project}"]
    shown = json.loads(run([*flags, "volume", "show", "osc-tok", "-f", "json"]).stdout)
    assert (shown["id"], shown["status"], shown["os-vol-tenant-attr:tenant_id"]) == (created["id"], "creating", None)
    check_invariant(project)
