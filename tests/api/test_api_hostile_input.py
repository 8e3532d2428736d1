"""Hostile input (issue 13): nothing a caller sends makes a 500 or makes the API hold more than its
body limit; what PostgreSQL cannot store (NUL, unpaired surrogates) and what is nested too deep
is a 400."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.api.helpers import assert_fault, client, new_project
from tests.conftest import free_port, start_api, stop_worker, wait_for_http

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def own_api(workers, tmp_path_factory):
    """A `volchain api` of this module's own (token auth), so its memory can be watched."""
    port = free_port()
    proc = start_api(port, "token", log_path=tmp_path_factory.mktemp("api-hostile") / "api.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/")
        yield base, port, proc
    finally:
        stop_worker(proc)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_chunked_body_past_the_limit_is_refused_with_413_without_being_held(own_api, issue_token):
    """200 MiB sent chunked (no Content-Length): the API answers 413 and its memory stays within
    32 MiB of where it was (the limit is 256 KiB; holding the body would take 200 MiB or more)."""
    base, port, proc = own_api
    project = new_project()
    token = issue_token(project)
    before = _rss_mib(proc.pid)
    peak = [before]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib(proc.pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    chunk = b"x" * MiB
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(f"POST /v3/{project}/volumes HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Auth-Token: {token}\r\n"
                     "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        try:
            for _ in range(200):
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the API answered and closed before the whole body was sent: the point
        answer = b""
        while b"Request is too large." not in answer:
            more = conn.recv(65536)
            if not more:
                break
            answer += more
    done.set()
    watcher.join()
    assert peak[0] - before < 32, f"the API grew from {before:.0f} to {peak[0]:.0f} MiB"
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"Request is too large." in answer


@pytest.mark.parametrize(("body", "message"), [
    ({"volume": {"size": 1, "name": "a\u0000b"}}, "Invalid input received: a string contains a NUL character."),
    ({"volume": {"size": 1, "description": "\u0000"}}, "Invalid input received: a string contains a NUL character."),
    ({"volume": {"size": 1, "metadata": {"k\u0000": "v"}}},
     "Invalid input received: a string contains a NUL character."),
    ({"volume": {"size": 1, "imageRef": "\u0000"}}, "Invalid input received: a string contains a NUL character."),
], ids=["name", "description", "metadata-key", "imageRef"])
def test_a_nul_character_in_the_body_is_a_400(api_url, issue_token, body, message):
    project = new_project()
    with client(api_url, issue_token(project)) as c:
        assert_fault(c.post(f"/v3/{project}/volumes", json=body), 400, "badRequest", message)


def test_an_unpaired_surrogate_in_a_name_is_a_400(api_url, issue_token):
    project = new_project()
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes", content=b'{"volume": {"size": 1, "name": "\\ud800"}}',
                      headers={"Content-Type": "application/json"})
    assert_fault(resp, 400, "badRequest", "Invalid input received: a string contains an unpaired surrogate.")


@pytest.mark.parametrize("depth", [40, 1000, 100000])
def test_json_nested_too_deep_is_a_400(api_url, issue_token, depth):
    project = new_project()
    body = b'{"volume": {"size": 1, "metadata": {"k": ' + b"[" * depth + b"]" * depth + b"}}}"  # under 256 KiB
    with client(api_url, issue_token(project)) as c:
        resp = c.post(f"/v3/{project}/volumes", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["badRequest"]["message"].startswith("Malformed request body")


@pytest.mark.parametrize("path", [
    "/volumes/%00", "/volumes/detail?name=%00", "/volumes?status=a%00b", "/volumes/detail?marker=%00",
    "/snapshots?name=%00", "/volumes?metadata=%7B%22k%22%3A%22%00%22%7D",
])
def test_a_nul_character_in_the_url_is_a_400(api_url, issue_token, path):
    project = new_project()
    with client(api_url, issue_token(project)) as c:
        assert_fault(c.get(f"/v3/{project}{path}"), 400, "badRequest",
                     "Invalid input received: the URL contains a NUL character.")


def test_an_idempotency_key_reused_with_another_body_is_a_422(api_url, issue_token, check_invariant):
    project = new_project()
    key = {"Idempotency-Key": f"k-{project}", "Prefer": "respond-async"}
    with client(api_url, issue_token(project)) as c:
        first = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "name": "one"}}, headers=key)
        again = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "name": "one"}}, headers=key)
        other = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 2, "name": "two"}}, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json()["volume"]["id"] == first.json()["volume"]["id"]
    assert_fault(other, 422, "unprocessableEntity",
                 "This Idempotency-Key was used with a different request; use a new key for a new request.")


def test_noauth_applies_the_project_id_rule_of_the_urls(noauth_api_url):
    for token in ("u1:NOT A HEX PROJECT <script>", "u1:ABC", "u1:p/1"):
        with client(noauth_api_url, token) as c:  # a project-less URL: as if the URL named it
            assert_fault(c.get("/v3/volumes"), 404, "itemNotFound", "The resource could not be found.")
    with client(noauth_api_url, f"u1:{new_project()}") as c:
        assert c.get("/v3/volumes").status_code == 200


