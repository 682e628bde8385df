"""Sans-IO ``multipart/form-data`` parsing (RFC 7578), fed as the body arrives.

:class:`MultipartParser` takes the body in pieces of any size (a boundary split across reads,
even byte by byte, is found) and returns events: :class:`Part` (a part's headers: field
name, file name, content type), ``bytes`` (a piece of the part's content, never held longer
than the boundary needs), :data:`PART_END`, and :data:`DONE` after the closing boundary.
Work is linear in the bytes fed: each byte is searched once, plus the boundary's length per
read.  Malformed input raises :class:`~tx_swoole.errors.MultipartError` (a 400) naming what
is wrong; nothing here opens files (the caller decides where content goes).  No Twisted
import here.
"""

from __future__ import annotations

from urllib.parse import unquote

from tx_swoole.errors import MultipartError
from tx_swoole.protocols._http11_parse import Marker

__all__ = ["DONE", "PART_END", "MultipartParser", "Part", "boundary_of", "header_params"]

MAX_PART_HEAD = 16384  # bytes of one part's headers
_PREAMBLE, _AFTER_BOUNDARY, _HEAD, _DATA, _EPILOGUE = range(5)


PART_END = Marker("PART_END")
DONE = Marker("DONE")


class Part:
    """One part's headers: ``name`` (the form field), ``filename`` (None for a plain field),
    ``content_type`` and all ``headers`` (lower-case names)."""

    __slots__ = ("name", "filename", "content_type", "headers")

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        disposition = headers.get("content-disposition")
        if disposition is None:
            raise MultipartError("a part has no Content-Disposition header")
        kind, params = header_params(disposition)
        if kind != "form-data" or "name" not in params:
            raise MultipartError(f"a part's Content-Disposition is {disposition[:80]!r}, not "
                                 'form-data with a name="..."')  # fmt: skip
        self.name = params["name"]
        self.filename = params.get("filename*") or params.get("filename")
        self.content_type = headers.get(
            "content-type",
            "application/octet-stream" if self.filename is not None else "text/plain",
        )

    def __repr__(self) -> str:
        return f"Part(name={self.name!r}, filename={self.filename!r})"


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """``'form-data; name="a"; filename="b.txt"'`` → ``("form-data", {"name": "a", ...})``:
    quoted strings unescaped, ``filename*=UTF-8''...`` (RFC 5987) decoded."""
    items = []
    current: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch == ";" and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    kind = items[0].strip().lower()
    params: dict[str, str] = {}
    for item in items[1:]:
        key, sep, raw = item.partition("=")
        if not sep:
            continue
        key, raw = key.strip().lower(), raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]
        if key.endswith("*"):  # charset'language'percent-encoded
            charset, _, rest = raw.partition("'")
            _, _, encoded = rest.partition("'")
            try:
                raw = unquote(encoded, encoding=charset or "utf-8", errors="strict")
            except (LookupError, UnicodeDecodeError):
                raise MultipartError(f"parameter {key} = {raw[:60]!r} is not decodable") from None
        params[key] = raw
    return kind, params


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/form-data`` Content-Type, or None for another type.

    Raises :class:`~tx_swoole.errors.MultipartError` for a multipart type without a valid
    boundary (1 to 70 characters, RFC 2046)."""
    kind, params = header_params(content_type)
    if kind != "multipart/form-data":
        return None
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= 70 or not boundary.isascii():
        raise MultipartError(f"multipart/form-data with boundary {boundary[:80]!r}: it must be "
                             "1 to 70 ASCII characters")  # fmt: skip
    return boundary.encode("ascii")


class MultipartParser:
    """Feed it the body with :meth:`feed`; call :meth:`close` when the body ended.

    Resource handling: holds at most one part's headers (:data:`MAX_PART_HEAD`) or the
    boundary's length of content between calls.
    """

    def __init__(self, boundary: bytes) -> None:
        self._first = b"--" + boundary  # the body may start with it, without the CRLF
        self._delimiter = b"\r\n--" + boundary
        self._buffer = bytearray()
        self._state = _PREAMBLE

    def feed(self, data: bytes) -> list[object]:
        """The events ``data`` completes."""
        if self._state == _EPILOGUE:
            return []
        buf = self._buffer
        if self._state == _DATA and not buf and self._delimiter not in data:
            # the common read inside a file: pass it on whole, but for a possible start of
            # the delimiter at its end (a CR: the boundary itself has none)
            hold = data.find(b"\r", max(len(data) - len(self._delimiter) + 1, 0))
            if hold < 0:
                return [data] if data else []
            buf += data[hold:]
            return [data[:hold]] if hold else []
        buf += data
        events: list[object] = []
        while True:
            state = self._state
            if state == _DATA:
                if not self._data(events):
                    break
            elif state == _HEAD:
                if not self._head(events):
                    break
            elif state == _AFTER_BOUNDARY:
                if len(buf) < 2:
                    break
                if buf[:2] == b"--":
                    self._state = _EPILOGUE
                    events.append(DONE)
                    buf.clear()
                    break
                # transport padding (spaces, tabs) may follow the boundary before its CRLF
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 256:
                        raise MultipartError("no CRLF after a boundary")
                    break
                if buf[:end].strip(b" \t"):
                    raise MultipartError(
                        f"unexpected {bytes(buf[: min(end, 20)])!r} after a boundary"
                    )
                del buf[: end + 2]
                self._state = _HEAD
            elif state == _PREAMBLE:
                if not self._preamble():
                    break
            else:
                break
        return events

    def _preamble(self) -> bool:
        buf = self._buffer
        if buf.startswith(self._first):
            del buf[: len(self._first)]
            self._state = _AFTER_BOUNDARY
            return True
        if len(buf) < len(self._first) and self._first.startswith(bytes(buf)):
            return False
        at = buf.find(self._delimiter)
        if at < 0:
            keep = len(self._delimiter) - 1  # a delimiter may be starting at the end
            if len(buf) > keep:
                del buf[: len(buf) - keep]
            return False
        del buf[: at + len(self._delimiter)]
        self._state = _AFTER_BOUNDARY
        return True

    def _head(self, events: list[object]) -> bool:
        buf = self._buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_PART_HEAD:
                raise MultipartError(f"a part's headers exceed {MAX_PART_HEAD} bytes")
            return False
        if end > MAX_PART_HEAD:
            raise MultipartError(f"a part's headers exceed {MAX_PART_HEAD} bytes")
        headers: dict[str, str] = {}
        for line in bytes(buf[:end]).split(b"\r\n"):
            if not line:
                continue
            name, sep, value = line.partition(b":")
            if not sep or not name.strip():
                raise MultipartError(f"malformed part header line {line[:60]!r}")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode(
                "utf-8", "replace"
            )
        del buf[: end + 4]
        events.append(Part(headers))
        self._state = _DATA
        return True

    def _data(self, events: list[object]) -> bool:
        buf = self._buffer
        delimiter = self._delimiter
        at = buf.find(delimiter)
        if at < 0:  # all but a possible start of the delimiter at the end (from a CR)
            hold = buf.find(b"\r", max(len(buf) - len(delimiter) + 1, 0))
            if hold < 0:
                hold = len(buf)
            if hold:
                events.append(bytes(buf[:hold]))
                del buf[:hold]
            return False
        if at:
            events.append(bytes(buf[:at]))
        del buf[: at + len(delimiter)]
        events.append(PART_END)
        self._state = _AFTER_BOUNDARY
        return True

    def close(self) -> None:
        """The body ended: raises :class:`~tx_swoole.errors.MultipartError` unless the
        closing boundary came."""
        if self._state != _EPILOGUE:
            raise MultipartError("the body ended before the closing boundary of its parts")
