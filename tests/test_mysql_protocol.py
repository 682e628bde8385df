"""The MySQL protocol core without a network: framing, the handshake (both auth plugins, as a
scripted server plays them), result readers, escaping."""

from __future__ import annotations

import datetime
import hashlib
import struct
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tx_swoole.clients import _mysql as p
from tx_swoole.errors import MySQLProtocolError, MySQLServerError

SCRAMBLE = b"abcdefghijklmnopqrst"  # 20 bytes, as servers send


def greeting(plugin: bytes, caps: int, mariadb: bool = False) -> bytes:
    """A server's initial handshake packet (protocol 10)."""
    if mariadb:
        caps &= ~p.CLIENT_MYSQL
    ext = struct.pack("<I", (p.MARIADB_EXTENDED_METADATA >> 32) if mariadb else 0)
    return (b"\x0a" + b"8.0.36-test\0" + struct.pack("<I", 77) + SCRAMBLE[:8] + b"\0"
            + struct.pack("<HBHH", caps & 0xFFFF, 45, 2, (caps >> 16) & 0xFFFF)
            + bytes((21,)) + b"\0" * 6 + ext + SCRAMBLE[8:] + b"\0" + plugin + b"\0")  # fmt: skip


SERVER_CAPS = (p.LONG_PASSWORD | p.PROTOCOL_41 | p.SECURE_CONNECTION | p.PLUGIN_AUTH
               | p.PLUGIN_AUTH_LENENC | p.CONNECT_WITH_DB | p.MULTI_RESULTS | p.SSL
               | p.TRANSACTIONS)  # fmt: skip


def parse_response(payload: bytes) -> tuple[int, bytes, bytes, bytes, bytes]:
    """(capabilities, user, auth response, database, plugin) of a HandshakeResponse41."""
    caps = struct.unpack_from("<I", payload)[0]
    pos = 32
    end = payload.index(b"\0", pos)
    user = payload[pos:end]
    auth, pos = p.read_lenenc_bytes(payload, end + 1)
    end = payload.index(b"\0", pos)
    db = payload[pos:end]
    plugin = payload[end + 1 :].rstrip(b"\0")
    return caps, user, auth, db, plugin


def handshake(**kw: object) -> p.Handshake:
    args: dict[str, object] = dict(tls=False, secure_channel=False, multi_statements=False,
                                   local_infile=False, max_packet=1 << 24)  # fmt: skip
    args.update(kw)
    return p.Handshake("tx", "secret", "txdb", **args)  # type: ignore[arg-type]


def test_native_password_response_is_the_documented_formula() -> None:
    hs = handshake()
    caps, user, auth, db, plugin = parse_response(
        hs.receive(greeting(b"mysql_native_password", SERVER_CAPS)) or b""
    )
    s1 = hashlib.sha1(b"secret").digest()
    want = bytes(
        a ^ b
        for a, b in zip(
            s1, hashlib.sha1(SCRAMBLE + hashlib.sha1(s1).digest()).digest(), strict=True
        )
    )
    assert (user, auth, db, plugin) == (b"tx", want, b"txdb", b"mysql_native_password")
    assert caps & p.CONNECT_WITH_DB and not caps & p.LOCAL_FILES and not caps & p.MULTI_STATEMENTS
    assert hs.threadId == 77 and hs.serverVersion == "8.0.36-test"
    hs.receive(b"\x00\x00\x00\x02\x00\x00\x00")
    assert hs.done


def test_caching_sha2_fast_auth() -> None:
    hs = handshake()
    _, _, auth, _, plugin = parse_response(
        hs.receive(greeting(b"caching_sha2_password", SERVER_CAPS)) or b""
    )
    p1 = hashlib.sha256(b"secret").digest()
    p2 = hashlib.sha256(hashlib.sha256(p1).digest() + SCRAMBLE).digest()
    assert plugin == b"caching_sha2_password"
    assert auth == bytes(a ^ b for a, b in zip(p1, p2, strict=True))
    assert hs.receive(b"\x01\x03") is None  # fast auth: the OK follows
    hs.receive(b"\x00\x00\x00\x02\x00\x00\x00")
    assert hs.done


