"""User messages (3.3): why an asynchronous operation failed, as Cinder's messages API shows them.

A project sees its own messages, an admin every project's; a message of another project is a
404 exactly like one that does not exist. Deleted and expired messages are gone. From 3.5 the
list pages (limit, marker, offset), sorts and filters; at most MAX_LIMIT messages per answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import and_, func, or_, select
from starlette.concurrency import run_in_threadpool

from api import views
from api.deps import Scope, scope
from api.errors import HTTPError
from api.microversion import v
from api.openapi import PAGING, SORTING, answers, query
from models import utcnow
from models.message import Message
from tasks import errors, user_messages
from tasks.lookups import is_uuid_like
from tasks.policy import WRITER_ROLES
from workers.runtime import get_runtime

router = APIRouter(tags=["messages"])

MESSAGES = v("3.3")
PAGINATION = v("3.5")
RESOURCE_FILTER = v("3.31")
MAX_LIMIT = 1000  # Cinder's osapi_max_limit
INT_MAX = 2147483647  # the largest offset Cinder accepts
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"  # how Cinder's JSON renders a timestamp
NOT_FOUND = "The resource could not be found."
PAGING_KEYS = ("limit", "marker", "offset", "sort", "sort_key", "sort_dir")
# What a project may filter on (Cinder's resource_filters for "message"); admins may filter on
# any column here, and `key~` is a substring match.
MESSAGE_FILTERS = ("resource_uuid", "resource_type", "event_id", "request_id", "message_level")
COLUMNS = {
    "id": Message.id, "project_id": Message.project_id, "resource_uuid": Message.resource_uuid,
    "resource_type": Message.resource_type, "event_id": Message.event_id, "request_id": Message.request_id,
    "message_level": Message.message_level, "action_id": Message.action_id, "detail_id": Message.detail_id,
}
NULLABLE = frozenset(name for name in COLUMNS if Message.__table__.c[name].nullable)
# Sort keys; a column that may be empty sorts as "" so that a marker can be compared with it.
SORT_KEYS = {
    "created_at": Message.created_at,
    **{name: func.coalesce(column, "") if name in NULLABLE else column for name, column in COLUMNS.items()},
}


def _ts(value: datetime | None) -> str | None:
    return value.strftime(TIME_FORMAT) if value else None


def _require_version(s: Scope) -> None:
    if s.version < MESSAGES:  # Cinder answers as if the method did not exist
        raise HTTPError(404, NOT_FOUND)


def _visible(s: Scope) -> list:
    conditions = [Message.deleted.is_(False), or_(Message.expires_at.is_(None), Message.expires_at > utcnow())]
    if not s.is_admin:
        conditions.append(Message.project_id == s.project_id)
    return conditions


def _get(session, s: Scope, message_id: str) -> Message:
    found = session.scalar(select(Message).where(Message.id == message_id, *_visible(s))) \
        if is_uuid_like(message_id) else None
    if found is None:
        raise errors.NotFound(f"Message {message_id} could not be found.")
    return found


def message_view(m: Message, s: Scope) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": m.id,
        "event_id": m.event_id,
        "user_message": user_messages.user_message(m.action_id, m.detail_id, m.event_id),
        "message_level": m.message_level,
        "created_at": _ts(m.created_at),
        "guaranteed_until": _ts(m.expires_at),
        "request_id": m.request_id,
        "links": views.links(s.base_url, s.url_project, "messages", m.id),
    }
    if m.resource_type:  # Cinder leaves out what the message does not name
        view["resource_type"] = m.resource_type
    if m.resource_uuid:
        view["resource_uuid"] = m.resource_uuid
    return view


@router.get("/messages/{message_id}", summary="Show a message (3.3)")
async def show_message(message_id: str, s: Scope = Depends(scope)):
    _require_version(s)

    def run():
        with get_runtime().factory() as session:
            return {"message": message_view(_get(session, s, message_id), s)}

    return await run_in_threadpool(run)


@router.delete("/messages/{message_id}", status_code=204, summary="Delete a message (3.3)", responses=answers(403))
async def delete_message(message_id: str, s: Scope = Depends(scope)):
    _require_version(s)

    def run() -> None:
        with get_runtime().factory() as session, session.begin():
            found = _get(session, s, message_id)
            if not (set(s.identity.roles) & WRITER_ROLES):
                raise errors.PolicyNotAuthorized(action="message:delete")
            found.deleted = True
            found.deleted_at = utcnow()

    await run_in_threadpool(run)
    return Response(status_code=204)


def _int(params, name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        if name == "offset":
            raise errors.InvalidInput(reason="offset must be an integer.") from None
        raise HTTPError(400, f"{name} param must be an integer") from None
    if value < 0:
        if name == "offset":
            raise errors.InvalidInput(reason="offset must be >= 0")
        raise HTTPError(400, f"{name} param must be positive")
    if name == "offset" and value > INT_MAX:
        raise errors.InvalidInput(reason=f"offset must be <= {INT_MAX}")
    return value


def _sort(params) -> list[tuple[str, str]]:
    if "sort" in params and ("sort_key" in params or "sort_dir" in params):
        raise HTTPError(400, "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with "
                             "the 'sort' parameter.")
    if "sort" in params:
        pairs = []
        for item in params["sort"].strip().split(","):
            key, _, direction = item.partition(":")
            pairs.append((key.strip(), (direction or "desc").strip().lower()))
    else:
        pairs = [(params.get("sort_key", "created_at").strip(), params.get("sort_dir", "desc").strip().lower())]
    for key, direction in pairs:
        if key not in SORT_KEYS:
            raise errors.InvalidInput(reason=f"Invalid sort key: {key}")
        if direction not in ("asc", "desc"):
            raise errors.InvalidInput(reason="Unknown sort direction, must be 'desc' or 'asc'")
    if "id" not in [key for key, _ in pairs]:  # a total order, so that a marker is a position
        pairs.append(("id", pairs[0][1]))
    return pairs


def _filters(params, s: Scope) -> list | None:
    """The WHERE conditions of the query's filters; None if one names no message column (Cinder
    then answers an empty list). From 3.31 a project may use only MESSAGE_FILTERS."""
    given = {k: val for k, val in params.items() if k not in PAGING_KEYS and k != "all_tenants"}
    if not all(k.isascii() for k in given):
        raise HTTPError(400, "Filter keys can only contain ASCII characters.")
    if s.version >= RESOURCE_FILTER and not s.is_admin:
        invalid = [k for k in given if k not in MESSAGE_FILTERS]
        if invalid:
            raise HTTPError(400, f"Invalid filters {','.join(invalid)} are found in query options.")
    conditions = []
    for key, value in given.items():
        column = COLUMNS.get(key.rstrip("~"))
        if column is None:
            return None
        conditions.append(column.contains(value, autoescape=True) if key.endswith("~") else column == value)
    return conditions


def _after(marker: Message, order: list[tuple[str, str]]):
    """Rows after the marker in this order (keyset pagination over several keys and directions)."""
    values = {"created_at": marker.created_at,
              **{name: (getattr(marker, name) or "") if name in NULLABLE else getattr(marker, name)
                 for name in COLUMNS}}
    branches = []
    for i, (key, direction) in enumerate(order):
        equal = [SORT_KEYS[k] == values[k] for k, _ in order[:i]]
        beyond = SORT_KEYS[key] > values[key] if direction == "asc" else SORT_KEYS[key] < values[key]
        branches.append(and_(*equal, beyond))
    return or_(*branches)


def _list(request: Request, s: Scope) -> dict[str, Any]:
    params = request.query_params
    query = select(Message).where(*_visible(s))
    limit, offset, marker, order = MAX_LIMIT, 0, None, [("created_at", "desc"), ("id", "desc")]
    if s.version >= PAGINATION:
        limit = min(_int(params, "limit", MAX_LIMIT), MAX_LIMIT)
        offset = _int(params, "offset", 0)
        marker = params.get("marker")
        order = _sort(params)
        conditions = _filters(params, s)
        if conditions is None:
            return {"messages": []}
        query = query.where(*conditions)
    with get_runtime().factory() as session:
        if marker is not None:
            query = query.where(_after(_get(session, s, marker), order))
        columns = [SORT_KEYS[k].asc() if d == "asc" else SORT_KEYS[k].desc() for k, d in order]
        found = session.scalars(query.order_by(*columns).offset(offset).limit(limit)).all()
        out: dict[str, Any] = {"messages": [message_view(m, s) for m in found]}
    if s.version >= PAGINATION and found and len(found) >= limit:
        prefix = f"{s.url_project}/" if s.url_project else ""
        query_string = [(k, val) for k, val in params.multi_items() if k != "marker"] + [("marker", found[-1].id)]
        out["messages_links"] = [{"rel": "next", "href": f"{s.base_url}/v3/{prefix}messages?{urlencode(query_string)}"}]
    return out


@router.get("/messages", summary="List messages (3.3; paging, sort and filters from 3.5)",
            openapi_extra=query(**PAGING, **SORTING, **{name: "Filter (3.5)" for name in MESSAGE_FILTERS}))
async def list_messages(request: Request, s: Scope = Depends(scope)):
    _require_version(s)
    return await run_in_threadpool(_list, request, s)
