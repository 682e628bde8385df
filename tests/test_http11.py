"""The sans-IO HTTP/1.1 request reader: limits at N and N+1, chunked bodies, smuggling."""

from __future__ import annotations

import pytest

from tx_swoole.errors import BodyTooLargeError, HeaderTooLargeError, MalformedRequestError
from tx_swoole.protocols._http11 import RequestReader


def head_of_size(size: int) -> bytes:
    """A GET head of exactly ``size`` bytes (request line + headers + blank line)."""
    base = b"GET / HTTP/1.1\r\nX: \r\n\r\n"
    return base.replace(b"X: ", b"X: " + b"a" * (size - len(base)))


@pytest.mark.parametrize(("size", "ok"), [(8192, True), (8193, False)])
def test_header_limit_at_n_and_n_plus_1(size: int, ok: bool) -> None:
    """A head of exactly http_header_max_length is served; one byte more is 431."""
    head = head_of_size(size)
    assert len(head) == size
    reader = RequestReader(8192, 1000)
    done = reader.feed(head)
    if ok:
        assert len(done) == 1 and reader.error is None
    else:
        assert done == [] and isinstance(reader.error, HeaderTooLargeError)
        assert reader.error.status == 431 and "8193" in reader.error.message


@pytest.mark.parametrize("chunk", [1, 7, 100, 4096])
def test_header_limit_holds_whatever_the_read_sizes(chunk: int) -> None:
    """The head limit holds when the head arrives in pieces of any size."""
    for size, ok in ((8192, True), (8193, False)):
        reader = RequestReader(8192, 1000)
        head = head_of_size(size)
        done = []
        for i in range(0, len(head), chunk):
            done += reader.feed(head[i : i + chunk])
        assert (len(done) == 1) is ok and (reader.error is None) is ok


def test_endless_header_refused_without_buffering_it() -> None:
    """A header value that never ends is refused once it passes the limit."""
    reader = RequestReader(8192, 1000)
    reader.feed(b"GET / HTTP/1.1\r\nX: ")
    for _ in range(100):
        reader.feed(b"a" * 1000)
        if reader.error:
            break
    assert isinstance(reader.error, HeaderTooLargeError)
    assert reader.dead and reader.feed(b"more") == []


@pytest.mark.parametrize(("length", "ok"), [(1000, True), (1001, False)])
def test_declared_body_limit_before_body(length: int, ok: bool) -> None:
    """Content-Length over package_max_length is refused from the head alone (413)."""
    reader = RequestReader(8192, 1000)
    done = reader.feed(b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % length)
    assert done == []
    if ok:
        assert reader.error is None
        assert reader.feed(b"b" * length)[0].body == b"b" * length
    else:
        assert isinstance(reader.error, BodyTooLargeError) and reader.error.status == 413
        assert "declared body of 1001 bytes exceeds package_max_length=1000" in reader.error.message


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


@pytest.mark.parametrize(("sizes", "ok"), [((500, 500), True), ((500, 501), False)])
def test_chunked_body_counted_as_it_arrives(sizes: tuple[int, int], ok: bool) -> None:
    """Chunked bodies count toward package_max_length chunk by chunk."""
    reader = RequestReader(8192, 1000)
    body = chunked(*(b"c" * n for n in sizes))
    done = reader.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    if ok:
        assert done[0].body == b"c" * 1000
    else:
        assert done == [] and isinstance(reader.error, BodyTooLargeError)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"G@T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    ],
    ids=["request-line", "method", "nul", "header-space", "chunk-size", "cl-and-te",
         "dup-cl", "negative-cl", "connect"],
)  # fmt: skip
def test_malformed_and_smuggling_requests_are_400(raw: bytes) -> None:
    """Malformed and ambiguous (smuggling) requests are refused with 400, none delivered."""
    reader = RequestReader(8192, 1000)
    assert reader.feed(raw) == []
    assert isinstance(reader.error, MalformedRequestError) and reader.error.status == 400


def test_pipelined_requests_with_bodies_in_order() -> None:
    """Several requests in one read, bodies included, come out whole and in order."""
    reader = RequestReader(8192, 1000)
    data = (
        b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        + b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(b"de", b"f")
        + b"GET /c?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
    )  # fmt: skip
    done = reader.feed(data)
    assert [(r.raw_method, r.raw_url, r.body) for r in done] == [
        (b"POST", b"/a", b"abc"), (b"POST", b"/b", b"def"), (b"GET", b"/c?x=1", b"")
    ]  # fmt: skip
    assert done[2].raw_headers == [(b"Host", b"h")]


def test_good_request_before_bad_one_is_still_delivered() -> None:
    """A valid request pipelined before a bad one is delivered; the error follows it."""
    reader = RequestReader(8192, 1000)
    done = reader.feed(b"GET /ok HTTP/1.1\r\n\r\nGARBAGE\r\n\r\n")
    assert [r.raw_url for r in done] == [b"/ok"] and reader.error is not None


