"""Logging for the launcher: readable lines for a person, one JSON object per line for machines.

Everything boss-sidecar logs goes through structlog, and so do the worker records re-emitted by
``Sidecar._emit_worker_logs`` (bound with sidecar, worker_pid and incarnation). Records of
libraries that use the ``logging`` module are routed into the same output.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

from boss_sidecar.policy import LOG_LEVELS

LOG_FORMATS = ("console", "json")


class _ToStructlog(logging.Handler):
    """A ``logging`` handler that hands records to structlog, so one renderer formats everything."""

    def emit(self, record: logging.LogRecord) -> None:
        log = structlog.get_logger().bind(logger=record.name)
        method = getattr(log, record.levelname.lower(), log.info)
        method(record.getMessage(), exc_info=record.exc_info or None)


def configure_logging(level: str = "info", fmt: str = "console", stream: TextIO | None = None) -> None:
    """Configure structlog (and the root logger) for ``level`` and ``fmt``: "console" or "json"."""
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
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            *exceptions,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(output),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers = [_ToStructlog()]
    root.setLevel(level.upper())
