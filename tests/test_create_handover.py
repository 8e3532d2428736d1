"""A create chain compensated after its cast was consumed (its worker died between the publish and
the commit, and the sweeper gave up on it) must leave the volume to whoever took it over: the
reverts of entry_create and quota_commit act only on a volume still `creating`."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from models.volume import Volume
from tasks.context import CreateContext
from tasks.create import entry_create, quota_commit
from tasks.runner import StepEnv
from tests import factories


@pytest.mark.parametrize("status", ["available", "error", "deleting"])
def test_reverts_leave_a_handed_over_volume_alone(db, project, status):
    vol = factories.volume(db, project, status=status, host="node1@file#file", use_quota=True)
    ctx = CreateContext(flow_id="f", volume_id=vol.id, project_id=project, committed=True,
                        deltas={"volumes": 1, "gigabytes": 1}, failure={"message": "timed out"})
    with db() as session, session.begin():
        quota_commit.revert(session, ctx, {"committed": True}, StepEnv())
        entry_create.revert(session, ctx, {"created": True}, StepEnv())
    with db() as session:
        after = session.get(Volume, vol.id)
        assert (after.status, after.use_quota, after.deleted) == (status, True, False)


def test_reverts_error_out_a_volume_still_creating_and_give_its_usage_back_once(db, project):
    vol = factories.volume(db, project, status="creating", host=None, use_quota=True)
    ctx = CreateContext(flow_id="f", volume_id=vol.id, project_id=project, committed=True,
                        deltas={"volumes": 1, "gigabytes": 1}, failure={"message": "timed out"})
    for _ in range(2):  # a second compensation changes nothing
        with db() as session, session.begin():
            quota_commit.revert(session, ctx, {"committed": True}, StepEnv())
            entry_create.revert(session, ctx, {"created": True}, StepEnv())
    with db() as session:
        after = session.get(Volume, vol.id)
        assert (after.status, after.use_quota, after.error_message) == ("error", False, "timed out")
    with db() as session, session.begin():  # leave nothing counted behind for the invariant
        session.execute(update(Volume).where(Volume.id == vol.id).values(deleted=True))
