"""Fuzzing the live API from its own /openapi.json (schemathesis, pinned in the test extras).

A whole volchain runs as real processes on a database and a Redis server of its own (bench/stack.py):
step workers, the scheduler, a volume service and the API with token auth, so that what an admin
token may do (quota classes, services, default types) touches nothing else in the suite. Every
operation of the document is called with generated path parameters, query strings and bodies,
once with a member token and once with an admin token of one project, the project id in the URL
being the token's. Each answer must not be a 5xx and must match the document (status code,
content type, headers, body schema), as the document is served: nothing patched. A volume and a
snapshot are made first, so that operations on them get past the 404.
At the end, every flow has ended and the project's quota equals its rows.
"""

from __future__ import annotations

import time

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_headers_conformance,
                                 response_schema_conformance, status_code_conformance)
from sqlalchemy import func, select

from bench.stack import Stack
from tests.api.helpers import new_project
from tests.conftest import sessions_of
from tests.invariant import assert_quota_consistent

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
EXAMPLES = 12  # per operation and token: 57 operations x 2 tokens, under a minute in all
STACK_ENV = {"VOLCHAIN_TASK_EVENTS": "false", "VOLCHAIN_STORAGE_AVAILABILITY_ZONE": "nova",
             "VOLCHAIN_AZ_CACHE_SECONDS": "0"}


@pytest.fixture(scope="module")
def fuzz_stack(own_database, tmp_path_factory):
    stack = Stack(own_database, tmp_path_factory.mktemp("fuzz"), env=STACK_ENV)
    stack.add_steps()
    stack.add_scheduler()
    stack.add_volume("fuzznode", "nova")
    stack.add_api(VOLCHAIN_AUTH_STRATEGY="token")
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def fuzz_db(fuzz_stack):
    with sessions_of(fuzz_stack.database_url) as factory:
        yield factory


@pytest.fixture(scope="module")
def fuzz_target(fuzz_stack, fuzz_db):
    """The project, a token per role, and the ids of a volume and a snapshot it owns."""
    import httpx

    from api.auth import TokenSigner, database_secret

    with fuzz_db() as session:
        signer = TokenSigner(database_secret(session))
    project = new_project()
    tokens = {role: signer.issue(project, f"fuzz-{role}", role, 3600) for role in ("member", "admin")}
    with httpx.Client(base_url=f"{fuzz_stack.api_url}/v3/{project}", timeout=60,
                      headers={"X-Auth-Token": tokens["member"]}) as api:
        volume = api.post("/volumes", json={"volume": {"size": 1, "name": "fuzzed"}})
        assert volume.status_code == 202, volume.text
        volume_id = volume.json()["volume"]["id"]
        deadline = time.monotonic() + 60
        while api.get(f"/volumes/{volume_id}").json()["volume"]["status"] != "available":
            assert time.monotonic() < deadline, "the seed volume did not become available"
            time.sleep(0.2)
        snapshot = api.post("/snapshots", json={"snapshot": {"volume_id": volume_id}})
        assert snapshot.status_code == 202, snapshot.text
    return {"project": project, "tokens": tokens, "volume_id": volume_id,
            "snapshot_id": snapshot.json()["snapshot"]["id"]}


@pytest.fixture(scope="module")
def api_document(fuzz_stack):
    return schemathesis.openapi.from_url(f"{fuzz_stack.api_url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_document")
SETTINGS = hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                               suppress_health_check=list(hypothesis.HealthCheck))


def call(case, target: dict, role: str) -> None:
    """One generated request, in the token's project, on the seeded volume and snapshot."""
    params = case.path_parameters or {}
    if "project_id" in params:
        params["project_id"] = target["project"]
    for name in ("volume_id", "snapshot_id"):
        if name in params:
            params[name] = target[name]
    case.call_and_validate(headers={"X-Auth-Token": target["tokens"][role]}, checks=CHECKS)


@schema.parametrize()
@SETTINGS
def test_member_gets_no_5xx_and_answers_match_the_document(case, fuzz_target):
    call(case, fuzz_target, "member")


@schema.parametrize()
@SETTINGS
def test_admin_gets_no_5xx_and_answers_match_the_document(case, fuzz_target):
    call(case, fuzz_target, "admin")


def test_after_the_fuzzing_every_flow_ended_and_quota_equals_the_rows(fuzz_target, fuzz_db):
    from models.flow_log import FlowRun, FlowState

    project = fuzz_target["project"]
    deadline = time.monotonic() + 90
    while True:
        with fuzz_db() as session:
            running = session.scalar(select(func.count()).select_from(FlowRun).where(
                FlowRun.project_id == project,
                FlowRun.state.in_([FlowState.RUNNING.value, FlowState.COMPENSATING.value])))
        if not running or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert running == 0, f"{running} flows of the fuzzed project still running after 90 s"
    with fuzz_db() as session:
        assert_quota_consistent(session, project)
