"""The MySQL client/server protocol, sans-IO: packets, the handshake, results, escaping.

No Twisted import here.  :class:`PacketReader` cuts the byte stream into payloads (joining the
parts of payloads over 16 MiB, refusing any over ``max_packet``); :func:`packets` frames one
outgoing payload.  Each command's answer is read by a generator that is sent one payload at a
time and returns the result (or raises :class:`~tx_swoole.errors.MySQLServerError`):
:func:`read_result` (``COM_QUERY``, ``COM_STMT_EXECUTE``), :func:`read_prepare`, :func:`read_ok`.
:class:`Handshake` is the connection phase, :func:`escape`/:func:`interpolate` the client-side
parameters of ``COM_QUERY``, :func:`execute_packet` the binary parameters of a prepared
statement.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import struct
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from tx_swoole.errors import MySQLProtocolError, MySQLServerError

__all__ = ["Column", "Handshake", "PacketReader", "Result", "Statement", "escape", "interpolate"]

MAX_PAYLOAD = 0xFFFFFF
# Capabilities.
LONG_PASSWORD, FOUND_ROWS, LONG_FLAG, CONNECT_WITH_DB = 1, 2, 4, 8
LOCAL_FILES, PROTOCOL_41, SSL, TRANSACTIONS = 0x80, 0x200, 0x800, 0x2000
SECURE_CONNECTION, MULTI_STATEMENTS, MULTI_RESULTS, PS_MULTI_RESULTS = (
    0x8000, 0x10000, 0x20000, 0x40000)  # fmt: skip
PLUGIN_AUTH, PLUGIN_AUTH_LENENC = 0x80000, 0x200000
CLIENT_MYSQL = 1  # set by MySQL servers; MariaDB clears it and has extended capabilities
MARIADB_EXTENDED_METADATA = 1 << 35
# Server status flags.
STATUS_IN_TRANS, STATUS_AUTOCOMMIT, MORE_RESULTS, NO_BACKSLASH_ESCAPES = 1, 2, 8, 0x200
# Commands.
COM_QUIT, COM_INIT_DB, COM_QUERY, COM_PING = 1, 2, 3, 0x0E
COM_STMT_PREPARE, COM_STMT_EXECUTE, COM_STMT_CLOSE, COM_RESET_CONNECTION = 0x16, 0x17, 0x19, 0x1F
UTF8MB4_GENERAL_CI = 45
BINARY_CHARSET = 63
UNSIGNED_FLAG = 32
# Column types.
T_DECIMAL, T_TINY, T_SHORT, T_LONG, T_FLOAT, T_DOUBLE, T_NULL, T_TIMESTAMP = range(8)
T_LONGLONG, T_INT24, T_DATE, T_TIME, T_DATETIME, T_YEAR = 8, 9, 10, 11, 12, 13
T_VARCHAR, T_BIT, T_JSON, T_NEWDECIMAL, T_ENUM, T_SET = 15, 16, 245, 246, 247, 248
T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB, T_BLOB, T_VAR_STRING, T_STRING, T_GEOMETRY = range(
    249, 256)  # fmt: skip
_INTEGERS = {T_TINY, T_SHORT, T_LONG, T_LONGLONG, T_INT24, T_YEAR}


# -- packets ---------------------------------------------------------------------------------------
def packets(payload: bytes, seq: int) -> tuple[bytes, int]:
    """``payload`` framed as packets from sequence id ``seq``; the bytes and the next id.

    A payload of 16 MiB - 1 or more is cut in parts of that size, the last one shorter (empty
    when the payload is an exact multiple).
    """
    if len(payload) < MAX_PAYLOAD:
        return struct.pack("<I", len(payload))[:3] + bytes((seq,)) + payload, (seq + 1) & 0xFF
    out = []
    for start in range(0, len(payload) + 1, MAX_PAYLOAD):
        part = payload[start : start + MAX_PAYLOAD]
        out.append(struct.pack("<I", len(part))[:3] + bytes((seq,)) + part)
        seq = (seq + 1) & 0xFF
    return b"".join(out), seq


class PacketReader:
    """Complete payloads from the byte stream; sequence ids checked, size bounded.

    Linear in the bytes received: reads that do not complete the packet they belong to are
    kept as parts and joined once, when it is complete.
    """

    __slots__ = ("seq", "maxPacket", "_parts", "_partSize", "_rest", "_have", "_want", "split",
                 "held")  # fmt: skip

    def __init__(self, max_packet: int) -> None:
        self.seq = 0  # the sequence id expected next
        self.maxPacket = max_packet
        #: Set while answers to several commands may follow one another (pipelining): a read
        #: is cut before every packet of sequence id 1 but its first (an answer starts there,
        #: or goes on after a wrap); ``held`` then says the rest waits for ``feed(b"")``.
        self.split = False
        self.held = False
        self._parts: list[bytes] = []  # the parts of a payload over 16 MiB so far
        self._partSize = 0
        self._rest: list[bytes] = []  # the reads of an incomplete packet
        self._have = 0
        self._want = 0  # bytes that complete it

    def feed(self, data: bytes) -> list[bytes]:
        self.held = False
        if self._rest:
            self._rest.append(data)
            self._have += len(data)
            if self._have < self._want:
                return []
            buf = b"".join(self._rest)
            self._rest = []
        else:
            buf = data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        want = 4
        split = self.split
        while end - pos >= 4:
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            if split and buf[pos + 3] == 1 and out and not self._parts:
                self.held = True  # the next answer (or this one after a wrap) begins here
                want = 0
                break
            if buf[pos + 3] != self.seq:
                raise MySQLProtocolError(
                    f"packet out of order: sequence id {buf[pos + 3]}, expected {self.seq}"
                )
            if self._partSize + length > self.maxPacket:
                raise MySQLProtocolError(
                    f"packet of {self._partSize + length} bytes over max_packet="
                    f"{self.maxPacket}; raise max_packet"
                )
            if end - pos - 4 < length:
                want = 4 + length
                break
            want = 4
            self.seq = (self.seq + 1) & 0xFF
            payload = buf[pos + 4 : pos + 4 + length]
            pos += 4 + length
            if length == MAX_PAYLOAD:
                self._parts.append(payload)
                self._partSize += length
                continue
            if self._parts:
                self._parts.append(payload)
                payload = b"".join(self._parts)
                self._parts, self._partSize = [], 0
            out.append(payload)
        if pos < end:
            self._rest = [buf[pos:] if pos else buf]
            self._have = end - pos
            self._want = want
        return out


# -- wire values -----------------------------------------------------------------------------------
def lenenc_int(n: int) -> bytes:
    if n < 251:
        return bytes((n,))
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n)
    if n < 1 << 24:
        return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)


def lenenc_bytes(b: bytes) -> bytes:
    return lenenc_int(len(b)) + b


def read_lenenc(buf: bytes, pos: int) -> tuple[int | None, int]:
    """The length-encoded integer at ``pos`` (None for 0xFB, NULL) and the position after it."""
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    if first == 0xFC:
        return buf[pos + 1] | buf[pos + 2] << 8, pos + 3
    if first == 0xFD:
        return buf[pos + 1] | buf[pos + 2] << 8 | buf[pos + 3] << 16, pos + 4
    return struct.unpack_from("<Q", buf, pos + 1)[0], pos + 9


def read_lenenc_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    """The length-encoded string at ``pos`` (b"" for NULL) and the position after it."""
    first = buf[pos]
    if first < 0xFB:  # (most: a one-byte length, without read_lenenc's frame)
        pos += 1
        return buf[pos : pos + first], pos + first
    n, pos = read_lenenc(buf, pos)
    n = n or 0
    return buf[pos : pos + n], pos + n


def server_error(payload: bytes) -> MySQLServerError:
    """The exception for an ERR packet (``0xFF``)."""
    code = struct.unpack_from("<H", payload, 1)[0]
    if payload[3:4] == b"#":
        sqlstate, message = payload[4:9].decode(), payload[9:]
    else:
        sqlstate, message = "HY000", payload[3:]
    return MySQLServerError(code, sqlstate, message.decode("utf-8", "replace"))


class OK:
    """An OK packet: affected rows, insert id, status, warnings, info."""

    __slots__ = ("affected_rows", "insert_id", "status", "warnings", "info")

    def __init__(self, payload: bytes) -> None:
        self.affected_rows, pos = read_lenenc(payload, 1)
        self.insert_id, pos = read_lenenc(payload, pos)
        self.status, self.warnings = struct.unpack_from("<HH", payload, pos)
        self.info = payload[pos + 4 :].decode("utf-8", "replace")


def is_eof(payload: bytes) -> bool:
    return payload[:1] == b"\xfe" and len(payload) < 9


# -- the handshake ---------------------------------------------------------------------------------
def native_password(password: bytes, scramble: bytes) -> bytes:
    """``mysql_native_password``: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw)))."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password).digest()
    stage2 = hashlib.sha1(scramble + hashlib.sha1(stage1).digest()).digest()
    return bytes(a ^ b for a, b in zip(stage1, stage2, strict=True))


