"""The command line's habits: --version, help on every option, --json wherever data is printed,
one line and exit 2 for every bad setting, server URL or argument (never a traceback), the line
naming embedded servers, `volchain status`, and `create --count`'s progress and summary."""

from __future__ import annotations

import argparse
import json
import os
import pty
import subprocess
import sys
import uuid
from importlib.metadata import version

import pytest

from tests.test_cli import assert_one_line_error, no_servers_env, ok, ok_json, volchain

SERVERS = {("worker",), ("api",), ("flower",)}  # they serve; what they print is their log


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, its parser) of every command that runs, e.g. (("flow", "list"), parser)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from leaves(sub, (*path, name))


def commands():
    from cli.main import build_parser

    return list(leaves(build_parser()))


def test_version_prints_the_installed_version():
    proc = volchain("--version", env=no_servers_env())
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"volchain {version('volchain')}\n", "")


def test_every_option_and_every_command_has_help():
    from cli.main import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {choice.dest for choice in action._choices_actions if choice.help}
                missing.extend(f"{' '.join((*path, name))} (the command)" for name in action.choices
                               if name not in helped)
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{' '.join(path) or 'volchain'} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), ())
    assert missing == []
    assert {("serve",), ("status",), ("flow", "list"), ("token", "issue")} <= {path for path, _ in commands()}


def test_every_command_that_prints_data_has_json():
    without = {path for path, parser in commands()
               if not any("--json" in action.option_strings for action in parser._actions)}
    assert without == SERVERS


@pytest.mark.parametrize("args, settings, fragment", [
    (["flow", "list"], {"worker_concurrency": "abc"},
     "volchain: error: invalid settings: VOLCHAIN_WORKER_CONCURRENCY: Input should be a valid integer"),
    (["serve"], {"worker_concurrency": "abc"}, "invalid settings: VOLCHAIN_WORKER_CONCURRENCY"),
    (["worker"], {"task_events": "maybe"},
     "volchain: error: invalid settings: VOLCHAIN_TASK_EVENTS: Input should be a valid boolean"),
    (["status"], {"database_url": "mysql://u:secret@db/volchain"},
     "volchain: error: invalid settings: VOLCHAIN_DATABASE_URL: unsupported database mysql:// "
     "(in mysql://u:***@db/volchain); "
     "volchain needs PostgreSQL through psycopg: postgresql+psycopg://user@host/db"),
    (["serve"], {"database_url": "postgresql://u@db/volchain"}, "unsupported database postgresql://"),
    (["api"], {"database_url": "not a url"},
     "volchain: error: invalid settings: VOLCHAIN_DATABASE_URL: not a database URL"),
    (["demo"], {"broker_url": "amqp://guest:secret@rabbit//"},
     "volchain: error: invalid settings: VOLCHAIN_BROKER_URL: unsupported broker amqp://guest:**@rabbit//; "
     "volchain needs Redis"),
    (["token", "issue", "--project", "ab", "--user", "u"], {"broker_url": "nonsense"},
     "VOLCHAIN_BROKER_URL: unsupported broker nonsense"),
])
def test_a_bad_setting_or_server_url_is_one_line_and_exit_2_before_anything_starts(tmp_path, args, settings,
                                                                                   fragment):
    assert_one_line_error(volchain(*args, env=no_servers_env(**settings), cwd=tmp_path), fragment)
    assert list(tmp_path.iterdir()) == []  # no data directory, nothing started


@pytest.mark.parametrize("args, fragment", [
    (["status", "--frobnicate"], "volchain: error: unrecognized arguments: --frobnicate"),
    ([], "volchain: error: the following arguments are required: COMMAND"),
    (["serve", "--port", "70000"], "volchain serve: error: argument --port: expected a port from 1 to 65535, got 70000"),
    (["serve", "--port", "http"], "argument --port: expected a positive integer, got 'http'"),
    (["serve", "--concurrency", "0"], "argument --concurrency/-c: expected a positive integer, got 0"),
    (["api", "--port", "0"], "volchain api: error: argument --port: expected a positive integer, got 0"),
    (["status", "--timeout", "-1"], "volchain status: error: argument --timeout: expected a number >= 0, got -1"),
    (["create", "--project", "p", "--count", "0"], "argument --count: expected a positive integer, got 0"),
    (["create", "--project", "p", "--count", "many"], "argument --count: expected a positive integer, got 'many'"),
    (["token", "issue", "--project", "p", "--user", "u", "--role", "god"], "argument --role: invalid choice: 'god'"),
])
def test_a_bad_argument_is_one_line_and_exit_2(tmp_path, args, fragment):
    assert_one_line_error(volchain(*args, env=no_servers_env(), cwd=tmp_path), fragment)
    assert list(tmp_path.iterdir()) == []


def test_count_with_an_idempotency_key_is_refused(database_url, redis_client):
    assert_one_line_error(volchain("create", "--project", "p", "--size", "1", "--count", "2",
                                   "--idempotency-key", "k"),
                          "volchain create: error: --idempotency-key names one create; leave it out with --count")


