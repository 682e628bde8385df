"""Request bodies that do not live in memory: uploads streamed to disk, and bodies streamed to
the handler.

:class:`UploadSink` takes a ``multipart/form-data`` body as it arrives
(:mod:`tx_swoole.protocols._multipart` parses it): file parts go to temporary files in
``upload_tmp_dir`` (``tx_swoole.upfile.*``), each at most ``upload_max_filesize`` bytes, at
most ``upload_max_files`` of them; plain fields are kept as text.  The handler then sees
``request.files`` (:class:`UploadedFile` lists by field name) and ``request.form``.  Temporary
files are removed once the handler is done, unless it moved them
(:meth:`UploadedFile.move_to`), and when the client goes away mid-upload.

:class:`BodyStream` is ``request.stream()`` for a handler that takes the body as it comes
(see :func:`~tx_swoole.protocols.http.streaming`): an async iterator of pieces; the
connection stops reading while more than :data:`STREAM_HIGH` bytes wait for the handler.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from typing import IO, Any

from twisted.internet import defer

from tx_swoole.errors import HTTPRequestError, UploadLimitError
from tx_swoole.protocols._multipart import DONE, PART_END, MultipartParser, Part, boundary_of

__all__ = [
    "STREAM_HIGH", "TO_DISK", "TO_HANDLER", "BodyStream", "StreamedBody", "UploadSink",
    "UploadedFile", "body_destination", "stream_of", "streaming",
]  # fmt: skip

STREAM_HIGH = 256 * 1024  # bytes waiting for the handler before reading pauses
STREAM_LOW = 64 * 1024  # ... and resumes
UPLOAD_ERR_OK, UPLOAD_ERR_INI_SIZE, UPLOAD_ERR_PARTIAL, UPLOAD_ERR_NO_FILE = 0, 1, 3, 4  # PHP's


class UploadedFile:
    """One uploaded file, as Swoole's ``$request->files[name]``: ``filename`` (the client's
    name, Swoole's ``name``), ``content_type`` (``type``), ``size``, ``path`` (``tmp_name``:
    the temporary file, "" when there is none) and ``error`` (PHP's codes: 0 ok, 1 over
    ``upload_max_filesize``, 4 no file chosen), with ``message`` saying why.  ``name`` is the
    form field."""

    __slots__ = ("name", "filename", "content_type", "size", "path", "error", "message",
                 "_moved")  # fmt: skip

    def __init__(self, name: str, filename: str, content_type: str, path: str) -> None:
        self.name = name
        self.filename = filename
        self.content_type = content_type
        self.size = 0
        self.path = path
        self.error = UPLOAD_ERR_OK
        self.message = ""
        self._moved = False

    @property
    def tmp_name(self) -> str:
        """Swoole's name for :attr:`path`."""
        return self.path

    @property
    def type(self) -> str:
        """Swoole's name for :attr:`content_type`."""
        return self.content_type

    def move_to(self, destination: str) -> str:
        """Move the file to ``destination`` (kept after the response; Swoole's
        ``move_uploaded_file``); returns the new path."""
        if not self.path:
            raise FileNotFoundError(f"upload {self.filename!r} has no file: {self.message}")
        moved = shutil.move(self.path, destination)
        self.path, self._moved = str(moved), True
        return self.path

    def open(self) -> IO[bytes]:
        """The temporary file, open for reading."""
        return open(self.path, "rb")  # noqa: SIM115 - the caller closes it

    def __repr__(self) -> str:
        return (f"UploadedFile(name={self.name!r}, filename={self.filename!r}, "
                f"size={self.size}, error={self.error})")  # fmt: skip


