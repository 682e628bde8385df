"""Static files as pure decisions: which file a request path names, and what to answer.

:func:`resolve` maps a request path under ``document_root`` to a file (or says 403/404 and
why), refusing every way out of the root: ``..`` (also percent-encoded), encoded slashes and
backslashes, NUL, and symlinks leading outside unless ``follow_symlinks``.  :func:`plan` decides the
answer for a file's ``os.stat_result`` and the request headers: 200, 304
(``If-None-Match`` / ``If-Modified-Since``), 206 for one satisfiable ``Range`` (``If-Range``
honoured), 416 otherwise; with ``ETag`` (mtime and size, as nginx) and ``Last-Modified``.
No Twisted import, no I/O but ``stat``/``realpath`` in :func:`resolve`.
"""

from __future__ import annotations

import functools
import mimetypes
import os
import stat as stat_module
from collections.abc import Mapping, Sequence
from email.utils import formatdate, parsedate_to_datetime
from typing import NamedTuple, Protocol
from urllib.parse import unquote_to_bytes

__all__ = ["Plan", "Resolved", "content_type", "etag", "plan", "resolve"]

INDEX_FILES = ("index.html",)
_TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml")


class HeaderLookup(Protocol):
    """The request's headers as :func:`plan` reads them (a Mapping or the request's Headers)."""

    def get(self, name: str, default: None = None) -> str | None: ...


class Resolved(NamedTuple):
    status: int  # 200: ``path`` is a regular file to serve; 403 or 404: ``reason`` says why
    path: str
    reason: str
    stat: os.stat_result | None


class Plan(NamedTuple):
    status: int  # 200, 206, 304 or 416
    headers: list[tuple[str, str]]
    offset: int  # of the body in the file
    length: int  # bytes of the body (0 for 304 and 416)


def _refused(status: int, reason: str) -> Resolved:
    return Resolved(status, "", reason, None)


def resolve(
    root: str,
    url_path: str,
    locations: Sequence[str] = ("/",),
    follow_symlinks: bool = False,
    index_files: Sequence[str] = INDEX_FILES,
    real_root: str = "",
) -> Resolved | None:
    """The file ``url_path`` (the request path, still percent-encoded, no query) names under
    ``root``, or None when the path is not under one of ``locations`` (the handler's then).
    A refusal is a ``Resolved`` with 403 (a way out of the root) or 404 (no such file).
    ``real_root``: ``os.path.realpath(root)``, when the caller has it already."""
    if not any(url_path == loc.rstrip("/") or url_path.startswith(loc.rstrip("/") + "/")
               or loc == "/" for loc in locations):  # fmt: skip
        return None
    raw = unquote_to_bytes(url_path)
    if b"\0" in raw or b"\\" in raw:
        return _refused(403, "NUL or backslash in the path")
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _refused(404, "path is not UTF-8")
    if "%2f" in url_path.lower():
        return _refused(403, "encoded slash in the path")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        return _refused(403, "'..' in the path")
    real_root = real_root or os.path.realpath(root)
    candidate, st = real_root, None
    try:
        for part in parts:  # one lstat per component under the root: symlinks seen as such
            candidate = os.path.join(candidate, part)
            st = os.lstat(candidate)
            if stat_module.S_ISLNK(st.st_mode):
                target = os.path.realpath(candidate)
                if not target.startswith(real_root + os.sep) and not follow_symlinks:
                    return _refused(403, "a symlink leading out of document_root")
                st = os.stat(target)
        if st is None:
            st = os.stat(candidate)
    except (FileNotFoundError, NotADirectoryError):
        return _refused(404, "no such file")
    except OSError as e:
        return _refused(403, e.strerror or "cannot stat")
    if stat_module.S_ISDIR(st.st_mode):
        for name in index_files:
            index = os.path.join(candidate, name)
            try:
                st = os.lstat(index)
            except OSError:
                continue
            if stat_module.S_ISREG(st.st_mode):
                candidate = index
                break
        else:
            return _refused(403, "a directory without an index file (no listings)")
    if not stat_module.S_ISREG(st.st_mode):
        return _refused(403, "not a regular file")
    return Resolved(200, candidate, "", st)


@functools.lru_cache(maxsize=1024)
def http_date(seconds: int) -> str:
    """An IMF-fixdate (``Last-Modified``), cached: files share few modification times."""
    return formatdate(seconds, usegmt=True)


def etag(st: os.stat_result) -> str:
    """A strong validator from the modification time and size (nginx's form)."""
    return f'"{st.st_mtime_ns // 1000:x}-{st.st_size:x}"'


def content_type(path: str) -> str:
    kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if kind.startswith(_TEXT_TYPES) and "charset" not in kind:
        kind += "; charset=utf-8"
    return kind


def _matches(header: str, tag: str) -> bool:
    """``If-None-Match`` (weak comparison) or ``If-Range`` style list against ``tag``."""
    if header.strip() == "*":
        return True
    bare = tag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") == bare for t in header.split(","))


def _not_modified_since(header: str, mtime: float) -> bool:
    try:
        since = parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False  # an unreadable date is ignored (RFC 9110 13.1.3)
    return int(mtime) <= since


def _range(header: str, size: int) -> tuple[int, int] | None | bool:
    """``(offset, length)`` of one byte range; None to ignore the header (not bytes, several
    ranges, malformed); False when unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not first:  # the last N bytes
        if not last.isdigit():
            return None
        n = int(last)
        if n == 0 or size == 0:
            return False
        n = min(n, size)
        return size - n, n
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if start >= size:
        return False
    end = int(last) if last else size - 1
    if end < start:
        return None
    end = min(end, size - 1)
    return start, end - start + 1


def plan(st: os.stat_result, headers: HeaderLookup | Mapping[str, str], path: str = "") -> Plan:
    """What to answer for a file with ``st`` (``headers``: the request's, lower-case names)."""
    tag = etag(st)
    out = [("ETag", tag), ("Last-Modified", http_date(int(st.st_mtime))),
           ("Accept-Ranges", "bytes")]  # fmt: skip
    if path:
        out.insert(0, ("Content-Type", content_type(path)))
    if_none = headers.get("if-none-match")
    if if_none is not None:
        if _matches(if_none, tag):
            return Plan(304, out[1:], 0, 0)
    elif (since := headers.get("if-modified-since")) and _not_modified_since(since, st.st_mtime):
        return Plan(304, out[1:], 0, 0)
    size = st.st_size
    wanted = headers.get("range")
    if wanted is not None:
        if_range = headers.get("if-range")
        if if_range is not None:
            fresh = _matches(if_range, tag) if if_range.strip().startswith(('"', "W/")) else (
                _not_modified_since(if_range, st.st_mtime)
            )  # fmt: skip
            if not fresh:
                wanted = None
    if wanted is not None:
        r = _range(wanted, size)
        if r is False:
            return Plan(416, [("Content-Range", f"bytes */{size}")], 0, 0)
        if isinstance(r, tuple):
            offset, length = r
            out.append(("Content-Range", f"bytes {offset}-{offset + length - 1}/{size}"))
            return Plan(206, out, offset, length)
    return Plan(200, out, 0, size)
