"""The WebSocket glue over StringTransport with task.Clock: the handshake through the HTTP
protocol, ping/pong heartbeats, the close timeout and the slow-reader limit, each just before
and just after its deadline."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from tx_swoole.protocols._websocket import (
    CLOSE,
    PING,
    PONG,
    TEXT,
    CloseFrame,
    Ping,
    Pong,
    WebSocketConnection,
    close_payload,
    frame,
    masked_frame,
)
from tx_swoole.protocols.http import Request
from tx_swoole.protocols.websocket import (
    CLOSE_TIMEOUT,
    READ_SIZE,
    WebSocketFactory,
    WebSocketProtocol,
)

from .support import SocketStringTransport

ADDR = IPv4Address("TCP", "127.0.0.1", 40000)
KEY = base64.b64encode(b"0123456789abcdef")
HANDSHAKE = (b"GET /room HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + KEY + b"\r\n\r\n")  # fmt: skip


class Recorder(WebSocketProtocol):
    def connectionOpened(self, request: Request) -> None:
        self.seen: list[Any] = [("open", request.path)]

    def messageReceived(self, message: str | bytes) -> None:
        self.seen.append(message)
        self.send(message)

    def pongReceived(self, payload: bytes) -> None:
        self.seen.append(("pong", payload))

    def connectionClosed(self, code: int, reason: str) -> None:
        self.seen.append(("closed", code, reason))


class PendingTransport(SocketStringTransport):
    """Says how much it holds unsent, as the real transports do."""

    pending = 0
    bufferSize = 65536  # Twisted's read size  # noqa: N815

    def pendingBytes(self) -> int:
        return self.pending


def upgraded(
    settings: dict[str, Any] | None = None,
) -> tuple[Recorder, PendingTransport, task.Clock]:
    clock = task.Clock()
    factory = WebSocketFactory(Recorder, settings or {}, reactor=clock)
    factory.startFactory()
    http = factory.buildProtocol(ADDR)
    assert http is not None
    transport = PendingTransport()
    http.makeConnection(transport)
    http.dataReceived(HANDSHAKE + masked_frame(TEXT, b"early"))
    head, _, rest = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols")
    assert b"Sec-WebSocket-Accept: " in head and rest == frame(TEXT, b"early")
    ws = transport.protocol  # type: ignore[attr-defined]
    assert isinstance(ws, Recorder) and factory.connections[ws.connId] is ws
    assert ws.seen == [("open", "/room"), "early"]
    transport.clear()
    return ws, transport, clock


def frames(transport: SocketStringTransport) -> list[Any]:
    data = transport.value()
    transport.clear()
    return WebSocketConnection(client_side=True).receive(data)


def test_the_handshake_hands_the_connection_over_with_its_id() -> None:
    ws, transport, _ = upgraded()
    assert ws.server.isEstablished(ws.connId) and ws.server.listConnections() == [ws.connId]
    ws.dataReceived(masked_frame(TEXT, b"hi"))
    assert frames(transport) == ["hi"]
    assert ws.server.push(ws.connId, b"pushed") and frames(transport) == [b"pushed"]
    assert ws.byteCounts()[0] > len(HANDSHAKE)


def test_a_websocket_reads_a_64_kib_message_and_its_header_at_once() -> None:
    ws, transport, _ = upgraded()
    assert transport.bufferSize == READ_SIZE > 65536 + 14


def test_a_plain_request_without_http_app_gets_426() -> None:
    factory = WebSocketFactory(Recorder, {}, reactor=task.Clock())
    http = factory.buildProtocol(ADDR)
    assert http is not None
    transport = SocketStringTransport()
    http.makeConnection(transport)
    http.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 426 ")


@pytest.mark.parametrize("answered", [True, False])
def test_a_ping_unanswered_by_the_next_is_closed(answered: bool) -> None:
    ws, transport, clock = upgraded({"websocket_ping_interval": 10, "websocket_send_timeout": 0})
    clock.advance(9.99)
    assert transport.value() == b""
    clock.advance(0.01)
    assert transport.value() == frame(PING, b"")
    transport.clear()
    if answered:
        ws.dataReceived(masked_frame(PONG, b""))
        assert ws.seen[-1] == ("pong", b"")
    clock.advance(10)
    if answered:
        assert transport.value() == frame(PING, b"") and not transport.aborted
    else:
        assert transport.aborted and ws.closing


def test_our_close_is_aborted_just_after_its_timeout() -> None:
    ws, transport, clock = upgraded()
    assert ws.disconnect(4000, "bye")
    assert transport.value() == frame(CLOSE, close_payload(4000, "bye"))
    clock.advance(CLOSE_TIMEOUT - 0.01)
    assert not transport.aborted
    clock.advance(0.02)
    assert transport.aborted


def test_our_close_answered_in_time_closes_cleanly() -> None:
    ws, transport, clock = upgraded()
    ws.disconnect(4000, "bye")
    assert transport.value() == frame(CLOSE, close_payload(4000, "bye"))
    ws.dataReceived(masked_frame(CLOSE, (4000).to_bytes(2, "big")))
    assert transport.disconnecting
    ws.connectionLost(Failure(ConnectionDone()))
    assert ws.seen[-1] == ("closed", 4000, "")
    clock.advance(CLOSE_TIMEOUT + 1)
    assert not transport.aborted and not ws.server.connections


def test_a_reader_stuck_past_the_limit_is_closed_with_1008_after_the_timeout() -> None:
    ws, transport, clock = upgraded({"buffer_output_size": 1024, "websocket_send_timeout": 8})
    transport.pending = 2000  # the client reads nothing
    assert not ws.send("x" * 10)  # refused: over buffer_output_size
    clock.advance(7.99)
    assert transport.value() == b""
    clock.advance(2.01)  # checked every websocket_send_timeout / 4
    assert transport.value() == frame(CLOSE, close_payload(1008, "reading too slowly"))


def test_a_reader_that_catches_up_is_left_alone() -> None:
    ws, transport, clock = upgraded({"buffer_output_size": 1024, "websocket_send_timeout": 8})
    transport.pending = 2000
    assert not ws.send("x")
    clock.advance(4)
    transport.pending = 0
    clock.advance(10)
    assert transport.value() == b"" and ws.send("x") and not ws.closing


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=12))
def test_random_bytes_never_escape_the_protocol(chunks: list[bytes]) -> None:
    ws, transport, clock = upgraded({"package_max_length": 4096})
    for chunk in chunks:
        ws.dataReceived(chunk)  # raises nothing, whatever the bytes
    clock.advance(CLOSE_TIMEOUT + 1)
    assert len(ws.ws._buf) <= 4096 + 14


def test_refused_pushes_are_logged_once_until_the_reader_catches_up() -> None:
    from twisted.logger import capturedLogs

    ws, transport, clock = upgraded({"buffer_output_size": 1024, "websocket_send_timeout": 0})
    transport.pending = 2000
    with capturedLogs() as events:
        assert not any(ws.send("x") for _ in range(5))
        transport.pending = 0
        assert ws.send("x")
        transport.pending = 2000
        assert not ws.send("x")
    refusals = [e for e in events if "refused" in e.get("log_format", "")]
    assert len(refusals) == 2  # once per time it fell behind


class FrameRecorder(Recorder):
    """Answers Swoole-style: pings by hand, a last word on the peer's close frame."""

    def messageReceived(self, message: Any) -> None:
        self.seen.append(message)
        if isinstance(message, Pong):
            return
        if isinstance(message, Ping):
            self.pong(message.payload)
        elif isinstance(message, CloseFrame):
            self.seen.append(("sent", self.send(f"bye {message.code}")))
        else:
            self.send(message)