def caching_sha2_password(password: bytes, scramble: bytes) -> bytes:
    """``caching_sha2_password`` fast auth: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + scramble)."""
    if not password:
        return b""
    p1 = hashlib.sha256(password).digest()
    p2 = hashlib.sha256(hashlib.sha256(p1).digest() + scramble).digest()
    return bytes(a ^ b for a, b in zip(p1, p2, strict=True))


def rsa_encrypt_password(password: bytes, scramble: bytes, pem: bytes) -> bytes:
    """The password (NUL-terminated, XORed with the scramble) under the server's RSA key."""
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding
    except ImportError:
        raise MySQLProtocolError(
            "caching_sha2_password full authentication over plain TCP needs the cryptography "
            "package (pip install cryptography), or connect with tls= or unix_socket="
        ) from None

    plain = password + b"\0"
    xored = bytes(c ^ scramble[i % len(scramble)] for i, c in enumerate(plain))
    key: Any = serialization.load_pem_public_key(pem)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    return bytes(key.encrypt(xored, oaep))


_PLUGINS: dict[str, Callable[[bytes, bytes], bytes]] = {
    "mysql_native_password": native_password,
    "caching_sha2_password": caching_sha2_password,
}


class Handshake:
    """The connection phase, sans-IO: ``receive(payload)`` returns what to send (or None) and
    sets ``done`` when the server accepted; ``startTLS`` is set when TLS must start now.

    Server errors raise :class:`MySQLServerError`; what the client cannot do (an auth plugin
    it lacks, TLS the server does not offer) raises :class:`MySQLProtocolError`.
    """

    def __init__(self, user: str, password: str, database: str | None, *, tls: bool,
                 secure_channel: bool, multi_statements: bool, local_infile: bool,
                 max_packet: int) -> None:  # fmt: skip
        self.user = user.encode()
        self.password = password.encode()
        self.database = database
        self.tls = tls
        self.secure = secure_channel  # TLS or a Unix socket: the password may go in clear
        self.multiStatements = multi_statements
        self.localInfile = local_infile
        self.maxPacket = max_packet
        self.done = False
        self.startTLS = False
        self.capabilities = 0
        self.serverVersion = ""
        self.threadId = 0
        self.status = 0
        self.scramble = b""
        self.plugin = ""
        self._stage = "greeting"

    def receive(self, payload: bytes) -> bytes | None:
        """The payload to send next (at the sequence id that follows), or None."""
        if payload[:1] == b"\xff":
            raise server_error(payload)
        if self._stage == "greeting":
            return self._greeting(payload)
        if payload[:1] == b"\x00":  # OK: authenticated
            self.status = OK(payload).status
            self.done = True
            return None
        if payload[:1] == b"\xfe":  # auth switch request: plugin name, then its data
            name, _, data = payload[1:].partition(b"\0")
            self.plugin = name.decode()
            self.scramble = data[:-1] if data.endswith(b"\0") else data
            return self._auth()
        if payload[:1] == b"\x01":  # more data (caching_sha2_password)
            return self._moreData(payload[1:])
        raise MySQLProtocolError(f"unexpected packet in the handshake: {payload[:1].hex()}")

    def _greeting(self, p: bytes) -> bytes:
        if p[0] != 10:
            raise MySQLProtocolError(f"handshake protocol {p[0]}: only version 10 is spoken")
        end = p.index(b"\0", 1)
        self.serverVersion = p[1:end].decode()
        pos = end + 1
        self.threadId = struct.unpack_from("<I", p, pos)[0]
        scramble = p[pos + 4 : pos + 12]
        pos += 13
        caps = struct.unpack_from("<H", p, pos)[0]
        pos += 3  # and the charset
        self.status = struct.unpack_from("<H", p, pos)[0]
        caps |= struct.unpack_from("<H", p, pos + 2)[0] << 16
        auth_len = p[pos + 4]
        if not caps & CLIENT_MYSQL:  # MariaDB: 4 more capability bytes in the filler
            caps |= struct.unpack_from("<I", p, pos + 11)[0] << 32
        pos += 15
        if caps & SECURE_CONNECTION:
            n = max(13, auth_len - 8)
            scramble += p[pos : pos + n].rstrip(b"\0")
            pos += n
        self.scramble = scramble
        self.plugin = "mysql_native_password"
        if caps & PLUGIN_AUTH:
            self.plugin = p[pos:].split(b"\0", 1)[0].decode() or self.plugin
        want = (LONG_PASSWORD | LONG_FLAG | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION
                | MULTI_RESULTS | PS_MULTI_RESULTS | PLUGIN_AUTH | PLUGIN_AUTH_LENENC
                | MARIADB_EXTENDED_METADATA)  # fmt: skip
        if self.database:
            want |= CONNECT_WITH_DB
        if self.multiStatements:
            want |= MULTI_STATEMENTS
        if self.localInfile:
            want |= LOCAL_FILES
        if self.tls:
            if not caps & SSL:
                raise MySQLProtocolError("tls was asked for but the server does not offer TLS "
                                         "(start it with ssl_cert/ssl_key)")  # fmt: skip
            want |= SSL
        self.capabilities = want & caps
        if self.tls:
            self._stage = "tls"
            self.startTLS = True
            return self._head()
        self._stage = "auth"
        return self._response()

    def _head(self) -> bytes:
        caps = self.capabilities
        return (struct.pack("<IIB", caps & 0xFFFFFFFF, self.maxPacket, UTF8MB4_GENERAL_CI)
                + b"\0" * 19 + struct.pack("<I", caps >> 32))  # fmt: skip

    def response_after_tls(self) -> bytes:
        """The handshake response, sent once TLS is up."""
        self.startTLS = False
        self.secure = True
        self._stage = "auth"
        return self._response()

    def _response(self) -> bytes:
        auth = self._auth()
        out = self._head() + self.user + b"\0"
        if self.capabilities & PLUGIN_AUTH_LENENC:
            out += lenenc_bytes(auth)
        else:
            out += bytes((len(auth),)) + auth
        if self.capabilities & CONNECT_WITH_DB:
            out += (self.database or "").encode() + b"\0"
        return out + self.plugin.encode() + b"\0"

    def _auth(self) -> bytes:
        plugin = _PLUGINS.get(self.plugin)
        if plugin is None:
            if self.plugin == "mysql_clear_password" and self.secure:
                return self.password + b"\0"
            raise MySQLProtocolError(
                f"the server asks for auth plugin {self.plugin!r}; this client speaks "
                f"{', '.join(_PLUGINS)} (and mysql_clear_password over TLS)"
            )
        return plugin(self.password, self.scramble[:20])

    def _moreData(self, data: bytes) -> bytes | None:
        if self.plugin != "caching_sha2_password":
            raise MySQLProtocolError(f"unexpected auth data for {self.plugin}")
        if data == b"\x03":  # fast auth succeeded; the OK follows
            return None
        if data == b"\x04":  # full auth: the password itself
            if self.secure:
                return self.password + b"\0"
            self._stage = "public key"
            return b"\x02"  # ask for the server's RSA public key
        if self._stage == "public key":
            self._stage = "auth"
            return rsa_encrypt_password(self.password, self.scramble[:20], data)
        raise MySQLProtocolError(f"unexpected caching_sha2_password data {data[:8].hex()}")


