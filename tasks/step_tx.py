"""A step's transaction: this thread's connection, the flow-row lock that opens it, the record
that closes it.

Every step runs the same two statements around its effect: lock the flow row (reading the
request, the caller and the records of earlier steps) and record its own result. On PostgreSQL
the lock travels in one round trip with the BEGIN and the record with the COMMIT (two simple
queries that EXECUTE statements prepared once per connection), so a step's transaction costs its effect plus two
round trips instead of four. For that, the step connection runs in autocommit mode and opens
its transaction itself; `StepTransaction` closes it on every path: COMMIT with the record,
COMMIT after a read-only replay, ROLLBACK on any error (through SQLAlchemy's `begin()` block,
which psycopg in autocommit mode turns into exactly that). Elsewhere (the embedded SQLite) the
same statements are prebuilt Core statements inside an ordinary transaction.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Connection, Engine, bindparam, select, update

from models import utcnow
from models.flow_log import FlowRun, FlowState

_FLOWS = FlowRun.__table__
_LOCK_FLOW = (
    select(_FLOWS.c.state, _FLOWS.c.steps, _FLOWS.c.volume_id, _FLOWS.c.project_id, _FLOWS.c.user_id,
           _FLOWS.c.request, _FLOWS.c.caller)
    .where(_FLOWS.c.id == bindparam("flow_id"))
    .with_for_update()
)
_RECORD_STEP = (
    update(_FLOWS).where(_FLOWS.c.id == bindparam("flow_id"))
    .values(steps=bindparam("steps"), progress_at=bindparam("now"))
)
_RECORD_FINAL_STEP = _RECORD_STEP.values(state=FlowState.SUCCEEDED.value, finished_at=bindparam("now"))
# Prepared once per database connection, so the server plans them once; executed by name.
_PG_STATEMENTS = {
    "volchain_lock_flow": "(varchar) AS SELECT state, steps, volume_id, project_id, user_id, request, caller "
                          "FROM flow_runs WHERE id = $1 FOR UPDATE",
    "volchain_record_step": "(json, timestamp, varchar) AS UPDATE flow_runs SET steps = $1, progress_at = $2 "
                            "WHERE id = $3",
    "volchain_record_final_step": "(json, timestamp, varchar) AS UPDATE flow_runs SET steps = $1, progress_at = $2, "
                                  f"state = '{FlowState.SUCCEEDED.value}', finished_at = $2 WHERE id = $3",
}
_PG_PREPARED_KEY = "volchain_step_statements"
_PG_BEGIN_AND_LOCK = "BEGIN; EXECUTE volchain_lock_flow(%(flow_id)s)"
_PG_RECORD_AND_COMMIT = "EXECUTE volchain_record_step(%(steps)s, %(now)s, %(flow_id)s); COMMIT"
_PG_RECORD_FINAL_AND_COMMIT = "EXECUTE volchain_record_final_step(%(steps)s, %(now)s, %(flow_id)s); COMMIT"

_local = threading.local()


def step_connection(engine: Engine) -> Connection:
    """This thread's Connection for running steps, kept open between steps (checking a connection
    out of the pool for every step cost about as much as one of its statements).

    A forked pool child drops what it inherited without touching it (the socket is its parent's);
    a connection SQLAlchemy invalidated (the server went away) is replaced. A threads-pool worker
    holds one per thread: `VOLCHAIN_DB_POOL_SIZE` must cover its concurrency.
    """
    cache = getattr(_local, "connections", None)
    if cache is None or _local.pid != os.getpid():
        cache = _local.connections = {}
        _local.pid = os.getpid()
    conn = cache.get(engine)
    if conn is None or conn.closed or conn.invalidated:
        conn = engine.connect()
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")  # BEGIN/COMMIT are ours
        cache[engine] = conn
    return conn


def forget_step_connections() -> None:
    """Close this thread's step connections (tests and shutdown; a fork needs nothing)."""
    cache = getattr(_local, "connections", None)
    if cache is not None and _local.pid == os.getpid():
        for conn in cache.values():
            conn.close()
    _local.connections = None


@contextmanager
def transaction(conn: Connection) -> Iterator[None]:
    """The step's transaction block: commits a replay, rolls back on any error.

    psycopg may answer a ROLLBACK with DEALLOCATE ALL (when it prepared statements of its own on
    the connection), which drops ours too; so after an error the next step checks them again.
    """
    try:
        with conn.begin():
            yield
    except BaseException:
        try:
            conn.info.pop(_PG_PREPARED_KEY, None)
        except Exception:  # an invalidated connection: replaced, and prepared afresh, next time
            pass
        raise


def lock_flow(conn: Connection, flow_id: str) -> tuple | None:
    """Open the step's transaction and lock the flow row; return
    (state, steps, volume_id, project_id, user_id, request, caller), or None if there is no such flow.

    Called inside `conn.begin()`. Reads the latest committed records (after the lock).
    """
    params = {"flow_id": flow_id}
    if conn.dialect.name != "postgresql":
        return conn.execute(_LOCK_FLOW, params).first()
    from psycopg import ClientCursor

    with ClientCursor(conn.connection.driver_connection) as cur:
        if not conn.info.get(_PG_PREPARED_KEY):  # info: per database connection
            _prepare(cur)
            conn.info[_PG_PREPARED_KEY] = True
        cur.execute(_PG_BEGIN_AND_LOCK, params)
        cur.nextset()
        return cur.fetchone()


def _prepare(cur) -> None:
    """PREPARE whichever of our statements this database session does not have (yet, or any more)."""
    cur.execute("SELECT name FROM pg_prepared_statements WHERE name = ANY(%s)", (list(_PG_STATEMENTS),))
    have = {name for (name,) in cur.fetchall()}
    missing = [f"PREPARE {name}{body}" for name, body in _PG_STATEMENTS.items() if name not in have]
    if missing:
        cur.execute("; ".join(missing))


def record_and_commit(conn: Connection, flow_id: str, steps: dict, final: bool) -> None:
    """Write the flow's step records (and, for the final step, its success) and commit."""
    params = {"flow_id": flow_id, "steps": steps, "now": utcnow()}
    if conn.dialect.name != "postgresql":
        conn.execute(_RECORD_FINAL_STEP if final else _RECORD_STEP, params)
        return  # committed by the caller's begin() block
    from psycopg import ClientCursor
    from psycopg.types.json import Json

    params["steps"] = Json(steps)
    with ClientCursor(conn.connection.driver_connection) as cur:
        cur.execute(_PG_RECORD_FINAL_AND_COMMIT if final else _PG_RECORD_AND_COMMIT, params)