def test_a_project_never_sees_the_name_of_another_projects_private_type_in_its_quota(api_url, issue_token, db):
    from tests import factories

    outsider, insider = new_project(), new_project()
    private = factories.volume_type(db, is_public=False, projects=[insider]).name
    keys = f"volumes_{private}", f"gigabytes_{private}", f"snapshots_{private}"

    def quota_keys(project: str, role: str, path: str = "") -> set[str]:
        with client(api_url, issue_token(project, role=role)) as c:
            resp = c.get(f"/v3/{project}/os-quota-sets/{project}{path}")
        assert resp.status_code == 200, resp.text
        return set(resp.json()["quota_set"])

    for role in ("reader", "member"):
        assert not set(keys) & quota_keys(outsider, role)
        assert not set(keys) & quota_keys(outsider, role, "/defaults")
        assert set(keys) <= quota_keys(insider, role)
    assert set(keys) <= quota_keys(outsider, "admin")


def test_a_broker_that_is_down_is_a_503_with_retry_after_that_names_no_host(workers, tmp_path, issue_token,
                                                                             check_invariant):
    dead = free_port()  # nothing listens there
    port = free_port()
    proc = start_api(port, "token", extra_env={"VOLCHAIN_BROKER_URL": f"redis://127.0.0.1:{dead}/0"},
                     log_path=tmp_path / "api.log")
    try:
        wait_for_http(f"http://127.0.0.1:{port}/")
        project = new_project()
        with client(f"http://127.0.0.1:{port}", issue_token(project)) as c:
            resp = c.post(f"/v3/{project}/volumes", json={"volume": {"size": 1}})
    finally:
        stop_worker(proc)
    assert resp.status_code == 503, resp.text
    assert resp.headers["Retry-After"] == "5"
    message = resp.json()["serviceUnavailable"]["message"]
    assert "127.0.0.1" not in message and str(dead) not in message and "Error" not in message, message
    assert "could not be queued" in message
    logged = (tmp_path / "api.log").read_text()
    assert "the chain could not be sent (OperationalError" in logged  # the cause, for the operator
    assert f"{resp.headers['X-OpenStack-Request-Id']}: POST /v3/{project}/volumes: SubmitFailed" in logged
    check_invariant(project)


def test_the_api_logs_where_it_listens_and_warns_about_noauth_without_verbose(workers, tmp_path):
    port = free_port()
    log = tmp_path / "api.log"
    proc = start_api(port, "noauth", extra_env={"VOLCHAIN_DATABASE_URL": os.environ["VOLCHAIN_DATABASE_URL"].replace(
        "postgres@", "postgres:s3cret@")}, log_path=log)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/")
    finally:
        stop_worker(proc)
    logged = log.read_text()
    assert f"volchain api: listening on http://127.0.0.1:{port} (1 process), auth noauth, database " in logged
    assert "s3cret" not in logged and "***" in logged  # credentials hidden
    assert "VOLCHAIN_AUTH_STRATEGY=noauth: every caller is an admin" in logged


def test_a_method_the_url_does_not_take_is_a_405_with_allow(api_url, issue_token):
    project = new_project()
    with client(api_url, issue_token(project)) as c:
        resp = c.patch(f"/v3/{project}/volumes/{new_project()[:8]}-0000-0000-0000-000000000000")
    assert_fault(resp, 405, "badMethod", "The method is not allowed for the requested URL.")
    assert resp.headers["Allow"] == "GET, PUT, DELETE"
    with client(api_url, issue_token(project)) as c:
        assert c.patch(f"/v3/{project}/volumes").headers["Allow"] == "GET, POST"


def _one_request_logged(tmp_path, issue_token, path: str, **env: str):
    """One GET of `path` (with the project's id in place of {project}) to an API of its own started
    with `env`; its answer and the lines it logged."""
    port = free_port()
    log = tmp_path / "api.log"
    proc = start_api(port, "token", extra_env=env, log_path=log)
    project = new_project()
    try:
        wait_for_http(f"http://127.0.0.1:{port}/")
        with client(f"http://127.0.0.1:{port}", issue_token(project)) as c:
            resp = c.get(path.format(project=project))
    finally:
        stop_worker(proc)
    return resp, project, log.read_text().splitlines()


def test_the_api_logs_each_request_and_logs_json_lines_when_asked(workers, tmp_path, issue_token):
    import json

    resp, project, logged = _one_request_logged(tmp_path, issue_token, "/v3/{project}/volumes",
                                                VOLCHAIN_LOG_FORMAT="json")
    lines = [json.loads(line) for line in logged if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "volchain.access"]
    request_id = resp.headers["X-OpenStack-Request-Id"]
    assert any(line["message"].startswith(f"{request_id} 127.0.0.1 GET /v3/{project}/volumes 200 ")
               and line["level"] == "INFO" for line in access), access
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)


def test_a_newline_in_the_url_cannot_forge_a_log_line(workers, tmp_path, issue_token):
    resp, project, lines = _one_request_logged(tmp_path, issue_token,
                                               "/v3/{project}/volumes/x%0D%0AERROR%20forged%20line")
    assert resp.status_code == 404
    assert not any(line.startswith("ERROR forged") for line in lines), lines
    request_id = resp.headers["X-OpenStack-Request-Id"]
    assert any(f"{request_id} 127.0.0.1 GET /v3/{project}/volumes/x%0D%0AERROR%20forged%20line 404 " in line
               for line in lines), lines
