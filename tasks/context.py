"""CreateContext: what travels along the chain between steps. Ids, sizes and plain JSON only."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CreateContext:
    """One create flow's inputs and the outputs recorded so far.

    Each step returns the keys it provides (its flow-log record); `merge` folds them in.
    """

    flow_id: str
    volume_id: str
    project_id: str
    user_id: str | None = None
    roles: tuple[str, ...] = ("member",)
    is_admin: bool = False
    request: dict[str, Any] = field(default_factory=dict)
    # Provided by the steps:
    spec: dict[str, Any] | None = None  # extract_volume_request
    reservations: list[str] | None = None  # quota_reserve
    deltas: dict[str, int] | None = None  # quota_reserve
    created: bool | None = None  # entry_create
    committed: bool | None = None  # quota_commit
    cast: dict[str, Any] | None = None  # volume_cast

    def merge(self, provided: dict[str, Any]) -> CreateContext:
        return dataclasses.replace(self, **provided)

    def slim(self) -> CreateContext:
        """Once the spec exists, later steps need nothing of the raw request (the flow row keeps
        it) but the test facility's `_inject`: keep messages between steps small."""
        if self.spec is None or not self.request or set(self.request) <= {"_inject"}:
            return self
        kept = {"_inject": self.request["_inject"]} if "_inject" in self.request else {}
        return dataclasses.replace(self, request=kept)

    def to_json(self) -> dict[str, Any]:
        # Shallow: the values are already plain JSON (dataclasses.asdict would deep-copy them).
        data = {f.name: getattr(self, f.name) for f in _FIELDS}
        data["roles"] = list(self.roles)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CreateContext:
        data = dict(data)
        data["roles"] = tuple(data.get("roles") or ())
        return cls(**data)


_FIELDS = dataclasses.fields(CreateContext)


@dataclass(frozen=True)
class RequestContext:
    """Who is asking: the caller's project, user and roles (admins see every project)."""

    project_id: str
    user_id: str | None = None
    roles: tuple[str, ...] = ("member",)
    is_admin: bool = False

    @classmethod
    def admin(cls, project_id: str, user_id: str | None = "admin") -> RequestContext:
        return cls(project_id=project_id, user_id=user_id, roles=("admin", "member"), is_admin=True)
