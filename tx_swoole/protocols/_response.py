"""The response as HTTP handlers see it: :class:`Response`.

A response is made by the server for each request and ended once (the server ends it when a
handler returns without doing so).  It collects the status and headers, then hands them to
the connection, whose sans-IO core (:mod:`tx_swoole.protocols._http11`) frames the bytes and
decides keep-alive.
"""

from __future__ import annotations

import inspect
import mimetypes
import os
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

from twisted.internet import defer
from zope.interface import Attribute, Interface

from tx_swoole.errors import ResponseStateError
from tx_swoole.protocols._compress import (
    NOT_COMPRESSIBLE,
    Encoder,
    accepted_coding,
    compress,
    compress_plan,
)
from tx_swoole.protocols._http11 import IDLE as _IDLE
from tx_swoole.protocols._http11_head import (
    CACHE_SIZE,
    HAS_CONTENT_TYPE,
    header_block,
    status_line,
)

if TYPE_CHECKING:
    from tx_swoole.protocols._request import Request

__all__ = ["IResponseChannel", "Response", "when_handled"]
_OK = status_line(200)
_NEVER_COMPRESSED = frozenset({b"204", b"206", b"304"})


_VARY = (b"Vary", b"Accept-Encoding")


class IResponseChannel(Interface):
    """What a :class:`Response` needs of its connection
    (:class:`~tx_swoole.protocols.http.HTTPProtocol` provides it)."""

    connected = Attribute("false once the connection is gone")
    conn = Attribute("the sans-IO HTTPConnection that frames the response")
    server = Attribute(
        "the server: defaultHeaders, now (the Date header's clock), compressMin (0: off), "
        "compressLevel, compressTypes, compressPlans"
    )
    transport = Attribute("the transport a whole response is written to")
    transportPaused = Attribute("true while the transport's buffer is full")

    def streamBody(head: bytes, data: bytes) -> bool:  # noqa: N805
        """Send ``head`` (b"" once started) and a piece of the body; False over the limit."""

    def endBody(tail: bytes) -> None:  # noqa: N805
        """End a streamed response with ``tail``."""

    def whenDrained() -> defer.Deferred[None]:
        """Fires once the unsent output is under ``buffer_output_size``."""

    def sendFile(f: IO[bytes], length: int | None = None,  # noqa: N805
                 encoder: Encoder | None = None) -> defer.Deferred[None]:  # fmt: skip
        """Stream the open file as the body (head already sent), through ``encoder`` if
        given; fires when it is sent."""

    def responseEnded() -> None:
        """A whole response was written: close, or serve what is held."""


