"""A step's transaction: this thread's connection, and the statements a step runs around its effect.

Transactional path (SQLite; on PostgreSQL a step without a function, or a flow a function hands
back): lock the flow row (reading the request, the caller and the records of earlier steps), the
effect through a Session, and the step's record, inside the caller's `conn.begin()` block. On
PostgreSQL the lock and the record go straight to the driver (psycopg prepares them after a few
uses); elsewhere they are prebuilt Core statements.

One-call path (PostgreSQL, tasks/runner._run_call): in autocommit, read the flow row without a
lock, then one call of the step's function (migration 0004), which locks, checks, applies and
records. Planned path (tasks/runner._run_planned): the same call, prepared by
extract_volume_request (migration 0005), with no read before it. volume_cast
(tasks/runner._run_locked) holds the lock while it publishes, on the driver alone:
`begin_and_lock`, then `record_and_commit`, each one message (BEGIN with the lock, the record
with COMMIT).

Measured and not kept: psycopg pipeline mode, to send BEGIN with the lock and COMMIT with the
record, cost more client CPU than the round trips it saved (bench/README.md).
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from sqlalchemy import Connection, Engine, bindparam, null, select, update
from sqlalchemy.exc import DBAPIError

from models import utcnow
from models.db import POOL_RECYCLE_SECONDS
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
# The final record ends the flow; the plans of its steps are spent (migration 0005).
_RECORD_FINAL_STEP = _RECORD_STEP.values(state=FlowState.SUCCEEDED.value, finished_at=bindparam("now"), plans=null())
_PG_LOCK_FLOW = (
    "SELECT state, steps, volume_id, project_id, user_id, request, caller FROM flow_runs WHERE id = %(flow_id)s "
    "FOR UPDATE"
)
_PG_READ_FLOW = (
    "SELECT state, steps, volume_id, project_id, user_id, request, caller FROM flow_runs WHERE id = %(flow_id)s"
)
_PG_BEGIN_AND_LOCK = "BEGIN; " + _PG_LOCK_FLOW
_PG_RECORD_STEP = "UPDATE flow_runs SET steps = %(steps)s, progress_at = %(now)s WHERE id = %(flow_id)s"
_PG_RECORD_FINAL_STEP = (
    f"UPDATE flow_runs SET steps = %(steps)s, progress_at = %(now)s, state = '{FlowState.SUCCEEDED.value}', "
    "finished_at = %(now)s, plans = NULL WHERE id = %(flow_id)s"
)

_local = threading.local()


def step_connection(engine: Engine) -> Connection:
    """This thread's Connection for running steps, kept open between steps (checking a connection
    out of the pool for every step cost about as much as one of its statements).

    It is replaced when SQLAlchemy invalidated it (the server went away) and, as the pool would
    recycle it, once it is older than POOL_RECYCLE_SECONDS. A forked pool child forgets what
    it inherited (idle, so dropping it sends nothing on the parent's socket). A threads-pool worker
    holds one per thread (workers/runtime.py sizes the pool for that).
    """
    cache = getattr(_local, "connections", None)
    if cache is None or _local.pid != os.getpid():
        cache = _local.connections = {}
        _local.pid = os.getpid()
    now = time.monotonic()
    held = cache.get(engine)
    if held is not None:
        conn, opened = held
        if not (conn.closed or conn.invalidated or now - opened > POOL_RECYCLE_SECONDS or _driver_closed(conn)):
            return conn
        if not (conn.closed or conn.invalidated) and _driver_closed(conn):
            conn.invalidate()
        conn.close()
    conn = engine.connect()
    cache[engine] = (conn, now)
    return conn


def _driver_closed(conn: Connection) -> bool:
    """The driver connection under `conn` is closed (the server went away between two steps)."""
    return bool(getattr(conn.connection.driver_connection, "closed", False))


def forget_step_connections() -> None:
    """Close this thread's step connections (tests and shutdown; a fork needs nothing)."""
    cache = getattr(_local, "connections", None)
    if cache is not None and _local.pid == os.getpid():
        for conn, _opened in cache.values():
            conn.close()
    _local.connections = None


def _driver_execute(conn: Connection, sql: str, params: dict, fetch: bool | str) -> Any:
    """Execute on the psycopg connection under `conn` (fetch: True for the first row, "all" for
    every row), with SQLAlchemy's error contract: a driver error comes out as SQLAlchemy's
    (OperationalError for deadlocks, timeouts, lost servers, which the step tasks retry), and a
    broken connection is invalidated so the next step gets another."""
    import psycopg

    driver = conn.connection.driver_connection
    try:
        with driver.cursor() as cur:
            cur.execute(sql, params)
            if fetch == "all":
                return cur.fetchall()
            return cur.fetchone() if fetch else None
    except psycopg.Error as exc:
        raise _wrapped(conn, sql, params, exc) from exc


def driver_rows(conn: Connection, sql: str, params: dict) -> list[tuple]:
    """PostgreSQL: every row of a hot-path read, straight from the driver (SQLAlchemy's execute
    costs a few times the driver's on a short query); inside whatever transaction `conn` has."""
    return _driver_execute(conn, sql, params, fetch="all")


def _wrapped(conn: Connection, sql: str, params: dict, exc: Exception) -> DBAPIError:
    """A driver error as SQLAlchemy's, the connection invalidated if it broke."""
    import psycopg

    broken = conn.invalidated
    if not broken:
        driver = conn.connection.driver_connection
        broken = driver.broken or driver.closed
        if broken:
            conn.invalidate(exc)
    return DBAPIError.instance(sql, params, exc, psycopg.Error, connection_invalidated=broken)


def lock_flow(conn: Connection, flow_id: str) -> tuple | None:
    """Lock the flow row; return (state, steps, volume_id, project_id, user_id, request, caller), or
    None if there is no such flow. Reads the latest committed records (after the lock)."""
    params = {"flow_id": flow_id}
    if conn.dialect.name != "postgresql":
        return conn.execute(_LOCK_FLOW, params).first()
    return _driver_execute(conn, _PG_LOCK_FLOW, params, fetch=True)


def record_step(conn: Connection, flow_id: str, steps: dict, final: bool) -> None:
    """Write the flow's step records (and, for the final step, its success)."""
    if conn.dialect.name != "postgresql":
        params = {"flow_id": flow_id, "steps": steps, "now": utcnow()}
        conn.execute(_RECORD_FINAL_STEP if final else _RECORD_STEP, params)
        return
    _driver_execute(conn, *_pg_record(flow_id, steps, final), fetch=False)


def _pg_record(flow_id: str, steps: dict, final: bool) -> tuple[str, dict]:
    """PostgreSQL: the statement that writes the step records, and its parameters."""
    from psycopg.types.json import Json

    sql = _PG_RECORD_FINAL_STEP if final else _PG_RECORD_STEP
    return sql, {"flow_id": flow_id, "steps": Json(steps), "now": utcnow()}


def json_param(value: Any) -> Any:
    """A parameter sent as json (PostgreSQL; its keys keep their order)."""
    from psycopg.types.json import Json

    return Json(value)


def jsonb_param(value: Any) -> Any:
    """A parameter sent as jsonb (PostgreSQL)."""
    from psycopg.types.json import Jsonb

    return Jsonb(value)


def read_flow(conn: Connection, flow_id: str) -> tuple | None:
    """PostgreSQL, autocommit: the flow row as `lock_flow` returns it, without a lock. What a step
    reads here only builds its call; the call itself locks the row and checks it again."""
    return _driver_execute(conn, _PG_READ_FLOW, {"flow_id": flow_id}, fetch=True)


@contextmanager
def autocommit(conn: Connection) -> Iterator[None]:
    """PostgreSQL: run the block with the step connection in autocommit: each statement is its own
    transaction, and psycopg sends no BEGIN or COMMIT of its own (the cast sends its own, with
    its statements). A transaction the block leaves open is rolled back; the transactional path
    gets the connection back as it was."""
    from psycopg.pq import TransactionStatus

    driver = _idle(conn)
    driver.autocommit = True
    try:
        yield
    finally:
        if not driver.closed and driver.info.transaction_status != TransactionStatus.IDLE:
            rollback(conn)  # a transaction the block began and did not end (it never should)
        if not driver.closed:
            driver.autocommit = False


def call_step_function(
    conn: Connection, sql: str, params: dict, before_commit: Callable[[], None] | None = None
) -> dict:
    """Run one step function (migration 0004) and return its JSON answer.

    In autocommit the call is its own transaction. With `before_commit` (failure injection) the
    call runs in an explicit transaction, the hook runs before COMMIT, and if it raises, the
    effect is rolled back.
    """
    if before_commit is None:
        return _driver_execute(conn, sql, params, fetch=True)[0]
    driver = conn.connection.driver_connection
    driver.autocommit = False
    try:
        answer = _driver_execute(conn, sql, params, fetch=True)[0]
        if answer.get("status") == "done":
            before_commit()
        driver.commit()
        return answer
    except BaseException:
        rollback(conn)
        raise
    finally:
        if not driver.closed:
            driver.autocommit = True



@contextmanager
def _rolled_back_on_error(conn: Connection, sql: str, params: dict) -> Iterator[None]:
    """Any error in the block rolls the open transaction back; a driver error comes out as
    SQLAlchemy's (see _driver_execute)."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        rollback(conn)
        raise _wrapped(conn, sql, params, exc) from exc
    except BaseException:
        rollback(conn)
        raise


def begin_and_lock(conn: Connection, flow_id: str) -> tuple | None:
    """PostgreSQL: begin a transaction and lock the flow row, on the driver alone (no SQLAlchemy
    transaction, no Session). The transaction stays open for `record_and_commit`, or `rollback`.
    Returns what `lock_flow` does. Call it inside `autocommit(conn)`: BEGIN and the lock go as one
    message (simple query protocol, the flow id quoted by psycopg), one round trip instead of two.
    (Pipeline mode, for the same, measured slower.)"""
    import psycopg

    driver = conn.connection.driver_connection
    if not driver.autocommit:
        raise RuntimeError("begin_and_lock runs inside step_tx.autocommit(conn)")
    params = {"flow_id": flow_id}
    with _rolled_back_on_error(conn, _PG_BEGIN_AND_LOCK, params), psycopg.ClientCursor(driver) as cur:
        cur.execute(_PG_BEGIN_AND_LOCK, params)
        cur.nextset()
        return cur.fetchone()


def record_and_commit(conn: Connection, flow_id: str, steps: dict, final: bool) -> None:
    """PostgreSQL: the step's record and COMMIT of `begin_and_lock`'s transaction, as one message."""
    import psycopg

    sql, params = _pg_record(flow_id, steps, final)
    sql += "; COMMIT"
    with _rolled_back_on_error(conn, sql, params), psycopg.ClientCursor(conn.connection.driver_connection) as cur:
        cur.execute(sql, params)


def execute_in(conn: Connection, sql: str, params: dict) -> None:
    """PostgreSQL: one statement inside `begin_and_lock`'s transaction (errors as SQLAlchemy's;
    the caller rolls back)."""
    _driver_execute(conn, sql, params, fetch=False)


def _idle(conn: Connection):
    """The psycopg connection under `conn`, with no transaction left open (a step never leaves
    one, but start clean rather than inherit it). A connection that cannot be rolled back is
    invalidated and the error comes out as SQLAlchemy's (the step is retried on a new one)."""
    import psycopg
    from psycopg.pq import TransactionStatus

    driver = conn.connection.driver_connection
    if driver.info.transaction_status != TransactionStatus.IDLE:
        try:
            driver.rollback()
        except psycopg.Error as exc:
            raise _wrapped(conn, "ROLLBACK", {}, exc) from exc
    return driver


def rollback(conn: Connection) -> None:
    """End the open driver transaction. If that fails the connection is broken: it is
    invalidated, so the next step gets another, and the caller's own error goes on."""
    import psycopg

    if conn.invalidated:
        return
    try:
        conn.connection.driver_connection.rollback()
    except psycopg.Error as exc:
        conn.invalidate(exc)
