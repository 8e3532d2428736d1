"""Flower, started as `volchain flower` (its HTTP API usable with no extra setting), shows our
workers, the named steps of a chain with the flow id as their argument, and a failed create's
compensation."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests import factories
from tests.conftest import REPO, WORKER_ENV, stop_worker
from workers.submit import submit_create_volume, wait_for_flow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture
def flower(workers):
    port = _free_port()
    env = {k: v for k, v in {**os.environ, **WORKER_ENV}.items() if not k.startswith("FLOWER_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "flower", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/healthcheck", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    else:
        stop_worker(proc)
        pytest.fail("Flower did not start")
    time.sleep(1.0)  # let Flower subscribe to the event stream before tasks run
    yield base
    stop_worker(proc)


def _tasks_of(base: str, root_id: str, want: int, timeout: float = 20.0, settled: tuple[str, ...] = ()) -> list[dict]:
    """The tasks Flower knows of with this root id, once there are `want` of them and the ones
    named in `settled` are no longer running (a flow's outcome commits before its task's last
    event reaches Flower)."""
    deadline = time.monotonic() + timeout
    found: list[dict] = []
    while time.monotonic() < deadline:
        tasks = _get(base + "/api/tasks?limit=1000")
        found = [t for t in tasks.values() if t.get("root_id") == root_id]
        running = [t for t in found if t.get("name") in settled and t.get("state") in ("RECEIVED", "STARTED")]
        if len(found) >= want and not running:
            return found
        time.sleep(0.3)
    return found


def test_flower_shows_the_chain_steps_by_name_and_a_failure_with_its_compensation(flower, project):
    ok = submit_create_volume(factories.member(project), size=1)
    bad = submit_create_volume(factories.member(project), size=1, volume_type="no-such-type")
    assert wait_for_flow(ok.flow_id, 30).state == "succeeded"
    assert wait_for_flow(bad.flow_id, 30).state == "reverted"

    step_names = ("volchain.create.extract_volume_request", "volchain.create.quota_reserve",
                  "volchain.create.entry_create", "volchain.create.quota_commit", "volchain.create.volume_cast")
    # five steps and the cast message (sent, not consumed)
    steps = _tasks_of(flower, ok.flow_id, want=6, settled=step_names)
    names = {t["name"] for t in steps if t.get("name")}
    assert set(step_names) <= names
    assert all(t["state"] == "SUCCESS" for t in steps if t.get("name", "").startswith("volchain.create."))
    for step in (t for t in steps if t.get("name") in step_names):  # readable: the flow id, nothing secret
        assert ok.flow_id in step["args"], step
        assert "vc1." not in step["args"] + step["kwargs"], step
        assert step["runtime"] is not None and step["runtime"] >= 0, step

    failed = _tasks_of(flower, bad.flow_id, want=2, settled=("volchain.create.compensate",))
    by_name = {t["name"]: t for t in failed if t.get("name")}
    assert by_name["volchain.create.extract_volume_request"]["state"] == "FAILURE"
    assert "VolumeTypeNotFoundByName" in (by_name["volchain.create.extract_volume_request"].get("exception") or "")
    assert by_name["volchain.create.compensate"]["state"] == "SUCCESS"

    workers = _get(flower + "/api/workers?refresh=1")
    assert any(name.startswith("test-") for name in workers)
