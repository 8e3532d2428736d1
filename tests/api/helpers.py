"""What the API test files share: an HTTP client, Cinder's fault shape, fresh project ids."""

from __future__ import annotations

import uuid

import httpx


def client(api_url: str, token: str | None, version: str | None = None) -> httpx.Client:
    """A client sending `token` as X-Auth-Token (none when None) and, if given, a microversion."""
    headers = {} if token is None else {"X-Auth-Token": token}
    if version:
        headers["OpenStack-API-Version"] = f"volume {version}"
    return httpx.Client(base_url=api_url, headers=headers, timeout=60)


def assert_fault(resp: httpx.Response, status: int, name: str, message: str) -> None:
    """A Cinder fault: the status, a JSON body `{name: {"code": status, "message": message}}`."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json() == {name: {"code": status, "message": message}}


def new_project() -> str:
    """A project id Cinder's URL pattern accepts ([0-9a-f-]+), unused by any other test."""
    return uuid.uuid4().hex
