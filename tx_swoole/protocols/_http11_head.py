"""Sans-IO serialisation of HTTP/1.1 response heads: status lines and checked header blocks.

Header names and values are checked once per distinct header set: a name or value with CR,
LF or NUL (or a name with ``:`` or whitespace) raises
:class:`~tx_swoole.errors.HeaderValueError` before anything is sent (no response splitting).
The handler's own ``Connection`` header is taken out of the block and reported in the flags,
so the connection core decides keep-alive once (a handler's ``Connection: close`` closes).

The blocks of the most recent distinct header sets are cached (:data:`CACHE_SIZE`, oldest
evicted first): handlers that send the same constant headers on every response pay for the
checks once.  No Twisted import here.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from tx_swoole.errors import HeaderValueError

__all__ = ["CACHE_SIZE", "HAS_CONTENT_TYPE", "WANTS_CLOSE", "header_block", "status_line"]

CACHE_SIZE = 4096  # distinct header sets (and Content-Length values) kept; ~1 MiB at most
_BLOCK_MAX = 1024  # bytes: larger blocks are not cached (per-user cookies and the like)
HAS_CONTENT_TYPE = 1  # flag: the handler set Content-Type
WANTS_CLOSE = 2  # flag: the handler sent "Connection: close" (the highest: see respond())
_FORBIDDEN = (b"\r", b"\n", b"\0")
_STATUS_LINES: dict[int, bytes] = {}
_BLOCKS: dict[tuple[Any, ...], tuple[bytes, int]] = {}
_LENGTH_LINES: dict[int, bytes] = {}
DEFAULT_CONTENT_TYPE = b"Content-Type: text/html\r\n"  # Swoole's default


def status_line(code: int, reason: str | None = None) -> bytes:
    """``HTTP/1.1 <code> <reason>\\r\\n``, cached for the standard reasons.

    Raises :class:`~tx_swoole.errors.HeaderValueError` for a code outside 100..999 or a
    reason with CR, LF or NUL.
    """
    if not 100 <= code <= 999:
        raise HeaderValueError(f"status code {code} is not in 100..999")
    if reason is None:
        line = _STATUS_LINES.get(code)
        if line is not None:
            return line
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Unknown"
        line = _STATUS_LINES[code] = b"HTTP/1.1 %d %s\r\n" % (code, phrase.encode("latin-1"))
        return line
    return b"HTTP/1.1 %d %s\r\n" % (code, _clean(reason, "reason"))


def _clean(value: str | bytes | int, what: str) -> bytes:
    if isinstance(value, str):
        value = value.encode("latin-1")
    elif isinstance(value, int):
        value = b"%d" % value
    for c in _FORBIDDEN:
        if c in value:
            raise HeaderValueError(
                f"{what} {value[:40]!r} contains CR, LF or NUL (response splitting)"
            )
    return value


def _clean_name(name: str | bytes) -> bytes:
    raw = _clean(name, "header name")
    if not raw or b":" in raw or b" " in raw or b"\t" in raw:
        raise HeaderValueError(f"header name {raw[:40]!r} is empty or contains ':' or whitespace")
    return raw


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= CACHE_SIZE:
        del cache[next(iter(cache))]  # oldest first (dicts keep insertion order)
    cache[key] = value


def header_block(flat: list[Any] | tuple[Any, ...]) -> tuple[bytes, int]:
    """The checked lines of flat ``(name, value, name, value, ...)`` headers, and flags.

    The block has the default ``Content-Type`` when none is among them, and no
    ``Connection`` header (reported as :data:`WANTS_CLOSE` when it said ``close``).
    """
    headers = tuple(flat)
    cached = _BLOCKS.get(headers)
    if cached is not None:
        return cached
    lines = []
    flags = 0
    for i in range(0, len(headers), 2):
        name = _clean_name(headers[i])
        value = _clean(headers[i + 1], "header value")
        lower = name.lower()
        if lower == b"connection":
            if b"close" in value.lower():
                flags |= WANTS_CLOSE
            continue
        if lower == b"content-type":
            flags |= HAS_CONTENT_TYPE
        lines.append(b"%s: %s\r\n" % (name, value))
    if not flags & HAS_CONTENT_TYPE:
        lines.append(DEFAULT_CONTENT_TYPE)
    result = (b"".join(lines), flags)
    if len(result[0]) <= _BLOCK_MAX:
        _remember(_BLOCKS, headers, result)
    return result


def length_line(length: int) -> bytes:
    """``Content-Length: <length>\\r\\n``, cached."""
    line = _LENGTH_LINES.get(length)
    if line is None:
        line = b"Content-Length: %d\r\n" % length
        _remember(_LENGTH_LINES, length, line)
    return line