# -- results ---------------------------------------------------------------------------------------
class Column:
    """One column of a result: name, table, type code, flags, charset, decimals."""

    __slots__ = ("name", "table", "type", "flags", "charset", "decimals", "length", "format",
                 "convert")  # fmt: skip

    def __init__(self, payload: bytes, extended: bool) -> None:
        pos = 0
        _catalog, pos = read_lenenc_bytes(payload, pos)
        _schema, pos = read_lenenc_bytes(payload, pos)
        table, pos = read_lenenc_bytes(payload, pos)
        _org_table, pos = read_lenenc_bytes(payload, pos)
        name, pos = read_lenenc_bytes(payload, pos)
        _org_name, pos = read_lenenc_bytes(payload, pos)
        self.format = ""
        if extended:
            info, pos = read_lenenc_bytes(payload, pos)
            i = 0
            while i < len(info):
                kind = info[i]
                value, i = read_lenenc_bytes(info, i + 1)
                if kind == 1:
                    self.format = value.decode()
        self.table = table.decode("utf-8", "replace")
        self.name = name.decode("utf-8", "replace")
        pos += 1  # the length of the fixed fields (0x0c)
        self.charset, self.length, self.type, self.flags, self.decimals = struct.unpack_from(
            "<HIBHB", payload, pos
        )
        self.convert = text_converter(self)  # how its values become Python

    def __repr__(self) -> str:
        return f"Column({self.name!r}, type={self.type})"


