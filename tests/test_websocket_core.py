"""The sans-IO WebSocket core, table-driven after the Autobahn TestSuite's case groups: every
case fed whole, byte by byte, and followed by more data."""

from __future__ import annotations

import json
import random
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tx_swoole.protocols._websocket import (
    BINARY,
    CLOSE,
    CLOSED,
    CLOSING,
    CONT,
    PING,
    PONG,
    TEXT,
    Closed,
    PerMessageDeflate,
    Ping,
    Pong,
    Send,
    WebSocketConnection,
    _apply_mask,
    accept_key,
    apply_mask,
    close_payload,
    frame,
    masked_frame,
    valid_close_code,
)

KEY = b"\x37\xfa\x21\x3d"


def c(op: int, payload: bytes = b"", fin: bool = True, rsv: int = 0) -> bytes:
    """A frame as a client sends it (masked), with reserved bits ``rsv`` (0-7)."""
    data = bytearray(masked_frame(op, payload, fin, key=KEY))
    data[0] |= rsv << 4
    return bytes(data)


def close_frame(code: int | None = None, reason: bytes = b"") -> bytes:
    return c(CLOSE, b"" if code is None else code.to_bytes(2, "big") + reason)


def s_close(code: int, reason: str = "") -> Send:
    """The close frame the server sends."""
    return Send(frame(CLOSE, close_payload(code, reason)))


def feed(data: bytes, how: str, **kw: Any) -> list[Any]:
    conn = WebSocketConnection(**kw)
    if how == "whole":
        return conn.receive(data)
    if how == "bytewise":
        return [e for i in range(len(data)) for e in conn.receive(data[i : i + 1])]
    assert how == "trailing"  # a frame's worth of more data after: changes nothing before it
    events = conn.receive(data + c(TEXT, b"after"))
    return events[:-1] if events[-1:] == ["after"] else events


HOW = ["whole", "bytewise", "trailing"]


def expect(*events: Any, fail: tuple[int, str] | None = None) -> list[Any]:
    out = list(events)
    if fail is not None:
        code, reason = fail
        out += [s_close(code, reason), Closed(code, reason, clean=False)]
    return out


