"""Metrics, health and readiness, on real processes.

A prefork step worker (two children, PROMETHEUS_MULTIPROC_DIR) serves its metrics port, and an
API with two uvicorn workers (PROMETHEUS_MULTIPROC_DIR too) serves /metrics, on a database and
queues of this module's own (no other worker takes its messages). The numbers are read before
and after a create succeeds, fails, or is compensated; a delete the API runs itself moves the
API's own counters; a sweeper process finishes a stuck flow. /healthz and /readyz answer, and
/readyz is 503 when the database or the broker does not. The Grafana dashboard only plots
metrics that /metrics exposes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from models import utcnow
from models.db import session_factory
from models.flow_log import FlowRun
from tests import factories
from tests.conftest import (REPO, free_port, start_api, start_worker, stop_worker, wait_for_http,
                            wait_until)
from tests.invariant import assert_quota_consistent

MONITORING = REPO / "docs" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "volchain.json"
CREATE = "create_volume"
CREATE_STEPS = ("extract_volume_request", "quota_reserve", "entry_create", "quota_commit", "volume_cast")


class Stack:
    """This module's running processes, and how to reach them."""

    def __init__(self, api_url: str, worker_metrics: str, scheduler_queue: str, db, env: dict, logs: Path) -> None:
        self.api_url = api_url
        self.worker_metrics = worker_metrics
        self.scheduler_queue = scheduler_queue
        self.db = db
        self.env = env
        self.logs = logs

    def client(self, project: str) -> httpx.Client:
        """A noauth client acting in `project` (every noauth caller is an admin)."""
        return httpx.Client(base_url=f"{self.api_url}/v3/{project}", headers={"X-Auth-Token": f"u1:{project}"},
                            timeout=60)


@pytest.fixture(scope="module")
def stack(own_database, redis_client, tmp_path_factory):
    """A step worker (prefork, 2 children) with a metrics port, and an API (2 uvicorn workers),
    each with its own multiprocess directory, on this module's database and queues."""
    logs = tmp_path_factory.mktemp("metrics")
    run = uuid.uuid4().hex[:6]
    queues = {"VOLCHAIN_STEP_QUEUE": f"volchain.steps.{run}", "VOLCHAIN_COMPENSATE_QUEUE": f"volchain.compensate.{run}",
              "VOLCHAIN_SCHEDULER_QUEUE": f"scheduler.{run}"}
    env = {"VOLCHAIN_DATABASE_URL": own_database, **queues}
    worker_port, api_port = free_port(), free_port()
    worker = start_worker(2, queues=f"{queues['VOLCHAIN_STEP_QUEUE']},{queues['VOLCHAIN_COMPENSATE_QUEUE']}",
                          extra_env={**env, "VOLCHAIN_METRICS_PORT": str(worker_port),
                                     "PROMETHEUS_MULTIPROC_DIR": str(logs / "worker-metrics")},
                          log_path=logs / "worker.log")
    api = start_api(api_port, "noauth", extra_env={**env, "PROMETHEUS_MULTIPROC_DIR": str(logs / "api-metrics")},
                    log_path=logs / "api.log", workers=2)
    try:
        worker_metrics = f"http://127.0.0.1:{worker_port}/metrics"
        wait_for_http(f"http://127.0.0.1:{api_port}/healthz", 60)
        wait_for_http(worker_metrics, 60)
        yield Stack(f"http://127.0.0.1:{api_port}", worker_metrics, queues["VOLCHAIN_SCHEDULER_QUEUE"],
                    session_factory(own_database), env, logs)
    finally:
        stop_worker(api)
        stop_worker(worker)


