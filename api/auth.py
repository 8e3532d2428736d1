"""Who is calling: Cinder's noauth mode, or tokens signed by this deployment.

Token format: `vc1.<payload>.<signature>`, both base64url; the payload is JSON with the project
(`p`), user (`u`), roles (`r`), issue time (`iat`) and expiry (`exp`); the signature is
HMAC-SHA256 over `vc1.<payload>` with the deployment's secret. Tokens are verified on every request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.auth_key import AuthKey
from tasks.context import RequestContext

PREFIX = "vc1"
ROLE_IMPLIES = {"admin": ("admin", "member", "reader"), "member": ("member", "reader"), "reader": ("reader",)}
MAX_TOKEN_LEN = 4096
MAX_TTL_SECONDS = 30 * 24 * 3600
_ID_RE = re.compile(r"^[A-Za-z0-9_.@\-]{1,255}$")


class Unauthorized(Exception):
    """401: no token, or a malformed, forged or expired one."""


@dataclass(frozen=True)
class Identity:
    user_id: str
    project_id: str
    roles: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def context(self, project_id: str | None = None) -> RequestContext:
        return RequestContext(project_id=project_id or self.project_id, user_id=self.user_id,
                              roles=self.roles, is_admin=self.is_admin)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValueError(f"{kind} must be 1 to 255 letters, digits or _.@- characters")
    return value


def database_secret(session: Session) -> str:
    secret = session.scalar(select(AuthKey.secret).order_by(AuthKey.id.desc()).limit(1))
    if not secret:
        raise RuntimeError("no token secret: run `volchain db upgrade` or set VOLCHAIN_TOKEN_SECRET")
    return secret


class TokenSigner:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def _sign(self, signed_part: str) -> str:
        return _b64(hmac.new(self._key, signed_part.encode(), hashlib.sha256).digest())

    def issue(self, project_id: str, user_id: str, role: str, ttl_seconds: int, now: float | None = None) -> str:
        if role not in ROLE_IMPLIES:
            raise ValueError(f"role must be one of {', '.join(ROLE_IMPLIES)}")
        if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
            raise ValueError(f"ttl must be 1 to {MAX_TTL_SECONDS} seconds")
        check_id("project", project_id)
        check_id("user", user_id)
        now = int(now if now is not None else time.time())
        payload = {"p": project_id, "u": user_id, "r": list(ROLE_IMPLIES[role]), "iat": now, "exp": now + ttl_seconds}
        signed_part = f"{PREFIX}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}"
        return f"{signed_part}.{self._sign(signed_part)}"

    def verify(self, token: str, now: float | None = None) -> Identity:
        if not token or len(token) > MAX_TOKEN_LEN:
            raise Unauthorized()
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            raise Unauthorized()
        signed_part = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._sign(signed_part), parts[2]):
            raise Unauthorized()
        try:
            payload = json.loads(_unb64(parts[1]))
            project, user, roles, exp = payload["p"], payload["u"], tuple(payload["r"]), int(payload["exp"])
        except (ValueError, KeyError, TypeError):
            raise Unauthorized() from None
        if exp <= (now if now is not None else time.time()):
            raise Unauthorized()
        return Identity(user_id=user, project_id=project, roles=roles)


def noauth_identity(token: str) -> Identity:
    """Cinder's noauth: `user:project` (project = user when missing); every caller is admin."""
    if not token or len(token) > 512:
        raise Unauthorized()
    user, _, project = token.partition(":")
    user = user.strip()
    project = (project or user).strip()
    if not user or not project:
        raise Unauthorized()
    return Identity(user_id=user, project_id=project, roles=("admin", "member", "reader"))
