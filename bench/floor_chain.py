"""A reference for bench/chain_throughput.py --floor: five chained tasks that each commit one write.

The least any five-step create with a durable effect per step can cost on volchain's Celery
settings: each task runs one autocommitted `UPDATE` of a single row (one round trip, one
commit) on a connection its process keeps, and the last one also pushes a cast-sized message
onto a list and publishes one notification, as volchain's volume_cast does. No validation, no
quota, no flow log. Started exactly like the no-op chain (`celery -A bench.floor_chain worker
-Q volchain.steps,volchain.compensate`), with the same `celery_config`.

A chain ends when its last task pushes `"<chain id> <unix time>"` onto DONE_KEY.
"""

from __future__ import annotations

import os
import time
import zlib

import psycopg
from celery import Celery
from celery.canvas import Signature

from bench.noop_chain import chain_of, make_tasks, redis_client
from workers.app import celery_config
from workers.settings import get_settings

DONE_KEY = "bench:floor:done"
CAST_KEY = "bench:floor:cast"
CHANNEL = "bench:floor:notify"
CAST_BYTES = 1500  # about the size of volchain's cast message
ROWS = 10_000  # rows the UPDATEs spread over (no lock contention between chains)
TABLE_DDL = "CREATE TABLE IF NOT EXISTS bench_floor (id integer PRIMARY KEY, n bigint NOT NULL DEFAULT 0)"
FILL = f"INSERT INTO bench_floor (id) SELECT g FROM generate_series(1, {ROWS}) AS g ON CONFLICT DO NOTHING"
UPDATE = "UPDATE bench_floor SET n = n + 1 WHERE id = %s"

app = Celery("floor_chain")
app.conf.update(celery_config(get_settings()))

_CAST = "x" * CAST_BYTES
_db: tuple[int, psycopg.Connection] | None = None


def database_url() -> str:
    """The bench database as a libpq URL (VOLCHAIN_DATABASE_URL without SQLAlchemy's driver name)."""
    return get_settings().database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def prepare(conn: psycopg.Connection) -> None:
    """The table the floor chain writes (the bench runs this before the first chain)."""
    conn.execute(TABLE_DDL)
    conn.execute(FILL)


def _write(payload: dict) -> None:
    """One committed UPDATE, on one connection per process (pool children do not share their
    parent's socket)."""
    global _db
    if _db is None or _db[0] != os.getpid():
        _db = (os.getpid(), psycopg.connect(database_url(), autocommit=True))
    _db[1].execute(UPDATE, (zlib.crc32(payload["id"].encode()) % ROWS + 1,))


def _step(payload: dict) -> dict:
    _write(payload)
    return payload


def _last(payload: dict) -> dict:
    _write(payload)
    r = redis_client()
    r.lpush(CAST_KEY, _CAST)
    pipe = r.pipeline(transaction=False)
    pipe.publish(CHANNEL, payload["id"])
    pipe.rpush(DONE_KEY, f"{payload['id']} {time.time():.6f}")
    pipe.execute()
    return payload


TASKS = make_tasks(app, "bench.floor.step", _step, _last)


def build_chain(chain_id: str | None = None) -> Signature:
    """Five writing tasks in a row."""
    return chain_of(TASKS, chain_id)
