"""bench/scale.py's fill: copied from one real create, set-based, it leaves a database whose every
project's quota usage equals what its rows say, in a database of its own (the session's is shared)."""

import uuid

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session

from bench.harness import create_database, drop_database
from bench.scale import capture_template, fill, project_id, quota_drift, remove_project
from models.db import forget_kept_connections, session_factory
from models.flow_log import FlowRun
from models.migrate import upgrade
from models.volume import Volume
from tasks.context import RequestContext
from tasks.create.flow import STEPS
from tasks.runner import StepEnv, run_step
from tests.conftest import PG_BASE
from tests.invariant import assert_quota_consistent
from workers.submit import _INSERT_FLOW


@pytest.fixture
def bench_database():
    name, admin = create_database(PG_BASE)
    url = f"{PG_BASE}/{name}"
    upgrade(url)
    engine = create_engine(url)
    try:
        yield url, engine
    finally:
        forget_kept_connections()
        engine.dispose()
        drop_database(admin, name)


def _real_create(url: str, engine, project: str) -> str:
    """The five steps of a create, run in this thread as the chain runs them (the cast dropped),
    then the row as the volume service leaves it: on a backend, available."""
    from models import utcnow

    ctx = RequestContext(project_id=project, user_id="u1", roles=("member",))
    flow_id, volume_id, now = str(uuid.uuid4()), str(uuid.uuid4()), utcnow()
    with engine.begin() as conn:
        conn.execute(_INSERT_FLOW, {
            "id": flow_id, "kind": "create_volume", "volume_id": volume_id, "project_id": ctx.project_id,
            "user_id": ctx.user_id, "idempotency_key": None, "state": "running", "request": {"size": 2, "name": "t"},
            "steps": {}, "compensation_attempts": 0,
            "caller": {"roles": list(ctx.roles), "is_admin": False, "respond_async": False},
            "root_task_id": flow_id, "created_at": now, "progress_at": now})
    env = StepEnv(publish=lambda message: None)
    for step in STEPS:
        run_step(session_factory(url), step, flow_id, env, final=step is STEPS[-1])
    with engine.begin() as conn:
        conn.execute(text("UPDATE volumes SET status = 'available', host = 'node1@file#file' WHERE id = :v"),
                     {"v": volume_id})
    return flow_id


def test_the_scale_fill_keeps_the_quota_invariant_in_every_project(bench_database):
    url, engine = bench_database
    template_project = uuid.uuid4().hex
    flow_id = _real_create(url, engine, template_project)
    template = capture_template(engine, template_project)
    assert template.flow["id"] == flow_id and template.flow["state"] == "succeeded"
    remove_project(engine, template_project)

    stats = fill(engine, template, "t", volumes=2000, projects=20, backends=4, chunk=700)

    projects = [project_id("t", n) for n in range(1, 21)]
    with Session(engine) as session:
        for project in projects:
            assert_quota_consistent(session, project)
        per_project = dict(session.execute(select(Volume.project_id, func.count()).group_by(Volume.project_id)).all())
        assert per_project == {project: 100 for project in projects}
        flows = session.execute(select(FlowRun.state, FlowRun.kind, func.count(),
                                       func.count(FlowRun.volume_id.distinct()))
                                .group_by(FlowRun.state, FlowRun.kind)).all()
        assert flows == [("succeeded", "create_volume", 2000, 2000)]
        # Each flow is its volume's, in its project, with the template's step record.
        row = session.execute(select(FlowRun, Volume).join(Volume, Volume.id == FlowRun.volume_id).limit(1)).one()
        assert row.FlowRun.project_id == row.Volume.project_id
        assert row.FlowRun.root_task_id == row.FlowRun.id and row.FlowRun.id != flow_id
        assert set(row.FlowRun.steps) == {step.name for step in STEPS}
        hosts = dict(session.execute(select(Volume.host, func.count()).group_by(Volume.host)).all())
        assert hosts["node1@file#file"] == 500 and len(hosts) == 4
    assert stats.on_measured_backend == 500
    assert quota_drift(engine) == []
