"""The suite never empties a Redis db holding data it did not make (tests/conftest.py claim_redis)."""

from __future__ import annotations

import fakeredis
import pytest

from tests.conftest import claim_redis


def test_a_db_with_someone_elses_keys_is_refused_and_left_alone():
    client = fakeredis.FakeRedis()
    client.set("sessions:alice", "1")
    client.rpush("volchain.steps", "x")
    with pytest.raises(pytest.fail.Exception, match="holds keys the tests did not make"):
        claim_redis(client, "redis://fake/0")
    assert client.get("sessions:alice") == b"1" and client.llen("volchain.steps") == 1


def test_a_db_with_only_the_suites_keys_is_emptied():
    client = fakeredis.FakeRedis()
    for key in ("volchain.steps", "scheduler", "volume.node1@file", "_kombu.binding.scheduler", "unacked"):
        client.rpush(key, "x")
    claim_redis(client, "redis://fake/0")
    assert client.dbsize() == 0
