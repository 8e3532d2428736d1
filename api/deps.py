"""Request dependencies: settings and database, who is calling, which project the URL names."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from functools import lru_cache

from fastapi import Depends, Path, Request, Security
from fastapi.security import APIKeyHeader

from api.auth import Identity, TokenSigner, Unauthorized, database_secret, noauth_identity
from api.errors import HTTPError
from api.microversion import APIVersion
from tasks import errors
from tasks.context import RequestContext
from workers.runtime import Runtime, get_runtime

UNAUTHORIZED = "The request you have made requires authentication."


def runtime() -> Runtime:
    return get_runtime()


SECRET_CACHE_SECONDS = 60.0  # a rotated database secret is picked up within a minute
_secret_cache: tuple[float, str] | None = None


@lru_cache(maxsize=4)
def _signer(secret: str) -> TokenSigner:
    return TokenSigner(secret)


def token_signer(rt: Runtime) -> TokenSigner:
    global _secret_cache
    secret = rt.settings.token_secret
    if not secret:
        now = time.monotonic()
        if _secret_cache is None or now - _secret_cache[0] > SECRET_CACHE_SECONDS:
            with rt.factory() as session:
                _secret_cache = (now, database_secret(session))
        secret = _secret_cache[1]
    return _signer(secret)


# Declared so that the OpenAPI document names the auth header (securitySchemes); read as before.
AUTH_TOKEN = APIKeyHeader(name="X-Auth-Token", auto_error=False,
                          description="A token from `volchain token issue`, or `user:project` in noauth mode.")


def project_in_path(project_id: str = Path(description="The project the request acts in (the token's).")) -> None:
    """Declares `{project_id}` for the OpenAPI document; `scope` checks it."""


async def identity(request: Request, token: str | None = Security(AUTH_TOKEN)) -> Identity:
    cached = getattr(request.state, "identity", None)
    if cached is not None:
        return cached
    rt = get_runtime()
    token = token or ""
    try:
        if rt.settings.auth_strategy == "noauth":
            found = noauth_identity(token)
        else:
            found = token_signer(rt).verify(token)
    except Unauthorized:
        raise HTTPError(401, UNAUTHORIZED, {"WWW-Authenticate": "Token"}) from None
    request.state.identity = found
    return found


@dataclass(frozen=True)
class Scope:
    """The caller and the project the request acts in (the URL's, which must be the caller's)."""

    identity: Identity
    project_id: str
    url_project: str | None  # None for project-less URLs (/v3/volumes)
    version: APIVersion
    base_url: str

    @property
    def is_admin(self) -> bool:
        return self.identity.is_admin

    def context(self) -> RequestContext:
        return self.identity.context(self.project_id)


@lru_cache(maxsize=4)
def _project_re(pattern: str) -> re.Pattern:
    return re.compile(f"^(?:{pattern})$")


def base_url(request: Request) -> str:
    configured = get_runtime().settings.api_public_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/")


async def scope(request: Request, who: Identity = Depends(identity)) -> Scope:
    url_project = request.path_params.get("project_id")
    # One rule for the project a request acts in, whichever auth strategy named it: the URL's, or
    # on a project-less URL the token's, must look like a project id (Cinder's URL pattern).
    if not _project_re(get_runtime().settings.project_id_regex).match(url_project or who.project_id):
        raise HTTPError(404, "The resource could not be found.")
    if url_project is not None and url_project != who.project_id:
        raise HTTPError(400, "Malformed request url")
    return Scope(identity=who, project_id=who.project_id, url_project=url_project,
                 version=request.state.version, base_url=base_url(request))


def require_admin(s: Scope, action: str) -> Scope:
    if not s.is_admin:
        raise errors.PolicyNotAuthorized(action=action)
    return s