def frame_upgraded(settings: dict[str, Any]) -> tuple[Recorder, PendingTransport, task.Clock]:
    ws, transport, clock = upgraded(settings)
    ws.__class__ = FrameRecorder
    return ws, transport, clock


def test_with_open_websocket_ping_frame_the_application_answers_pings() -> None:
    ws, transport, _ = frame_upgraded({"open_websocket_ping_frame": True})
    ws.dataReceived(masked_frame(PING, b"p1") + masked_frame(TEXT, b"after"))
    assert ws.seen[-2:] == [Ping(b"p1"), "after"] and ws.seen[-2].data == b"p1"
    assert frames(transport) == [Pong(b"p1"), "after"]  # the pong is the application's
    assert ws.server.push(ws.connId, Pong(b"unasked")) and frames(transport) == [Pong(b"unasked")]
    assert ws.server.push(ws.connId, Ping(b"p2")) and frames(transport)[0] == Ping(b"p2")


def test_without_it_pings_are_answered_and_kept_from_the_message_hook() -> None:
    ws, transport, _ = frame_upgraded({})
    ws.dataReceived(masked_frame(PING, b"p1") + masked_frame(PONG, b"p0"))
    assert ws.seen[-1] == ("pong", b"p0") and frames(transport) == [Pong(b"p1")]


def test_with_open_websocket_pong_frame_pongs_reach_the_message_hook_and_the_heartbeat() -> None:
    ws, transport, clock = frame_upgraded({
        "open_websocket_pong_frame": True, "websocket_ping_interval": 10,
        "websocket_send_timeout": 0,
    })  # fmt: skip
    clock.advance(10)
    assert frames(transport)[0] == Ping(b"")
    ws.dataReceived(masked_frame(PONG, b""))
    assert ws.seen[-1] == Pong(b"") and ws.seen[-1].opcode == PONG
    clock.advance(10)
    assert not transport.aborted and frames(transport)[0] == Ping(b"")


def test_with_open_websocket_close_frame_the_peers_close_comes_first_and_may_be_answered() -> None:
    ws, transport, _ = frame_upgraded({"open_websocket_close_frame": True})
    ws.dataReceived(masked_frame(TEXT, b"last") + masked_frame(CLOSE, close_payload(4001, "done")))
    assert ws.seen[-3:] == ["last", CloseFrame(4001, "done"), ("sent", True)]
    assert ws.seen[-2].data == close_payload(4001, "done")
    assert frames(transport)[:2] == ["last", "bye 4001"]  # then the reply to the close
    assert transport.disconnecting and ws.ws.closeSent == (4001, "")


def test_with_open_websocket_close_frame_the_answer_to_our_own_close_is_not_reported() -> None:
    ws, transport, _ = frame_upgraded({"open_websocket_close_frame": True})
    assert ws.disconnect(4000, "go")
    transport.clear()
    ws.dataReceived(masked_frame(CLOSE, b""))  # (as Swoole: our close ends the conversation)
    assert ws.seen == [("open", "/room"), "early"]
    assert transport.value() == b"" and transport.disconnecting
    assert CloseFrame(1005, "").data == b"" and CloseFrame(1000, "x").data == b"\x03\xe8x"
