"""zenoh's values in the plain form that crosses the channel, and the host's plain options as zenoh's.

The host never imports zenoh: samples travel as columnar runs, queries as tuples of fields, zenoh's
errors as ``ZenohError`` carrying zenoh's text; QoS options come as names ("block", "data", ...).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zenoh

from boss_sidecar.errors import ZenohError
from boss_sidecar.logs import get_logger
from boss_sidecar.samples import SampleRun, column
from boss_sidecar.worker.forward import spans

_log = get_logger("boss_sidecar.worker")

MAX_RUN = 512
"""Samples a drain thread takes from its channel at once."""
_CONGESTION = {"drop": "DROP", "block": "BLOCK", "block_first": "BLOCK_FIRST"}
_TARGETS = {"best_matching": "BEST_MATCHING", "all": "ALL", "all_complete": "ALL_COMPLETE"}
_PRIORITIES = {
    name.lower(): name
    for name in ("REAL_TIME", "INTERACTIVE_HIGH", "INTERACTIVE_LOW", "DATA_HIGH", "DATA", "DATA_LOW", "BACKGROUND")
}


def _zenoh_enum(enum: Any, table: dict[str, str], value: object, what: str) -> Any:
    # zenoh's enums are PyO3 classes without __members__: the table names the choices.
    name = table.get(value.lower()) if isinstance(value, str) else None
    if name is None or not hasattr(enum, name):
        raise ValueError(f"{what} must be one of {sorted(table)}, got {value!r}")
    return getattr(enum, name)


def qos(options: dict[str, Any] | None) -> dict[str, Any]:
    """zenoh keyword arguments from the plain options the host sends."""
    if not options:
        return {}
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key == "congestion_control":
            kwargs[key] = _zenoh_enum(zenoh.CongestionControl, _CONGESTION, value, key)
        elif key == "priority":
            kwargs[key] = _zenoh_enum(zenoh.Priority, _PRIORITIES, value, key)
        elif key == "target":
            kwargs[key] = _zenoh_enum(zenoh.QueryTarget, _TARGETS, value, key)
        elif key in ("encoding", "express", "attachment", "payload", "timeout"):
            kwargs[key] = value
        else:
            raise ValueError(f"unknown option {key!r}")
    return kwargs


def zenoh_call(what: str, function: Callable[[], Any]) -> Any:
    """Run a zenoh operation, turning zenoh's errors into ones the host can unpickle."""
    try:
        return function()
    except zenoh.ZError as exc:
        raise ZenohError(f"{what}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ZenohError(f"{what}: {exc}") from None


_PUT = zenoh.SampleKind.PUT


def sample_runs(decl_id: int, samples: list[Any]) -> list[SampleRun]:
    """``samples`` (of one declaration) as runs for the host, each of at most MAX_MESSAGE_BYTES of payload
    (or one sample), so the forwarder can keep messages small."""
    payloads = [sample.payload.to_bytes() for sample in samples]
    runs: list[SampleRun] = []
    for start, end in spans(list(map(len, payloads))):
        part = samples[start:end]
        timestamps = [sample.timestamp for sample in part]
        attachments = [sample.attachment for sample in part]
        runs.append(
            (
                decl_id,
                column([str(sample.key_expr) for sample in part]),
                payloads[start:end],
                column(["put" if sample.kind == _PUT else "delete" for sample in part]),
                column([str(sample.encoding) for sample in part]),
                column([None if stamp is None else str(stamp) for stamp in timestamps]),
                column([None if extra is None else extra.to_bytes() for extra in attachments]),
            )
        )
    return runs


def convert_samples(decl_id: int, samples: list[Any]) -> list[SampleRun]:
    """``sample_runs``; should that fail, each sample alone, one that cannot be converted logged and left out."""
    try:
        return sample_runs(decl_id, samples)
    except Exception:
        runs: list[SampleRun] = []
        for sample in samples:
            try:
                runs += sample_runs(decl_id, [sample])
            except Exception:
                _log.exception("could not convert sample for the host", decl_id=decl_id)
        return runs


def take_runs(decl_id: int, channel: Any) -> list[SampleRun]:
    """The samples waiting in a subscriber's channel (waiting for one if none), converted at once.

    Converted here rather than on the forwarder's thread, and the zenoh samples let go when this
    returns: a sample holds zenoh's buffer, which may be the publisher's shared memory. A publisher on
    this machine puts large payloads in a pool of its own (16 MiB by default) when it can, and sends
    them through the socket (at several times the CPU cost, on both sides) when the pool is taken up.
    Samples waiting for the forwarder used to hold the whole pool: measured with 64 KiB samples, the
    peer's CPU per sample went from about 35 to 20 us."""
    samples = [channel.recv()]
    while len(samples) < MAX_RUN and (sample := channel.try_recv()) is not None:
        samples.append(sample)
    return convert_samples(decl_id, samples)


def query_fields(query: Any) -> tuple[str, str, str, bytes | None, str | None, bytes | None]:
    payload, encoding, attachment = query.payload, query.encoding, query.attachment
    return (
        str(query.selector),
        str(query.key_expr),
        str(query.parameters),
        None if payload is None else payload.to_bytes(),
        None if encoding is None else str(encoding),
        None if attachment is None else attachment.to_bytes(),
    )


__all__ = ["MAX_RUN", "convert_samples", "qos", "query_fields", "sample_runs", "take_runs", "zenoh_call"]
