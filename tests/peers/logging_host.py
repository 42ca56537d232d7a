"""A host embedding a sidecar: starts it, hosts an object, uses it, stops. How it logs is argv[1]:

- ``none``: configures nothing; must print nothing at all;
- ``structlog``: configures structlog (to stdout) for itself; prints its own line only, and its
  structlog configuration is the same object afterwards;
- ``basic``: ``logging.basicConfig(level=INFO)``; prints, as one JSON line, what its handler received.

Warnings are provoked on purpose (a query handler and a subscription callback that raise, vendor code
logging a warning in the worker, a teardown that fails), since the logging module's "last resort"
prints unhandled warnings to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from boss_sidecar import Sidecar, drop
from boss_sidecar.testing import peer_config, wait_until


class Keep(logging.Handler):
    """Every record, with the fields boss-sidecar gives its records."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", {})
        kept = {"origin": fields.get("logger"), "logger": record.name, "level": record.levelname}
        kept["event"] = getattr(record, "event", None)
        kept.update({name: getattr(record, name, None) for name in ("sidecar", "worker_pid", "incarnation", "hero")})
        self.records.append(kept)


def embed() -> int:
    """The host's work; returns the worker's pid."""
    raised: list[str] = []

    def broken_handler(_query: Any) -> str:
        raise RuntimeError("handler broke")

    def broken_callback(sample: Any) -> None:
        raised.append(sample.key_expr)
        raise RuntimeError("callback broke")

    with Sidecar("embedded", peer_config()) as sidecar:
        instrument = sidecar.host("sidecar_objects:Instrument")
        pid: int = instrument.chatter("hello")
        sidecar.subscribe("embedded/data", broken_callback)
        sidecar.queryable("embedded/q", broken_handler)
        assert [reply.ok for reply in sidecar.get("embedded/q")] == [False]
        sidecar.put("embedded/data", b"1")
        wait_until(lambda: raised, 20, "the callback ran")
        drop(instrument)
    return pid


def print_records(embed: Callable[[], int]) -> None:
    """Under ``logging.basicConfig(level=INFO)``: run ``embed``, print its pid and every record as JSON."""
    logging.basicConfig(level=logging.INFO)
    keep = Keep()
    logging.getLogger().addHandler(keep)
    pid = embed()
    print(json.dumps({"pid": pid, "records": keep.records}, default=repr), flush=True)


def main() -> None:
    mode = sys.argv[1]
    if mode == "none":
        embed()
    elif mode == "structlog":
        import structlog

        structlog.configure(
            processors=[structlog.processors.JSONRenderer()], logger_factory=structlog.PrintLoggerFactory()
        )
        before = structlog.get_config()
        structlog.get_logger().info("host line")
        embed()
        assert structlog.get_config() == before, "the host's structlog configuration changed"
    else:
        print_records(embed)


if __name__ == "__main__":
    main()
