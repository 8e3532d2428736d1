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