def test_caching_sha2_full_auth_over_rsa_and_in_clear_over_a_secure_channel() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    hs = handshake()
    hs.receive(greeting(b"caching_sha2_password", SERVER_CAPS))
    assert hs.receive(b"\x01\x04") == b"\x02"  # full auth on plain TCP: ask for the key
    encrypted = hs.receive(b"\x01" + pem) or b""
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    plain = key.decrypt(encrypted, oaep)
    assert bytes(c ^ SCRAMBLE[i % 20] for i, c in enumerate(plain)) == b"secret\0"
    secure = handshake(secure_channel=True)  # a Unix socket (or TLS): the password itself
    secure.receive(greeting(b"caching_sha2_password", SERVER_CAPS))
    assert secure.receive(b"\x01\x04") == b"secret\0"


def test_auth_switch_tls_request_errors_and_mariadb_capabilities() -> None:
    hs = handshake()
    hs.receive(greeting(b"caching_sha2_password", SERVER_CAPS))
    other = b"ZYXWVUTSRQPONMLKJIHG"
    reply = hs.receive(b"\xfemysql_native_password\0" + other + b"\0")
    assert reply == p.native_password(b"secret", other)
    with pytest.raises(MySQLServerError) as e:
        hs.receive(b"\xff\x15\x04#28000Access denied for user 'tx'")
    assert (e.value.errno, e.value.sqlstate) == (1045, "28000")
    tls = handshake(tls=True)
    head = tls.receive(greeting(b"mysql_native_password", SERVER_CAPS)) or b""
    assert len(head) == 32 and struct.unpack_from("<I", head)[0] & p.SSL and tls.startTLS
    assert parse_response(tls.response_after_tls())[1] == b"tx"
    with pytest.raises(MySQLProtocolError, match="does not offer TLS"):
        handshake(tls=True).receive(greeting(b"x", SERVER_CAPS & ~p.SSL))
    with pytest.raises(MySQLProtocolError, match="auth plugin 'client_ed25519'"):
        handshake().receive(greeting(b"client_ed25519", SERVER_CAPS))
    maria = handshake()
    response = maria.receive(greeting(b"mysql_native_password", SERVER_CAPS, mariadb=True))
    assert maria.capabilities & p.MARIADB_EXTENDED_METADATA
    assert struct.unpack_from("<I", response or b"", 28)[0] == p.MARIADB_EXTENDED_METADATA >> 32