class UploadSink:
    """Takes one ``multipart/form-data`` body; ``files`` and ``form`` once :meth:`close`
    returned.  Raises :class:`~tx_swoole.errors.MultipartError` (400) or
    :class:`~tx_swoole.errors.UploadLimitError` (413) from :meth:`feed` or :meth:`close`;
    call :meth:`discard` then (and when the client goes away) to remove what was written.

    Resource handling: one temporary file open at a time; plain fields in memory (the body is
    bounded by ``package_max_length``).
    """

    def __init__(self, boundary: bytes, tmp_dir: str, max_filesize: int, max_files: int) -> None:
        self._parser = MultipartParser(boundary)
        self._dir = tmp_dir or None
        self._maxSize = max_filesize
        self._maxFiles = max_files
        self.files: dict[str, list[UploadedFile]] = {}
        self.form: dict[str, list[str]] = {}
        self._count = 0
        self._part: Part | None = None
        self._upload: UploadedFile | None = None
        self._out: IO[bytes] | None = None
        self._field: list[bytes] = []
        self._made: list[UploadedFile] = []

    def feed(self, data: bytes) -> None:
        for event in self._parser.feed(data):
            if event.__class__ is bytes:
                self._content(event)
            elif event is PART_END:
                self._endPart()
            elif event is not DONE:
                self._startPart(event)  # type: ignore[arg-type]

    def _startPart(self, part: Part) -> None:
        self._part = part
        if part.filename is None:
            self._field = []
            return
        upload = UploadedFile(part.name, part.filename, part.content_type, "")
        self.files.setdefault(part.name, []).append(upload)
        self._upload = upload
        if not part.filename:  # an empty file input: no file chosen
            upload.error, upload.message = UPLOAD_ERR_NO_FILE, "no file was chosen"
            return
        self._count += 1
        if self._count > self._maxFiles:
            raise UploadLimitError(f"more than upload_max_files={self._maxFiles} files in one "
                                   "request")  # fmt: skip
        fd, upload.path = tempfile.mkstemp(prefix="tx_swoole.upfile.", dir=self._dir)
        self._made.append(upload)
        self._out = os.fdopen(fd, "wb")

    def _content(self, data: bytes) -> None:
        upload = self._upload
        if upload is None:
            self._field.append(data)
            return
        if self._out is None:
            return  # refused already (or no file chosen): the rest is dropped
        upload.size += len(data)
        if self._maxSize and upload.size > self._maxSize:
            self._out.close()
            self._out = None
            os.unlink(upload.path)
            upload.path = ""
            upload.error = UPLOAD_ERR_INI_SIZE
            upload.message = (f"file {upload.filename!r} of at least {upload.size} bytes exceeds "
                              f"upload_max_filesize={self._maxSize}")  # fmt: skip
            return
        self._out.write(data)

    def _endPart(self) -> None:
        part = self._part
        if part is None:
            return
        if self._upload is not None:
            if self._out is not None:
                self._out.close()
                self._out = None
            self._upload = None
        else:
            value = b"".join(self._field).decode("utf-8", "replace")
            self.form.setdefault(part.name, []).append(value)
            self._field = []
        self._part = None

    def close(self) -> None:
        """The body ended (raises unless the parts were closed properly)."""
        self._parser.close()

    def discard(self) -> None:
        """Remove every temporary file not moved away (after the handler, or on failure)."""
        if self._out is not None:
            self._out.close()
            self._out = None
        for upload in self._made:
            if upload.path and not upload._moved:
                try:
                    os.unlink(upload.path)
                except FileNotFoundError:
                    pass  # the application moved or removed it
                upload.path = ""
        self._made = []


class BodyStream:
    """``request.stream()``: ``async for piece in request.stream()`` gets the body as it
    arrives; ``await stream.read()`` all of it.  Raises the request's error (413, 408, a lost
    connection) if the body cannot be completed."""

    def __init__(self, on_drained: Callable[[], None]) -> None:
        self._pieces: deque[bytes] = deque()
        self._size = 0
        self._ended = False
        self._error: BaseException | None = None
        self._waiter: defer.Deferred[None] | None = None
        self._onDrained = on_drained
        self.paused = False  # set by the connection while it stopped reading for us

    def push(self, data: bytes) -> bool:
        """A piece arrived; True when the connection should stop reading."""
        self._pieces.append(data)
        self._size += len(data)
        self._wake()
        return self._size > STREAM_HIGH

    def finish(self) -> None:
        self._ended = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self._ended:
            self._error = error
            self._ended = True
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(None)

    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._pieces:
            if self._error is not None:
                raise self._error
            if self._ended:
                raise StopAsyncIteration
            self._waiter = defer.Deferred()
            await self._waiter
        data = self._pieces.popleft()
        self._size -= len(data)
        if self.paused and self._size < STREAM_LOW:
            self.paused = False
            self._onDrained()
        return data

    async def read(self) -> bytes:
        """The whole body (bounded by ``package_max_length``)."""
        return b"".join([piece async for piece in self])

    def __repr__(self) -> str:
        return f"BodyStream(waiting={self._size}, ended={self._ended})"


def stream_of(body: bytes) -> BodyStream:
    """A finished stream of ``body`` (``request.stream()`` of a body read whole)."""
    stream = BodyStream(lambda: None)
    if body:
        stream.push(body)
    stream.finish()
    return stream


TO_HANDLER, TO_DISK = "handler", "upload"  # where a streamed body goes


def body_destination(streams_body: Any, request: Any) -> str:
    """Where a request's body goes as it arrives: :data:`TO_HANDLER` when the handler's
    ``streams_body(request)`` (see :func:`streaming`) says so, :data:`TO_DISK` for a
    ``multipart/form-data`` upload, "" when it is collected whole as usual."""
    if streams_body is not None and streams_body(request):
        return TO_HANDLER
    for name, value in request.raw_headers:
        if len(name) == 12 and name.lower() == b"content-type":
            return TO_DISK if value[:19].lower() == b"multipart/form-data" else ""
    return ""


