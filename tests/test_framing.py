"""Sans-IO TCP framers: messages split correctly and limits hold before memory is spent."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tx_swoole.errors import FrameTooLargeError, FramingError
from tx_swoole.protocols._framing import EOFFramer, LengthFramer, make_framer
from tx_swoole.settings import make_settings


def feed_bytewise(framer: object, data: bytes) -> list[bytes]:
    out: list[bytes] = []
    for i in range(len(data)):
        out += framer.feed(data[i : i + 1])  # type: ignore[attr-defined]
    return out


def test_eof_split_across_and_within_chunks() -> None:
    """EOF framing yields whole messages however the bytes arrive."""
    data = b"one\r\ntwo\r\nthree\r\n"
    assert EOFFramer(b"\r\n", 100).feed(data) == [b"one\r\n", b"two\r\n", b"three\r\n"]
    assert feed_bytewise(EOFFramer(b"\r\n", 100), data) == [b"one\r\n", b"two\r\n", b"three\r\n"]
    f = EOFFramer(b"\r\n", 100)
    assert f.feed(b"par") == [] and f.feed(b"tial\r") == [] and f.feed(b"\nx") == [b"partial\r\n"]


@pytest.mark.parametrize(("size", "ok"), [(9, True), (10, True), (11, False)])
def test_eof_limit_at_n_and_n_plus_1(size: int, ok: bool) -> None:
    """A message of exactly package_max_length passes; one byte more is refused."""
    message = b"x" * (size - 2) + b"\r\n"
    f = EOFFramer(b"\r\n", 10)
    if ok:
        assert f.feed(message) == [message]
    else:
        with pytest.raises(FrameTooLargeError, match="11 bytes exceeds package_max_length=10"):
            f.feed(message)


def test_eof_unterminated_buffer_refused_when_it_reaches_limit() -> None:
    """An EOF buffer that reaches the limit without an EOF is refused; nothing more is kept."""
    f = EOFFramer(b"\n", 10)
    assert f.feed(b"x" * 9) == []
    with pytest.raises(FrameTooLargeError, match="unterminated message"):
        f.feed(b"x")


def header(n: int) -> bytes:
    return struct.pack(">I", n)


def test_length_prefix_whole_messages_with_header() -> None:
    """Length-prefixed messages are delivered whole, header included, like Swoole."""
    data = header(3) + b"abc" + header(0) + header(2) + b"de"
    assert LengthFramer("N", 0, 4, 100).feed(data) == [
        header(3) + b"abc",
        header(0),
        header(2) + b"de",
    ]
    assert feed_bytewise(LengthFramer("N", 0, 4, 100), data) == [
        header(3) + b"abc",
        header(0),
        header(2) + b"de",
    ]


@pytest.mark.parametrize(("body", "ok"), [(96, True), (97, False)])
def test_length_limit_refused_from_header_alone(body: int, ok: bool) -> None:
    """A declared length over the limit is refused as soon as the header arrives."""
    f = LengthFramer("N", 0, 4, 100)
    if ok:
        assert f.feed(header(body)) == []
    else:
        with pytest.raises(FrameTooLargeError, match="declared message of 101 bytes"):
            f.feed(header(body))


def test_length_offsets_and_little_endian_types() -> None:
    """package_length_offset / package_body_offset / type follow Swoole's meaning."""
    # 2-byte tag, 2-byte little-endian length, 2 more header bytes; length counts the body only.
    msg = b"TG" + struct.pack("<H", 3) + b"hh" + b"xyz"
    assert LengthFramer("v", 2, 6, 100).feed(msg + msg[:3]) == [msg]


def test_negative_or_zero_size_frames_refused() -> None:
    """A length that would give an empty or negative frame is a framing error, not a loop."""
    with pytest.raises(FramingError, match="invalid length -1"):
        LengthFramer("l", 0, 4, 100).feed(struct.pack("=i", -1))
    with pytest.raises(FramingError, match="invalid length 0"):
        LengthFramer("N", 0, 0, 100).feed(header(0))


def test_make_framer_by_settings() -> None:
    """The settings choose the framer."""
    assert isinstance(make_framer(make_settings(open_eof_split=True)), EOFFramer)
    assert isinstance(make_framer(make_settings(open_length_check=True)), LengthFramer)
    assert make_framer(make_settings()).feed(b"raw") == [b"raw"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3000), max_size=30))
def test_any_split_gives_the_same_messages(cuts: list[int]) -> None:
    """Both framers deliver the same messages whatever the read boundaries (an EOF marker
    split across reads included)."""
    bodies = [b"", b"a", b"hello world", b"x" * 700, b"\r", b"tail"]
    eof_stream = b"".join(b + b"\r\n" for b in bodies)
    len_stream = b"".join(LengthFramer.pack("N", b) for b in bodies)
    for stream, make, expected in (
        (eof_stream, lambda: EOFFramer(b"\r\n", 10_000), [b + b"\r\n" for b in bodies]),
        (
            len_stream,
            lambda: LengthFramer("N", 0, 4, 10_000),
            [LengthFramer.pack("N", b) for b in bodies],
        ),
    ):
        framer = make()
        points = sorted({c % (len(stream) + 1) for c in cuts})
        got: list[bytes] = []
        for a, b in zip([0, *points], [*points, len(stream)], strict=True):
            got += framer.feed(stream[a:b])
        assert got == expected


@pytest.mark.parametrize("make", [lambda: EOFFramer(b"\r\n", 1 << 21),
                                  lambda: LengthFramer("N", 0, 4, 1 << 21)])  # fmt: skip
def test_a_large_message_in_tiny_reads_is_kept_as_parts(make: Any) -> None:
    """A message arriving in tiny reads is kept as parts and joined once when it ends, not
    re-joined per read (quadratic): the buffered parts are exactly the reads."""
    framer = make()
    header = struct.pack(">I", 200_000) if isinstance(framer, LengthFramer) else b""
    framer.feed(header)
    for _ in range(1000):
        assert framer.feed(b"z" * 100) == []
    assert len(framer._parts) == 1001 - (not header) and framer._size == len(header) + 100_000


def test_pending_bytes_put_a_new_framer_where_the_old_one_was() -> None:
    """A connection handed to another worker: the new framer, fed the old one's pending
    bytes, completes the same message from the next bytes."""
    for make, wire in (
        (lambda: EOFFramer(b"\r\n", 1024), b"one\r\ntwo halves\r\n"),
        (lambda: LengthFramer("N", 0, 4, 1024),
         LengthFramer.pack("N", b"one") + LengthFramer.pack("N", b"two halves")),
    ):  # fmt: skip
        old = make()
        cut = len(wire) - 4
        first = old.feed(wire[:cut])
        assert len(first) == 1 and old.pending() == wire[len(first[0]) : cut]
        new = make()
        assert new.feed(old.pending()) == []
        assert new.feed(wire[cut:]) == [wire[len(first[0]) :]]
        assert new.pending() == b""
    assert make_framer(make_settings({})).pending() == b""  # unframed: nothing held
