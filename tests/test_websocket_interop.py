"""Interop with autobahn (an independent implementation, on Twisted) in both directions: its
client against our server, our client against its server; text and binary, fragmented and
compressed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from twisted.internet import defer, reactor

from tx_swoole.clients.websocket import connect
from tx_swoole.errors import WebSocketClosedError

from .support import ROOT, Twistd, write_config

pytestmark = pytest.mark.integration
MESSAGES: list[tuple[bytes, bool, int | None]] = [  # payload, binary, fragment size
    (b"hello autobahn", False, None),
    ("ü€😀 fragmented ".encode() * 40, False, 7),
    (bytes(range(256)) * 300, True, None),
    (b"\x00" * 100000, True, 4096),
    (b"*" * 65536, False, 1300),  # Autobahn's case 10.1.1
]


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    cfg = write_config(
        tmp_path_factory.mktemp("interop"),
        {"type": "websocket", "port": 0, "app": "tests.ws_apps:Echo"},
        {"worker_num": 0, "websocket_compression": True},
    )  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as twistd:
        yield twistd.port()


class Client(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.received: list[tuple[bytes, bool]] = []
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N803
        self.received.append((payload, isBinary))
        waiter = self.factory.waiter
        if waiter is not None and len(self.received) >= self.factory.expect:
            self.factory.waiter = None
            waiter.callback(None)

    def onClose(self, wasClean: bool, code: int, reason: str) -> None:  # noqa: N803
        self.factory.closed.callback((wasClean, code))


@pytest.mark.parametrize("compressed", [False, True])
@pytest_twisted.ensureDeferred
async def test_autobahn_client_against_our_server(ours: int, compressed: bool) -> None:
    factory: Any = WebSocketClientFactory(f"ws://127.0.0.1:{ours}/")
    factory.protocol = Client
    factory.opened, factory.closed, factory.waiter = defer.Deferred(), defer.Deferred(), None
    if compressed:
        factory.setProtocolOptions(
            perMessageCompressionOffers=[PerMessageDeflateOffer()],
            perMessageCompressionAccept=lambda r: PerMessageDeflateResponseAccept(r)
            if isinstance(r, PerMessageDeflateResponse) else None,
        )  # fmt: skip
    reactor.connectTCP("127.0.0.1", ours, factory)  # type: ignore[attr-defined]
    proto = await factory.opened
    factory.expect, factory.waiter = 1 + len(MESSAGES), defer.Deferred()
    for payload, binary, fragment in MESSAGES:
        proto.sendMessage(payload, isBinary=binary, fragmentSize=fragment)
    await factory.waiter
    welcome, *echoes = proto.received
    assert welcome[0].startswith(b"welcome") and not welcome[1]
    assert echoes == [(p, b) for p, b, _ in MESSAGES]
    if compressed:
        assert proto._perMessageCompress is not None
    proto.sendClose(1000, "done")
    assert await factory.closed == (True, 1000)


class Echo(WebSocketServerProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:  # noqa: N803
        if payload == b"close please":
            self.sendClose(4002, "autobahn says bye")
        else:
            self.sendMessage(payload, isBinary, fragmentSize=1000 if len(payload) > 3000 else None)


@pytest.fixture
def theirs() -> Iterator[int]:
    factory: Any = WebSocketServerFactory()
    factory.protocol = Echo
    factory.setProtocolOptions(
        perMessageCompressionAccept=lambda offers: next(
            (PerMessageDeflateOfferAccept(o) for o in offers
             if isinstance(o, PerMessageDeflateOffer)), None,
        ),
    )  # fmt: skip
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    yield port.getHost().port
    port.stopListening()


@pytest.mark.parametrize("compression", [False, True])
@pytest_twisted.ensureDeferred
async def test_our_client_against_autobahns_server(theirs: int, compression: bool) -> None:
    ws = await connect(f"ws://127.0.0.1:{theirs}/", compression=compression)
    assert ("permessage-deflate" in ws.responseHeaders.get("sec-websocket-extensions", "")) \
        == compression  # fmt: skip
    for payload, binary, _ in MESSAGES:
        message: str | bytes = payload if binary else payload.decode()
        ws.send(message)
        assert await ws.receive() == message
    await ws.ping(b"p")
    ws.send("close please")
    with pytest.raises(WebSocketClosedError) as closed:
        await ws.receive()
    assert (closed.value.code, closed.value.reason) == (4002, "autobahn says bye")
    await ws.close()