CASES: dict[str, tuple[bytes, list[Any]]] = {
    # 1: framing
    "1.1.1 empty text": (c(TEXT), [""]),
    "1.1.2 text 125": (c(TEXT, b"*" * 125), ["*" * 125]),
    "1.1.3 text 126": (c(TEXT, b"*" * 126), ["*" * 126]),
    "1.1.4 text 127": (c(TEXT, b"*" * 127), ["*" * 127]),
    "1.1.5 text 65535": (c(TEXT, b"*" * 65535), ["*" * 65535]),
    "1.1.6 text 65536": (c(TEXT, b"*" * 65536), ["*" * 65536]),
    "1.2.1 empty binary": (c(BINARY), [b""]),
    "1.2.4 binary 127": (c(BINARY, b"\xfe" * 127), [b"\xfe" * 127]),
    "1.2.6 binary 65536": (c(BINARY, b"\xfe" * 65536), [b"\xfe" * 65536]),
    "two messages": (c(TEXT, b"a") + c(BINARY, b"b"), ["a", b"b"]),
    # 2: ping / pong
    "2.1 ping empty": (c(PING), [Ping(b""), Send(frame(PONG, b""))]),
    "2.2 ping text": (c(PING, b"Hello"), [Ping(b"Hello"), Send(frame(PONG, b"Hello"))]),
    "2.4 ping 125": (
        c(PING, b"\xfe" * 125),
        [Ping(b"\xfe" * 125), Send(frame(PONG, b"\xfe" * 125))],
    ),
    "2.5 ping 126": (
        c(PING, b"\xfe" * 126),
        expect(fail=(1002, "control frame of 126 bytes (at most 125)")),
    ),
    "2.6 unsolicited pong": (c(PONG, b"x"), [Pong(b"x")]),
    "2.7 pong then ping": (
        c(PONG) + c(PING, b"p"),
        [Pong(b""), Ping(b"p"), Send(frame(PONG, b"p"))],
    ),
    # 3: reserved bits
    **{
        f"3.{rsv} rsv={rsv}": (
            c(TEXT, b"ok") + c(TEXT, b"bad", rsv=rsv),
            expect("ok", fail=(1002, "reserved bits set (no extension negotiated)")),
        )
        for rsv in range(1, 8)
    },
    "3.x rsv on ping": (
        c(PING, rsv=2),
        expect(fail=(1002, "reserved bits set (no extension negotiated)")),
    ),
    # 4: opcodes
    **{
        f"4.{op:#x} reserved opcode": (
            c(TEXT, b"ok") + c(op, b"x") + c(PING),
            expect("ok", fail=(1002, f"reserved opcode {op:#x}")),
        )
        for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)
    },
    # 5: fragmentation
    "5.1 fragmented ping": (
        c(PING, b"a", fin=False) + c(CONT, b"b"),
        expect(fail=(1002, "fragmented control frame")),
    ),
    "5.3 text in 2": (c(TEXT, b"frag", fin=False) + c(CONT, b"ment"), ["fragment"]),
    "5.5 text in 5": (
        b"".join(c(TEXT if i == 0 else CONT, b"x", fin=i == 4) for i in range(5)),
        ["xxxxx"],
    ),
    "5.6 ping inside": (
        c(TEXT, b"fr", fin=False) + c(PING, b"p") + c(CONT, b"ag"),
        [Ping(b"p"), Send(frame(PONG, b"p")), "frag"],
    ),
    "5.9 continuation first": (
        c(CONT, b"x") + c(TEXT, b"y"),
        expect(fail=(1002, "continuation frame with no message in progress")),
    ),
    "5.12 binary inside text": (
        c(TEXT, b"a", fin=False) + c(BINARY, b"b") + c(CONT, b"c"),
        expect(fail=(1002, "new message before the fragmented one ended")),
    ),
    "5.19 binary fragments": (
        c(BINARY, b"\x00", fin=False) + c(CONT, b"\x01", fin=False) + c(CONT, b"\x02"),
        [b"\x00\x01\x02"],
    ),
    "5.20 empty fragments": (c(TEXT, fin=False) + c(CONT, fin=False) + c(CONT), [""]),
    # 6: UTF-8
    "6.2 utf-8 whole": (c(TEXT, "Hello-µ@ßöäüàá-UTF-8!!".encode()), ["Hello-µ@ßöäüàá-UTF-8!!"]),
    "6.3.1 invalid whole": (
        c(TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"),
        expect(fail=(1007, "text message is not valid UTF-8")),
    ),
    "6.4.1 invalid in first of 3 fragments": (
        c(TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", fin=False)
        + c(CONT, b"\xf4\x90\x80\x80", fin=False)
        + c(CONT, b"edited"),
        expect(fail=(1007, "text message is not valid UTF-8")),
    ),
    "6.x surrogate": (
        c(TEXT, b"\xed\xa0\x80"),
        expect(fail=(1007, "text message is not valid UTF-8")),
    ),
    "6.x overlong": (c(TEXT, b"\xc0\xaf"), expect(fail=(1007, "text message is not valid UTF-8"))),
    "6.x past U+10FFFF": (
        c(TEXT, b"\xf4\x90\x80\x80"),
        expect(fail=(1007, "text message is not valid UTF-8")),
    ),
    "6.x truncated at the end": (
        c(TEXT, b"ok\xe2\x82", fin=False) + c(CONT, b""),
        expect(fail=(1007, "text message is not valid UTF-8")),
    ),
    # 7: close
    "7.1.1 close empty": (close_frame(), [Send(frame(CLOSE, b"")), Closed(1005, "")]),
    "7.1.x close then data": (
        close_frame(1000) + c(TEXT, b"late"),
        [Send(frame(CLOSE, b"\x03\xe8")), Closed(1000, "")],
    ),
    "7.3.2 close 1-byte payload": (
        c(CLOSE, b"\x03"),
        expect(fail=(1002, "close frame with a 1-byte payload")),
    ),
    "7.3.4 close with reason": (
        close_frame(1000, b"bye"),
        [Send(frame(CLOSE, b"\x03\xe8")), Closed(1000, "bye")],
    ),
    "7.3.6 close reason 123 bytes": (
        close_frame(1000, b"*" * 123),
        [Send(frame(CLOSE, b"\x03\xe8")), Closed(1000, "*" * 123)],
    ),
    "7.5.1 close reason bad utf-8": (
        close_frame(1000, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"),
        expect(fail=(1007, "close reason is not valid UTF-8")),
    ),
    **{
        f"7.7 valid code {code}": (
            close_frame(code),
            [Send(frame(CLOSE, code.to_bytes(2, "big"))), Closed(code, "")],
        )
        for code in (
            1000,
            1001,
            1002,
            1003,
            1007,
            1008,
            1009,
            1010,
            1011,
            1012,
            1013,
            1014,
            3000,
            3999,
            4000,
            4999,
        )
    },
    **{
        f"7.9 invalid code {code}": (
            close_frame(code),
            expect(fail=(1002, f"invalid close code {code}")),
        )
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535)
    },
    # 10: miscellaneous
    "10.1.1 text 65536 auto-fragmented to 1300": (
        b"".join(
            c(CONT if i else TEXT, b"*" * min(1300, 65536 - i), fin=i + 1300 >= 65536)
            for i in range(0, 65536, 1300)
        ),
        ["*" * 65536],
    ),
    # masking
    "unmasked client frame": (
        frame(TEXT, b"hi"),
        expect(fail=(1002, "unmasked frame from the client")),
    ),
    "64-bit length top bit": (
        bytes((0x81, 0xFF)) + b"\x80" + b"\x00" * 7,
        expect(fail=(1002, "frame length with its top bit set")),
    ),
}


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("name", list(CASES))
def test_case(name: str, how: str) -> None:
    data, events = CASES[name]
    assert feed(data, how) == events


@pytest.mark.parametrize("how", HOW)
def test_9_a_frame_over_the_limit_is_refused_from_its_header(how: str) -> None:
    head = c(BINARY, b"\x00" * 70000)[:14]  # the header and mask key only
    events = feed(head, "whole" if how == "trailing" else how, max_message=65536)
    assert events == expect(
        fail=(1009, "message of at least 70000 bytes exceeds package_max_length=65536")
    )


@pytest.mark.parametrize("how", HOW)
def test_9_fragments_adding_up_past_the_limit(how: str) -> None:
    data = c(TEXT, b"a" * 600, fin=False) + c(CONT, b"b" * 600, fin=False) + c(CONT, b"c")
    assert feed(data, how, max_message=1000) == expect(
        fail=(1009, "message of at least 1200 bytes exceeds package_max_length=1000")
    )


def test_a_message_exactly_at_the_limit_passes() -> None:
    assert feed(c(BINARY, b"x" * 1000), "whole", max_message=1000) == [b"x" * 1000]


@pytest.mark.parametrize("text", ["κόσμε", "€uro 😀 ok", "aé"])
def test_6_valid_utf_8_split_at_every_byte_across_fragments(text: str) -> None:
    raw = text.encode()
    for cut in range(len(raw) + 1):
        data = c(TEXT, raw[:cut], fin=False) + c(CONT, raw[cut:])
        assert feed(data, "whole") == [text], cut


def test_a_closed_connection_reads_nothing_more() -> None:
    conn = WebSocketConnection()
    conn.receive(c(TEXT, b"\xff"))
    assert conn.state is CLOSED and conn.receive(c(TEXT, b"ok")) == []
    assert conn.send("x") == b"" and conn.close() == b""


def test_our_close_then_the_peers_answer() -> None:
    conn = WebSocketConnection()
    assert conn.close(1001, "going away") == frame(CLOSE, close_payload(1001, "going away"))
    assert conn.state is CLOSING and conn.send("late") == b"" and conn.close() == b""
    # messages still arriving before the peer's close are dropped; pings get no pong
    assert conn.receive(c(TEXT, b"in flight") + c(PING)) == [Ping(b"")]
    assert conn.receive(close_frame(1001)) == [Closed(1001, "")]
    assert conn.state is CLOSED


def test_close_codes_we_may_not_send_are_refused() -> None:
    conn = WebSocketConnection()
    for code in (1005, 1006, 999, 1015, 2000):
        with pytest.raises(ValueError, match=str(code)):
            conn.close(code)
    assert valid_close_code(1000) and not valid_close_code(1005)


def test_eof_before_the_close_handshake_is_abnormal() -> None:
    conn = WebSocketConnection()
    assert conn.receive_eof() == [
        Closed(1006, "connection closed without a close frame", clean=False)
    ]
    assert conn.receive_eof() == []


def test_a_close_reason_is_cut_to_fit_a_control_frame_on_a_character_boundary() -> None:
    payload = close_payload(1000, "é" * 100)
    assert len(payload) <= 125 and payload[2:].decode() == "é" * 61


def test_send_text_binary_and_sizes() -> None:
    conn = WebSocketConnection()
    assert conn.send("hi") == b"\x81\x02hi" and conn.send(b"\x00") == b"\x82\x01\x00"
    assert conn.send(b"x" * 200)[:4] == b"\x82\x7e\x00\xc8"
    assert conn.send(b"x" * 70000)[:10] == b"\x82\x7f" + (70000).to_bytes(8, "big")
    assert conn.bytesOut == 4 + 3 + 204 + 70010
    with pytest.raises(ValueError, match="126 bytes"):
        conn.ping(b"x" * 126)


def test_client_side_masks_what_it_sends() -> None:
    client, server = WebSocketConnection(client_side=True), WebSocketConnection()
    data = client.send("hello") + client.send(b"\x01\x02") + client.ping(b"p")
    assert data[1] & 0x80 and server.receive(data) == [
        "hello",
        b"\x01\x02",
        Ping(b"p"),
        Send(frame(PONG, b"p")),
    ]
    assert client.receive(server.send("back") + frame(PONG, b"p")) == ["back", Pong(b"p")]


def test_client_refuses_a_masked_frame_from_the_server() -> None:
    client = WebSocketConnection(client_side=True)
    events = client.receive(masked_frame(TEXT, b"x"))
    assert isinstance(events[0], Send) and events[0].data[1] & 0x80  # its close is masked
    assert events[-1] == Closed(1002, "masked frame from the server", clean=False)


@pytest.mark.parametrize("mask", [apply_mask, _apply_mask], ids=["used", "pure-python"])
def test_apply_mask_is_its_own_inverse_and_matches_the_rfc_example(mask: Any) -> None:
    # RFC 6455 5.7: a masked "Hello" from a client
    assert mask(bytes.fromhex("7f9f4d5158"), bytes.fromhex("37fa213d")) == b"Hello"
    for data in (bytes(range(256)) * 37 + b"xyz", b"a", b"ab", b"abc", b"abcd", b"abcde"):
        assert mask(mask(data, KEY), KEY) == data
        assert mask(data, KEY) == bytes(b ^ KEY[i % 4] for i, b in enumerate(data))
    assert mask(b"", KEY) == b""
    assert mask(bytearray(b"Hello"), bytearray(KEY)) == _apply_mask(b"Hello", KEY)


def test_accept_key_matches_the_rfc_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


# -- 12/13: permessage-deflate ---------------------------------------------------------------


def deflated(messages: list[bytes], takeover: bool = True, bits: int = 15) -> list[bytes]:
    out, comp = [], zlib.compressobj(6, zlib.DEFLATED, -bits)
    for m in messages:
        if not takeover:
            comp = zlib.compressobj(6, zlib.DEFLATED, -bits)
        data = comp.compress(m) + comp.flush(zlib.Z_SYNC_FLUSH)
        out.append(data[:-4])
    return out


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("takeover", [True, False])
def test_13_compressed_messages_with_and_without_context_takeover(how: str, takeover: bool) -> None:
    texts = [b"Hello, compressed world! " * 10, b"Hello, compressed world! " * 10, b"other"]
    data = b"".join(c(TEXT, p, rsv=4) for p in deflated(texts, takeover))
    ext = PerMessageDeflate(client_no_context_takeover=not takeover)
    assert feed(data, how, deflate=ext) == [t.decode() for t in texts]


def test_13_a_compressed_message_in_fragments_with_a_ping_between() -> None:
    (payload,) = deflated([b"fragmented and compressed " * 20])
    half = len(payload) // 2
    data = c(BINARY, payload[:half], fin=False, rsv=4) + c(PING) + c(CONT, payload[half:])
    events = feed(data, "bytewise", deflate=PerMessageDeflate())
    assert events == [Ping(b""), Send(frame(PONG, b"")), b"fragmented and compressed " * 20]


def test_12_a_deflate_bomb_stops_at_the_limit() -> None:
    (bomb,) = deflated([b"\x00" * 10_000_000])  # about 10 KB on the wire
    assert len(bomb) < 20_000
    events = feed(c(BINARY, bomb, rsv=4), "whole", deflate=PerMessageDeflate(), max_message=1 << 20)
    assert events == expect(fail=(1009, "message inflates past package_max_length=1048576"))


def test_compression_rules() -> None:
    (payload,) = deflated([b"x"])
    # rsv1 on a continuation frame, and on a message without the extension
    data = c(TEXT, payload, fin=False, rsv=4) + c(CONT, b"", rsv=4)
    assert feed(data, "whole", deflate=PerMessageDeflate())[-1].code == 1002
    assert feed(c(TEXT, payload, rsv=4), "whole")[-1].code == 1002
    assert (
        feed(c(TEXT, b"\xff\xff\xff", rsv=4), "whole", deflate=PerMessageDeflate())[-1].code == 1007
    )


def test_compressed_round_trip_both_ways() -> None:
    offer = "permessage-deflate; client_max_window_bits"
    server_ext = PerMessageDeflate.accept(offer)
    assert server_ext is not None and server_ext.response() == "permessage-deflate"
    client_ext = PerMessageDeflate(client_side=True)
    server = WebSocketConnection(deflate=server_ext)
    client = WebSocketConnection(client_side=True, deflate=client_ext)
    for message in ("text " * 50, b"\x00\x01" * 500, "again " * 50):
        wire = server.send(message)
        assert wire[0] & 0x40 and len(wire) < 100
        assert client.receive(wire) == [message]
        assert server.receive(client.send(message)) == [message]


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        ("permessage-deflate", "permessage-deflate"),
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10",
        ),
        (
            "permessage-deflate; client_max_window_bits=9",
            "permessage-deflate; client_max_window_bits=9",
        ),
        ("x-webkit-deflate-frame, permessage-deflate", "permessage-deflate"),
        ("permessage-deflate; server_max_window_bits=8, permessage-deflate", "permessage-deflate"),
        ("permessage-deflate; unknown=1", None),
        ("permessage-deflate; server_max_window_bits=16", None),
        ("permessage-deflate; server_max_window_bits", None),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
        ("foo", None),
        ("", None),
    ],
)
def test_deflate_negotiation(offer: str, answer: str | None) -> None:
    ext = PerMessageDeflate.accept(offer)
    assert (ext.response() if ext else None) == answer