class Result(list[tuple[Any, ...]]):
    """One result of a statement: the list of its rows (tuples; empty for a statement without
    rows), with ``columns`` and, from the closing OK, ``affected_rows``, ``insert_id`` and
    ``warnings``; ``next`` is the next result set of a multi-statement or a procedure call, or
    None."""

    __slots__ = ("columns", "affected_rows", "insert_id", "warnings", "status", "info", "next")

    def __init__(self) -> None:
        super().__init__()
        self.columns: list[Column] = []
        self.affected_rows = 0
        self.insert_id = 0
        self.warnings = 0
        self.status = 0
        self.info = ""
        self.next: Result | None = None

    def finish(self, ok: OK) -> None:
        self.affected_rows, self.insert_id = ok.affected_rows or 0, ok.insert_id or 0
        self.status, self.warnings, self.info = ok.status, ok.warnings, ok.info

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        """The rows: the result itself (kept for code written against ``.rows``)."""
        return self

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def dicts(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by column name."""
        names = self.names
        return [dict(zip(names, row, strict=True)) for row in self]

    def one(self) -> tuple[Any, ...] | None:
        """The first row, or None."""
        return self[0] if self else None

    def scalar(self) -> Any:
        """The first column of the first row, or None."""
        return self[0][0] if self else None

    def sets(self) -> Iterator[Result]:
        """This result and the ones after it."""
        r: Result | None = self
        while r is not None:
            yield r
            r = r.next

    def __repr__(self) -> str:
        return f"<Result {len(self)} rows, affected_rows={self.affected_rows}>"


def _datetime(v: bytes) -> Any:
    s = v.decode()
    try:
        return datetime.datetime.fromisoformat(s)
    except ValueError:
        return s  # zero dates ('0000-00-00 00:00:00') stay strings


def _date(v: bytes) -> Any:
    s = v.decode()
    try:
        return datetime.date.fromisoformat(s)
    except ValueError:
        return s


def _time(v: bytes) -> datetime.timedelta:
    s = v.decode()
    sign = -1 if s.startswith("-") else 1
    h, m, rest = s.lstrip("-").split(":")
    sec, _, frac = rest.partition(".")
    micro = int(frac.ljust(6, "0")[:6]) if frac else 0
    return sign * datetime.timedelta(hours=int(h), minutes=int(m), seconds=int(sec),
                                     microseconds=micro)  # fmt: skip


def _text(v: bytes) -> str:
    return v.decode("utf-8", "surrogateescape")


TEXT: Callable[[bytes], Any] = _text
"""The converter of text columns, the commonest: the row parsers decode these inline."""


def _json(v: bytes) -> Any:
    return json.loads(v)


def _bit(v: bytes) -> int:
    return int.from_bytes(v, "big")


def text_converter(col: Column) -> Callable[[bytes], Any] | None:
    """How a text-protocol value of ``col`` becomes Python (None: keep the bytes)."""
    t = col.type
    if t in _INTEGERS:
        return int
    if t in (T_DECIMAL, T_NEWDECIMAL):
        return lambda v: Decimal(v.decode())
    if t in (T_FLOAT, T_DOUBLE):
        return float
    if t in (T_DATETIME, T_TIMESTAMP):
        return _datetime
    if t == T_DATE:
        return _date
    if t == T_TIME:
        return _time
    if t == T_JSON or col.format == "json":
        return _json
    if t == T_BIT:
        return _bit
    if col.charset == BINARY_CHARSET or t == T_GEOMETRY:
        return None
    return TEXT


def _text_row(payload: bytes, convs: list[Any]) -> tuple[Any, ...]:
    row: list[Any] = []
    append = row.append
    pos = 0
    for conv in convs:
        first = payload[pos]
        if first < 0xFB:
            pos += 1
            end = pos + first
        elif first == 0xFB:
            append(None)
            pos += 1
            continue
        else:
            length, pos = read_lenenc(payload, pos)
            end = pos + (length or 0)
        if conv is TEXT:  # (a call of its own costs more than the decoding)
            append(payload[pos:end].decode("utf-8", "surrogateescape"))
        elif conv is None:
            append(payload[pos:end])
        else:
            append(conv(payload[pos:end]))
        pos = end
    return tuple(row)


_BIN_FIXED = {T_TINY: (1, "<b", "<B"), T_SHORT: (2, "<h", "<H"), T_YEAR: (2, "<h", "<H"),
              T_INT24: (4, "<i", "<I"), T_LONG: (4, "<i", "<I"), T_LONGLONG: (8, "<q", "<Q"),
              T_FLOAT: (4, "<f", "<f"), T_DOUBLE: (8, "<d", "<d")}  # fmt: skip


_LENENC, _FIXED, _FLOAT, _DATES, _TIME = range(5)  # how a binary-protocol value is read


def _binary_plan(cols: list[Column], convs: list[Any]) -> list[tuple[Any, ...]]:
    """How to read each column of a binary-protocol row, made once per result: (byte of the
    NULL bitmap, its bit, kind, reader or converter, size)."""
    plan: list[tuple[Any, ...]] = []
    for i, (col, conv) in enumerate(zip(cols, convs, strict=True)):
        bit = i + 2
        where = (1 + (bit >> 3), 1 << (bit & 7))
        t = col.type
        fixed = _BIN_FIXED.get(t)
        if fixed is not None:
            size, signed, unsigned = fixed
            unpack = struct.Struct(unsigned if col.flags & UNSIGNED_FLAG else signed).unpack_from
            plan.append((*where, _FLOAT if t == T_FLOAT else _FIXED, unpack, size))
        elif t in (T_DATE, T_DATETIME, T_TIMESTAMP):
            plan.append((*where, _DATES, t, 0))
        elif t == T_TIME:
            plan.append((*where, _TIME, None, 0))
        else:
            plan.append((*where, _LENENC, conv, 0))
    return plan


def _binary_row(payload: bytes, plan: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    pos = 1 + (len(plan) + 9) // 8  # after the header byte and the NULL bitmap
    row: list[Any] = []
    append = row.append
    for byte, bit, kind, how, size in plan:
        if payload[byte] & bit:
            append(None)
        elif kind == _LENENC:
            value, pos = read_lenenc_bytes(payload, pos)
            append(value.decode("utf-8", "surrogateescape") if how is TEXT  # (TEXT inline)
                   else value if how is None else how(value))  # fmt: skip
        elif kind == _FIXED:
            append(how(payload, pos)[0])
            pos += size
        elif kind == _FLOAT:
            append(float(f"{how(payload, pos)[0]:.7g}"))
            pos += size
        else:
            length = payload[pos]
            part = payload[pos + 1 : pos + 1 + length]
            pos += 1 + length
            append(_binary_datetime(how, part) if kind == _DATES else _binary_time(part))
    return tuple(row)


def _binary_datetime(t: int, part: bytes) -> Any:
    if not part:
        return "0000-00-00" if t == T_DATE else "0000-00-00 00:00:00"
    y, mo, d = struct.unpack_from("<HBB", part)
    if t == T_DATE:
        return datetime.date(y, mo, d)
    h = mi = s = us = 0
    if len(part) >= 7:
        h, mi, s = part[4], part[5], part[6]
    if len(part) >= 11:
        us = struct.unpack_from("<I", part, 7)[0]
    return datetime.datetime(y, mo, d, h, mi, s, us)


def _binary_time(part: bytes) -> datetime.timedelta:
    if not part:
        return datetime.timedelta()
    negative, days, h, m, s = struct.unpack_from("<BIBBB", part)
    us = struct.unpack_from("<I", part, 8)[0] if len(part) >= 12 else 0
    delta = datetime.timedelta(days=days, hours=h, minutes=m, seconds=s, microseconds=us)
    return -delta if negative else delta


Reader = Generator[None, list[bytes], Any]
"""A reader is sent the payloads of one read at a time (a list: one read may hold a whole
answer); it returns what the answer means.  An answer ends with the last payload of its read
(one statement runs at a time), so payloads after its end are a protocol error."""
InfileHandler = Callable[[str], Iterator[bytes]]


def _leftover(batch: list[bytes], i: int) -> None:
    if i < len(batch):
        raise MySQLProtocolError(f"{len(batch) - i} packet(s) after the end of an answer")


def read_ok() -> Reader:
    """The answer to a command answered by OK or ERR (``COM_PING``, ``COM_INIT_DB`` ...)."""
    batch = yield
    payload = batch[0]
    if payload[:1] == b"\xff":
        raise server_error(payload)
    _leftover(batch, 1)
    return OK(payload)


COLUMN_CACHE_SIZE = 512


def read_result(extended: bool, binary: bool = False,
                infile: Callable[[str], Any] | None = None,
                known: dict[bytes, Column] | None = None) -> Reader:  # fmt: skip
    """The answer to ``COM_QUERY`` (text rows) or ``COM_STMT_EXECUTE`` (``binary``): a
    :class:`Result` chained through ``next`` for multiple result sets.

    A ``LOCAL INFILE`` request is answered by ``infile(name)``: it returns the bytes to send
    (an empty reply refuses it); the reader yields them back to the caller as a bytes value.
    ``known``: column definitions already parsed on this connection, by their bytes (a
    statement run again sends the same ones), kept up to ``COLUMN_CACHE_SIZE``.
    """
    first = last = Result()
    batch: list[bytes] = yield
    i = 0
    while True:
        while i == len(batch):
            batch, i = (yield), 0
        payload = batch[i]
        i += 1
        head = payload[0]
        if head == 0xFF:
            raise server_error(payload)
        if head == 0:
            last.finish(OK(payload))
        elif head == 0xFB:  # LOCAL INFILE request
            name = payload[1:].decode("utf-8", "replace")
            if infile is None:
                raise MySQLProtocolError("the server asked for a LOCAL INFILE unasked")
            _leftover(batch, i)
            batch, i = (yield infile(name)), 0
            while i == len(batch):
                batch, i = (yield), 0
            payload = batch[i]
            i += 1
            if payload[0] == 0xFF:
                raise server_error(payload)
            last.finish(OK(payload))
        else:
            count = read_lenenc(payload, 0)[0] or 0
            columns: list[Column] = []
            while len(columns) < count:
                while i == len(batch):
                    batch, i = (yield), 0
                payload = batch[i]
                i += 1
                col = known.get(payload) if known is not None else None
                if col is None:
                    col = Column(payload, extended)
                    if known is not None:  # a statement run again sends the same definitions
                        if len(known) >= COLUMN_CACHE_SIZE:
                            known.clear()
                        known[payload] = col
                columns.append(col)
            while i == len(batch):
                batch, i = (yield), 0
            if not is_eof(batch[i]):
                raise MySQLProtocolError("no EOF after the column definitions")
            i += 1
            last.columns = columns
            convs = [c.convert for c in columns]
            plan: list[Any] = _binary_plan(columns, convs) if binary else convs
            append = last.append
            while True:  # the rows of every read, up to the EOF
                end = len(batch)
                while i < end:
                    payload = batch[i]
                    i += 1
                    head = payload[0]
                    if head == 0xFE and len(payload) < 9:
                        last.warnings, last.status = struct.unpack_from("<HH", payload, 1)
                        break
                    if head == 0xFF:
                        raise server_error(payload)
                    append(_binary_row(payload, plan) if binary else _text_row(payload, plan))
                else:
                    batch, i = (yield), 0
                    continue
                break
        if not last.status & MORE_RESULTS:
            _leftover(batch, i)
            return first
        last.next = Result()
        last = last.next


class Statement:
    """A prepared statement on one connection: its id and parameter and column counts."""

    __slots__ = ("id", "params", "columns", "sql")

    def __init__(self, sql: str, stmt_id: int, params: int, columns: int) -> None:
        self.sql, self.id, self.params, self.columns = sql, stmt_id, params, columns


def read_prepare(sql: str) -> Reader:
    """The answer to ``COM_STMT_PREPARE``: a :class:`Statement`."""
    batch = yield
    payload = batch[0]
    if payload[:1] == b"\xff":
        raise server_error(payload)
    stmt_id, columns, params = struct.unpack_from("<IHH", payload, 1)
    # then the parameter definitions and an EOF, the column definitions and an EOF (each part
    # only when it has definitions): counted, not parsed, with the EOFs checked
    eofs = []
    if params:
        eofs.append(params + 1)
    if columns:
        eofs.append((eofs[0] if eofs else 0) + columns + 1)
    total = eofs[-1] if eofs else 0
    seen = 0
    rest = batch[1:]
    while True:
        for payload in rest:
            seen += 1
            if seen in eofs and not is_eof(payload):
                raise MySQLProtocolError("no EOF after the parameter or column definitions")
        if seen > total:
            raise MySQLProtocolError(f"{seen - total} packet(s) after the end of an answer")
        if seen == total:
            return Statement(sql, stmt_id, params, columns)
        rest = yield


def _param(value: Any) -> tuple[int, bytes]:
    """(type code with the unsigned flag in the high byte, binary value) of one parameter."""
    if value is None:
        return T_NULL, b""
    if isinstance(value, bool):
        return T_TINY, struct.pack("<b", int(value))
    if isinstance(value, int):
        if -(1 << 63) <= value < 1 << 63:
            return T_LONGLONG, struct.pack("<q", value)
        if 0 <= value < 1 << 64:
            return T_LONGLONG | 0x8000, struct.pack("<Q", value)
        return T_VAR_STRING, lenenc_bytes(str(value).encode())
    if isinstance(value, float):
        return T_DOUBLE, struct.pack("<d", value)
    if isinstance(value, Decimal):
        return T_NEWDECIMAL, lenenc_bytes(str(value).encode())
    if isinstance(value, bytes | bytearray | memoryview):
        return T_BLOB, lenenc_bytes(bytes(value))
    if isinstance(value, datetime.datetime):
        return T_DATETIME, b"\x0b" + struct.pack(
            "<HBBBBBI", value.year, value.month, value.day, value.hour, value.minute,
            value.second, value.microsecond)  # fmt: skip
    if isinstance(value, datetime.date):
        return T_DATE, b"\x04" + struct.pack("<HBB", value.year, value.month, value.day)
    if isinstance(value, datetime.timedelta):
        negative = value < datetime.timedelta(0)
        v = -value if negative else value
        hours, rest = divmod(v.seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        return T_TIME, b"\x0c" + struct.pack("<BIBBBI", negative, v.days, hours, minutes,
                                              seconds, v.microseconds)  # fmt: skip
    if isinstance(value, str):
        return T_VAR_STRING, lenenc_bytes(value.encode())
    if isinstance(value, dict | list):
        return T_VAR_STRING, lenenc_bytes(json.dumps(value).encode())
    raise TypeError(f"cannot send a {type(value).__name__} as a statement parameter")


def execute_packet(stmt: Statement, args: Sequence[Any]) -> bytes:
    """``COM_STMT_EXECUTE`` for ``stmt`` with ``args`` (binary protocol, types sent)."""
    if len(args) != stmt.params:
        raise TypeError(f"statement takes {stmt.params} parameters, {len(args)} given")
    out = [struct.pack("<BIBI", COM_STMT_EXECUTE, stmt.id, 0, 1)]
    if args:
        nullmap = bytearray((len(args) + 7) // 8)
        types = []
        values = []
        for i, arg in enumerate(args):
            code, value = _param(arg)
            if arg is None:
                nullmap[i >> 3] |= 1 << (i & 7)
            types.append(struct.pack("<H", code))
            values.append(value)
        out += [bytes(nullmap), b"\x01", *types, *values]
    return b"".join(out)


# -- client-side parameters (COM_QUERY) ------------------------------------------------------------
_ESCAPES = {0: "\\0", 10: "\\n", 13: "\\r", 26: "\\Z", 39: "\\'", 34: '\\"', 92: "\\\\"}


def escape(value: Any, no_backslash_escapes: bool = False) -> str:
    """``value`` as a safe SQL literal for a utf8mb4 connection.

    Strings are quoted with their specials escaped (``'`` doubled when the server runs with
    ``NO_BACKSLASH_ESCAPES``); bytes become a hex literal (``X'...'``), which no charset or
    mode can misread; sequences become ``(a, b, ...)`` for ``IN``.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value} has no SQL literal")
        return repr(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} has no SQL literal")
        return str(value)
    if isinstance(value, str):
        if no_backslash_escapes:
            return "'" + value.replace("'", "''") + "'"
        return "'" + value.translate(_ESCAPES) + "'"
    if isinstance(value, bytes | bytearray | memoryview):
        return "X'" + bytes(value).hex() + "'"
    if isinstance(value, datetime.datetime):
        return "'" + value.isoformat(" ") + "'"
    if isinstance(value, datetime.date | datetime.time):
        return "'" + value.isoformat() + "'"
    if isinstance(value, datetime.timedelta):
        negative = value < datetime.timedelta(0)
        v = -value if negative else value
        hours, rest = divmod(int(v.total_seconds()), 3600)
        minutes, seconds = divmod(rest, 60)
        text = f"{'-' if negative else ''}{hours:02d}:{minutes:02d}:{seconds:02d}"
        return f"'{text}.{v.microseconds:06d}'" if v.microseconds else f"'{text}'"
    if isinstance(value, dict):
        return escape(json.dumps(value), no_backslash_escapes)
    if isinstance(value, list | tuple | set | frozenset):
        if not value:
            raise ValueError("an empty sequence has no SQL literal (IN () is a syntax error)")
        return "(" + ", ".join(escape(v, no_backslash_escapes) for v in value) + ")"
    raise TypeError(f"cannot escape a {type(value).__name__} for SQL")


def interpolate(sql: str, args: Any, no_backslash_escapes: bool = False) -> str:
    """``sql`` with its ``%s`` (sequence ``args``) or ``%(name)s`` (mapping) placeholders
    replaced by escaped literals; ``%%`` is a literal ``%``."""
    if args is None:
        return sql
    if isinstance(args, Mapping):
        return sql % {k: escape(v, no_backslash_escapes) for k, v in args.items()}
    if isinstance(args, str | bytes) or not isinstance(args, Sequence):
        args = (args,)
    return sql % tuple(escape(v, no_backslash_escapes) for v in args)
