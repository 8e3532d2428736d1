"""Engine and session factory; the URL is always passed in."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

_factories: dict[str, sessionmaker[Session]] = {}
POOL_RECYCLE_SECONDS = 1800  # a connection older than this is replaced (pooled or kept by a step thread)
_lock = threading.Lock()


def make_engine(url: str, pool_size: int = 5) -> Engine:
    """A PostgreSQL engine tuned for short transactions."""
    # No pre-ping: it costs a round trip per checkout. A dropped connection raises OperationalError,
    # which the pool invalidates and the step retries (workers/steps.py); recycle stale ones anyway.
    # Step threads keep a connection between steps (tasks/step_tx.py): it is never checked back in,
    # so it is never pre-pinged either way, and step_tx replaces it after the same recycle age.
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


def dispose_all(close: bool = True) -> None:
    """Drop every pooled connection of this process.

    After a fork pass `close=False`: the child forgets the parent's connections without
    closing sockets the parent still uses.
    """
    with _lock:
        for factory in _factories.values():
            engine_of(factory).dispose(close=close)
        _factories.clear()