class Response:
    """The response to one request; ``end()`` it once.

    Header names and values with CR, LF or NUL are refused (no response splitting): ``end``,
    ``write`` or ``sendfile`` raise :class:`~tx_swoole.errors.HeaderValueError` (a
    ``ValueError``) before anything is sent.  ``header()``/``status()`` once the head was sent,
    and ``sendfile()`` after the response started, raise
    :class:`~tx_swoole.errors.ResponseStateError`.

    Backpressure: ``write()`` returns False once the client has more than
    ``buffer_output_size`` bytes unsent (or is gone); ``await response.drained()`` waits until
    it has read them.  A handler that streams without looking makes the worker hold what it
    writes.
    """

    __slots__ = ("_proto", "_request", "_headers", "_status", "started", "ended", "_encoder")

    def __init__(self, proto: IResponseChannel, request: Request) -> None:
        self._proto = proto
        self._request = request
        self._headers: tuple[Any, ...] = ()  # flat: name, value, name, value, ...
        self._status = _OK  # the status line
        #: The head was sent (by write() or sendfile(): the body is streamed).
        self.started = False
        #: end() or sendfile() was called: nothing more may be written.
        self.ended = False
        self._encoder: Encoder | None = None  # a streamed body's compression

    @property
    def request(self) -> Request:
        """The request this response answers."""
        return self._request

    @property
    def status_code(self) -> int:
        return int(self._status[9:12])

    def status(self, code: int, reason: str | None = None) -> None:
        """Set the status code (and optionally the reason phrase)."""
        if self.started:
            raise ResponseStateError(f"status({code}) after the response head was sent")
        self._status = status_line(code, reason)

    def header(self, name: str | bytes, value: str | bytes | int) -> None:
        """Add a header; repeat the call for repeated headers.

        Names and values are checked when the head is written.  A ``Connection: close`` of
        the handler's closes the connection after this response.
        """
        if self.started:
            raise ResponseStateError(f"header({name!r}) after the response head was sent")
        self._headers += (name, value)

    def set_headers(self, flat: tuple[Any, ...]) -> None:
        """Replace the headers set so far with flat ``(name, value, name, value, ...)`` pairs
        at once (checked when the head is written, as :meth:`header`'s are)."""
        if self.started:
            raise ResponseStateError("set_headers() after the response head was sent")
        self._headers = tuple(flat)

    def reset(self) -> None:
        """Drop the status and headers set so far (before the head was sent)."""
        if self.started:
            raise ResponseStateError("reset() after the response head was sent")
        self._headers = ()
        self._status = _OK

    def cookie(
        self,
        name: str,
        value: str = "",
        *,
        expires: str | None = None,
        max_age: int | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: str | None = None,
    ) -> None:
        """Add a ``Set-Cookie`` header; the value is percent-encoded."""
        if not name or any(c in name for c in '=;, \t\r\n"'):
            raise ValueError(f"cookie name {name!r} is empty or contains separators")
        parts = [f"{name}={quote(value, safe='')}"]
        for attr, val in (("Expires", expires), ("Max-Age", max_age), ("Path", path),
                          ("Domain", domain), ("SameSite", samesite)):  # fmt: skip
            if val is not None:
                parts.append(f"{attr}={val}")
        if secure:
            parts.append("Secure")
        if httponly:
            parts.append("HttpOnly")
        self.header(b"Set-Cookie", "; ".join(parts))

    def redirect(self, location: str, status: int = 302) -> bool:
        """Answer with a redirect to ``location``."""
        self.status(status)
        self.header(b"Location", location)
        return self.end()

    def write(self, data: str | bytes) -> bool:
        """Stream a piece of the body (chunked for HTTP/1.1).

        False if the client is gone or has more than ``buffer_output_size`` bytes unsent:
        wait for :meth:`drained` before writing more.
        """
        if self.ended or not self._proto.connected:
            return False
        if isinstance(data, str):
            data = data.encode()
        if not self.started and self._proto.server.compressMin:
            coding = self._coding()
            if coding is not None:
                self._encoder = Encoder(coding, self._proto.server.compressLevel)
        if self._encoder is not None:
            data = self._encoder.chunk(data)
        return self._proto.streamBody(self._head(None), data)

    def _coding(self) -> bytes | None:
        """The coding the body gets, with the headers that say so added (``Vary`` whenever
        the request has ``Accept-Encoding`` and the type and status could be compressed,
        ``Content-Encoding`` when it is, the ``ETag`` made weak), or None."""
        status = self._status
        if status is not _OK and status[9:12] in _NEVER_COMPRESSED:
            return None
        request = self._request
        if request.raw_method == b"HEAD" or not request.accept_encoding:
            return None
        headers = self._headers
        server = self._proto.server
        plan = server.compressPlans.get(headers)
        if plan is None:
            plan = compress_plan(headers, server.compressTypes)
            if len(server.compressPlans) < CACHE_SIZE:
                server.compressPlans[headers] = plan
        if plan == NOT_COMPRESSIBLE:
            return None
        self._headers += _VARY
        coding = accepted_coding(self._request.accept_encoding)
        if coding is None:
            return None
        if plan >= 0:  # the same entity in other bytes: a weak validator (as nginx)
            value = headers[plan]
            value = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            if not value.startswith("W/"):
                self._headers = (*headers[:plan], "W/" + value, *self._headers[plan + 1 :])
        self._headers += (b"Content-Encoding", coding)
        return coding

    def _head(self, length: int | None) -> bytes:
        """The head, once (b"" after): chunked when ``length`` is None."""
        if self.started:
            return b""
        proto = self._proto
        head: bytes = proto.conn.start_response(
            self._request, self._status, self._headers, length, proto.server.defaultHeaders
        )  # HeaderValueError: nothing sent, not started
        self.started = True
        return head

    def drained(self) -> defer.Deferred[None]:
        """Fires once the client has read enough that :meth:`write` accepts more."""
        return self._proto.whenDrained()

    def end(self, body: str | bytes = b"") -> bool:
        """Finish the response with ``body`` (after any ``write``); False if already ended or
        the client is gone."""
        if self.ended:
            return False
        self.ended = True
        if body.__class__ is not bytes:
            body = body.encode() if body.__class__ is str or isinstance(body, str) else bytes(body)
        proto = self._proto
        if not proto.connected:
            return False
        if self.started:
            proto.endBody(self._encoder.finish(body) if self._encoder is not None else body)
            return True
        server = proto.server
        if self._request.accept_encoding and server.compressMin and len(body) >= server.compressMin:
            coding = self._coding()
            if coding is not None:
                body = compress(body, coding, server.compressLevel)
        conn = proto.conn
        try:
            data = conn.respond(
                self._request, self._status, self._headers, body, server.defaultHeaders,
                server.now,
            )  # fmt: skip
        except BaseException:
            self.ended = False  # nothing was sent: the 500 can still be answered
            raise
        self.started = True
        proto.transport.write(data)
        if conn.writing is not _IDLE or conn.held or proto.transportPaused:
            proto.responseEnded()
        return True

    def _has_content_type(self) -> bool:
        try:
            return bool(header_block(self._headers)[1] & HAS_CONTENT_TYPE)
        except ValueError:
            return False  # the head check raises when the head is written

    def sendfile(
        self, path: str, content_type: str | None = None, offset: int = 0,
        length: int | None = None,
    ) -> defer.Deferred[None]:  # fmt: skip
        """Send the file at ``path`` as the whole body (or ``length`` bytes of it from
        ``offset``); the Deferred fires when it is sent.

        Raises ``OSError`` (synchronously, before anything is sent) if the file cannot be
        opened, so the handler can answer otherwise.  The file is read as the client reads
        (at most the transport's buffer ahead of it).
        """
        if self.started or self.ended:
            raise ResponseStateError("sendfile() after the response started")
        f = open(path, "rb")  # noqa: SIM115 - closed when the transfer ends
        try:
            size = max(os.fstat(f.fileno()).st_size - offset, 0)
            size = size if length is None else min(length, size)
            if offset:
                f.seek(offset)
            if not self._has_content_type():
                self.header(b"Content-Type", content_type or mimetypes.guess_type(path)[0] or
                            "application/octet-stream")  # fmt: skip
            server = self._proto.server
            coding = self._coding() if server.compressMin and size >= server.compressMin else None
            encoder = Encoder(coding, server.compressLevel) if coding is not None else None
            self._proto.streamBody(self._head(size if encoder is None else None), b"")
        except BaseException:
            f.close()
            raise
        self.ended = True
        return self._proto.sendFile(f, size, encoder)


def when_handled(response: Response, result: Any, failed: Callable[[Any], Any]) -> Any:
    """After a handler returned ``result`` (not None): end ``response`` unless the handler
    did, once it is done if ``result`` is a coroutine or a Deferred, calling ``failed`` with
    the Failure if it fails.  Returns that Deferred, or None when it is done already."""
    if inspect.iscoroutine(result):
        result = defer.Deferred.fromCoroutine(result)
    if isinstance(result, defer.Deferred):
        return result.addCallbacks(lambda _: response.ended or response.end(), failed)
    if not response.ended:
        response.end()
    return None
