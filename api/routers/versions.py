"""Version discovery: `GET /` (300) and `GET /v3/`, `GET /v3/{project_id}` (200), no token needed.

Answering tokenless `/v3/...` discovery is what lets openstacksdk and the `openstack` command
negotiate microversions against volchain (Cinder's noauth answers it with an empty 204).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import base_url
from api.microversion import MAX_VERSION, MIN_VERSION, UPDATED

router = APIRouter(tags=["versions"])


def version_document(request: Request) -> dict:
    return {
        "id": "v3.0",
        "status": "CURRENT",
        "version": str(MAX_VERSION),
        "min_version": str(MIN_VERSION),
        "updated": UPDATED,
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": f"{base_url(request)}/v3/"},
        ],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}],
    }


@router.get("/", status_code=300, summary="All API versions (300 Multiple Choices)")
async def root(request: Request) -> JSONResponse:
    return JSONResponse({"versions": [version_document(request)]}, status_code=300)


@router.get("/v3", summary="The v3 API version", include_in_schema=False)
@router.get("/v3/", summary="The v3 API version")
async def v3(request: Request) -> dict:
    return {"versions": [version_document(request)]}


@router.get("/v3/{project_id}", include_in_schema=False)
@router.get("/v3/{project_id}/", summary="The v3 API version, asked at a project endpoint")
async def v3_project(request: Request, project_id: str) -> dict:
    return {"version": version_document(request)}
