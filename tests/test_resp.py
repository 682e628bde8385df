"""The sans-IO RESP layer over hiredis."""

from __future__ import annotations

import pytest

from tx_swoole.clients._resp import RespReader, pack_command, pack_commands
from tx_swoole.errors import RedisProtocolError, RedisReplyError

STREAM = b"+OK\r\n-ERR wrong\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n$1\r\na\r\n:1\r\n*-1\r\n"
EXPECTED = [b"OK", "ERR wrong", 42, b"abc", None, [b"a", 1], None]


def normal(replies: list) -> list:
    return [str(r) if isinstance(r, RedisReplyError) else r for r in replies]


@pytest.mark.parametrize("step", [1, 2, 3, 7, len(STREAM)])
def test_replies_whatever_the_split(step: int) -> None:
    """Replies come out whole and in order however the bytes are split; errors in place."""
    reader = RespReader()
    out = []
    for i in range(0, len(STREAM), step):
        out += reader.feed(STREAM[i : i + step])
    assert normal(out) == EXPECTED
    assert isinstance(out[1], RedisReplyError)


def test_decoding() -> None:
    """With an encoding, bulk strings come back as str."""
    assert RespReader("utf-8").feed(b"$2\r\n\xc3\xa9\r\n") == ["é"]


def test_garbage_is_a_protocol_error() -> None:
    """Bytes that are not RESP raise RedisProtocolError."""
    with pytest.raises(RedisProtocolError):
        RespReader().feed(b"?what\r\n")


def test_partial_reply_bounded() -> None:
    """A partial reply that grows past max_buffer is refused."""
    reader = RespReader(max_buffer=100)
    reader.feed(b"$1000\r\n" + b"x" * 50)
    with pytest.raises(RedisProtocolError, match="100 buffered bytes"):
        reader.feed(b"x" * 100)


def test_pack() -> None:
    """Commands pack to RESP arrays of bulk strings; numbers and str are encoded."""
    assert pack_command(("SET", "k", 1)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n"
    assert pack_commands([("PING",), ("PING",)]) == b"*1\r\n$4\r\nPING\r\n" * 2
