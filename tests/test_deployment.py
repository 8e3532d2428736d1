"""What a deployment relies on to survive failures (docs/failure-model.md): the timeouts are
coherent, and compose restarts and health-checks every long-running role."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from workers.app import celery_config
from workers.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def test_a_deadline_that_could_fire_before_redelivery_is_refused():
    with pytest.raises(ValidationError, match="must exceed VOLCHAIN_VISIBILITY_TIMEOUT"):
        Settings(visibility_timeout=120, unacked_restore_seconds=5, flow_deadline_seconds=125)
    ok = Settings(visibility_timeout=120, unacked_restore_seconds=5, flow_deadline_seconds=126)
    assert ok.flow_deadline_seconds > ok.visibility_timeout + ok.unacked_restore_seconds


def test_the_defaults_redeliver_before_the_sweeper_takes_over():
    default = {name: field.default for name, field in Settings.model_fields.items()}
    assert default["flow_deadline_seconds"] > default["visibility_timeout"] + default["unacked_restore_seconds"]
    settings = Settings(broker_url="redis://127.0.0.1:6379/0", visibility_timeout=default["visibility_timeout"],
                        unacked_restore_seconds=default["unacked_restore_seconds"],
                        flow_deadline_seconds=default["flow_deadline_seconds"])
    assert celery_config(settings)["broker_transport_options"] == {
        "visibility_timeout": default["visibility_timeout"],
        "unacked_restore_interval": default["unacked_restore_seconds"], "unacked_restore_throttle": 1}


def test_every_long_running_compose_role_restarts_and_has_a_health_check():
    services = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    long_running = [name for name, svc in services.items() if name != "migrate"]
    assert {"steps", "scheduler", "volume1", "volume2", "sweeper", "redis", "postgres"} <= set(long_running)
    for name in long_running:
        svc = services[name]
        assert "healthcheck" in svc and svc["healthcheck"]["test"], f"{name} has no health check"
        if "build" in svc:  # our roles (the servers' images restart by their own policy)
            assert svc.get("restart") == "unless-stopped", f"{name} is not restarted when it exits"


# --- compose.yaml and the image, checked without a Docker engine (none runs on CI machines).

LONG_RUNNING_OURS = {"api", "steps", "scheduler", "volume1", "volume2", "sweeper", "flower"}


def _compose() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())["services"]


def _copied_into_the_image() -> set[str]:
    """The top-level folders the Dockerfile copies into the image."""
    copied = set()
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            copied.update(part.rstrip("/") for part in line.split()[1:-1])
    return copied


ENTRY_MODULES = ("cli.main", "api.main", "workers.app")  # `volchain`, the API app, `celery -A workers.app`


def _module_file(name: str) -> Path | None:
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def _imported_by(path: Path) -> set[str]:
    """Every module `path` imports (dotted names, also `from a import b` as a.b), at any depth of
    its code: a function's import counts, since the command that calls it needs it."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("workers."):
            found.add(node.value)  # Celery's task modules, named as strings (workers/app.py TASK_MODULES)
    return found


def _reachable_from_the_entry_points() -> tuple[set[Path], set[str]]:
    """Our files the entry points import (transitively), and the third-party modules they import."""
    import sys

    files, third_party, pending = set(), set(), list(ENTRY_MODULES)
    while pending:
        name = pending.pop()
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        path = _module_file(name)
        if path is None:
            if not (REPO / top).is_dir():
                third_party.add(top)
            continue
        for parent in list(path.relative_to(REPO).parents)[:-1]:  # a package's __init__ runs first
            init = REPO / parent / "__init__.py"
            if init.exists() and init not in files:
                files.add(init)
                pending.extend(_imported_by(init))
        if path not in files:
            files.add(path)
            pending.extend(_imported_by(path))
    return files, third_party


def test_the_image_holds_every_module_and_package_its_entry_points_import():
    import tomllib
    from importlib.metadata import packages_distributions, requires

    from packaging.requirements import Requirement

    files, third_party = _reachable_from_the_entry_points()
    assert len(files) > 50 and REPO / "tasks/create/flow.py" in files  # the walk found the code
    copied = _copied_into_the_image()
    outside = {str(path.relative_to(REPO)) for path in files if path.relative_to(REPO).parts[0] not in copied}
    assert not outside, f"imported by the entry points but not copied into the image: {sorted(outside)}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    installed = {Requirement(r).name.lower().replace("_", "-") for r in project["dependencies"]}
    pending = list(installed)  # ... and what those install in turn (celery brings kombu and billiard ...)
    while pending:
        for requirement in requires(pending.pop()) or []:
            req = Requirement(requirement)
            name = req.name.lower().replace("_", "-")
            if name not in installed and (req.marker is None or req.marker.evaluate({"extra": ""})):
                installed.add(name)
                pending.append(name)
    owners = packages_distributions()
    missing = {module for module in third_party
               if not {d.lower().replace("_", "-") for d in owners.get(module, [])} & installed}
    assert not missing, f"imported by the entry points but not installed by `pip install .`: {sorted(missing)}"