class StreamedBody:
    """One streamed request's body on its way, between the connection and where it goes
    (``request.streamed``, from :func:`body_destination`): the handler's :class:`BodyStream`
    (the handler is called at once), or
    an :class:`UploadSink` (the handler is called once the upload is on disk, and its
    temporary files are removed when it is done).

    ``serve(request, response)`` calls the handler (None when done, else a Deferred);
    ``pause(True/False)`` stops and resumes reading; ``refuse(error)`` answers an upload
    that is malformed or over a limit (and the connection closes).  When the connection
    refuses the request (too large, too slow), :meth:`refused` says whether the refusal may
    still be sent.
    """

    def __init__(
        self, request: Any, response: Any, serve: Callable[..., Any],
        pause: Callable[[bool], None], refuse: Callable[[HTTPRequestError], None],
        settings: Any,
    ) -> None:  # fmt: skip
        self.request = request
        self.response = response
        self._serve = serve
        self._pause = pause
        self._refuse = refuse
        self.sink: UploadSink | None = None
        self.stream: BodyStream | None = None
        self._done = False  # the handler finished: what still comes is dropped
        self._failed = False
        if request.streamed == TO_HANDLER:
            self.stream = BodyStream(lambda: pause(False))
            request.body_stream = self.stream
            self._whenDone(serve(request, response))
            return
        try:
            boundary = boundary_of(request.headers.get("content-type", ""))
            assert boundary is not None  # the connection streams multipart/form-data only
            self.sink = UploadSink(
                boundary,
                settings.upload_tmp_dir,
                settings.upload_max_filesize,
                settings.upload_max_files,
            )
        except HTTPRequestError as e:
            self._fail(e)

    def _whenDone(self, result: Any) -> None:
        if result is None:
            self._handlerDone(None)
        else:
            result.addBoth(self._handlerDone)

    def _handlerDone(self, result: Any) -> Any:
        self._done = True
        if self.sink is not None:
            self.sink.discard()
        if self.stream is not None and self.stream.paused:
            self.stream.paused = False
            self._pause(False)  # nobody reads the rest: drop it as it comes
        return result

    def piece(self, data: bytes) -> None:
        if self._done or self._failed:
            return
        if self.sink is not None:
            try:
                self.sink.feed(data)
            except HTTPRequestError as e:
                self._fail(e)
            return
        stream = self.stream
        assert stream is not None
        if stream.push(data) and not stream.paused:
            stream.paused = True
            self._pause(True)

    def _fail(self, error: HTTPRequestError) -> None:
        self._failed = True
        if self.sink is not None:
            self.sink.discard()
        self.response.started = self.response.ended = True
        self._refuse(error)  # then the rest is read and dropped, and the connection closes

    def end(self) -> None:
        """The body is complete: the upload's handler runs, the stream ends."""
        if self.stream is not None:
            self.stream.finish()
            return
        sink = self.sink
        if self._failed or sink is None:
            return
        try:
            sink.close()
        except HTTPRequestError as e:
            self._fail(e)
            return
        cache = self.request.cache
        if cache is None:
            cache = self.request.cache = {}
        cache["form"], cache["files"] = sink.form, sink.files
        self._whenDone(self._serve(self.request, self.response))

    def refused(self, error: HTTPRequestError) -> bool:
        """The connection refused the request (body too large, too slow): True when the
        refusal may be sent (nothing of the response was)."""
        may = not self.response.started
        self.response.started = self.response.ended = True  # before the handler hears of it
        self._done = True
        if self.stream is not None:
            self.stream.fail(error)
        if self.sink is not None:
            self.sink.discard()
        return may

    def lost(self, reason: Any) -> bool:
        """The client went away (or half-closed) mid-body; True when the handler is running
        and hears of it through its stream (else nothing will answer)."""
        running = self.stream is not None and not self._done
        if self.stream is not None:
            self.stream.fail(ConnectionError(f"the client went away mid-body: {reason.value}"))
        if self.sink is not None:
            self.sink.discard()
        self._done = True
        return running


def streaming(handler: Any = None, *, when: Callable[[Any], bool] | None = None) -> Any:
    """Mark ``handler`` as one that takes request bodies as they arrive: it is called as
    soon as a request's head is in, and reads ``async for piece in request.stream()``
    (reading pauses while it lags).  ``when(request)`` picks the requests (default: all
    with a body); the others are read whole first as usual.  Use as ``@streaming`` or
    ``@streaming(when=lambda request: request.path == "/upload")``."""

    def mark(h: Any) -> Any:
        h.streams_body = when or (lambda request: True)
        return h

    return mark(handler) if handler is not None else mark