# -- whatever the split, the same events; whatever the bytes, no exception ----------------------

STREAM = (
    c(TEXT, "héllo".encode())
    + c(PING, b"1")
    + c(BINARY, b"\x00" * 300, fin=False)
    + c(PONG)
    + c(CONT, b"\x01" * 70000)
    + c(TEXT)
    + close_frame(1000, b"done")
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_same_events_whatever_the_split(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    conn = WebSocketConnection()
    events = [
        e for a, b in zip(bounds, bounds[1:], strict=False) for e in conn.receive(STREAM[a:b])
    ]
    assert events == WebSocketConnection().receive(STREAM)
    assert events[-1] == Closed(1000, "done") and events[0] == "héllo"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=8))
def test_random_bytes_never_raise_and_end_closed_or_waiting(data: bytes, cuts: list[int]) -> None:
    conn = WebSocketConnection(max_message=4096, deflate=PerMessageDeflate())
    bounds = [0, *sorted(min(x, len(data)) for x in cuts), len(data)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        for event in conn.receive(data[a:b]):
            assert isinstance(event, str | bytes | Ping | Send | Closed)
    assert len(conn._buf) <= 4096 + 14


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 200])
@pytest.mark.parametrize("op", [TEXT, BINARY])
def test_one_frame_per_read_of_every_size_near_the_length_forms(op: int, size: int) -> None:
    """A read holding exactly one frame (the common case) decodes as any other read."""
    payload = b"a" * size
    message = payload.decode() if op == TEXT else payload
    conn = WebSocketConnection()
    assert conn.receive(c(op, payload)) == [message] and conn.receive(c(op, payload)) == [message]
    assert conn.bytesIn == 2 * len(c(op, payload))
    # split in two, then whole again: nothing left over from the first
    frame_ = c(op, payload)
    assert conn.receive(frame_[:3]) + conn.receive(frame_[3:]) == [message]
    assert conn.receive(frame_) == [message]


