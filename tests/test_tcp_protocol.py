"""Long-lived TCP protocol and connection table, driven by StringTransport and task.Clock."""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

import pytest
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from tx_swoole.protocols.tcp import ConnectionTable, TCPProtocol

from .support import SocketStringTransport

ADDR = IPv4Address("TCP", "127.0.0.1", 40000)


class Recorder(TCPProtocol):
    """Records what the hooks saw."""

    __slots__ = ("messages", "closed", "opened")

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[bytes] = []
        self.closed: list[str] = []
        self.opened = False

    def connectionOpened(self) -> None:
        self.opened = True

    def messageReceived(self, data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("app bug")
        self.messages.append(data)

    def connectionClosed(self, reason: str) -> None:
        self.closed.append(reason)


class PendingTransport(SocketStringTransport):
    pending = 0

    def pendingBytes(self) -> int:
        return self.pending


def make(
    settings: dict[str, Any] | None = None, clock: task.Clock | None = None
) -> ConnectionTable:
    factory = ConnectionTable(Recorder, settings or {}, reactor=clock or task.Clock())
    factory.startFactory()
    return factory


def connect(factory: ConnectionTable, transport: Any = None) -> tuple[Recorder, Any]:
    proto = factory.buildProtocol(ADDR)
    assert isinstance(proto, Recorder)
    transport = transport or SocketStringTransport()
    proto.makeConnection(transport)
    return proto, transport


def lose(proto: Recorder) -> None:
    proto.connectionLost(Failure(ConnectionDone()))


def test_heartbeat_closes_just_after_idle_time_not_before() -> None:
    """A silent connection survives until idle time has passed, then is aborted with RST."""
    clock = task.Clock()
    factory = make({"heartbeat_check_interval": 1, "heartbeat_idle_time": 2}, clock)
    proto, transport = connect(factory)
    clock.advance(1)
    proto.dataReceived(b"x")  # activity at t=1
    clock.advance(2)  # check at t=3: idle exactly 2, not over
    assert not transport.aborted and proto.messages == [b"x"]
    clock.advance(1)  # check at t=4: idle 3 > 2
    assert transport.aborted
    assert transport.handle.options[(socket.SOL_SOCKET, socket.SO_LINGER)] == struct.pack(
        "ii", 1, 0
    )
    lose(proto)
    assert proto.closed == ["heartbeat"] and factory.connections == {}


def test_heartbeat_counts_only_bytes_received() -> None:
    """Sending to the peer is not activity; receiving is."""
    clock = task.Clock()
    factory = make({"heartbeat_idle_time": 2}, clock)  # check every 1 s
    proto, transport = connect(factory)
    for _ in range(2):
        clock.advance(1)
        proto.send(b"ping")
    assert not transport.aborted
    clock.advance(1)
    assert transport.aborted


def test_heartbeat_off_by_default() -> None:
    """Without heartbeat settings nothing is ever swept."""
    clock = task.Clock()
    factory = make({}, clock)
    proto, transport = connect(factory)
    clock.advance(10_000)
    assert not transport.aborted and not clock.getDelayedCalls()


def test_length_limit_closes_with_reason_limit_and_warning() -> None:
    """A declared length over package_max_length closes the connection; nothing is delivered."""
    factory = make({"open_length_check": True, "package_max_length": 100})
    proto, transport = connect(factory)
    with capturedLogs() as events:
        proto.dataReceived(struct.pack(">I", 97) + b"x")
    assert transport.disconnecting and proto.messages == []
    warning = [e for e in events if e["log_level"].name == "warn"][0]
    assert "declared message of 101 bytes exceeds package_max_length=100" in warning["error"]
    proto.dataReceived(struct.pack(">I", 1) + b"y")  # after close: ignored
    assert proto.messages == []
    lose(proto)
    assert proto.closed == ["limit"]


def test_eof_framing_delivers_messages() -> None:
    """With open_eof_split, messageReceived gets whole EOF-terminated messages."""
    factory = make({"open_eof_split": True, "package_eof": "\n"})
    proto, _ = connect(factory)
    proto.dataReceived(b"a\nb")
    proto.dataReceived(b"c\n")
    assert proto.messages == [b"a\n", b"bc\n"]


def test_send_to_closed_or_unknown_logs_notice_and_returns_false() -> None:
    """Sending to a gone connection is False with a NOTICE, never an exception."""
    factory = make()
    proto, _ = connect(factory)
    connId = proto.connId
    lose(proto)
    with capturedLogs() as events:
        assert factory.send(connId, b"late") is False
        assert proto.send(b"late") is False
        assert factory.send(999, b"x") is False
        assert factory.close(999) is False
    assert [e["swoole_level"] for e in events] == ["notice"] * 4


def test_send_refused_beyond_buffer_output_size() -> None:
    """send refuses bytes that would take the unsent total past buffer_output_size."""
    factory = make({"buffer_output_size": 1024})
    transport = PendingTransport()
    proto, _ = connect(factory, transport)
    transport.pending = 1000
    with capturedLogs() as events:
        assert proto.send(b"x" * 25) is False
    assert "buffer_output_size" in events[0]["log_format"]
    assert proto.send(b"x" * 24) is True
    assert transport.value() == b"x" * 24


def test_close_reasons_server_reset_peer_error() -> None:
    """The close hook learns why: server close, reset, peer close, app error."""
    factory = make()
    a, ta = connect(factory)
    b, tb = connect(factory)
    c, _ = connect(factory)
    d, td = connect(factory)
    assert factory.close(a.connId) is True and ta.disconnecting and not ta.aborted
    assert b.close(reset=True) is True and tb.aborted
    assert b.close() is False  # already closing
    with capturedLogs() as events:
        d.dataReceived(b"boom")
    assert td.aborted and any(e.get("log_failure") for e in events)
    for p in (a, b, c, d):
        lose(p)
    assert (a.closed, b.closed, c.closed, d.closed) == (["server"], ["server"], ["peer"], ["error"])


def test_connection_table_ids_info_and_listing() -> None:
    """Connections get increasing integer ids; info reports address, times and byte counts."""
    clock = task.Clock()
    clock.advance(100)
    factory = make({}, clock)
    a, _ = connect(factory)
    b, _ = connect(factory)
    assert (a.connId, b.connId) == (1, 2) and a.opened
    assert factory.listConnections() == [1, 2] and factory.exists(1)
    clock.advance(5)
    a.dataReceived(b"hello")
    factory.send(1, b"abc")
    info = factory.getClientInfo(1)
    assert info is not None
    assert (info.connect_time, info.last_recv_time, info.bytes_in, info.bytes_out) == (
        100,
        105,
        5,
        3,
    )
    lose(a)
    assert not factory.exists(1) and factory.getClientInfo(1) is None
    assert factory.listConnections() == [2]


def test_max_conn_closes_extra_connections_at_accept() -> None:
    """Beyond max_conn, buildProtocol refuses (the port closes the socket) with a WARNING."""
    factory = make({"max_conn": 2})
    connect(factory)
    connect(factory)
    with capturedLogs() as events:
        assert factory.buildProtocol(ADDR) is None
        assert factory.buildProtocol(ADDR) is None  # within the same second: one warning
    warnings = [e for e in events if e["log_level"].name == "warn"]
    assert len(warnings) == 1 and warnings[0]["limit"] == 2


def test_keepalive_and_buffer_options_applied_to_accepted_sockets() -> None:
    """TCP keepalive, user timeout and buffer sizes are set on every accepted socket."""
    factory = make(
        {"open_tcp_keepalive": True, "tcp_keepidle": 7, "tcp_keepinterval": 3, "tcp_keepcount": 4,
         "tcp_user_timeout": 5000, "socket_buffer_size": 65536}
    )  # fmt: skip
    _, transport = connect(factory)
    opts = transport.handle.options
    assert opts[(socket.SOL_SOCKET, socket.SO_KEEPALIVE)] == 1
    assert opts[(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)] == 7
    assert opts[(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)] == 3
    assert opts[(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)] == 4
    assert opts[(socket.IPPROTO_TCP, 18)] == 5000
    assert opts[(socket.SOL_SOCKET, socket.SO_SNDBUF)] == 65536


@pytest.mark.parametrize(("settings", "expected"), [({}, 1), ({"open_tcp_nodelay": False}, None)])
def test_tcp_nodelay_on_by_default(settings: dict[str, Any], expected: int | None) -> None:
    """open_tcp_nodelay (default true) turns Nagle off on every accepted TCP socket."""
    _, transport = connect(make(settings))
    assert transport.handle.options.get((socket.IPPROTO_TCP, socket.TCP_NODELAY)) == expected


def test_refused_socket_option_logged_once_and_server_carries_on() -> None:
    """A buffer size the kernel refuses (ENOBUFS) is logged once; connections still work."""

    class Refusing(SocketStringTransport):
        def getHandle(self) -> Any:
            transport = self

            class Sock:
                def setsockopt(self, *args: Any) -> None:
                    transport.calls = getattr(transport, "calls", 0) + 1
                    raise OSError(errno.ENOBUFS, "No buffer space available")

            return Sock()

    factory = make({"socket_buffer_size": 1 << 30})
    with capturedLogs() as events:
        a, _ = connect(factory, Refusing())
        b, _ = connect(factory, Refusing())
    assert len([e for e in events if e["log_level"].name == "warn"]) == 1
    a.dataReceived(b"ok")
    assert a.messages == [b"ok"] and factory.listConnections() == [a.connId, b.connId]


def test_draining_refuses_new_and_when_empty_fires() -> None:
    """While draining, new connections are refused; whenEmpty fires once the last one closes."""
    factory = make()
    a, _ = connect(factory)
    factory.startDraining()
    assert factory.buildProtocol(ADDR) is None
    done = factory.whenEmpty()
    assert not done.called
    lose(a)
    assert done.called


@pytest.mark.parametrize("reset", [True, False])
def test_close_all(reset: bool) -> None:
    """closeAll closes every connection with the given reason."""
    factory = make()
    protos = [connect(factory) for _ in range(3)]
    factory.closeAll("reload", reset=reset)
    for p, t in protos:
        assert t.disconnecting and t.aborted is reset
        lose(p)
        assert p.closed == ["reload"]


class AsyncRecorder(Recorder):
    """Async hooks that wait for the test to release them, one Deferred per call."""

    __slots__ = ("gates",)

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[defer.Deferred[None]] = []

    async def connectionOpened(self) -> None:  # type: ignore[override]
        gate: defer.Deferred[None] = defer.Deferred()
        self.gates.append(gate)
        await gate
        self.opened = True

    async def messageReceived(self, data: bytes) -> None:  # type: ignore[override]
        gate: defer.Deferred[None] = defer.Deferred()
        self.gates.append(gate)
        await gate
        if data.rstrip() == b"boom":
            raise RuntimeError("async app bug")
        self.messages.append(data)


def async_connect(cls: type[Recorder] = AsyncRecorder, **settings: Any) -> tuple[Any, Any]:
    factory = ConnectionTable(cls, settings, reactor=task.Clock())
    proto = factory.buildProtocol(ADDR)
    transport = SocketStringTransport()
    proto.makeConnection(transport)
    return proto, transport


def test_async_hooks_run_in_order() -> None:
    """async def connectionOpened and messageReceived run; a message is handed over only
    after the coroutine before it finished (framed messages of one read included)."""
    proto, _ = async_connect(open_eof_split=True, package_eof="\n")
    proto.dataReceived(b"a\nb\n")
    assert len(proto.gates) == 1 and not proto.opened  # connectionOpened still running
    proto.gates[0].callback(None)
    assert proto.opened and len(proto.gates) == 2 and proto.messages == []
    proto.dataReceived(b"c\n")
    proto.gates[1].callback(None)
    assert proto.messages == [b"a\n"] and len(proto.gates) == 3
    proto.gates[2].callback(None)
    proto.gates[3].callback(None)
    assert proto.messages == [b"a\n", b"b\n", b"c\n"]


def test_async_hook_failure_is_logged_and_aborts() -> None:
    """An exception in an async hook is logged with its traceback; the connection is
    aborted with reason error and the messages behind it are dropped."""
    proto, transport = async_connect(open_eof_split=True, package_eof="\n")
    proto.gates[0].callback(None)
    proto.dataReceived(b"boom\nlater\n")
    with capturedLogs() as events:
        proto.gates[1].callback(None)
    assert any(e.get("log_failure") for e in events) and transport.aborted
    lose(proto)
    assert proto.closed == ["error"] and proto.messages == []


def test_concurrent_messages_opt_out() -> None:
    """With concurrentMessages = True every message is handed over at once."""

    class Concurrent(AsyncRecorder):
        __slots__ = ()
        concurrentMessages = True

    proto, _ = async_connect(Concurrent, open_eof_split=True, package_eof="\n")
    proto.dataReceived(b"a\nb\n")
    assert len(proto.gates) == 3


def test_reading_pauses_while_many_messages_wait() -> None:
    """A peer faster than a slow async hook: reading pauses past MAX_WAITING waiting
    messages and resumes as they are handled."""
    from tx_swoole.protocols.tcp import MAX_WAITING

    proto, transport = async_connect(open_eof_split=True, package_eof="\n")
    proto.gates[0].callback(None)
    proto.dataReceived(b"m\n" * (MAX_WAITING + 2))
    assert transport.producerState == "paused"
    while len(proto.messages) < MAX_WAITING + 2:
        proto.gates[len(proto.messages) + 1].callback(None)
    assert transport.producerState == "producing"
    assert proto._busy is False  # nothing kept once nothing waits (one slot when idle)


def test_half_close_finishes_then_closes_with_reason_peer() -> None:
    """After the peer's half-close, waiting messages are still handled and everything sent
    is flushed (a graceful close, not an abort), with close reason peer."""
    proto, transport = async_connect(open_eof_split=True, package_eof="\n")
    proto.gates[0].callback(None)
    proto.dataReceived(b"x\ny\n")
    proto.readConnectionLost()
    assert not transport.disconnecting
    proto.gates[1].callback(None)
    proto.gates[2].callback(None)
    assert proto.messages == [b"x\n", b"y\n"] and transport.disconnecting
    assert not transport.aborted
    lose(proto)
    assert proto.closed == ["peer"]


def test_half_close_during_a_hook_closes_once_it_ends() -> None:
    """A half-close while an async hook runs with nothing behind it: the connection closes
    (reason peer) when that hook ends, not before; with no hook running, at once."""
    proto, transport = async_connect(open_eof_split=True, package_eof="\n")
    proto.gates[0].callback(None)
    proto.dataReceived(b"x\n")
    proto.readConnectionLost()
    assert not transport.disconnecting and proto.handoffReady() is None
    proto.gates[1].callback(None)
    assert proto.messages == [b"x\n"] and transport.disconnecting and not transport.aborted
    lose(proto)
    assert proto.closed == ["peer"]

    proto, transport = async_connect(open_eof_split=True, package_eof="\n")
    proto.gates[0].callback(None)
    proto.readConnectionLost()
    assert transport.disconnecting


def test_connections_provide_the_tracked_connection_interface() -> None:
    """TCP and HTTP connections provide ITrackedConnection (what the table and a draining
    worker use, with no attribute probing); a raw send to an HTTP connection is refused."""
    from zope.interface.verify import verifyObject

    from tx_swoole.protocols.http import HTTPFactory
    from tx_swoole.protocols.tcp import ITrackedConnection

    tcp, _ = connect(make())
    http_factory = HTTPFactory(lambda q, r: r.end(), {}, reactor=task.Clock())
    http = http_factory.buildProtocol(ADDR)
    http.makeConnection(SocketStringTransport())
    for proto in (tcp, http):
        assert verifyObject(ITrackedConnection, proto)
        assert proto.describeState() in ("open", "idle", "head")
    with capturedLogs() as events:
        assert http_factory.send(http.connId, b"raw") is False
    assert any("takes no raw sends" in e["log_format"] for e in events)