def test_packets_over_16_mib_are_split_and_joined_and_bounded() -> None:
    payload = bytes(range(256)) * (p.MAX_PAYLOAD // 256 + 10)
    data, seq = p.packets(payload, 0)
    assert seq == 2
    reader = p.PacketReader(64 << 20)
    got = []
    for i in range(0, len(data), 1 << 20):  # in 1 MiB reads
        got += reader.feed(data[i : i + (1 << 20)])
    assert got == [payload]
    exact, seq = p.packets(b"x" * p.MAX_PAYLOAD, 0)  # an exact multiple: an empty last part
    assert seq == 2 and exact.endswith(b"\x00\x00\x00\x01")
    assert p.PacketReader(64 << 20).feed(exact) == [b"x" * p.MAX_PAYLOAD]
    with pytest.raises(MySQLProtocolError, match="over max_packet=1000; raise max_packet"):
        p.PacketReader(1000).feed(b"\xe9\x03\x00\x00")  # the header alone is refused
    with pytest.raises(MySQLProtocolError, match="sequence id 5, expected 0"):
        p.PacketReader(1000).feed(b"\x01\x00\x00\x05x")


def answer(first: int, count: int) -> bytes:
    """``count`` one-byte packets of sequence ids ``first``, ``first + 1`` ... (mod 256)."""
    return b"".join(b"\x01\x00\x00" + bytes(((first + i) & 0xFF, i & 0xFF)) for i in range(count))


def test_pipelined_answers_are_cut_where_the_next_begins() -> None:
    # Three answers back to back (2, 300 and 1 packets): the second wraps its sequence ids
    # past 255, so one of its packets has id 1 again, which must not end it.
    stream = answer(1, 2) + answer(1, 300) + answer(1, 1)
    for step in (1, 7, 1000, len(stream)):  # reads of every size, some cutting packets
        reader = p.PacketReader(1000)
        reader.split = True
        reader.seq = 1
        answers: list[list[bytes]] = [[]]
        sizes = [2, 300, 1]
        for i in range(0, len(stream), step):
            payloads = reader.feed(stream[i : i + step])
            while True:
                for payload in payloads:
                    answers[-1].append(payload)
                    if len(answers[-1]) == sizes[len(answers) - 1] and len(answers) < 3:
                        answers.append([])
                        reader.seq = 1  # what the connection does when an answer ends
                if not reader.held:
                    break
                payloads = reader.feed(b"")
        assert [len(a) for a in answers] == sizes
        assert answers[1] == [bytes((i & 0xFF,)) for i in range(300)]
        assert not reader.held
    # Without split, an answer that follows is out of order, as before.
    with pytest.raises(MySQLProtocolError, match="sequence id 1, expected 3"):
        p.PacketReader(1000).feed(b"\x01\x00\x00\x00x" + answer(1, 2) + answer(1, 1))
    # With it, an answer cut short is still refused when the next packet is fed.
    reader = p.PacketReader(1000)
    reader.split, reader.seq = True, 1
    assert len(reader.feed(answer(1, 2) + answer(1, 1))) == 2 and reader.held
    with pytest.raises(MySQLProtocolError, match="sequence id 1, expected 3"):
        reader.feed(b"")


def column(name: str, ctype: int, charset: int = 45, flags: int = 0) -> bytes:
    def s(b: bytes) -> bytes:
        return p.lenenc_bytes(b)

    return (s(b"def") + s(b"db") + s(b"t") + s(b"t") + s(name.encode()) + s(name.encode())
            + b"\x0c" + struct.pack("<HIBHB", charset, 10, ctype, flags, 0) + b"\0\0")  # fmt: skip


def run(reader: p.Reader, payloads: list[bytes], whole: bool = False) -> object:
    """Feed ``payloads`` one read each (or all in one read with ``whole``)."""
    next(reader)
    for batch in [payloads] if whole else [[payload] for payload in payloads]:
        try:
            reader.send(batch)
        except StopIteration as stop:
            return stop.value
    raise AssertionError("the reader wanted more")


EOF_PACKET = b"\xfe\x00\x00\x02\x00"


def test_text_and_binary_rows_convert_every_type() -> None:
    cols = [column("i", p.T_LONGLONG), column("d", p.T_NEWDECIMAL), column("n", p.T_LONG),
            column("dt", p.T_DATETIME), column("t", p.T_TIME), column("b", p.T_BLOB, 63),
            column("s", p.T_VAR_STRING), column("j", p.T_JSON), column("u", p.T_LONGLONG,
            flags=p.UNSIGNED_FLAG), column("f", p.T_FLOAT)]  # fmt: skip
    text_row = b"".join(p.lenenc_bytes(v) if v is not None else b"\xfb" for v in (
        b"-5", b"1.50", None, b"2026-12-02 01:02:03.5", b"-25:00:01", b"\x00\xff", "é".encode(),
        b'{"a": 1}', b"18446744073709551615", b"0.25"))  # fmt: skip
    r = run(p.read_result(False), [b"\x0a", *cols, EOF_PACKET, text_row, EOF_PACKET])
    assert isinstance(r, p.Result)
    want = (-5, Decimal("1.50"), None, datetime.datetime(2026, 12, 2, 1, 2, 3, 500000),
            -datetime.timedelta(hours=25, seconds=1), b"\x00\xff", "é", {"a": 1}, 2**64 - 1,
            0.25)  # fmt: skip
    assert r.rows == [want] and r.names[0] == "i"
    nullmap = bytearray(2)
    nullmap[(2 + 2) >> 3] |= 1 << ((2 + 2) & 7)  # column 2 is NULL
    binary_row = (b"\x00" + bytes(nullmap) + struct.pack("<q", -5) + p.lenenc_bytes(b"1.50")
                  + b"\x0b" + struct.pack("<HBBBBBI", 2026, 12, 2, 1, 2, 3, 500000)
                  + b"\x08" + struct.pack("<BIBBB", 1, 1, 1, 0, 1) + p.lenenc_bytes(b"\x00\xff")
                  + p.lenenc_bytes("é".encode()) + p.lenenc_bytes(b'{"a": 1}')
                  + struct.pack("<Q", 2**64 - 1) + struct.pack("<f", 0.25))  # fmt: skip
    r = run(p.read_result(False, binary=True), [b"\x0a", *cols, EOF_PACKET, binary_row,
                                                 EOF_PACKET])  # fmt: skip
    assert isinstance(r, p.Result) and r.rows == [want]
    again = run(p.read_result(False, binary=True), [b"\x0a", *cols, EOF_PACKET, binary_row,
                                                     EOF_PACKET], whole=True)  # fmt: skip
    assert isinstance(again, p.Result) and again.rows == [want]


def test_answers_in_one_read_or_many_and_packets_after_the_end() -> None:
    more = b"\xfe\x00\x00\x0a\x00"  # EOF with SERVER_MORE_RESULTS_EXISTS
    ok = b"\x00\x01\x00\x02\x00\x00\x00"
    answer = [b"\x01", column("v", p.T_LONG), EOF_PACKET, b"\x011", b"\x012", more, ok]
    for whole in (False, True):
        r = run(p.read_result(False), answer, whole)
        assert isinstance(r, p.Result) and r.rows == [(1,), (2,)]
        assert r.next is not None and r.next.affected_rows == 1 and r.next.next is None
    with pytest.raises(MySQLProtocolError, match="1 packet\\(s\\) after the end of an answer"):
        run(p.read_result(False), [b"\x01", column("v", p.T_LONG), EOF_PACKET, b"\x011",
                                   EOF_PACKET, ok], whole=True)  # fmt: skip
    with pytest.raises(MySQLProtocolError, match="after the end of an answer"):
        run(p.read_ok(), [ok, ok], whole=True)
    prepare_ok = b"\x00" + struct.pack("<IHH", 7, 1, 2) + b"\x00\x00\x00"
    defs = [prepare_ok, b"param", b"param", EOF_PACKET, b"col", EOF_PACKET]
    for whole in (False, True):
        stmt = run(p.read_prepare("SELECT ?, ?"), defs, whole)
        assert isinstance(stmt, p.Statement) and (stmt.id, stmt.params, stmt.columns) == (7, 2, 1)
    with pytest.raises(MySQLProtocolError, match="no EOF after the parameter"):
        run(p.read_prepare("SELECT ?, ?"), [prepare_ok, b"param", b"param", b"col"], True)
    bare = b"\x00" + struct.pack("<IHH", 8, 0, 0) + b"\x00\x00\x00"
    assert isinstance(run(p.read_prepare("DO 1"), [bare]), p.Statement)


def test_escaping_and_interpolation() -> None:
    assert p.escape("a'b\\c\0\n\r\x1a\"") == "'a\\'b\\\\c\\0\\n\\r\\Z\\\"'"
    assert p.escape("a'b\\c", no_backslash_escapes=True) == "'a''b\\c'"
    assert p.escape(b"\x00'") == "X'0027'"
    assert p.escape(None) == "NULL" and p.escape(True) == "1" and p.escape(Decimal("1.5")) == "1.5"
    assert p.escape(datetime.datetime(2026, 1, 2, 3, 4, 5)) == "'2026-01-02 03:04:05'"
    assert p.escape(datetime.timedelta(hours=-1, seconds=-2)) == "'-01:00:02'"
    assert p.escape([1, "x"]) == "(1, 'x')"
    with pytest.raises(ValueError, match="empty sequence"):
        p.escape([])
    with pytest.raises(ValueError, match="no SQL literal"):
        p.escape(float("nan"))
    with pytest.raises(TypeError, match="cannot escape a object"):
        p.escape(object())
    assert p.interpolate("SELECT %s, %s, '%%'", (1, "it's")) == "SELECT 1, 'it\\'s', '%'"
    assert p.interpolate("SELECT %(a)s", {"a": None}) == "SELECT NULL"
    assert p.interpolate("SELECT %s", "one") == "SELECT 'one'"


def test_server_errors_in_results_and_local_infile_refusal() -> None:
    with pytest.raises(MySQLServerError, match=r"\(1146, 42S02\) Table"):
        run(p.read_result(False), [b"\xff\x7a\x04#42S02Table 'x' doesn't exist"])
    refused = p.read_result(False, infile=lambda name: b"")
    next(refused)
    assert refused.send([b"\xfb/etc/passwd"]) == b""  # the empty reply refuses it
    with pytest.raises(MySQLProtocolError, match="LOCAL INFILE unasked"):
        run(p.read_result(False), [b"\xfb/etc/passwd"])
