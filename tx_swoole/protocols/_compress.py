"""Response compression, sans-IO: which coding a request accepts, which types compress, and
the streaming encoder.

gzip and deflate (zlib), by the request's ``Accept-Encoding`` with q values (RFC 9110
section 12.5.3): the coding with the highest non-zero q wins, gzip on a tie; ``*`` stands for
gzip when gzip is not named.  Brotli is not offered: every client that takes ``br`` takes
gzip, and it would be a compiled dependency for a few percent of size.
"""

from __future__ import annotations

import zlib

__all__ = [
    "DEFAULT_TYPES", "NOT_COMPRESSIBLE", "Encoder", "accepted_coding", "compress",
    "compress_plan", "compressible",
]  # fmt: skip

# Types worth compressing (nginx's gzip_types practice, Swoole's list): text, and the
# structured text formats; images, video, archives and fonts in woff2 are compressed already.
DEFAULT_TYPES = (
    "text/", "application/json", "application/javascript", "application/x-javascript",
    "application/xml", "application/xhtml+xml", "application/rss+xml", "application/atom+xml",
    "application/ld+json", "application/manifest+json", "application/wasm", "image/svg+xml",
    "application/x-ndjson", "application/graphql-response+json",
)  # fmt: skip
_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
_CODINGS = {b"gzip": b"gzip", b"x-gzip": b"gzip", b"deflate": b"deflate"}


def _quality(params: bytes) -> float:
    for param in params.split(b";"):
        key, _, value = param.partition(b"=")
        if key.strip().lower() == b"q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def accepted_coding(accept_encoding: bytes) -> bytes | None:
    """``b"gzip"``, ``b"deflate"`` or None (identity) for an ``Accept-Encoding`` value."""
    q: dict[bytes, float] = {}
    star: float | None = None
    for item in accept_encoding.split(b","):
        coding, _, params = item.partition(b";")
        coding = coding.strip().lower()
        quality = _quality(params) if params else 1.0
        name = _CODINGS.get(coding)
        if name is not None:
            q[name] = max(q.get(name, 0.0), quality)
        elif coding == b"*":
            star = quality
    if star is not None and b"gzip" not in q:
        q[b"gzip"] = star
    best = max(q.get(b"gzip", 0.0), q.get(b"deflate", 0.0))
    if best <= 0.0:
        return None
    return b"gzip" if q.get(b"gzip", 0.0) == best else b"deflate"


def compressible(content_type: bytes | str, types: tuple[str, ...] = DEFAULT_TYPES) -> bool:
    """True for a ``Content-Type`` value whose media type starts with one of ``types``."""
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    media = content_type.partition(";")[0].strip().lower()
    return media.startswith(types)


NOT_COMPRESSIBLE = -2  # compress_plan: the handler's headers rule it out


def compress_plan(headers: tuple[object, ...], types: tuple[str, ...] = DEFAULT_TYPES) -> int:
    """What flat ``(name, value, ...)`` response headers allow: :data:`NOT_COMPRESSIBLE`
    (a ``Content-Encoding`` of the handler's, or a type not in ``types``), else the index of
    the ``ETag`` value (-1: none).  The ``Content-Type`` defaults to text/html."""
    media: object = "text/html"
    etag = -1
    for i in range(0, len(headers), 2):
        name = headers[i]
        lower = (name.decode("latin-1") if isinstance(name, bytes) else str(name)).lower()
        if lower == "content-encoding":
            return NOT_COMPRESSIBLE
        if lower == "content-type":
            media = headers[i + 1]
        elif lower == "etag":
            etag = i + 1
    if not isinstance(media, bytes | str) or not compressible(media, types):
        return NOT_COMPRESSIBLE
    return etag


class Encoder:
    """A gzip or deflate stream: :meth:`chunk` for each piece (flushed, so a streamed
    response reaches the client as it is written), :meth:`finish` for the last."""

    __slots__ = ("_z",)

    def __init__(self, coding: bytes, level: int) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, _WBITS[coding], 8)

    def chunk(self, data: bytes) -> bytes:
        return self._z.compress(data) + self._z.flush(zlib.Z_SYNC_FLUSH)

    def finish(self, data: bytes = b"") -> bytes:
        return self._z.compress(data) + self._z.flush(zlib.Z_FINISH)


def compress(data: bytes, coding: bytes, level: int) -> bytes:
    """``data`` as one whole gzip or deflate body."""
    return Encoder(coding, level).finish(data)
