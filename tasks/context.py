"""Flow contexts: one flow's inputs and what its steps recorded so far.

Messages carry only ids; every step rebuilds its context from the flow row it locks (the
request, the caller, and the results its earlier steps recorded). So a message is as small as it
can be, and a redelivered or resumed step reads exactly what was committed.

`CreateContext` is the create chain's, with a field for each key its steps provide;
`FlowContext` serves every other flow (delete, snapshot, extend, schedule, build): what the
steps provided is in `results`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping


def _inputs(flow_id: str, volume_id: str, project_id: str, user_id: str | None, request: dict | None,
            caller: Mapping[str, Any] | None) -> dict[str, Any]:
    """A flow's inputs from its row, as context fields (both context kinds share them)."""
    caller = caller or {}
    return {"flow_id": flow_id, "volume_id": volume_id, "project_id": project_id, "user_id": user_id,
            "roles": tuple(caller.get("roles") or ()), "is_admin": bool(caller.get("is_admin")),
            "request": request or {}}


def _recorded(steps: Mapping[str, dict] | None) -> dict[str, Any]:
    """Every recorded step's result folded into one dict (each step provides keys of its own)."""
    provided: dict[str, Any] = {}
    for record in (steps or {}).values():
        provided.update(record["result"])
    return provided


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
    # Set by compensation for the reverts: the error that stopped the flow ({type, code, message}).
    failure: dict[str, Any] | None = None

    def merge(self, provided: dict[str, Any]) -> CreateContext:
        return dataclasses.replace(self, **provided)

    @classmethod
    def from_log(
        cls, flow_id: str, volume_id: str, project_id: str, user_id: str | None, request: dict | None,
        caller: Mapping[str, Any] | None, steps: Mapping[str, dict] | None,
    ) -> CreateContext:
        """Rebuild a flow's context from its row: the inputs plus every recorded result (each
        step provides keys of its own, so the order they are folded in does not matter)."""
        return cls(**_inputs(flow_id, volume_id, project_id, user_id, request, caller), **_recorded(steps))


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


@dataclass(frozen=True)
class FlowContext:
    """Any flow but the create chain: its inputs, the caller, and what its steps recorded."""

    flow_id: str
    volume_id: str
    project_id: str
    user_id: str | None = None
    roles: tuple[str, ...] = ("member",)
    is_admin: bool = False
    request: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    failure: dict[str, Any] | None = None

    def merge(self, provided: dict[str, Any]) -> FlowContext:
        return dataclasses.replace(self, results={**self.results, **provided})

    @classmethod
    def from_log(
        cls, flow_id: str, volume_id: str, project_id: str, user_id: str | None, request: dict | None,
        caller: Mapping[str, Any] | None, steps: Mapping[str, dict] | None,
    ) -> FlowContext:
        return cls(**_inputs(flow_id, volume_id, project_id, user_id, request, caller), results=_recorded(steps))

    def caller(self) -> RequestContext:
        return RequestContext(self.project_id, self.user_id, self.roles, self.is_admin)
