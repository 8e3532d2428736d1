"""How volchain's processes log: text lines, or JSON lines with VOLCHAIN_LOG_FORMAT=json."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, and the traceback
    when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: int) -> None:
    """The root logger's one handler (stderr) at `level`, in VOLCHAIN_LOG_FORMAT (text when the
    settings cannot be read: the command reports why on its own)."""
    from pydantic import ValidationError

    from workers.settings import get_settings

    try:
        json_lines = get_settings().log_format == "json"
    except ValidationError:
        json_lines = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if json_lines else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