@pytest.mark.parametrize(
    ("raw", "keep_alive", "version"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", True, "1.1"),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", False, "1.1"),
        (b"GET / HTTP/1.0\r\n\r\n", False, "1.0"),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True, "1.0"),
    ],
)
def test_keep_alive_rules(raw: bytes, keep_alive: bool, version: str) -> None:
    """HTTP/1.1 keeps alive unless told otherwise; HTTP/1.0 only with keep-alive."""
    [request] = RequestReader(8192, 1000).feed(raw)
    assert (request.keep_alive, request.version) == (keep_alive, version)


@pytest.mark.parametrize(("length", "wanted"), [(1000, True), (0, False)])
def test_expect_continue_only_within_limits(length: int, wanted: bool) -> None:
    """Expect: 100-continue is flagged only for an acceptable, non-empty body."""
    reader = RequestReader(8192, 1000)
    reader.feed(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % length)
    assert reader.continue_wanted is wanted
    over = RequestReader(8192, 1000)
    over.feed(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1001\r\n\r\n")
    assert not over.continue_wanted and isinstance(over.error, BodyTooLargeError)


def test_upgrade_request_delivered_and_connection_marked_to_close() -> None:
    """An Upgrade request is answered normally (no switch) and the connection then closes."""
    reader = RequestReader(8192, 1000)
    [request] = reader.feed(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nxx")
    assert request.upgrade and not request.keep_alive and reader.error is None


def test_in_head_tracks_partial_heads() -> None:
    """in_head is True while a head is partly received (for the header timeout)."""
    reader = RequestReader(8192, 1000)
    reader.feed(b"GET / HT")
    assert reader.in_head
    reader.feed(b"TP/1.1\r\n\r\n")
    assert not reader.in_head


def compact_head(size: int) -> bytes:
    """A GET head of canonical ``size`` bytes written as compactly as llhttp allows: empty
    ``A:`` header lines (4 raw bytes, 5 canonical), the most a raw head can undercount."""
    head = b"GET / HTTP/1.1\r\n"
    n = (size - len(head) - 2 - len(b"Z: \r\n")) // 5
    value = b"v" * (size - len(head) - 2 - len(b"Z: \r\n") - 5 * n)
    out = head + b"A:\r\n" * n + b"Z:" + value + b"\r\n\r\n"
    assert len(out) == size - n - 1  # one byte short per line, "Z:" included
    return out


@pytest.mark.parametrize("chunk", [None, 1, 500, 1000])
@pytest.mark.parametrize(("size", "ok"), [(1000, True), (1001, False)])
def test_compact_heads_are_measured_canonically(chunk: int | None, size: int, ok: bool) -> None:
    """A head is measured in canonical form whether or not its read was small enough to skip
    measuring: a compact head of canonical N+1 bytes is refused in one read or in pieces."""
    raw = compact_head(size)
    assert len(raw) < size * 81 // 100  # just over the 4/5 of a read that goes unmeasured
    reader = RequestReader(1000, 1000)
    step = chunk or len(raw)
    done = []
    for i in range(0, len(raw), step):
        done += reader.feed(raw[i : i + step])
    assert (len(done) == 1) is ok and isinstance(reader.error, HeaderTooLargeError) is not ok


def test_deliver_serves_requests_during_the_parse_and_stop_ends_it() -> None:
    """With ``deliver``, each request is handed over as soon as it completes; stop() from
    inside ends the parse (the rest of the read is not parsed, no error)."""
    seen: list[bytes] = []

    def deliver(request: object) -> None:
        seen.append(request.raw_url)  # type: ignore[attr-defined]
        if request.raw_url == b"/2":  # type: ignore[attr-defined]
            reader.stop()

    reader = RequestReader(8192, 1000, deliver=deliver)
    data = b"".join(b"GET /%d HTTP/1.1\r\n\r\n" % i for i in (1, 2, 3)) + b"garbage\r\n\r\n"
    assert reader.push(data) is True  # dead: nothing more will be parsed
    assert seen == [b"/1", b"/2"] and reader.error is None and reader.feed(b"GET /4") == []


def test_a_fault_in_deliver_is_raised_not_taken_for_bad_input() -> None:
    """An exception from the code requests are delivered to is not the peer's fault: it
    propagates instead of becoming a 400."""

    def deliver(request: object) -> None:
        raise RuntimeError("bug")

    reader = RequestReader(8192, 1000, deliver=deliver)
    with pytest.raises(RuntimeError, match="bug"):
        reader.push(b"GET / HTTP/1.1\r\n\r\n")
    assert reader.error is None


@pytest.mark.parametrize(
    ("raw", "keep_alive", "version", "upgrade"),
    [
        (b"GET / HTTP/2.0\r\n\r\n", False, "2.0", False),
        (b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", True, "1.1", False),
        (b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", False, "1.1", True),
    ],
)
def test_version_keep_alive_and_upgrade(
    raw: bytes, keep_alive: bool, version: str, upgrade: bool
) -> None:
    """Version and keep-alive with and without a Connection header; an upgrade request is
    delivered marked, not kept alive, and nothing after it is parsed."""
    reader = RequestReader(8192, 1000)
    done = reader.feed(raw + b"GET /next HTTP/1.1\r\n\r\n")
    request = done[0]
    assert (request.keep_alive, request.version, request.upgrade) == (keep_alive, version, upgrade)
    assert len(done) == (2 if keep_alive else 1) and reader.dead is not keep_alive
