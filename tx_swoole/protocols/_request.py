"""The request as HTTP handlers see it: :class:`Request` and its :class:`Headers`.

A :class:`Request` is the parsed request itself (the reader builds one object per request);
its views (headers, query arguments, form, cookies) are built on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

from tx_swoole.protocols._http11 import ParsedRequest

__all__ = ["Headers", "Request"]


class Headers:
    """Request headers: case-insensitive lookup, repeated headers kept, bytes in, str out."""

    __slots__ = ("raw", "_index")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        self._index: dict[str, list[str]] | None = None

    def _map(self) -> dict[str, list[str]]:
        if self._index is None:
            index: dict[str, list[str]] = {}
            for name, value in self.raw:
                index.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
            self._index = index
        return self._index

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name``, or ``default``."""
        values = self._map().get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name``, in order."""
        return list(self._map().get(name.lower(), ()))

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map()

    def __iter__(self) -> Iterator[str]:
        return iter(self._map())

    def __len__(self) -> int:
        return len(self.raw)

    def items(self) -> list[tuple[str, str]]:
        """``(name, value)`` pairs as received (names in their original case)."""
        return [(n.decode("latin-1"), v.decode("latin-1")) for n, v in self.raw]


class Request(ParsedRequest):
    """An HTTP request as the handler sees it.

    ``method``, ``path`` and ``query_string`` are str; ``body`` is the raw body (bytes);
    ``headers`` a :class:`Headers`; ``args`` the query arguments and ``form`` the
    urlencoded body, both ``dict[str, list[str]]``; ``cookies`` a dict; ``remote_addr``
    ``(host, port)``; ``version`` ``"1.1"`` or ``"1.0"``.
    """

    __slots__ = ()

    def _cached(self, key: str, build: Callable[[], Any]) -> Any:
        lazy = self.cache
        if lazy is None:
            lazy = self.cache = {}
        value = lazy.get(key)
        if value is None:
            value = lazy[key] = build()
        return value

    @property
    def method(self) -> str:
        return self.raw_method.decode("ascii")

    def _split(self) -> tuple[str, str]:
        path, _, query = self.raw_url.decode("latin-1").partition("?")
        return path, query

    @property
    def path(self) -> str:
        """The request path as sent (percent-encoding kept), without the query string."""
        return self._split()[0]

    @property
    def query_string(self) -> str:
        return self._split()[1]

    @property
    def uri(self) -> str:
        """Path and query string as sent."""
        return self.raw_url.decode("latin-1")

    @property
    def headers(self) -> Headers:
        headers: Headers = self._cached("headers", lambda: Headers(self.raw_headers))
        return headers

    @property
    def args(self) -> dict[str, list[str]]:
        """Query arguments (``?a=1&a=2`` → ``{"a": ["1", "2"]}``)."""
        args: dict[str, list[str]] = self._cached(
            "args", lambda: parse_qs(self.query_string, keep_blank_values=True)
        )
        return args

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first query argument ``name``, or ``default``."""
        values = self.args.get(name)
        return values[0] if values else default

    @property
    def form(self) -> dict[str, list[str]]:
        """The form's fields: of an urlencoded body (``application/x-www-form-urlencoded``)
        or the plain fields of a ``multipart/form-data`` upload; empty otherwise."""
        form: dict[str, list[str]] = self._cached("form", self._parse_form)
        return form

    def _parse_form(self) -> dict[str, list[str]]:
        ctype = (self.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return {}
        return parse_qs(self.body.decode("latin-1"), keep_blank_values=True)

    @property
    def files(self) -> dict[str, list[Any]]:
        """The files of a ``multipart/form-data`` upload by field name, each an
        :class:`~tx_swoole.protocols.body.UploadedFile` (on disk: see its ``path``); empty
        otherwise."""
        files: dict[str, list[Any]] = self._cached("files", dict)
        return files

    def file(self, name: str) -> Any:
        """The first uploaded file of field ``name``, or None."""
        found = self.files.get(name)
        return found[0] if found else None

    def stream(self) -> Any:
        """The body as it arrives, for ``async for piece in request.stream()`` (a handler
        marked with :func:`~tx_swoole.protocols.http.streaming`), or the body read whole as
        one piece; ``await request.stream().read()`` is all of it."""
        stream = self.body_stream
        if stream is None:
            from tx_swoole.protocols.body import stream_of

            stream = self.body_stream = stream_of(self.body)
        return stream

    body_stream: Any = None  # the body's stream, for a streamed request

    @property
    def cookies(self) -> dict[str, str]:
        cookies: dict[str, str] = self._cached("cookies", self._parse_cookies)
        return cookies

    def _parse_cookies(self) -> dict[str, str]:
        cookies: dict[str, str] = {}
        for header in self.headers.get_all("cookie"):
            for part in header.split(";"):
                name, sep, value = part.strip().partition("=")
                if sep and name:
                    cookies[name] = value
        return cookies

    @property
    def remote_addr(self) -> tuple[str, int]:
        peer = self.owner.transport.getPeer()
        return getattr(peer, "host", ""), getattr(peer, "port", 0)

    @property
    def scheme(self) -> str:
        """``"https"`` on a TLS connection, else ``"http"``."""
        return "https" if getattr(self.owner.transport, "encrypted", False) else "http"

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The client's verified certificate (``ssl.SSLSocket.getpeercert()``'s dict: subject,
        issuer, notAfter, ...) on a TLS connection that asked for one, else None."""
        get = getattr(self.owner.transport, "getPeerCertificate", None)
        return get() if get is not None else None
