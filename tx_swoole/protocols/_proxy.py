"""The PROXY protocol header (HAProxy's, versions 1 and 2) without I/O.

A load balancer in front of the server opens each connection with one header naming the client
it relays: ``PROXY TCP4 203.0.113.7 192.0.2.1 51234 80\\r\\n`` (v1, text, at most 107 bytes) or
a binary v2 block (a 12-byte signature, then version/command, family, length, addresses and
optional TLVs).  :func:`parse_header` reads it off the front of the first bytes.  No Twisted
import: :mod:`tx_swoole.protocols.proxy` applies it to a connection.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from tx_swoole.errors import ProxyProtocolError

__all__ = ["V1_MAX", "V2_SIGNATURE", "Header", "looks_like_header", "parse_header"]
V1_MAX = 107  # the spec's longest v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
_FAMILIES = {0x11: (4, 12), 0x12: (4, 12), 0x21: (16, 36), 0x22: (16, 36)}  # TCP/UDP over 4/6


class Header(NamedTuple):
    """What a header said: ``source`` (host, port) of the client, or None for a connection the
    proxy made itself (v1 ``UNKNOWN``, v2 ``LOCAL``, or a family other than IPv4/IPv6: keep the
    socket's own peer); ``length``: the bytes it took."""

    length: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    version: int


def looks_like_header(data: bytes) -> bool:
    """Whether ``data`` begins the way a PROXY header does (for the hint when a listener
    without ``open_proxy_protocol`` gets one)."""
    return data.startswith(_V1_PREFIX) or data.startswith(V2_SIGNATURE)


def parse_header(data: bytes) -> Header | None:
    """The header at the front of ``data``; None when more bytes are needed.

    Raises :class:`~tx_swoole.errors.ProxyProtocolError` naming what is wrong when ``data``
    does not start with a valid header.
    """
    if data[:12] == V2_SIGNATURE:
        return _v2(data)
    if data[:6] == _V1_PREFIX:
        return _v1(data)
    n = min(len(data), 12)
    if V2_SIGNATURE.startswith(data[:n]) or _V1_PREFIX.startswith(data[:6]):
        return None  # a prefix of either: wait
    raise ProxyProtocolError(
        f"the connection did not start with a PROXY protocol header (first bytes "
        f"{data[:16]!r}): this listener has open_proxy_protocol = true, so only a proxy that "
        "sends one (HAProxy send-proxy / send-proxy-v2, nginx proxy_protocol on) may connect"
    )


def _v1(data: bytes) -> Header | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyProtocolError(f"PROXY v1 header without CRLF in its first {V1_MAX} bytes")
        return None
    try:
        fields = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 header is not ASCII") from None
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return Header(end + 2, None, None, 1)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"malformed PROXY v1 header {data[:end]!r}: expected "
                                 "'PROXY TCP4|TCP6 src dst sport dport'")  # fmt: skip
    version = 4 if fields[1] == "TCP4" else 6
    src, dst = _ip(fields[2], version), _ip(fields[3], version)
    return Header(end + 2, (src, _port(fields[4])), (dst, _port(fields[5])), 1)


def _ip(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"PROXY header address {text!r} is not an IP address") from None
    if address.version != version:
        raise ProxyProtocolError(f"PROXY header address {text!r} is not IPv{version}")
    return str(address)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535 or (len(text) > 1 and text[0] == "0"):
        raise ProxyProtocolError(f"PROXY header port {text!r} is not a port number")
    return int(text)


def _v2(data: bytes) -> Header | None:
    if len(data) < 16:
        return None
    ver_cmd, family, length = struct.unpack_from("!BBH", data, 12)
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2 header with version {ver_cmd >> 4}")
    command = ver_cmd & 0x0F
    if command > 1:
        raise ProxyProtocolError(f"PROXY v2 header with unknown command {command}")
    total = 16 + length
    if len(data) < total:
        return None
    if command == 0 or family not in _FAMILIES:  # LOCAL, or UNSPEC/unix: the socket's peer
        return Header(total, None, None, 2)
    size, block = _FAMILIES[family]
    if length < block:
        raise ProxyProtocolError(f"PROXY v2 header too short for its addresses ({length} < "
                                 f"{block} bytes)")  # fmt: skip
    src = str(ipaddress.ip_address(data[16 : 16 + size]))
    dst = str(ipaddress.ip_address(data[16 + size : 16 + 2 * size]))
    sport, dport = struct.unpack_from("!HH", data, 16 + 2 * size)
    return Header(total, (src, sport), (dst, dport), 2)