# Autobahn's groups 12 and 13 whole: its 18 (message size, auto-fragment size) pairs, over its
# five kinds of data with the default offer (12.1-12.5), and over its seven offers with JSON
# (13.1-13.7); each case a run of messages cut in turn from the data, as Autobahn's are.
MSG_SIZES = [(n, 0) for n in (16, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 131072)] + [
    (8192, 256), (16384, 256), (32768, 256), (65536, 256), (131072, 256), (131072, 1024),
    (131072, 4096), (131072, 32768),
]  # fmt: skip


def _test_data() -> dict[str, str | bytes]:
    """Stand-ins for Autobahn's files, of the same kinds: JSON and HTML (sent as text), a
    bitmap, German prose and a PDF-like mix (sent as binary)."""
    rows = [{"id": i, "name": f"item {i}", "tags": ["a", "b", str(i % 7)], "score": i * 0.5,
             "ok": i % 3 == 0} for i in range(2000)]  # fmt: skip
    html = "".join(f"<tr><td class='c{i % 5}'>Zeile {i}</td><td>&amp; {i * i}</td></tr>\n"
                   for i in range(4000))  # fmt: skip
    bitmap = bytes((x * y // 64 + (x ^ y) % 3) % 256 for y in range(512) for x in range(512))
    faust = (
        "Habe nun, ach! Philosophie, Juristerei und Medizin, und leider auch Theologie "
        "durchaus studiert, mit heißem Bemühn. Da steh ich nun, ich armer Tor! "
    ) * 1500
    noise = random.Random(12).randbytes
    pdf = b"%PDF-1.4\n" + b"".join(
        b"%d 0 obj << /Length 1024 >> stream\n" % i + noise(1024) + b"\nendstream\n"
        for i in range(200)
    )  # fmt: skip
    data: dict[str, str | bytes] = {
        "json": json.dumps(rows),
        "bitmap": bitmap,
        "faust": faust.encode(),
        "html": "<table>\n" + html + "</table>",
        "pdf": pdf,
    }
    assert all(len(d) > 131072 for d in data.values())
    return data


TEST_DATA = _test_data()
AUTOBAHN_OFFER = "permessage-deflate; client_no_context_takeover; client_max_window_bits"
DEFLATE_OFFERS = [  # 13.1-13.7, as Autobahn's PerMessageDeflateOffer writes them
    AUTOBAHN_OFFER,
    AUTOBAHN_OFFER + "; server_no_context_takeover",
    AUTOBAHN_OFFER + "; server_max_window_bits=9",
    AUTOBAHN_OFFER + "; server_max_window_bits=15",
    AUTOBAHN_OFFER + "; server_no_context_takeover; server_max_window_bits=9",
    AUTOBAHN_OFFER + "; server_no_context_takeover; server_max_window_bits=15",
    ", ".join([AUTOBAHN_OFFER + "; server_no_context_takeover; server_max_window_bits=9",
               AUTOBAHN_OFFER + "; server_no_context_takeover", AUTOBAHN_OFFER]),
]  # fmt: skip
CASES_12_13 = [
    (f"12.{j + 1}.{i + 1}", kind, AUTOBAHN_OFFER, size, frag)
    for j, kind in enumerate(["json", "bitmap", "faust", "html", "pdf"])
    for i, (size, frag) in enumerate(MSG_SIZES)
] + [
    (f"13.{j + 1}.{i + 1}", "json", offer, size, frag)
    for j, offer in enumerate(DEFLATE_OFFERS)
    for i, (size, frag) in enumerate(MSG_SIZES)
]


def autofragmented(ext: PerMessageDeflate, message: str | bytes, size: int) -> bytes:
    """A compressed message as Autobahn's client sends it: deflated, then the deflated bytes
    cut into frames of ``size`` (0: one frame), RSV1 on the first."""
    op = TEXT if isinstance(message, str) else BINARY
    data = ext.compress(message.encode() if isinstance(message, str) else message)
    if not size or len(data) <= size:
        return masked_frame(op, data, rsv1=True)
    cuts = range(0, len(data), size)
    return b"".join(
        masked_frame(
            CONT if at else op, data[at : at + size], fin=at + size >= len(data), rsv1=not at
        )  # fmt: skip
        for at in cuts
    )


@pytest.mark.parametrize(("case", "kind", "offer", "size", "frag"), CASES_12_13,
                         ids=[case[0] for case in CASES_12_13])  # fmt: skip
def test_12_13_compressed_echo(case: str, kind: str, offer: str, size: int, frag: int) -> None:
    """Both ways, the context kept (or not) from one message to the next, each read a TCP
    segment's worth."""
    server_ext = PerMessageDeflate.accept(offer)
    assert server_ext is not None
    client_ext = PerMessageDeflate.accept(server_ext.response())
    assert client_ext is not None
    client_ext.clientSide = True
    server = WebSocketConnection(deflate=server_ext, max_message=1 << 20)
    client = WebSocketConnection(client_side=True, deflate=client_ext, max_message=1 << 20)
    data, at = TEST_DATA[kind], 0
    for _ in range(4):
        message = (data * 2)[at : at + size]  # cut in turn, wrapping at the end
        at = (at + size) % len(data)
        sent = autofragmented(client_ext, message, frag)
        got = [e for i in range(0, len(sent), 1448) for e in server.receive(sent[i : i + 1448])]
        assert got == [message]
        assert client.receive(server.send(message)) == [message]
