"""The wire form of sample runs: columns collapse to one value when alike, and unpack to Samples."""

from __future__ import annotations

import dataclasses

import pytest

from boss_sidecar.samples import Sample, column, samples_of


def test_a_column_of_equal_values_is_that_value_and_of_differing_values_the_list() -> None:
    assert column(["k", "k", "k"]) == "k"
    assert column([None, None]) is None
    assert column(["a", "b", "a"]) == ["a", "b", "a"]
    assert column([None, b"x"]) == [None, b"x"]


def test_a_run_unpacks_to_the_samples_it_was_made_of() -> None:
    originals = [
        Sample("k/1", b"one", "put", "text/plain", None, b"meta"),
        Sample("k/2", b"", "delete", "zenoh/bytes", "7a@1", None),
        Sample("k/1", b"three", "put", "zenoh/bytes", None, None),
    ]
    fields = [[getattr(sample, field.name) for sample in originals] for field in dataclasses.fields(Sample)]
    run = (4, column(fields[0]), fields[1], *(column(values) for values in fields[2:]))
    assert samples_of(run) == originals


def test_a_run_of_alike_samples_shares_everything_but_the_payload() -> None:
    run = (4, "k", [b"a", b"b"], "put", "zenoh/bytes", None, None)
    assert samples_of(run) == [Sample("k", b"a"), Sample("k", b"b")]


def test_unpacked_samples_stay_frozen() -> None:
    (sample,) = samples_of((1, "k", [b"a"], "put", "zenoh/bytes", None, None))
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.payload = b"changed"  # type: ignore[misc]
