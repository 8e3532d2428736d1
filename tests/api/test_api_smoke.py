"""The REST front end end to end: a token-authenticated create through the chain, then read back."""

import httpx


def test_a_member_creates_a_volume_and_reads_it_back(api_url, project, issue_token, check_invariant):
    headers = {"X-Auth-Token": issue_token(project)}
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
        created = client.post(f"/v3/{project}/volumes", json={"volume": {"size": 1, "name": " v1 "}})
        assert created.status_code == 202, created.text
        volume = created.json()["volume"]
        assert (volume["status"], volume["name"], volume["volume_type"], volume["bootable"]) == (
            "creating", "v1", "__DEFAULT__", "false")
        assert created.headers["OpenStack-API-Version"] == "volume 3.0"
        assert created.headers["X-OpenStack-Request-Id"].startswith("req-")
        shown = client.get(f"/v3/{project}/volumes/{volume['id']}")
        assert shown.status_code == 200
        assert shown.json()["volume"]["id"] == volume["id"]
        assert "os-vol-tenant-attr:tenant_id" not in shown.json()["volume"]  # members see no admin fields
    check_invariant(project)


def test_a_request_without_a_token_is_refused_with_401(api_url, project):
    answer = httpx.get(f"{api_url}/v3/{project}/volumes", timeout=10)
    assert answer.status_code == 401
    assert answer.json() == {"unauthorized": {"code": 401,
                                              "message": "The request you have made requires authentication."}}
