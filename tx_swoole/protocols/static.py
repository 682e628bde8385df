"""Swoole's static handler: files under ``document_root`` served before the app's handler.

``StaticFiles(root, handler, locations=(), follow_symlinks=False)`` is an HTTP handler
(``(request, response)``).  With no ``locations`` every GET or HEAD is tried as a file first
and goes to ``handler`` when there is none (Swoole's behaviour); with ``locations``
(``static_handler_locations``, URL prefixes) the paths under them are the static handler's
alone (a missing file is a 404) and the rest go to ``handler``.  What to answer is
:mod:`tx_swoole.protocols._static`'s decision (validators, 304, ranges, MIME types, index
files, ways out of the root refused).  A small file goes out with its head in one write (its
bytes kept, up to :data:`CACHE_BYTES` per worker, while its inode, size and modification time
stay the same), a larger one with ``response.sendfile`` as the client reads.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from tx_swoole._log import SwooleLogger
from tx_swoole.protocols._request import Request
from tx_swoole.protocols._response import Response
from tx_swoole.protocols._static import plan, resolve

log = SwooleLogger("tx_swoole.static")
__all__ = ["StaticFiles"]
SMALL_FILE = 64 * 1024  # bytes read whole and sent with the head in one write
CACHE_BYTES = 8 * 1024 * 1024  # of small files kept (by path, while unchanged) per worker
FRESH = 1.0  # seconds a small file's answer is reused as it is (nginx's open_file_cache)
FRESH_ENTRIES = 4096  # request targets remembered so


class StaticFiles:
    """The static handler in front of ``handler`` (module docstring)."""

    def __init__(
        self,
        root: str,
        handler: Callable[[Request, Response], Any] | None,
        locations: Sequence[str] = (),
        follow_symlinks: bool = False,
    ) -> None:
        self.root = os.path.realpath(root)
        self.handler = handler
        self.locations = tuple(locations)
        self.followSymlinks = follow_symlinks
        # small files' bytes by path, with what they were read under (inode, size, mtime)
        self._cache: OrderedDict[str, tuple[tuple[int, int, int], bytes]] = OrderedDict()
        self._cached = 0  # bytes in the cache
        # whole answers (when, headers, body) of small files by request target, reused by
        # GETs without conditions or ranges for FRESH seconds of the server's clock (which
        # ticks each second): a changed file is seen within a second or two, as nginx's
        # open_file_cache sees it within open_file_cache_valid
        self._fresh: dict[bytes, tuple[float, tuple[Any, ...], bytes]] = {}
        wants = getattr(handler, "streams_body", None)  # the handler's, for what is not a file
        if wants is not None:
            self.streams_body = wants

    def __call__(self, request: Request, response: Response) -> Any:
        hit = self._fresh.get(request.raw_url)
        if hit is not None and request.raw_method == b"GET":
            if request.owner.server.now - hit[0] < FRESH and not _conditional(request):
                response.set_headers(hit[1])
                return response.end(hit[2])
        method = request.method
        path = request.path
        found = None
        if method == "GET" or method == "HEAD":
            found = resolve(self.root, path, self.locations or ("/",), self.followSymlinks,
                            real_root=self.root)  # fmt: skip
        if found is None or (not self.locations and found.status == 404):
            return self._fallback(request, response)
        if found.status != 200:
            log.info("static {path}: {status} ({reason})", path=path, status=found.status,
                     reason=found.reason)  # fmt: skip
            response.status(found.status)
            response.header("Content-Type", "text/plain")
            return response.end("Forbidden\n" if found.status == 403 else "Not Found\n")
        assert found.stat is not None
        answer = plan(found.stat, request.headers, found.path)
        response.status(answer.status)
        for name, value in answer.headers:
            response.header(name, value)
        if answer.status in (304, 416):
            return response.end(b"" if answer.status == 304 else b"Range Not Satisfiable\n")
        st = found.stat
        if st.st_size <= SMALL_FILE and method == "GET":  # one write: head and body
            body = self._small(found.path, st)
            if body is None:
                return self._gone(response)
            if len(body) == st.st_size:
                if answer.status == 200 and request.query_string == "":
                    self._remember(request, answer.headers, body)
                return response.end(body[answer.offset : answer.offset + answer.length])
        try:
            return response.sendfile(found.path, None, answer.offset, answer.length)
        except OSError:
            return self._gone(response)

    def _small(self, path: str, st: os.stat_result) -> bytes | None:
        """A small file's bytes, from the cache while its inode, size and mtime are the
        same (None if it cannot be read)."""
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cache = self._cache
        hit = cache.get(path)
        if hit is not None and hit[0] == key:
            cache.move_to_end(path)
            return hit[1]
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                body = os.pread(fd, st.st_size, 0)
            finally:
                os.close(fd)
        except OSError:
            return None
        if hit is not None:
            self._cached -= len(hit[1])
        cache[path] = (key, body)
        self._cached += len(body)
        while self._cached > CACHE_BYTES:
            _, (_, old) = cache.popitem(last=False)
            self._cached -= len(old)
        return body

    def _remember(self, request: Request, headers: Any, body: bytes) -> None:
        fresh = self._fresh
        if len(fresh) >= FRESH_ENTRIES:
            del fresh[next(iter(fresh))]
        flat = tuple(item for pair in headers for item in pair)
        fresh[request.raw_url] = (request.owner.server.now, flat, body)

    @staticmethod
    def _gone(response: Response) -> Any:
        response.status(404)  # removed between the stat and the open
        return response.end("Not Found\n")

    def _fallback(self, request: Request, response: Response) -> Any:
        if self.handler is not None:
            return self.handler(request, response)
        response.status(404)
        response.header("Content-Type", "text/plain")
        return response.end("Not Found\n")


def _conditional(request: Request) -> bool:
    """True when the request has If-* or Range headers (its answer is not the plain one)."""
    for name, _ in request.raw_headers:
        first = name[0] | 32
        if (first == 105 and name[:3].lower() == b"if-") or (
            first == 114 and name.lower() == b"range"
        ):
            return True
    return False
