"""Structured logs: one JSON object per line, with the request id and principal of the request
being served. Only what the code passes explicitly is logged: never bodies, so never templates,
probes or identity attributes."""

from __future__ import annotations

import contextvars
import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
principal_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("principal_id", default=None)


_base_factory = logging.getLogRecordFactory()


def _record_with_context(*args: object, **kwargs: object) -> logging.LogRecord:
    """Stamp every record, when it is made, with the request it belongs to (formatting may
    happen later, in another context)."""
    record = _base_factory(*args, **kwargs)
    record.request_id = request_id.get()
    record.principal_id = principal_id.get()
    return record


logging.setLogRecordFactory(_record_with_context)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which of a node's processes
        }
        if (rid := getattr(record, "request_id", None)) is not None:
            entry["request_id"] = rid
        if (pid := getattr(record, "principal_id", None)) is not None:
            entry["principal_id"] = pid
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            entry.update(event)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """The service's logging, as :func:`logging.config.dictConfig` takes it: JSON lines on
    standard output, uvicorn's own lines among them, its access lines off (ours carry the
    request id and principal). Given to uvicorn, which applies it in every process it starts:
    the processes of ``serve --processes N`` are new interpreters, and the supervisor's own
    configuration never reached them (their requests were not logged at all)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},  # names: a worker unpickles them
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
            "alembic": {"level": "WARNING"},  # /readyz checks the revision on every call
        },
    }


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(level))
