"""OpenStack's per-request headers, as plain ASGI middleware (no per-request task or stream).

Every answer carries a request id (`X-OpenStack-Request-Id`, and `X-Compute-Request-Id` as
Cinder sends too), the microversion it was served at, and `Vary` on the version header. The
version is negotiated before routing (400 or 406 for a bad one); a body larger than the limit is
refused with 413, before it is read when its length is declared, and as soon as the limit is
passed when it is not (chunked): no more than the limit is ever held. A NUL character in the
path or the query string is a 400 (PostgreSQL cannot store one). An unexpected exception still
answers a Cinder-shaped 500 with these headers.
"""

from __future__ import annotations

import logging
import time
import uuid

from api import errors
from api.microversion import HEADER, SERVICE, InvalidVersionString, VersionNotAcceptable, negotiate
from workers.runtime import get_runtime

log = logging.getLogger(__name__)
access = logging.getLogger("volchain.access")  # one line per request; `volchain api` turns it on

_HEADER_KEY = HEADER.lower().encode()
TOO_LARGE = "Request is too large."
NUL_IN_URL = "Invalid input received: the URL contains a NUL character."


class BodyTooLarge(Exception):
    """The body passed the limit while it was being read."""

_OURS = frozenset({b"x-openstack-request-id", b"x-compute-request-id", _HEADER_KEY, b"vary"})  # ours replace any


class OpenStackHeaders:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = f"req-{uuid.uuid4()}".encode()
        try:
            version = negotiate(headers[_HEADER_KEY].decode("latin-1") if _HEADER_KEY in headers else None)
        except (VersionNotAcceptable, InvalidVersionString) as exc:
            status = 406 if isinstance(exc, VersionNotAcceptable) else 400
            await self._reply(errors.fault(status, str(exc)), f"{SERVICE} {exc.requested}", request_id,
                              scope, receive, send)
            return
        scope.setdefault("state", {})["version"] = version
        scope["state"]["request_id"] = request_id.decode()  # for the error log lines (api/errors.py)
        echoed = f"{SERVICE} {version}"
        limit = get_runtime().settings.api_max_body_bytes
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await self._reply(errors.fault(413, TOO_LARGE), echoed, request_id, scope, receive, send)
            return
        query = scope.get("query_string", b"").lower()
        if "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query:
            await self._reply(errors.fault(400, NUL_IN_URL), echoed, request_id, scope, receive, send)
            return
        extra = _extra_headers(request_id, echoed)
        started = False
        received = 0
        status = 0
        began = time.perf_counter()

        async def bounded_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        async def send_with_headers(message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                kept = [(k, v) for k, v in message.get("headers", ()) if k.lower() not in _OURS]
                message = {**message, "headers": [*kept, *extra]}
            await send(message)

        try:
            await self.app(scope, bounded_receive, send_with_headers)
        except BodyTooLarge:
            if started:
                raise
            status = 413
            await self._reply(errors.fault(413, TOO_LARGE), echoed, request_id, scope, receive, send)
        except Exception:
            log.exception("%s: unexpected error on %s %s", request_id.decode(), scope.get("method"),
                          errors.logged_path(scope))
            if started:
                raise
            status = 500
            await self._reply(errors.fault(500, errors.GENERIC_500), echoed, request_id, scope, receive, send)
        finally:
            client = scope.get("client") or ("-", 0)
            access.info("%s %s %s %s %d %.1fms", request_id.decode(), client[0], scope.get("method"),
                        errors.logged_path(scope), status, (time.perf_counter() - began) * 1000)

    @staticmethod
    async def _reply(response, echoed: str, request_id: bytes, scope, receive, send) -> None:
        response.raw_headers[:] = [(k, v) for k, v in response.raw_headers if k not in _OURS]
        response.raw_headers.extend(_extra_headers(request_id, echoed))
        await response(scope, receive, send)


def _extra_headers(request_id: bytes, echoed: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-openstack-request-id", request_id),
        (b"x-compute-request-id", request_id),
        (_HEADER_KEY, echoed.encode()),
        (b"vary", HEADER.encode()),
    ]
