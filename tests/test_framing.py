"""The frame reader splits a byte stream into Connection messages, however the bytes arrive."""

from __future__ import annotations

import os
import select
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boss_sidecar._framing import _READ_BUFFER, _ChannelEnded, _FrameReader, _header, _Oversized

LIMIT = 2 * _READ_BUFFER  # sizes go past the read buffer (gathered) and past the limit (read past)
_PIECE = 60_000  # at most this much is written at once: less than a pipe holds


def _read_all(stream: bytes, pieces: list[int]) -> list[bytes | _Oversized]:
    """Write ``stream`` to a pipe in pieces of those sizes, calling ``batch`` while anything is readable."""
    ours, theirs = os.pipe()
    reader = _FrameReader(ours, LIMIT)
    poll = select.poll()
    poll.register(ours, select.POLLIN)
    got: list[bytes | _Oversized] = []
    try:
        at = 0
        sizes = iter(pieces)
        while at < len(stream):
            piece = min(next(sizes, _PIECE), len(stream) - at)
            os.write(theirs, stream[at : at + piece])  # a piece fits in the pipe, which the reader empties
            at += piece
            while poll.poll(0):
                got += [frame if isinstance(frame, _Oversized) else bytes(frame) for frame in reader.batch()]
        os.close(theirs)
        with pytest.raises(_ChannelEnded, match="peer closed the channel"):
            reader.batch()
    finally:
        os.close(ours)
    return got


def _message(size: int, mark: int) -> bytes:
    return bytes([mark % 251]) * size


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(
        st.one_of(
            st.integers(0, 300),
            st.integers(_READ_BUFFER - 8, _READ_BUFFER + 8),
            st.integers(LIMIT - 2, LIMIT + 2),
        ),
        min_size=1,
        max_size=6,
    ),
    pieces=st.lists(st.integers(1, _PIECE), max_size=40),
)
def test_messages_come_out_whole_and_in_order_however_the_bytes_arrive(sizes: list[int], pieces: list[int]) -> None:
    """Small, larger-than-buffer and over-limit messages, split at any point, come out as sent."""
    messages = [_message(size, mark) for mark, size in enumerate(sizes)]
    stream = b"".join(_header(len(message)) + message for message in messages)
    got = _read_all(stream, pieces)
    expected: list[bytes | _Oversized] = [
        message if len(message) <= LIMIT else _Oversized(len(message), message[:4096]) for message in messages
    ]
    assert got == expected


def test_a_stream_ending_inside_a_large_message_says_so() -> None:
    ours, theirs = os.pipe()
    reader = _FrameReader(ours, LIMIT)
    try:
        os.write(theirs, _header(_READ_BUFFER + 10) + b"x" * 100)
        assert reader.batch() == []
        os.close(theirs)
        with pytest.raises(_ChannelEnded, match=f"middle of a message of {_READ_BUFFER + 10} bytes"):
            reader.batch()
    finally:
        os.close(ours)


def test_a_negative_length_is_a_corrupt_stream() -> None:
    ours, theirs = os.pipe()
    try:
        os.write(theirs, struct.pack("!i", -5))
        with pytest.raises(Exception, match="bad message length -5"):
            _FrameReader(ours, LIMIT).batch()
    finally:
        os.close(ours)
        os.close(theirs)


def test_the_long_header_of_connection_is_read_and_written() -> None:
    """Connection frames a message of 2 GiB or more as -1 and an 8-byte length; a BOSS peer may send
    one, so the reader takes that header (here on small messages, split anywhere) as the short one."""
    long_framed = [struct.pack("!iQ", -1, len(message)) + message for message in (b"hello", b"", b"x" * 70_000)]
    stream = b"".join(long_framed) + _header(3) + b"end"
    assert _read_all(stream, [1, 5, 7, 12, 60_000]) == [b"hello", b"", b"x" * 70_000, b"end"]
    assert _header(2**31) == struct.pack("!iQ", -1, 2**31)
    assert _header(2**31 - 1) == struct.pack("!i", 2**31 - 1)