def test_json_output_of_the_commands_that_lacked_it_parses(db, database_url, redis_client):
    project, host = uuid.uuid4().hex, f"habits-{uuid.uuid4().hex[:8]}@file"
    issued = ok_json("token", "issue", "--project", project, "--user", "u1", "--role", "reader", "--ttl", "60")
    assert (issued["project_id"], issued["user_id"], issued["role"]) == (project, "u1", "reader")
    assert issued["token"].startswith("vc1.") and issued["expires_at"] > 0
    from api.auth import TokenSigner, database_secret  # the token is a real one

    with db() as session:
        identity = TokenSigner(database_secret(session)).verify(issued["token"])
    assert (identity.project_id, identity.user_id) == (project, "u1")

    assert ok_json("service", "add", "--host", host, "--availability-zone", "habits") == {
        "host": host, "binary": "cinder-volume", "availability_zone": "habits"}
    [listed] = [s for s in ok_json("service", "list") if s["host"] == host]
    assert (listed["binary"], listed["availability_zone"], listed["disabled"]) == ("cinder-volume", "habits", False)
    assert ok_json("quota", "set", "--project", project, "volumes=3") == {
        "project": project, "class": None, "limits": {"volumes": 3}}
    upgraded = ok_json("db", "upgrade")
    assert upgraded["database"] == database_url and len(upgraded["revision"]) > 0


def test_status_shows_workers_queue_depths_flows_and_services(workers, project, redis_client):
    before = ok_json("status")
    names = {w["name"] for w in before["workers"] if w["name"].startswith("test-")}
    assert len(names) >= 2, before["workers"]  # the session's two workers
    for worker in (w for w in before["workers"] if w["name"] in names):
        assert worker["queues"] == ["volchain.compensate", "volchain.steps"]
        assert (worker["pool"], worker["concurrency"]) == ("prefork", 2)
    assert {"volchain.steps", "volchain.compensate", "scheduler"} <= set(before["queues"])
    assert set(before["flows"]) == {"running", "succeeded", "compensating", "reverted", "needs_attention"}

    # One create, cast to the scheduler queue nobody consumes in this session: one more message waits there.
    ok("create", "--project", project, "--size", "1", "--wait")
    after = ok_json("status")
    assert after["queues"]["scheduler"] == before["queues"]["scheduler"] + 1
    assert after["flows"]["succeeded"] == before["flows"]["succeeded"] + 1

    text = ok("status").stdout
    assert [line for line in text.splitlines() if line in ("workers", "queues", "flows", "services")] == [
        "workers", "queues", "flows", "services"]
    rows = [line.split() for line in text.splitlines()]
    assert ["scheduler", str(after["queues"]["scheduler"])] in rows
    assert ["succeeded", str(after["flows"]["succeeded"])] in rows


def test_status_on_the_embedded_servers_says_there_is_no_worker_to_ask(tmp_path):
    proc = ok("status", env=no_servers_env(), cwd=tmp_path)
    assert "workers\nnone: the broker memory://localhost/ lives inside this command" in proc.stdout
    assert proc.stderr == (f"volchain: no VOLCHAIN_DATABASE_URL: embedded PostgreSQL in {tmp_path / 'volchain-data'} "
                           "(database volchain), broker memory://localhost/ in this process\n")


def test_create_count_prints_a_line_per_volume_off_a_terminal_and_a_summary(tmp_path):
    env = no_servers_env()  # embedded: a worker thread runs the chain, no volume service makes volumes available
    ok("quota", "set", "--project", "counted", "volumes=3", env=env, cwd=tmp_path)
    proc = volchain("create", "--project", "counted", "--size", "1", "--name", "many", "--count", "4",
                    env=env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the fourth is over quota
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("create ")]
    assert sorted(line.split()[1] for line in lines) == ["1/4", "2/4", "3/4", "4/4"]
    assert sum(line.endswith("  handed on") for line in lines) == 3
    assert sum("failed: VolumeLimitExceeded: Maximum number of volumes allowed (3) exceeded" in line
               for line in lines) == 1
    assert proc.stdout.startswith("4 creates in ")
    assert proc.stdout.rstrip().endswith(": 0 available, 1 failed, 3 handed on (no volume service is up to make "
                                         "them available)")
    listed = ok_json("volume", "list", "--project", "counted", env=env, cwd=tmp_path)
    assert len(listed) == 3 and {v["name"] for v in listed} < {"many-1", "many-2", "many-3", "many-4"}


def test_create_count_draws_a_progress_bar_on_a_terminal(tmp_path):
    main, other = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "cli.main", "create", "--project", "bar", "--size", "1",
                               "--count", "3", "--json"], env=no_servers_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=other, stdin=subprocess.DEVNULL, text=True, timeout=90)
        os.close(other)
        drawn = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the terminal closed
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(main)
    assert proc.returncode == 0, drawn
    summary = json.loads(proc.stdout)
    assert (summary["count"], summary["handed_on"], summary["failed"], summary["waited_for_available"]) == (
        3, 3, 0, False)
    screen = drawn.decode()
    assert "\r[##############################] 3/3  3 handed on" in screen, screen
    assert "create 1/3" not in screen  # no plain lines on a terminal
    assert "Traceback" not in screen
