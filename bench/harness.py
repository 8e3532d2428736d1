"""What the benchmarks share: logging, errors and their entry point, percentiles, their own
database and Redis db, the processes they start, and CPU accounting from /proc (Linux; those
functions return None elsewhere)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from workers.embedded import free_port  # noqa: F401  (the benches, the stack and the tests take it from here)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A run could not be measured (servers missing, processes silent, creates stuck)."""


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def check_redis(r, url: str, our_keys: tuple[str, ...]) -> None:
    """Refuse a Redis db that holds anything but this bench's keys (it is emptied before and after)."""
    try:
        r.ping()
    except Exception as exc:
        raise BenchError(f"Redis is not reachable at {url}: {exc}") from exc
    keys = [k.decode(errors="replace") for k in r.scan_iter(count=1000)]
    foreign = [k for k in keys if not k.startswith(our_keys) and "celery.pidbox" not in k]
    if foreign:
        raise BenchError(f"Redis db {url} holds keys that are not the bench's (e.g. {foreign[:3]}); "
                         "it is emptied before and after a run, so give the bench a db of its own (--redis)")


def run_main(main) -> None:
    """A bench's entry point: exit with main()'s code; a BenchError is one FAILED line (exit 2),
    Ctrl-C exit 130."""
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"FAILED: {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log (empty if it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop_worker(proc: subprocess.Popen) -> None:
    """Stop a process started in a session of its own: SIGTERM (a Celery worker's warm shutdown
    takes its pool children with it), then SIGKILL to its whole session after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the process's own session: it and its pool only
            proc.wait(timeout=10)


@dataclass
class ProcessGroups:
    """A bench's volchain processes by group (`python -m cli.main ARGV`, each in a session of its
    own, so a Ctrl-C reaches only the bench, which then stops them), with their logs."""

    procs: dict[str, list[subprocess.Popen]] = field(default_factory=dict, kw_only=True)
    logs: list[Path] = field(default_factory=list, kw_only=True)

    def launch(self, group: str, log_path: Path, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.logs.append(log_path)
        with open(log_path, "ab") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "cli.main", *argv], cwd=cwd, env=env,
                                    stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.setdefault(group, []).append(proc)

    def pids(self, group: str) -> list[int]:
        return [p.pid for p in self.procs.get(group, [])]

    def check_alive(self, who: str = "") -> None:
        dead = [(group, p.pid, p.returncode) for group, procs in self.procs.items() for p in procs
                if p.poll() is not None]
        if dead:
            raise BenchError(f"{who}process(es) exited: {dead}\n{self.log_tails()}")

    def log_tails(self) -> str:
        return "\n".join(f"--- {path.name}\n{tail(path, 15)}" for path in self.logs)

    def stop(self) -> None:
        for procs in self.procs.values():
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)  # all at once: their warm shutdowns overlap
        for procs in self.procs.values():
            for proc in procs:
                stop_worker(proc)  # waits; kills the process's own session if it does not stop


def create_database(pg: str) -> tuple[str, object]:
    """A new, empty database `volchain_bench_<random>`; returns its name and an admin engine."""
    from sqlalchemy import create_engine, text

    name = f"volchain_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(f"{pg}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        raise BenchError(f"PostgreSQL is not reachable at {pg}: {exc}") from exc
    return name, admin


def drop_database(admin, name: str) -> None:
    from sqlalchemy import text

    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()

_CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime+stime seconds) of one process, or None if it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2:].split()
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / _CLK


def tree_cpu(roots: list[int]) -> dict[int, float] | None:
    """CPU seconds of each process in the trees under `roots` (a worker and its pool children)."""
    if not roots or not os.path.isdir("/proc"):
        return None
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
    out, todo = {}, list(roots)
    while todo:
        pid = todo.pop()
        st = _stat(pid)
        if st is not None:
            out[pid] = st[1]
        todo.extend(children.get(pid, []))
    return out


def pg_cpu(pids: list[int]) -> dict[int, float] | None:
    """CPU seconds of local PostgreSQL backends (None when the server is not on this machine)."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as fh:
                if not fh.read().startswith("postgres"):
                    continue
        except OSError:
            continue
        st = _stat(pid)
        if st is not None:
            out[pid] = st[1]
    return out or None


def cpu_delta(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    """CPU spent between two samples; a process that appeared meanwhile counts in full."""
    if before is None or after is None:
        return None
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())
