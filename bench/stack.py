"""A whole volchain on one machine, to be hurt on purpose: the fault tests and the chaos bench.

`Stack` runs a Redis server of its own (so that it can be killed and restarted without touching
anyone else's) and each role as a real process started the way an operator starts it (`volchain
worker ...`, `volchain api`), each in its own process group. A supervisor thread restarts any
role whose process died, as compose's `restart: unless-stopped` does, and counts the restarts.

    stack = Stack(database_url, workdir, env={...})
    stack.add_steps(); stack.add_scheduler(); stack.add_volume("node1", "az1"); stack.add_sweeper(); stack.add_api()
    stack.start()
    ... stack.kill("steps") ... stack.restart_redis(down=2) ... stack.submit(project, size=1) ...
    stack.stop()
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import free_port

REPO = Path(__file__).resolve().parent.parent


class RedisServer:
    """A redis-server on a free port, no persistence: a restart loses every queued message."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.workdir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.workdir)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def unacked(self) -> int:
        """Messages delivered to a worker and not acknowledged yet (kombu's `unacked` hash)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
            conn.sendall(b"HLEN unacked\r\n")
            reply = conn.recv(64)
        return int(reply[1:].split(b"\r\n", 1)[0]) if reply.startswith(b":") else 0

    def restart(self, down: float = 1.0) -> None:
        """SIGKILL the server, keep it down `down` seconds, start it again (empty)."""
        self.kill()
        time.sleep(down)
        self.start()
        self.restarts += 1


@dataclass
class Role:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    celery: bool  # a Celery worker (answers pings)
    proc: subprocess.Popen | None = None
    restarts: int = 0
    kills: int = 0  # SIGKILLs sent by Stack.kill
    exits: list[int] = field(default_factory=list)  # exit codes of deaths no one asked for
    held: bool = False  # stopped on purpose: not restarted

    def start(self) -> None:
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def signal(self, sig: int) -> None:
        """Signal the role's whole process group: the worker and its pool children, even children
        that outlived their leader."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass


