"""The one place errors become Cinder-shaped JSON: `{"<faultName>": {"code": N, "message": "..."}}`."""

from __future__ import annotations

import logging

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from api.microversion import InvalidVersionString, VersionNotAcceptable
from tasks import errors

log = logging.getLogger(__name__)

FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    422: "unprocessableEntity",
    415: "badMediaType",
    501: "notImplemented",
    503: "serviceUnavailable",
}
GENERIC_500 = "The server has either erred or is incapable of performing the requested operation."
UNAVAILABLE = "The volume service is unavailable. Try again later."
RETRY_AFTER_OUTAGE = "5"  # seconds


class HTTPError(Exception):
    """An error the API itself raises (schema, auth, URL), rendered like a VolchainError."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def fault(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    name = FAULT_NAMES.get(status, "computeFault")
    body: dict = {"code": status, "message": message}
    headers = dict(headers or {})
    if status == 413:
        body["retryAfter"] = headers.setdefault("Retry-After", "0")
    if status == 503:  # an outage: when to try again
        headers.setdefault("Retry-After", RETRY_AFTER_OUTAGE)
    return JSONResponse({name: body}, status_code=status, headers=headers)


def error_response(exc: errors.VolchainError) -> JSONResponse:
    """A VolchainError as Cinder renders it (raised here, or recorded by a flow and rebuilt by
    `VolchainError.from_dict`)."""
    message = exc.msg or GENERIC_500
    if exc.http_status == 413:  # QuotaError is "safe": Cinder prefixes the class name
        message = f"{exc.type_name}: {message}"
    return fault(exc.http_status, message, exc.headers)


def _allowed(request: Request) -> str:
    """Every method some route takes at this path (RFC 9110: a 405 carries `Allow`): the routes
    are asked once per method, as the router itself would match them."""
    allowed = [method for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
               if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                      for route in request.app.routes)]
    return ", ".join(allowed)


def logged_path(scope) -> str:
    """The path as the client sent it (percent-encoded), for a log line: a decoded path could
    carry a newline or other control characters into the log."""
    raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
    return raw.decode("ascii", "backslashreplace")


def _request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "req-?")


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.VolchainError)
    async def _volchain(request: Request, exc: errors.VolchainError):
        if exc.http_status >= 500:
            log.error("%s: %s %s: %s: %s", _request_id(request), request.method, logged_path(request.scope),
                      exc.type_name, exc)
        return error_response(exc)

    @app.exception_handler(HTTPError)
    async def _http(_request: Request, exc: HTTPError):
        return fault(exc.status, exc.message, exc.headers)

    @app.exception_handler(VersionNotAcceptable)
    async def _version(_request: Request, exc: VersionNotAcceptable):
        return fault(406, str(exc))

    @app.exception_handler(InvalidVersionString)
    async def _bad_version(_request: Request, exc: InvalidVersionString):
        return fault(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError):
        return fault(400, "Malformed request body")

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return fault(404, "The resource could not be found.")
        if exc.status_code == 405:
            return fault(405, "The method is not allowed for the requested URL.", {"Allow": _allowed(request)})
        return fault(exc.status_code, str(exc.detail))

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.InterfaceError)
    @app.exception_handler(sqlalchemy.exc.TimeoutError)  # every pooled connection busy
    @app.exception_handler(kombu.exceptions.OperationalError)
    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def _outage(request: Request, exc: Exception):  # the database or the broker is away or overloaded
        log.error("%s: %s %s: service unavailable: %s: %s", _request_id(request), request.method,
                  logged_path(request.scope),
                  type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        return fault(503, UNAVAILABLE)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("%s: %s %s: unexpected error", _request_id(request), request.method,
                      logged_path(request.scope))
        return fault(500, GENERIC_500)
