"""Output: aligned plain-text tables, JSON, and progress on stderr."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any, Iterable, Sequence, TextIO


def timestamp(value: datetime | None) -> str:
    return value.isoformat(sep=" ", timespec="milliseconds") if value else "-"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "-"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    cells = [list(headers)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join([c.ljust(w) for c, w in zip(row[:-1], widths)] + row[-1:]) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """`name  value` lines, names aligned."""
    width = max(len(name) for name, _ in pairs)
    return "\n".join(f"{name.ljust(width)}  {_cell(value)}" for name, value in pairs)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=_default)


class Progress:
    """How far N things are: on a terminal one line redrawn in place (a bar, the count, what the
    caller adds, the seconds so far); elsewhere (a pipe, a file) one plain line per thing done."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()

    def update(self, done: int, counts: str, lines: Iterable[str] = ()) -> None:
        """`done` of `total` so far, `counts` beside the bar; `lines` say what was just done (off a terminal)."""
        if self.tty:
            filled = self.WIDTH * done // max(self.total, 1)
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{self.total}  {counts}  "
                              f"{time.monotonic() - self.started:.1f} s\x1b[K")
        else:
            for line in lines:
                self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
