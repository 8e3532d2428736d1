"""What `/openapi.json` says beyond what FastAPI reads off the routes: the request bodies (the
same schemas the routes validate with), the answers each operation gives, and Cinder's fault
body. A route declares its own, next to its code:

    @router.post("/types", responses=answers(403, 409), openapi_extra=request_body(VOLUME_TYPE_CREATE))

`document(app)` then adds what every operation may answer (`EVERY_OPERATION`, and for the
operations that take a token `WITH_A_TOKEN`) and drops FastAPI's 422, which the API never
sends (a request that does not validate is a 400).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.errors import FAULT_NAMES
from api.microversion import HEADER, MAX_VERSION, MIN_VERSION

FAULT_REF = {"$ref": "#/components/schemas/Fault"}
FAULT = {
    "type": "object", "minProperties": 1, "maxProperties": 1,
    "description": "Cinder's fault body: `{\"<faultName>\": {\"code\": <status>, \"message\": \"...\"}}`.",
    "additionalProperties": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                       "retryAfter": {"type": "string"}}},
}
WHY = {
    400: "The request is malformed or names something invalid",
    401: "No token, or a token that is not valid",
    403: "The caller's role may not do this",
    404: "Not found, or not visible to the caller's project",
    406: "The asked microversion is not supported",
    409: "The request conflicts with the resource's state",
    413: "Over quota, or a request body over the size limit",
    422: "An Idempotency-Key reused with a different body",
    500: "The deployment is misconfigured (Cinder's answer, e.g. a default volume type that does not exist)",
    503: "The database or the broker is unavailable; try again after `Retry-After` seconds",
}
EVERY_OPERATION = (400, 413)  # the middleware bounds every body and refuses NUL in the URL
WITH_A_TOKEN = (401, 404, 406, 503)  # auth, the URL's project, the microversion, an outage
MICROVERSION = {
    "name": HEADER, "in": "header", "required": False,
    "description": f"`volume 3.N`, {MIN_VERSION} to {MAX_VERSION} (`volume latest` for the newest); "
                   f"{MIN_VERSION} when absent. Answers carry the version used.",
    "schema": {"type": "string", "pattern": r"^volume (3\.[0-9]+|latest)$"},
}


def fault_answer(status: int) -> dict[str, Any]:
    name = FAULT_NAMES.get(status, "computeFault")
    return {"description": f"{WHY[status]}: `{{\"{name}\": {{\"code\": {status}, \"message\": ...}}}}`",
            "content": {"application/json": {"schema": FAULT_REF}}}


def answers(*statuses: int, **other: str) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: the faults it answers beyond every operation's (`answers(403, 409)`),
    and other answers by status with their description (`answers(403, **{"412": "..."})`)."""
    out: dict[int | str, dict[str, Any]] = {status: fault_answer(status) for status in statuses}
    out.update({status: {"description": description} for status, description in other.items()})
    return out


def request_body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    """A route's `openapi_extra=`: its JSON body, described by the schema it validates with."""
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


def query(**params: str) -> dict[str, Any]:
    """A route's `openapi_extra=` for the query string it reads: each parameter with its
    description, all optional (`limit` and `offset` are integers; the rest strings the route
    checks itself, with Cinder's messages). Names that are not identifiers: `query(**{"name~": ...})`."""
    numbers = {"limit": {"type": "integer", "minimum": 0}, "offset": {"type": "integer", "minimum": 0}}
    return {"parameters": [{"name": name, "in": "query", "required": False, "description": description,
                            "schema": numbers.get(name, {"type": "string"})} for name, description in params.items()]}


PAGING = {"limit": "At most this many (at most 1000)", "offset": "Skip this many",
          "marker": "Start after the item with this id"}
SORTING = {"sort": "`key[:asc|desc],...`", "sort_key": "Sort keys, comma-separated (older form of `sort`)",
           "sort_dir": "`asc` or `desc`, per sort key"}
ALL_TENANTS = {"all_tenants": "Admins: every project's (a boolean word)"}


def document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the answers the API really gives (built once, then cached)."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas["Fault"] = FAULT
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for operations in doc["paths"].values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if responses.get("422", {}).get("description") == "Validation Error":  # FastAPI's own
                    del responses["422"]
                common = EVERY_OPERATION + (WITH_A_TOKEN if operation.get("security") else ())
                if operation.get("security"):
                    operation.setdefault("parameters", []).append(MICROVERSION)
                for status in common:
                    responses.setdefault(str(status), fault_answer(status))
        app.openapi_schema = doc
    return app.openapi_schema
