"""Engine and session factory, and the connection a step thread keeps; the URL is always passed in."""

from __future__ import annotations

import os
import threading
import time

from psycopg.pq import TransactionStatus
from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

_factories: dict[str, sessionmaker[Session]] = {}
POOL_RECYCLE_SECONDS = 1800  # a connection older than this is replaced (pooled or kept by a step thread)
_lock = threading.Lock()
_kept = threading.local()  # this thread's kept connections: {engine: (connection, opened at)}, and its pid
_inherited: list = []  # what a forked child found kept by its parent: held, never closed nor collected here


def make_engine(url: str, pool_size: int = 5) -> Engine:
    """A PostgreSQL engine tuned for short transactions."""
    # No pre-ping: it costs a round trip per checkout. A dropped connection raises OperationalError,
    # which the pool invalidates and the step retries (workers/steps.py); recycle stale ones anyway.
    # Step threads keep a connection between steps (kept_connection): it is never checked back in,
    # so it is never pre-pinged either way, and it is replaced after the same recycle age.
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size * 2, pool_recycle=POOL_RECYCLE_SECONDS)


def engine_of(factory: sessionmaker[Session]) -> Engine:
    """The engine (and so the connection pool) a session factory is bound to."""
    return factory.kw["bind"]


def session_factory(url: str, pool_size: int = 5) -> sessionmaker[Session]:
    """One sessionmaker per URL per process (its engine holds the connection pool)."""
    factory = _factories.get(url)
    if factory is None:
        with _lock:
            factory = _factories.get(url)
            if factory is None:
                factory = sessionmaker(make_engine(url, pool_size), expire_on_commit=False)
                _factories[url] = factory
    return factory


def kept_connection(engine: Engine) -> Connection:
    """This thread's connection to `engine`, kept open from one call to the next (the step runner
    uses it: a pool check-out and check-in per step cost about as much as one of its statements).

    It is replaced when SQLAlchemy invalidated it (the server went away: the statement that found
    out raised, and the step is retried), when a transaction was left open on it (a ROLLBACK that
    failed), and once it is POOL_RECYCLE_SECONDS old. A forked child sets aside what its parent
    kept (never closing it, so nothing is sent on the parent's sockets) and opens its own.
    """
    kept = getattr(_kept, "connections", None)
    if kept is None or _kept.pid != os.getpid():
        if kept:
            _inherited.append(kept)
        kept = _kept.connections = {}
        _kept.pid = os.getpid()
    now = time.monotonic()
    held = kept.get(engine)
    if held is not None:
        conn, opened = held
        if not (conn.closed or conn.invalidated) and now - opened < POOL_RECYCLE_SECONDS:
            if not conn.in_transaction() and _driver_idle(conn):
                return conn
            conn.invalidate()  # left in a transaction: never reuse it
        conn.close()
    conn = engine.connect()
    kept[engine] = (conn, now)
    return conn


def _driver_idle(conn: Connection) -> bool:
    """No transaction open on the server side of `conn` (psycopg's own view of the session)."""
    return conn.connection.driver_connection.info.transaction_status == TransactionStatus.IDLE


def forget_kept_connections() -> None:
    """Close the connections this thread kept (shutdown and tests; a fork needs nothing)."""
    kept = getattr(_kept, "connections", None)
    if kept is not None and _kept.pid == os.getpid():
        for conn, _opened in kept.values():
            conn.close()
    _kept.connections = None


def dispose_all(close: bool = True) -> None:
    """Drop every pooled connection of this process (and, with `close`, the ones this thread kept).

    After a fork pass `close=False`: the child forgets the parent's connections without
    closing sockets the parent still uses.
    """
    if close:
        forget_kept_connections()
    with _lock:
        for factory in _factories.values():
            engine_of(factory).dispose(close=close)
        _factories.clear()