def test_every_compose_command_is_a_real_entry_point_of_ours_with_what_it_needs():
    from cli.main import build_parser
    from workers.settings import Settings

    services = _compose()
    settings_env = {f"VOLCHAIN_{name.upper()}" for name in Settings.model_fields}
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["volchain"]' in dockerfile and "\nUSER " in dockerfile  # our CLI, not as root
    ours = {name: svc for name, svc in services.items() if "build" in svc}
    assert LONG_RUNNING_OURS | {"migrate"} == set(ours)
    for name, svc in ours.items():
        args = build_parser().parse_args(svc["command"])  # exits (SystemExit) on an unknown command or option
        assert args.command == svc["command"][0], name
        env = svc["environment"]
        assert {"VOLCHAIN_DATABASE_URL", "VOLCHAIN_BROKER_URL"} <= set(env), f"{name} has no database or broker"
        unknown = {key for key in env if key.startswith("VOLCHAIN_")} - settings_env
        assert not unknown, f"{name} sets settings volchain does not have: {unknown}"
        Settings(**{key.removeprefix("VOLCHAIN_").lower(): value for key, value in env.items()
                    if key.startswith("VOLCHAIN_")})  # every value is valid (raises otherwise)
        if "PROMETHEUS_MULTIPROC_DIR" in env:  # fresh per container, writable by the image's user
            assert any(mount.startswith(env["PROMETHEUS_MULTIPROC_DIR"] + ":") for mount in svc.get("tmpfs", [])), name
    prefork = ours["steps"]
    assert "PROMETHEUS_MULTIPROC_DIR" in prefork["environment"]  # its metrics port adds up its children's


def test_compose_ports_dependencies_and_health_checks_are_consistent():
    services = _compose()
    host_ports = [port.rsplit(":", 2)[-2] for svc in services.values() for port in svc.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), f"a host port is taken twice: {host_ports}"
    for name, svc in services.items():
        assert all(port.startswith("127.0.0.1:") for port in svc.get("ports", [])), f"{name} listens beyond localhost"
        depends = svc.get("depends_on", [])
        for other in depends:
            assert other in services, f"{name} depends on {other}, which compose does not define"
        if name != "migrate":
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
            assert svc.get("restart") == "unless-stopped", f"{name} is not restarted when it exits"
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"
    # Celery roles are health-checked by Celery's own inspection, addressed to their own node.
    for name in ("steps", "scheduler", "volume1", "volume2"):
        assert "celery -A workers.app inspect ping" in services[name]["healthcheck"]["test"][-1], name
    assert "/readyz" in services["api"]["healthcheck"]["test"][-1]


def test_prometheus_scrapes_every_role_where_it_serves_its_metrics():
    services = _compose()
    scrape = yaml.safe_load((REPO / "docs/monitoring/prometheus.yml").read_text())["scrape_configs"]
    targets = set()
    for job in scrape:
        for sd in job.get("dns_sd_configs", []):
            targets.update((name, sd["port"]) for name in sd["names"])
        for static in job.get("static_configs", []):
            targets.update((t.split(":")[0], int(t.split(":")[1])) for t in static["targets"])
    expected = {(name, int(services[name]["environment"]["VOLCHAIN_METRICS_PORT"]))
                for name in services if "VOLCHAIN_METRICS_PORT" in services[name].get("environment", {})}
    api_port = int(services["api"]["command"][services["api"]["command"].index("--port") + 1])
    assert targets == expected | {("api", api_port)}
    assert {"steps", "scheduler", "volume1", "volume2", "sweeper"} <= {name for name, _ in expected}


def test_docker_compose_accepts_the_file_where_the_tool_is_present():
    import shutil
    import subprocess

    docker = shutil.which("docker")
    has_compose = docker is not None and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    if not has_compose:  # the engine-less CI machines have at most the docker client: the checks above stand
        assert yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
        return
    out = subprocess.run([docker, "compose", "-f", str(REPO / "compose.yaml"), "config", "--quiet"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_a_celery_worker_started_directly_refuses_a_server_volchain_cannot_use(tmp_path):
    """The server URL rule is the settings' own: `celery -A workers.app worker` refuses too."""
    import os
    import subprocess
    import sys

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VOLCHAIN_")},
           "VOLCHAIN_DATABASE_URL": "mysql://u:secret@db/volchain", "VOLCHAIN_BROKER_URL": "redis://127.0.0.1:1/0"}
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "solo"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "unsupported database mysql://" in out.stderr and "secret" not in out.stderr
