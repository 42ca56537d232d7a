"""Logging: a library's records through stdlib ``logging``; the command's console and JSON lines.

boss-sidecar is a guest in its host's process. Its modules log with ``get_logger(name)``: structlog's
stdlib ``BoundLogger`` on a ``boss_sidecar.*`` logger, built here with its own processors, so a
host's structlog configuration neither changes our records nor is changed by us. Each record carries
its fields (``sidecar``, ``worker_pid``, ``incarnation``, ...) as attributes, all of them in
``record.fields`` and the bare event text in ``record.event``; its message reads ``event key=value ...``
for a plain ``logging.basicConfig`` host. The package logger has a ``NullHandler``: a host that
configures no logging sees nothing (no "last resort" output on stderr).

``configure_logging`` is for the ``boss-sidecar`` command only: it puts one handler on the root
logger that renders every record, ours and other libraries', as a readable line or a JSON object.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("console", "json")
PACKAGE_LOGGER = "boss_sidecar"
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "event", "fields"}
"""Names a field cannot take as a record attribute (``makeRecord`` refuses most of them); such a
field is still in ``record.fields``."""

logging.getLogger(PACKAGE_LOGGER).addHandler(logging.NullHandler())

Logger = structlog.stdlib.BoundLogger


def _text(value: Any) -> str:
    text = str(value)
    return repr(text) if not text or any(char.isspace() for char in text) else text


def _to_logging(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """structlog's last processor: the keyword arguments of a ``logging.Logger`` call."""
    event = str(event_dict.pop("event", ""))
    exc_info = event_dict.pop("exc_info", None)
    fields = dict(event_dict)
    extra = {key: value for key, value in fields.items() if key not in _RESERVED}
    extra.update(event=event, fields=fields)
    traceback = fields.get("exception")  # a worker's traceback, as text: on lines of its own
    shown = {key: value for key, value in fields.items() if key != "exception" or not isinstance(value, str)}
    suffix = " ".join(f"{key}={_text(value)}" for key, value in shown.items())
    message = f"{event} {suffix}" if suffix else event
    if isinstance(traceback, str):
        message = f"{message}\n{traceback.rstrip()}"
    return {"msg": message, "extra": extra, "exc_info": exc_info}


def get_logger(name: str) -> Logger:
    """A ``boss_sidecar.*`` logger taking structured fields: ``log.info("event", key=value)``."""
    if not name.startswith(PACKAGE_LOGGER):
        raise ValueError(f"boss-sidecar logs under {PACKAGE_LOGGER!r} only, got {name!r}")
    return structlog.stdlib.BoundLogger(
        logging.getLogger(name), [structlog.stdlib.filter_by_level, _to_logging], context={}
    )


def record_fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
    """The event text and fields of a record: ours as logged, another library's as its message."""
    fields = getattr(record, "fields", None)
    event = getattr(record, "event", None)
    if isinstance(fields, dict) and isinstance(event, str):
        return event, dict(fields)
    return record.getMessage(), {}


def _from_record(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """ProcessorFormatter's first step: the event and fields back out of a record, and its logger."""
    record: logging.LogRecord = event_dict["_record"]
    event, fields = record_fields(record)
    fields.setdefault("logger", record.name)
    event_dict.update(fields)
    event_dict["event"] = event
    return event_dict


def configure_logging(level: str = "info", fmt: str = "console", stream: TextIO | None = None) -> None:
    """The command's output: every record on ``stream`` (stderr), "console" lines or "json" objects."""
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    output = sys.stderr if stream is None else stream
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        exceptions: list[Any] = [structlog.processors.dict_tracebacks]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=output.isatty())
        exceptions = []
    handler = logging.StreamHandler(output)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                _from_record,
                structlog.stdlib.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.StackInfoRenderer(),
                *exceptions,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