def scrape(url: str) -> dict:
    """{(sample name, labels): value} of one scrape, and the families' names under the key None."""
    resp = httpx.get(url, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    samples, names = {}, set()
    for family in text_string_to_metric_families(resp.text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
            names.add(sample.name)
    samples[None] = names
    return samples


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for key, v in samples.items() if key is not None and key[0] == name and wanted <= key[1])


def changes(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def _create(stack: Stack, project: str, **volume) -> httpx.Response:
    with stack.client(project) as c:
        return c.post("/volumes", json={"volume": {"size": 1, **volume}})


def _the_flow(stack: Stack, project: str) -> FlowRun:
    with stack.db() as session:
        [flow] = session.scalars(select(FlowRun).where(FlowRun.project_id == project, FlowRun.kind == CREATE)).all()
        return flow


def test_a_create_moves_the_workers_flow_and_step_metrics_and_the_apis_queue_and_volume_gauges(stack):
    project = uuid.uuid4().hex
    worker_before, api_before = scrape(stack.worker_metrics), scrape(f"{stack.api_url}/metrics")
    resp = _create(stack, project)
    assert resp.status_code == 202, resp.text
    worker, api = scrape(stack.worker_metrics), scrape(f"{stack.api_url}/metrics")

    assert changes(worker_before, worker, "volchain_flows_started_total", kind=CREATE) == 1
    assert changes(worker_before, worker, "volchain_flows_succeeded_total", kind=CREATE) == 1
    assert changes(worker_before, worker, "volchain_flows_failed_total", kind=CREATE) == 0
    for step in CREATE_STEPS:  # each step ran once, in one of the worker's children
        assert changes(worker_before, worker, "volchain_step_duration_seconds_count", kind=CREATE, step=step) == 1
    assert changes(worker_before, worker, "volchain_flow_duration_seconds_count", kind=CREATE,
                   outcome="succeeded") == 1
    assert changes(worker_before, worker, "volchain_flow_duration_seconds_sum", kind=CREATE, outcome="succeeded") > 0
    # Its cast waits in the scheduler queue (no scheduler here); its volume is `creating`.
    assert changes(api_before, api, "volchain_queue_messages", queue=stack.scheduler_queue) == 1
    assert changes(api_before, api, "volchain_volumes", status="creating") == 1


def test_a_create_refused_by_its_first_step_counts_as_failed_there_by_error_class(stack):
    project = uuid.uuid4().hex
    before = scrape(stack.worker_metrics)
    resp = _create(stack, project, volume_type="no-such-type")
    assert resp.status_code == 404, resp.text
    after = scrape(stack.worker_metrics)
    flow = _the_flow(stack, project)
    assert (flow.state, flow.failed_step) == ("reverted", "extract_volume_request")
    assert changes(before, after, "volchain_flows_started_total", kind=CREATE) == 1
    assert changes(before, after, "volchain_flows_failed_total", kind=CREATE, step="extract_volume_request",
                   error=flow.error["type"]) == 1
    assert changes(before, after, "volchain_flows_failed_total") == 1
    assert changes(before, after, "volchain_flows_succeeded_total", kind=CREATE) == 0


def test_an_over_quota_create_is_counted_failed_compensated_and_rejected_by_resource(stack):
    project = uuid.uuid4().hex
    factories.set_quota(stack.db, project, volumes=0)
    before = scrape(stack.worker_metrics)
    resp = _create(stack, project)
    assert resp.status_code == 413, resp.text
    after = scrape(stack.worker_metrics)
    flow = _the_flow(stack, project)
    assert (flow.state, flow.failed_step, flow.error["type"]) == ("reverted", "quota_reserve", "VolumeLimitExceeded")
    assert changes(before, after, "volchain_quota_rejections_total", resource="volumes") == 1
    assert changes(before, after, "volchain_quota_rejections_total") == 1
    assert changes(before, after, "volchain_flows_failed_total", kind=CREATE, step="quota_reserve",
                   error="VolumeLimitExceeded") == 1
    assert changes(before, after, "volchain_flows_compensated_total", kind=CREATE) == 1
    assert changes(before, after, "volchain_flow_duration_seconds_count", kind=CREATE, outcome="reverted") == 1
    assert changes(before, after, "volchain_flows_started_total", kind=CREATE) == 1
    with stack.db() as session:
        assert_quota_consistent(session, project)


def test_a_delete_the_api_runs_itself_is_counted_by_the_api_whichever_of_its_workers_answers(stack):
    project = uuid.uuid4().hex
    created = _create(stack, project)
    assert created.status_code == 202, created.text
    volume_id = created.json()["volume"]["id"]
    before = scrape(f"{stack.api_url}/metrics")
    with stack.client(project) as c:
        assert c.delete(f"/volumes/{volume_id}").status_code == 202  # no host yet: deleted at once, here
    for _ in range(4):  # new connections: the scrapes land on either uvicorn worker, each adds up both
        after = scrape(f"{stack.api_url}/metrics")
        assert changes(before, after, "volchain_flows_started_total", kind="delete_volume") == 1
        assert changes(before, after, "volchain_flows_succeeded_total", kind="delete_volume") == 1
        assert changes(before, after, "volchain_step_duration_seconds_count", kind="delete_volume",
                       step="delete_request") == 1
        assert changes(before, after, "volchain_volumes", status="creating") == -1


def test_healthz_and_readyz_answer_without_a_token_outside_the_api_document(stack):
    assert httpx.get(f"{stack.api_url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(f"{stack.api_url}/readyz", timeout=10)
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    paths = httpx.get(f"{stack.api_url}/openapi.json", timeout=30).json()["paths"]
    assert not {"/healthz", "/readyz", "/metrics"} & set(paths)


def test_readyz_is_503_naming_what_is_away_and_no_address_when_the_database_or_the_broker_is(stack):
    closed = free_port()  # nothing listens there
    away = {"database": {"VOLCHAIN_DATABASE_URL": f"postgresql+psycopg://postgres:secret@127.0.0.1:{closed}/volchain"},
            "broker": {"VOLCHAIN_BROKER_URL": f"redis://:secret@127.0.0.1:{closed}/0"}}
    unreadable = {"database": "volchain_volumes", "broker": "volchain_queue_messages"}
    apis = {}
    try:
        for name, env in away.items():
            port = free_port()
            apis[name] = (port, start_api(port, "noauth", extra_env={**stack.env, **env},
                                          log_path=stack.logs / f"api-no-{name}.log"))
        for name, (port, _proc) in apis.items():
            base = f"http://127.0.0.1:{port}"
            wait_for_http(f"{base}/healthz", 60)
            assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200  # up, though not ready
            resp = httpx.get(f"{base}/readyz", timeout=30)
            assert resp.status_code == 503, (name, resp.text)
            assert resp.json() == {"serviceUnavailable": {"code": 503,
                                                          "message": f"Not ready: the {name} is unavailable."}}
            assert resp.headers["Retry-After"] == "5"
            for secret in ("127.0.0.1", str(closed), "secret", "postgres", "redis"):
                assert secret not in resp.text
            exposed = scrape(f"{base}/metrics")[None]  # still answers, with what it can read
            assert "volchain_flows_started_total" in exposed
            assert set(unreadable.values()) - exposed == {unreadable[name]}
    finally:
        for _port, proc in apis.values():
            stop_worker(proc)


def test_a_prefork_worker_with_a_metrics_port_and_no_multiprocess_directory_refuses_to_start(stack):
    env = {**os.environ, **stack.env, "VOLCHAIN_METRICS_PORT": str(free_port())}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-P", "prefork", "-c", "1",
                           "-Q", f"volchain.unused.{uuid.uuid4().hex[:6]}", "-l", "warning",
                           "-n", f"test-refused-{uuid.uuid4().hex[:6]}@%h"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "VOLCHAIN_METRICS_PORT with the prefork pool needs PROMETHEUS_MULTIPROC_DIR" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def sweeper(stack):
    """`volchain worker sweeper` with a metrics port (one process: no multiprocess directory) and
    short timeouts, on this module's database only."""
    port = free_port()
    env = {**os.environ, **stack.env, "VOLCHAIN_METRICS_PORT": str(port), "VOLCHAIN_VISIBILITY_TIMEOUT": "2",
           "VOLCHAIN_UNACKED_RESTORE_SECONDS": "1", "VOLCHAIN_FLOW_DEADLINE_SECONDS": "5",
           "VOLCHAIN_SWEEP_INTERVAL_SECONDS": "0.5", "VOLCHAIN_RECONCILE_INTERVAL_SECONDS": "0"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "sweeper"], cwd=REPO, env=env,
                            stdout=open(stack.logs / "sweeper.log", "ab"), stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_for_http(url, 60)
        yield url
    finally:
        stop_worker(proc)


def test_a_stuck_flow_the_sweeper_finishes_moves_the_sweepers_metrics(stack, sweeper):
    project = uuid.uuid4().hex
    before = scrape(sweeper)
    ctx = factories.start_flow_directly(stack.db, factories.member(project), size=1)  # its chain never sent
    with stack.db() as session, session.begin():
        session.execute(update(FlowRun).where(FlowRun.id == ctx.flow_id)
                        .values(progress_at=utcnow() - timedelta(seconds=60)))
    wait_until(lambda: changes(before, scrape(sweeper), "volchain_flows_swept_total", kind=CREATE,
                               outcome="resumed") >= 1, 30, what="the sweeper's metrics show the flow resumed")
    after = scrape(sweeper)
    assert _the_flow(stack, project).state == "succeeded"
    assert changes(before, after, "volchain_flows_swept_total", kind=CREATE, outcome="resumed") == 1
    assert changes(before, after, "volchain_flows_started_total", kind=CREATE) == 1
    assert changes(before, after, "volchain_flows_succeeded_total", kind=CREATE) == 1
    for step in CREATE_STEPS:  # the sweeper ran every step itself
        assert changes(before, after, "volchain_step_duration_seconds_count", kind=CREATE, step=step) == 1


def test_a_failed_flow_that_is_parked_is_counted_started_once_failed_once_and_parked(stack, project):
    """In this process (its own registry): the runner's record_failure and park, on a real flow of
    this module's database."""
    from prometheus_client import REGISTRY

    from tasks.runner import park, record_failure

    failure = {"type": "ServiceUnavailable", "code": 503, "message": "m"}
    wanted = {"volchain_flows_started_total": {"kind": CREATE},
              "volchain_flows_failed_total": {"kind": CREATE, "step": "quota_commit", "error": "ServiceUnavailable"},
              "volchain_flows_parked_total": {"kind": CREATE, "why": "compensation_error"},
              "volchain_flow_duration_seconds_count": {"kind": CREATE, "outcome": "needs_attention"}}

    def counts() -> dict[str, float]:
        return {name: REGISTRY.get_sample_value(name, labels) or 0.0 for name, labels in wanted.items()}

    ctx = factories.start_flow_directly(stack.db, factories.member(project), size=1)
    before = counts()
    assert record_failure(stack.db, ctx.flow_id, "quota_commit", failure)
    assert not record_failure(stack.db, ctx.flow_id, "quota_commit", failure)  # not running any more
    park(stack.db, ctx.flow_id, "compensation kept failing")
    park(stack.db, ctx.flow_id, "compensation kept failing")  # parked already: nothing more
    after = counts()
    assert {name: after[name] - before[name] for name in wanted} == dict.fromkeys(wanted, 1)
    with stack.db() as session:
        assert session.get(FlowRun, ctx.flow_id).state == "needs_attention"


# --- The dashboard, Prometheus's and Grafana's files.

NOT_METRICS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
PROMETHEUS_OWN = {"up"}  # series Prometheus makes for each target, not on any /metrics


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label matchers,
    ranges, grouping clauses, function calls and keywords are taken out."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    return {m for m in re.findall(r"(?<![\w.$])[a-zA-Z_:][\w:]*\b(?!\s*\()", expr) if m not in NOT_METRICS}


def test_metric_names_are_read_off_promql_expressions():
    assert metric_names('histogram_quantile(0.95, sum by (le, kind) (rate(a_bucket{kind="x", s=~"y.*"}[5m])))') \
        == {"a_bucket"}
    assert metric_names("sum(rate(a_total[$__rate_interval])) / sum without (x) (b) > bool 1e3") == {"a_total", "b"}


def _expressions(dashboard: dict) -> list[str]:
    panels = list(dashboard["panels"])
    for panel in list(panels):
        panels += panel.get("panels", [])  # collapsed rows hold theirs
    return [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]


def test_the_dashboard_plots_every_volchain_metric_and_only_metrics_that_are_exposed(stack, sweeper):
    dashboard = json.loads(DASHBOARD.read_text())
    used = set().union(*(metric_names(e) for e in _expressions(dashboard)))
    exposed = set().union(*(scrape(url)[None] for url in (f"{stack.api_url}/metrics", stack.worker_metrics, sweeper)))
    assert used - PROMETHEUS_OWN <= exposed, used - PROMETHEUS_OWN - exposed
    families = {n for n in exposed if n.startswith("volchain_")}
    plotted = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    assert {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in families} <= plotted
    datasources = {json.dumps(t.get("datasource", p.get("datasource"))) for p in dashboard["panels"]
                   for t in p.get("targets", [])}
    assert datasources == {json.dumps({"type": "prometheus", "uid": "${datasource}"})}


def test_prometheus_scrapes_the_api_and_every_worker_role_and_grafana_loads_the_dashboard():
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert jobs == ["volchain-api", "volchain-steps", "volchain-scheduler", "volchain-volume", "volchain-sweeper"]
    expressions = _expressions(json.loads(DASHBOARD.read_text()))
    [up_matcher] = {m for e in expressions for m in re.findall(r'job=~"([^"]+)"', e)}
    assert all(re.fullmatch(up_matcher, job) for job in jobs)  # the `up` panel shows every job
    provisioning = MONITORING / "grafana" / "provisioning"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "volchain.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/var/lib/grafana/dashboards")
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus"
