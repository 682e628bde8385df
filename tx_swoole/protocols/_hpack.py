"""A stateless HPACK encoder for responses, sans-IO (RFC 7541), with cached header blocks.

Every field is sent indexed when the static table holds it whole (``:status: 200``), else as a
literal *without indexing* (its name indexed from the static table when it is there), values
Huffman-coded when that is shorter.  Nothing enters the dynamic table, so the same fields
always encode to the same bytes: a response's block is cached by what it is made of, and
encoding one costs a dictionary lookup.  Decoders need nothing special (a dynamic table that
stays empty is valid HPACK); when the peer changes ``SETTINGS_HEADER_TABLE_SIZE`` the next
block starts with a size update to 0, which any limit allows.

It stands in for h2's encoder (``H2Connection.encoder``): :meth:`StatelessEncoder.encode`
takes what h2 hands it, or the block set with :meth:`StatelessEncoder.prepare` just before.
No Twisted import here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hpack.hpack import encode_integer
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

__all__ = ["StatelessEncoder", "encode_block"]

_HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
_WHOLE: dict[tuple[bytes, bytes], int] = {}
_NAME: dict[bytes, int] = {}
for _i, (_n, _v) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _WHOLE.setdefault((_n, _v), _i)
    _NAME.setdefault(_n, _i)
CACHE_SIZE = 4096  # fields (and blocks) remembered
_FIELDS: dict[tuple[bytes, bytes], bytes] = {}


def _string(raw: bytes) -> bytes:
    coded = _HUFFMAN.encode(raw)
    if len(coded) < len(raw):
        head = encode_integer(len(coded), 7)
        head[0] |= 0x80
        return bytes(head) + coded
    return bytes(encode_integer(len(raw), 7)) + raw


def encode_field(name: bytes, value: bytes) -> bytes:
    """One field's representation (the same bytes every time)."""
    key = (name, value)
    cached = _FIELDS.get(key)
    if cached is not None:
        return cached
    whole = _WHOLE.get(key)
    if whole is not None:
        out = bytes(encode_integer(whole, 7))
        out = bytes([out[0] | 0x80]) + out[1:]
    else:
        index = _NAME.get(name)
        if index is not None:
            out = bytes(encode_integer(index, 4)) + _string(value)  # 0000xxxx: no indexing
        else:
            out = b"\x00" + _string(name) + _string(value)
    if len(_FIELDS) < CACHE_SIZE:
        _FIELDS[key] = out
    return out


def encode_block(headers: Iterable[Any]) -> bytes:
    """The block of ``(name, value)`` pairs (bytes, names lower-case)."""
    return b"".join([encode_field(h[0], h[1]) for h in headers])


class StatelessEncoder:
    """h2's encoder, stateless: see the module docstring."""

    def __init__(self) -> None:
        self._table_size = 4096
        self._update = b""  # a size update owed at the start of the next block
        self._next: bytes | None = None

    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._table_size = value
        self._update = b"\x20"  # size update to 0: within any limit, and ours stays empty

    def prepare(self, block: bytes) -> None:
        """The block the next :meth:`encode` returns (whatever h2 passes it)."""
        self._next = block

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        block, self._next = self._next, None
        if block is None:
            block = encode_block(headers)
        if self._update:
            block, self._update = self._update + block, b""
        return block
