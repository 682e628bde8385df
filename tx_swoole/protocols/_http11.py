"""Sans-IO HTTP/1.1 request reader with Swoole's limits, over httptools (llhttp).

:class:`RequestReader` takes bytes with :meth:`~RequestReader.feed` and returns the requests
completed so far as :class:`ParsedRequest` objects (head and whole body).  Limits are checked
before memory is spent:

- request line + headers over ``header_max`` bytes → :class:`HeaderTooLargeError` (431); the
  size counted is that of the canonical head (``METHOD SP URL SP HTTP/x.y CRLF``, each
  ``Name: value CRLF``, the final CRLF), and bytes of a head still incomplete across reads are
  counted too, so a never-ending head is refused once it passes the limit;
- a declared ``Content-Length`` over ``body_max`` → :class:`BodyTooLargeError` (413) as soon as
  the head is complete, before any body byte is kept; chunked bodies are counted as they
  arrive;
- anything llhttp rejects (bad request line, invalid header bytes, bad chunk sizes, both
  Content-Length and Transfer-Encoding, duplicate Content-Length) → :class:`MalformedRequestError`.

After an error the reader is dead (:attr:`RequestReader.error` says why); further input is
ignored.  No Twisted import here.
"""

from __future__ import annotations

from typing import Any

import httptools

from tx_swoole.errors import (
    BodyTooLargeError,
    HeaderTooLargeError,
    HTTPRequestError,
    MalformedRequestError,
)

_SAMPLE = 40  # bytes of peer data quoted in error messages, at most


class ParsedRequest:
    """One complete request: head and body.  ``keep_alive`` follows HTTP/1.0 and 1.1 rules.

    ``owner`` and ``cache`` are free for the code that serves the request (the HTTP protocol
    subclasses this class as its ``Request``, so one object serves per request).
    """

    __slots__ = (
        "raw_method", "raw_url", "version", "raw_headers", "body", "keep_alive", "upgrade",
        "owner", "cache",
    )  # fmt: skip

    def __init__(self, method: bytes, url: bytes, version: str, headers: list[tuple[bytes, bytes]]):
        self.raw_method = method
        self.raw_url = url
        self.version = version
        self.raw_headers = headers
        self.body = b""
        self.keep_alive = True
        self.upgrade = False
        self.owner: Any = None
        self.cache: Any = None


class RequestReader:
    """Feeds bytes to llhttp and collects complete requests, enforcing the limits.

    ``continue_wanted`` becomes True when a head with ``Expect: 100-continue`` and an
    acceptable body size completes and its body has not arrived yet; the caller answers
    ``100 Continue`` and calls :meth:`continue_sent`.  ``in_head`` is True while a request head
    is partly received (for header-read timeouts).
    """

    __slots__ = (
        "_parser", "_header_max", "_body_max", "_done", "_url", "_headers", "_head_size",
        "_head_pending", "_body", "_body_size", "_content_length", "_expect", "error",
        "in_head", "continue_wanted", "dead", "_current", "_request_class", "_new",
    )  # fmt: skip

    def __init__(
        self, header_max: int, body_max: int, request_class: type[ParsedRequest] = ParsedRequest
    ) -> None:
        self._request_class = request_class
        self._new = object.__new__
        self._parser = httptools.HttpRequestParser(self)
        self._header_max = header_max
        self._body_max = body_max
        self._done: list[ParsedRequest] = []
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_size = 0
        self._head_pending = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._content_length: bytes | None = None
        self._expect = False
        self.error: HTTPRequestError | None = None
        self._current: ParsedRequest | None = None
        self.in_head = False
        self.continue_wanted = False
        self.dead = False

    # -- feeding ---------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[ParsedRequest]:
        """Parse ``data``; return the requests it completed.

        When the data breaks a limit or the syntax, :attr:`error` is set (a
        :class:`~tx_swoole.errors.HTTPRequestError` subclass) and the reader is dead: the
        requests returned, complete before the bad one, should still be answered, then the
        error.
        """
        if self.dead:
            return []
        in_head_at_start = self.in_head
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgrade(data, int(e.args[0]))
        except httptools.HttpParserError as e:
            self.dead = True
            if self.error is None:
                sample = data[:_SAMPLE]
                self.error = MalformedRequestError(f"malformed request: {e} (data {sample!r})")
        if self.in_head and not self.dead:
            if in_head_at_start:  # all of data is head until the head completes
                self._head_pending += len(data)
            size = max(self._head_pending, self._head_size)
            if size > self._header_max:
                self.dead = True
                self.error = HeaderTooLargeError(self._head_message(size))
        done = self._done
        if done:
            self._done = []
        return done

    def _upgrade(self, data: bytes, offset: int) -> None:
        # An Upgrade or CONNECT request: we do not switch protocols; the request is answered
        # and the connection closed, whatever followed it is dropped.
        if self._done and self._done[-1].raw_method == b"CONNECT":
            self._done.pop()
        if self._done:
            self._done[-1].keep_alive = False
            self._done[-1].upgrade = True
        else:
            self.error = MalformedRequestError("CONNECT (tunnelling) is not supported")
        self.dead = True

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
        raise error  # stops llhttp; feed() turns it into self.error

    # -- llhttp callbacks -------------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        # First callback of each request (llhttp may split the URL over several calls).
        if self.in_head:
            self._url += url
            size = self._head_size = self._head_size + len(url)
        else:
            self.in_head = True
            self._url = url
            self._headers = []
            self._content_length = None
            self._expect = False
            self._head_pending = 0
            size = self._head_size = len(url)
        if size > self._header_max:
            self._fail(HeaderTooLargeError(self._head_message(size)))

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._head_size = self._head_size + len(name) + len(value) + 4
        if size > self._header_max:
            self._fail(HeaderTooLargeError(self._head_message(size)))
        n = len(name)
        if n == 14 and name.lower() == b"content-length":
            if self._content_length is not None and self._content_length != value:
                self._fail(MalformedRequestError("conflicting Content-Length headers"))
            self._content_length = value
        elif n == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        method = parser.get_method()
        size = self._head_size + len(method) + 14  # SP URL SP HTTP/x.y CRLF ... CRLF
        if size > self._header_max:
            self._fail(HeaderTooLargeError(self._head_message(size)))
        self.in_head = False
        if self._content_length is not None:
            declared = int(self._content_length)  # llhttp has checked it is a number
            if declared > self._body_max:
                self._fail(
                    BodyTooLargeError(
                        f"declared body of {declared} bytes exceeds "
                        f"package_max_length={self._body_max}"
                    )
                )
            if self._expect and declared:
                self.continue_wanted = True
        elif self._expect:
            self.continue_wanted = True
        # Built without an __init__ frame: this runs once per request.
        request = self._current = self._new(self._request_class)
        request.raw_method = method
        request.raw_url = self._url
        request.version = parser.get_http_version()
        request.raw_headers = self._headers
        request.body = b""
        request.upgrade = False
        request.owner = request.cache = None

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
        body = self._body
        if body:
            request.body = body[0] if len(body) == 1 else b"".join(body)
            self._body = []
            self._body_size = 0
        request.keep_alive = self._parser.should_keep_alive()
        if self.continue_wanted:
            self.continue_wanted = False
        self._done.append(request)
