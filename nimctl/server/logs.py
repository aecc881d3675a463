"""Logging set-up from ``NIM_LOG_LEVEL`` and ``NIM_JSONL_LOGGING``.

JSONL lines carry NIM's keys: ``level``, ``time``, ``file_name``, ``line_number``, ``message``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonlFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return json.dumps(
            {
                "level": record.levelname,
                "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "file_name": record.pathname,
                "line_number": record.lineno,
                "message": message,
            }
        )


def configure_logging(level: str, jsonl: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonlFormatter() if jsonl else logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Access lines for every proxied request drown the rest; keep them for DEBUG.
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    logging.getLogger("uvicorn.access").setLevel(quiet)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
