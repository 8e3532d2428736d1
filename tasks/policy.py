"""Policy: which roles may perform which create actions (Cinder's rule names)."""

from __future__ import annotations

from tasks import errors
from tasks.context import CreateContext

WRITER_ROLES = frozenset({"admin", "member"})

# action -> roles allowed (admins are always allowed)
RULES: dict[str, frozenset[str]] = {
    "volume:create": WRITER_ROLES,
    "volume:create_from_image": WRITER_ROLES,
    "volume:multiattach": WRITER_ROLES,
}


def authorize(ctx: CreateContext, action: str) -> None:
    """Raise PolicyNotAuthorized unless the caller's roles allow `action`."""
    if ctx.is_admin:
        return
    if not RULES.get(action, frozenset()) & set(ctx.roles):
        raise errors.PolicyNotAuthorized(action=action)