@dataclass
class Stack:
    database_url: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(self.workdir)
        self.roles: dict[str, Role] = {}
        self.api_url: str | None = None
        self.volume_paths: dict[str, Path] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._supervisor = threading.Thread(target=self._supervise, name="stack-supervisor", daemon=True)

    # --- roles

    def role_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOLCHAIN_")}
        env.update({"VOLCHAIN_DATABASE_URL": self.database_url, "VOLCHAIN_BROKER_URL": self.redis.url,
                    "VOLCHAIN_KILL_MARKS_DIR": str(self.workdir), **self.env, **extra})
        return env

    def _add(self, name: str, args: list[str], celery: bool = True, **extra: str) -> Role:
        role = Role(name, [sys.executable, "-m", "cli.main", *args], self.role_env(**extra),
                    self.workdir / f"{name}.log", celery)
        self.roles[name] = role
        return role

    def add_steps(self, name: str = "steps", concurrency: int = 2, **extra: str) -> Role:
        return self._add(name, ["worker", "-c", str(concurrency), "-l", "warning", "-n", f"{name}@%h"], **extra)

    def add_scheduler(self, name: str = "scheduler", **extra: str) -> Role:
        return self._add(name, ["worker", "scheduler", "-c", "2", "-l", "warning", "-n", f"{name}@%h"], **extra)

    def add_volume(self, name: str, zone: str, capacity_gb: int = 1000, **extra: str) -> str:
        host = f"{name}@file"
        path = self.workdir / "backends" / name
        self.volume_paths[host] = path
        self._add(name, ["worker", "volume", "--host", host, "--path", str(path), "--availability-zone", zone,
                         "--capacity-gb", str(capacity_gb), "-c", "2", "-l", "warning", "-n", f"{name}@%h"], **extra)
        return host

    def add_sweeper(self, **extra: str) -> Role:
        return self._add("sweeper", ["worker", "sweeper"], celery=False, **extra)

    def add_api(self, **extra: str) -> Role:
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        return self._add("api", ["api", "--host", "127.0.0.1", "--port", str(port)], celery=False,
                         **{"VOLCHAIN_AUTH_STRATEGY": "noauth", **extra})

    # --- life

    def start(self, timeout: float = 90.0) -> None:
        self.redis.start()
        for role in self.roles.values():
            role.start()
        self._supervisor.start()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every Celery role answers a ping and the API answers HTTP."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pings() >= self.celery_roles() and (self.api_url is None or self._api_up()):
                return
            time.sleep(0.3)
        raise RuntimeError(f"the stack is not ready after {timeout}s: {self.pings()} of {self.celery_roles()} "
                           f"workers answer; logs in {self.workdir}")

    def celery_roles(self) -> int:
        return sum(1 for role in self.roles.values() if role.celery)

    def pings(self) -> int:
        """How many Celery workers answer a ping on this stack's broker."""
        from workers.app import make_celery
        from workers.settings import Settings

        app = make_celery(Settings(database_url=self.database_url, broker_url=self.redis.url))
        try:
            return len(app.control.ping(timeout=1.0) or [])
        except Exception:
            return 0
        finally:
            app.close()

    def _api_up(self) -> bool:
        try:
            urllib.request.urlopen(self.api_url + "/", timeout=2).read()
        except urllib.error.HTTPError:  # "/" answers 300 Multiple Choices, as Cinder's does
            pass
        except (urllib.error.URLError, OSError):
            return False
        return True

    def _supervise(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                for role in self.roles.values():
                    if not role.held and role.proc is not None and role.proc.poll() is not None:
                        if role.proc.returncode != -signal.SIGKILL:  # not a kill: the worker gave up
                            role.exits.append(role.proc.returncode)
                        role.restarts += 1
                        role.start()

    def kill(self, name: str) -> None:
        """SIGKILL a role's whole process group; the supervisor starts it again."""
        role = self.roles[name]
        role.kills += 1
        role.signal(signal.SIGKILL)

    def restart(self, name: str, **extra: str) -> None:
        """Stop a role (SIGTERM, warm) and start it again with `extra` environment."""
        role = self.roles[name]
        with self._lock:
            role.held = True
        role.signal(signal.SIGTERM)
        try:
            role.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            role.signal(signal.SIGKILL)
            role.proc.wait()
        role.env = self.role_env(**extra)
        with self._lock:
            role.start()
            role.held = False

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=5)
        for role in self.roles.values():
            role.held = True
            role.signal(signal.SIGTERM)
        for role in self.roles.values():
            if role.proc is None:
                continue
            try:
                role.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            role.signal(signal.SIGKILL)  # whatever is left of the group
            role.proc.wait()
        self.redis.kill()

    def log_count(self, name: str, needle: str) -> int:
        """How many lines of a role's log contain `needle` (e.g. "redelivered: ")."""
        path = self.roles[name].log
        return path.read_text(errors="replace").count(needle) if path.exists() else 0

    # --- requests

    def api(self, method: str, path: str, project: str, body: dict | None = None,
            timeout: float = 30.0) -> tuple[int, dict]:
        """One call to the REST API (noauth, as `admin:<project>`); (status, JSON body)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.api_url}/v3/{project}{path}", data=data, method=method,
            headers={"X-Auth-Token": f"admin:{project}", "Content-Type": "application/json",
                     "OpenStack-API-Version": "volume 3.62"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw) if raw else {}
            except ValueError:
                return exc.code, {"raw": raw.decode(errors="replace")}
        except (urllib.error.URLError, OSError) as exc:
            return 0, {"error": str(exc)}

    def submit(self, project: str, **request) -> tuple[str, str]:
        """Submit a create straight to the chain (as a web front end does, `workers.submit`), in a
        process configured for this stack; (flow id, volume id). Takes `_inject`, unlike the API."""
        script = ("import json, sys; from tasks.context import RequestContext; "
                  "from workers.submit import submit_create_volume; "
                  "args = json.loads(sys.argv[1]); "
                  "sub = submit_create_volume(RequestContext(project_id=args['project'], user_id='u1', "
                  "roles=('member',)), **args['request']); print(sub.flow_id, sub.volume_id)")
        out = subprocess.run([sys.executable, "-c", script, json.dumps({"project": project, "request": request})],
                             cwd=REPO, env=self.role_env(VOLCHAIN_FAILURE_INJECTION="true"), capture_output=True,
                             text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"submit failed: {out.stderr[-2000:]}")
        flow_id, volume_id = out.stdout.split()
        return flow_id, volume_id

    def backend_files(self) -> dict[str, list[str]]:
        """host -> ids of the volumes with a file on that backend."""
        found = {}
        for host, path in self.volume_paths.items():
            folder = path / "volumes"
            found[host] = sorted(p.name.removeprefix("volume-") for p in folder.glob("volume-*")) \
                if folder.exists() else []
        return found
