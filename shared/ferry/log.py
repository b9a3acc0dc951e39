"""Structured logs in the JSON-lines shape Cloud Logging parses from Cloud Functions' stdout.

One line per entry with ``severity``, ``message``, ``logging.googleapis.com/labels`` (workflow,
parameter, execution, endpoint, event_type...) and ``logging.googleapis.com/trace`` when the request
carried one, so one filter finds every line of one workflow instance.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("ferry_trace", default=None)
_labels: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("ferry_labels", default={})  # noqa: B039

# The levels ``event`` takes (the standard library's, by name).
DEBUG, INFO, WARNING, ERROR, CRITICAL = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL

LABELS_KEY = "logging.googleapis.com/labels"
TRACE_KEY = "logging.googleapis.com/trace"


def set_trace(header: str | None, project: str) -> None:
    """Take the trace id from an ``X-Cloud-Trace-Context: TRACE/SPAN;o=1`` header."""
    if header:
        _trace.set(f"projects/{project}/traces/{header.split('/')[0]}")
    else:
        _trace.set(None)


def bind(**labels: Any) -> contextvars.Token[dict[str, str]]:
    """Add labels to every entry logged in this context (returns a token for ``unbind``)."""
    merged = {**_labels.get(), **{k: str(v) for k, v in labels.items() if v is not None}}
    return _labels.set(merged)


def unbind(token: contextvars.Token[dict[str, str]]) -> None:
    _labels.reset(token)


class CloudLoggingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname if record.levelname != "WARN" else "WARNING",
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        labels = {**_labels.get(), **{k: str(v) for k, v in (getattr(record, "labels", None) or {}).items()}}
        if labels:
            entry[LABELS_KEY] = labels
        trace = _trace.get()
        if trace:
            entry[TRACE_KEY] = trace
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: int = logging.INFO, stream: Any = None) -> None:
    root = logging.getLogger("ferry")
    if any(isinstance(h.formatter, CloudLoggingFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(CloudLoggingFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"ferry.{name}" if not name.startswith("ferry") else name)


def event(logger: logging.Logger, level: int, message: str, labels: dict[str, Any] | None = None, **fields: Any) -> None:
    """Log one structured entry: ``labels`` become Cloud Logging labels, ``fields`` top-level keys."""
    logger.log(level, message, extra={"labels": labels or {}, "fields": fields})


def peak_rss_mb() -> float:
    """This process's own peak RSS. Not ``ru_maxrss``: on Linux that keeps the high-water mark of the image
    it was exec'd from (the parent's, after a fork or vfork), so it can report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
