"""CPU accounting from /proc for the benchmarks (Linux; the functions return None elsewhere)."""

from __future__ import annotations

import os

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
