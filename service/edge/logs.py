"""Process-wide logging: one JSON object per line (or plain text), ids only, never payloads.

Log records may carry `extra` fields; only the ids in `ID_FIELDS` are written. Anything else
a caller (or a library) attaches, a payload above all, is dropped by construction rather
than by remembering not to log it.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["ID_FIELDS", "JsonFormatter", "configure_logging"]

ID_FIELDS = (
    "step_id",
    "run_id",
    "source_id",
    "consumer",
    "group",
    "stream",
    "channel",  # FastStream's log context: the stream a message came from
    "message_id",  # FastStream's log context: the first entry id of a batch
)
"""The `extra` fields a log line may carry: identifiers, nothing with content."""

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: ts, level, logger, message, ids, exception."""

    def __init__(self, static: dict[str, str] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        """One line of JSON; `extra` fields outside `ID_FIELDS` are never written."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self.static,
        }
        for name in ID_FIELDS:
            value = record.__dict__.get(name)
            if value not in (None, ""):
                line[name] = value.decode(errors="replace") if isinstance(value, bytes) else value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Send every logger's records to one handler on `stream` (stderr) in the chosen format.

    Idempotent: replaces the root handlers. Libraries that bring their own handlers
    (FastStream's default logger, uvicorn when given a log config) are made to propagate
    to the root instead, so every line has the same format.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter({"consumer": settings.consumer}))
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in ("faststream", "faststream.access", "uvicorn", "uvicorn.error", "uvicorn.access"):
        lib = logging.getLogger(name)
        for old in list(lib.handlers):
            lib.removeHandler(old)
        lib.propagate = True
    # A line per HTTP request (probes, scrapes) is noise; RUNSTEPS_HTTP_ACCESS_LOG turns it on.
    logging.getLogger("uvicorn.access").disabled = not settings.http_access_log
    return handler
