"""The write-through transport over real loopback sockets: order, buffering, errors, producers."""

from __future__ import annotations

import _socket
import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, tcp
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from zope.interface import implementer

from tx_swoole.transport import WriteThroughServer, listen_tcp

pytestmark = pytest.mark.integration


class ServerSide(Protocol):
    def connectionMade(self) -> None:
        self.factory.connected.callback(self)  # type: ignore[attr-defined]
        self.lost: defer.Deferred[Any] = defer.Deferred()

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback([reason])


class ClientSide(Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.done: defer.Deferred[bytes] = defer.Deferred()
        self.made: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(bytes(self.received))


async def pair(write_through: bool = True) -> tuple[ServerSide, ClientSide, Any]:
    factory = Factory.forProtocol(ServerSide)
    factory.connected = defer.Deferred()  # type: ignore[attr-defined]
    if write_through:
        port = listen_tcp(0, factory, interface="127.0.0.1")
    else:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    client = ClientSide()
    cf = ClientFactory.forProtocol(lambda: client)
    reactor.connectTCP("127.0.0.1", port.getHost().port, cf)  # type: ignore[attr-defined]
    server = await factory.connected  # type: ignore[attr-defined]
    await client.made
    return server, client, port


async def until(predicate: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not reached")


@pytest_twisted.ensureDeferred
async def test_small_write_goes_to_kernel_at_once() -> None:
    """A write with nothing buffered is sent inside write(): no buffer, no epoll registration."""
    server, client, port = await pair()
    t = server.transport
    assert isinstance(t, WriteThroughServer)
    # The class defaults consulted on every send are the transport's own slots (same values).
    assert {"dataBuffer", "disconnecting", "TLS"} <= set(WriteThroughServer.__slots__)
    assert (t.dataBuffer, t.disconnecting, t.TLS) == (b"", False, False)
    t.write(b"hello")
    assert t.pendingBytes() == 0 and t not in reactor.getWriters()  # type: ignore[attr-defined]
    await until(lambda: client.received == b"hello")
    await port.stopListening()
    t.loseConnection()
    await client.done


@pytest_twisted.ensureDeferred
async def test_partial_send_buffers_rest_and_keeps_order() -> None:
    """A large write the kernel only partly takes is finished from the buffer, in order."""
    server, client, port = await pair()
    t = server.transport
    t.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.transport.pauseProducing()
    big = bytes(range(256)) * 8192  # 2 MiB
    t.write(big)
    assert 0 < t.pendingBytes() < len(big)
    t.write(b"TAIL")  # must come after everything buffered
    t.writeSequence([b"-", b"END"])
    client.transport.resumeProducing()
    t.loseConnection()
    assert await client.done == big + b"TAIL-END"
    await port.stopListening()


@pytest.mark.parametrize("write_through", [True, False])
@pytest_twisted.ensureDeferred
async def test_writes_after_lose_connection_match_twisted(write_through: bool) -> None:
    """Writes after loseConnection behave exactly as with Twisted's own transport."""
    server, client, port = await pair(write_through)
    server.transport.write(b"a")
    server.transport.loseConnection()
    server.transport.write(b"b")
    assert await client.done == b"ab"
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_write_to_reset_peer_is_an_ordinary_disconnect() -> None:
    """After the peer resets, write() does not raise; connectionLost reports the loss."""
    server, client, port = await pair()
    client.transport.getHandle().setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
    )
    client.transport.abortConnection()
    await client.done
    for _ in range(50):  # EPIPE / ECONNRESET surface on one of these sends
        server.transport.write(b"x" * 1000)
        await task.deferLater(reactor, 0.001, lambda: None)
    [reason] = await server.lost
    assert reason.check(ConnectionDone, ConnectionLost)
    await port.stopListening()


@implementer(IPushProducer)
class CountingProducer:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_streaming_producer_paused_and_resumed() -> None:
    """A registered push producer is paused when the buffer fills and resumed once drained."""
    server, client, port = await pair()
    t = server.transport
    t.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    producer = CountingProducer()
    t.registerProducer(producer, True)
    client.transport.pauseProducing()
    t.write(b"y" * (4 * 1024 * 1024))
    assert producer.paused == 1 and producer.resumed == 0
    client.transport.resumeProducing()
    await until(lambda: len(client.received) == 4 * 1024 * 1024)
    assert producer.resumed == 1
    t.unregisterProducer()
    t.loseConnection()
    await client.done
    await port.stopListening()


def test_idle_transport_keeps_no_strings_or_bound_methods() -> None:
    """What Twisted keeps per connection but only reads to log or print (``logstr``,
    ``repstr``) or can answer from the socket (``fileno``) is not stored: 208 B less per idle
    connection.  They still answer, and ``fileno()`` is -1 once closed."""
    from twisted.python.failure import Failure

    a, b = socket.socketpair()
    fd = a.fileno()
    with b:
        proto = Protocol()
        t = WriteThroughServer(a, proto, ("127.0.0.1", 4321), None, 7, reactor)
        proto.makeConnection(t)
        try:
            assert not {"fileno", "logstr", "repstr"} & set(t.__dict__)
            assert t.fileno() == fd
            assert t.logstr == "Protocol,7,127.0.0.1" and t.logPrefix() == t.logstr
            assert t.repstr == "<Protocol #7 on ?>"
        finally:
            t.stopReading()
            t.connectionLost(Failure(ConnectionDone()))
        assert t.fileno() == -1
        assert t.logstr == "-,7,127.0.0.1"


@pytest.mark.parametrize(
    ("client", "packed"),
    [
        (("127.0.0.1", 4321), True),
        (("10.1.2.3", 0), True),
        (("::1", 4321, 0, 0), False),
        (("localhost", 80), False),
        (("1", 5), False),  # inet_aton takes it, as 0.0.0.1: kept as given
    ],
)
def test_peer_and_session_number_kept_as_one_int(client: tuple[Any, ...], packed: bool) -> None:
    """An IPv4 peer and the session number are kept as one int (146 B less per connection
    than accept()'s tuple); ``client``, ``hostname``, ``sessionno`` and ``getPeer()`` answer as
    Twisted's do, for that and for any other peer (kept as given)."""
    a, b = socket.socketpair()
    with a, b:
        t = WriteThroughServer(a, Protocol(), client, None, 7, reactor)
        try:
            assert t.client == client and t.hostname == client[0] and t.sessionno == 7
            assert (type(t._peer) is int) is packed
            assert not {"client", "hostname", "sessionno"} & set(t.__dict__)
            peer = t.getPeer()
            assert (peer.host, peer.port) == client[:2]
            t.sessionno = 2**60
            assert (t.sessionno, t.client) == (2**60, client)
            assert t.logstr == f"Protocol,{2**60},{client[0]}"
        finally:
            t.stopReading()
            t.socket.close()


@pytest.mark.parametrize("client", [("127.0.0.1", 4321), ("::1", 4321, 0, 0)])
def test_transport_answers_what_twisteds_server_sets(client: tuple[Any, ...]) -> None:
    """The transport sets its own attributes (slots, an empty instance dict for an IPv4
    peer) instead of running ``tcp.Server.__init__``: every attribute that one sets reads
    the same here, so a Twisted release that sets one more fails this test.  Its socket is
    the C socket under the one accepted (48 B instead of 88 B), same descriptor."""
    pairs = [socket.socketpair(), socket.socketpair()]
    theirs = tcp.Server(pairs[0][0], Protocol(), client, None, 7, reactor)
    fd = pairs[1][0].fileno()
    ours = WriteThroughServer(pairs[1][0], Protocol(), client, None, 7, reactor)
    try:
        assert set(vars(ours)) == ({"_addressType"} if len(client) == 4 else set())
        for name, value in vars(theirs).items():
            mine = getattr(ours, name)
            if name == "socket":
                assert type(mine) is _socket.socket and mine.family == value.family
                assert mine.fileno() == fd
                assert mine.gettimeout() == 0.0  # non-blocking, as Twisted makes it
            elif name == "fileno":
                assert mine() == fd
            elif name == "protocol":
                assert mine is ours.protocol and type(mine) is type(value)
            elif name == "_tempDataBuffer":
                assert mine == value == []
            else:
                assert mine == value, name
        assert {ours, theirs} <= set(reactor.getReaders())  # type: ignore[attr-defined]
    finally:
        for t in (theirs, ours):
            t.stopReading()
            t.socket.close()
        for pair_ in pairs:
            pair_[1].close()


@pytest_twisted.ensureDeferred
async def test_write_list_exists_only_while_writes_wait() -> None:
    """Twisted's list of writes waiting for the next reactor turn is made when a write has to
    wait, and given back once they went out; the bytes arrive whole and in order."""
    server, client, port = await pair()
    t = server.transport
    assert t._queuedWrites is None and "_tempDataBuffer" not in t.__dict__
    t.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    chunks = [bytes([i]) * 100_000 for i in range(20)]
    for chunk in chunks:
        t.write(chunk)
    assert t._queuedWrites and t.pendingBytes() > 0
    while t.pendingBytes():
        await task.deferLater(reactor, 0.01, lambda: None)
    assert t._queuedWrites is None
    t.loseConnection()
    assert await client.done == b"".join(chunks)
    await port.stopListening()
