"""Sans-IO HTTP/1.1 request reader with Swoole's limits, over httptools (llhttp).

:class:`RequestReader` takes bytes with :meth:`~RequestReader.feed` and returns the requests
completed so far as :class:`ParsedRequest` objects (head and whole body); or, given a
``deliver`` callable, hands each request to it the moment it completes (:meth:`push`).  Limits
are checked before memory is spent:

- request line + headers over ``header_max`` bytes → :class:`HeaderTooLargeError` (431); the
  size counted is that of the canonical head (``METHOD SP URL SP HTTP/x.y CRLF``, each
  ``Name: value CRLF``, the final CRLF), and bytes of a head still incomplete across reads are
  counted too, so a never-ending head is refused once it passes the limit;
- a declared ``Content-Length`` over ``body_max`` → :class:`BodyTooLargeError` (413) as soon as
  the head is complete, before any body byte is kept; chunked bodies are counted as they
  arrive;
- anything llhttp rejects (bad request line, invalid header bytes, bad chunk sizes, both
  Content-Length and Transfer-Encoding, repeated Content-Length) and CONNECT →
  :class:`MalformedRequestError`.

Sizes are counted only where a limit could be passed: a read of at most 4/5 of ``header_max``
bytes cannot hold a head over the limit (a canonical header line is at most one byte longer
than the shortest raw one, ``Name:value CRLF``, which is at least 4 bytes), so heads that
start and end inside such a read are not measured; a head still open at the end of a read is
measured then, and every read that continues a head is counted byte by byte.

After an error the reader is dead (:attr:`RequestReader.error` says why); further input is
ignored.  No Twisted import here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httptools

from tx_swoole.errors import (
    BodyTooLargeError,
    HeaderTooLargeError,
    HTTPRequestError,
    MalformedRequestError,
)

_SAMPLE = 40  # bytes of peer data quoted in error messages, at most
# Header names that need a look when the head completes, by length -> first letter, lower
# case: Content-Length, Expect, Upgrade, Connection.  A match only triggers the exact check.
_SPECIAL = {14: ord("c"), 6: ord("e"), 7: ord("u"), 10: ord("c")}


class ParsedRequest:
    """One complete request: head and body, made by the reader.  ``keep_alive`` follows
    HTTP/1.0 and 1.1 rules; ``upgrade`` marks a request asking to switch protocols (answered,
    then the connection closes).

    ``owner`` and ``cache`` are free for the code that serves the request (the HTTP protocol
    subclasses this class as its ``Request``, so one object serves per request).
    """

    raw_method: bytes
    raw_url: bytes
    version: str  # "1.1", "1.0" (llhttp also accepts "0.9" and "2.0")
    raw_headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    # Rarely set, so defaults on the class (the reader sets only the head above):
    body = b""
    upgrade = False
    owner: Any = None
    cache: Any = None


class _StoppedError(Exception):
    """Raised into llhttp to stop parsing once the reader was stopped mid-read."""


class RequestReader:
    """Feeds bytes to llhttp and collects complete requests, enforcing the limits.

    ``continue_wanted`` becomes True when a head with ``Expect: 100-continue`` and an
    acceptable body size completes and its body has not arrived yet; the caller answers
    ``100 Continue`` and calls :meth:`continue_sent`.  ``in_head`` is True while a request head
    is partly received (for header-read timeouts).
    """

    __slots__ = (
        "_parser", "_header_max", "_body_max", "_fast_max", "_done", "_deliver", "_url",
        "_headers", "_head_size", "_head_pending", "_counting", "_special", "_body",
        "_body_size", "error", "in_head", "continue_wanted", "dead", "_current",
        "_request_class",
    )  # fmt: skip

    def __init__(
        self,
        header_max: int,
        body_max: int,
        request_class: type[ParsedRequest] = ParsedRequest,
        deliver: Callable[[Any], None] | None = None,
    ) -> None:
        self._request_class = request_class
        self._parser = httptools.HttpRequestParser(self)
        self._header_max = header_max
        self._body_max = body_max
        self._fast_max = header_max * 4 // 5  # see the module docstring
        self._done: list[ParsedRequest] = []
        self._deliver: Callable[[Any], None] = deliver or self._done.append
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._head_pending = 0
        self._counting = False
        self._special = False  # a header that needs a look at headers-complete was seen
        self._body: list[bytes] = []
        self._body_size = 0
        self.error: HTTPRequestError | None = None
        self._current: ParsedRequest | None = None
        self.in_head = False
        self.continue_wanted = False
        self.dead = False

    # -- feeding ---------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[ParsedRequest]:
        """Parse ``data``; return the requests it completed (for a reader made without
        ``deliver``).

        When the data breaks a limit or the syntax, :attr:`error` is set (a
        :class:`~tx_swoole.errors.HTTPRequestError` subclass) and the reader is dead: the
        requests returned, complete before the bad one, should still be answered, then the
        error.
        """
        self.push(data)
        if not self._done:
            return []
        done = self._done.copy()
        self._done.clear()
        return done

    def push(self, data: bytes) -> bool:
        """Parse ``data``, handing each request to ``deliver`` as it completes.

        ``deliver`` runs inside the parse; if it calls :meth:`stop`, parsing ends there.  On a
        bad request :attr:`error` is set after the requests before it were delivered.  True
        when the caller has something to look at: a head in progress (:attr:`in_head`), the
        reader dead (:attr:`error`, upgrade, stop) or :attr:`continue_wanted`.
        """
        if self.dead:
            return True
        if self.in_head:  # all of data is head until the head completes
            self._counting = True
            self._head_pending += len(data)
        else:
            self._counting = len(data) > self._fast_max
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The upgrade request was delivered (marked, so it is answered and closed);
            # whatever followed it is not HTTP and is dropped.
            self.dead = True
        except httptools.HttpParserError as e:
            self._parse_failed(e, data)
        if self.in_head:
            if not self.dead:
                self._measure_open_head()
            return True
        return self.dead or self.continue_wanted

    def stop(self) -> None:
        """Parse nothing more, not even the rest of the data being pushed."""
        self.dead = True
        self._deliver = _stopped

    def _parse_failed(self, e: httptools.HttpParserError, data: bytes) -> None:
        cause = e.__context__
        stopped = self.dead
        self.dead = True
        if isinstance(e, httptools.HttpParserCallbackError):
            if isinstance(cause, _StoppedError | HTTPRequestError):
                return  # stop(), or _fail() which set self.error
            assert cause is not None
            raise cause  # a fault of ours or of deliver, not of the peer's bytes
        if self.error is None and not stopped:
            sample = data[:_SAMPLE]
            self.error = MalformedRequestError(f"malformed request: {e} (data {sample!r})")

    def _measure_open_head(self) -> None:
        if not self._counting:  # this head started in an unmeasured read: measure it now
            self._head_size = len(self._url) + sum(
                len(name) + len(value) + 4 for name, value in self._headers
            )
        size = max(self._head_pending, self._head_size)
        if size > self._header_max:
            self.dead = True
            self.error = HeaderTooLargeError(self._head_message(size))

    def continue_sent(self) -> None:
        """The caller answered ``100 Continue`` for the current request."""
        self.continue_wanted = False

    def _head_message(self, size: int) -> str:
        return (
            f"request line + headers of at least {size} bytes exceed "
            f"http_header_max_length={self._header_max}"
        )

    def _fail(self, error: HTTPRequestError) -> None:
        self.error = error
        raise error  # stops llhttp; push() turns it into self.error

    def _grow_head(self, size: int) -> None:
        size = self._head_size = self._head_size + size
        if size > self._header_max:
            self._fail(HeaderTooLargeError(self._head_message(size)))

    # -- llhttp callbacks: the hot path, one request at a time --------------------------------
    def on_url(self, url: bytes) -> None:
        # First callback of each request (llhttp may split the URL over several reads).
        if self.in_head:
            self._url += url
            if self._counting:
                self._grow_head(len(url))
            return
        self.in_head = True
        self._url = url
        self._headers = []
        if self._counting:
            self._head_size = 0
            self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        if self._counting:
            self._grow_head(len(name) + len(value) + 4)
        if _SPECIAL.get(len(name)) == name[0] | 32:  # see _SPECIAL
            self._special = True

    def on_headers_complete(self) -> None:
        parser = self._parser
        request = self._current = self._request_class()  # no __init__: a C-level call
        request.raw_method = method = parser.get_method()
        request.raw_url = self._url
        request.raw_headers = self._headers
        if parser.should_keep_alive() and not self._special:
            # Only HTTP/1.1 keeps alive without a Connection header (llhttp accepts 0.9, 1.0,
            # 1.1 and 2.0; the others need "Connection: keep-alive"): no need to ask llhttp,
            # whose get_http_version() formats a string on every call.
            request.keep_alive = True
            request.version = "1.1"
        else:
            request.keep_alive = parser.should_keep_alive()
            request.version = parser.get_http_version()
        self.in_head = False
        if self._counting:
            self._head_pending = 0
            self._grow_head(len(method) + 14)  # SP URL SP HTTP/x.y CRLF ... CRLF
        if method == b"CONNECT":
            self._fail(MalformedRequestError("CONNECT (tunnelling) is not supported"))
        if self._special:
            self._special = False
            self._check_special(request)

    def _check_special(self, request: ParsedRequest) -> None:
        declared: int | None = None
        expect = upgrade = False
        for name, value in request.raw_headers:
            n = len(name)
            if n == 14 and name.lower() == b"content-length":
                declared = int(value)  # llhttp has checked it is a number, and not repeated
            elif n == 6 and name.lower() == b"expect":
                expect = value.lower() == b"100-continue"
            elif n == 7 and name.lower() == b"upgrade":
                upgrade = True
        if declared is not None and declared > self._body_max:
            self._fail(
                BodyTooLargeError(
                    f"declared body of {declared} bytes exceeds package_max_length={self._body_max}"
                )
            )
        if expect and declared != 0:
            self.continue_wanted = True
        if upgrade and self._parser.should_upgrade():  # CONNECT was refused already
            request.upgrade = True
            request.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._body_max:
            self._fail(
                BodyTooLargeError(
                    f"body of at least {self._body_size} bytes exceeds "
                    f"package_max_length={self._body_max}"
                )
            )
        self._body.append(body)

    def on_message_complete(self) -> None:
        request = self._current
        assert request is not None
        if self._body:
            body = self._body
            request.body = body[0] if len(body) == 1 else b"".join(body)
            self._body = []
            self._body_size = 0
        if self.continue_wanted:
            self.continue_wanted = False
        self._deliver(request)


def _stopped(request: Any) -> None:
    raise _StoppedError
