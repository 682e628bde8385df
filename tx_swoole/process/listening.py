"""One listener in a worker (``[server]`` or a ``[[listen]]`` table): its app, table, port.

:func:`make_factory` builds the server factory a listener's type needs around its app;
:class:`Listening` binds (or adopts the master's socket), with TLS when the listener's
settings say so, and stops: shutdown refuses new connections and accepts those queued first,
a reload just stops accepting (the other workers share the socket).  A UDP listener has no
connections: its :class:`~tx_swoole.protocols.udp.DatagramServer` stops reading, lets the
handlers still running finish (they may still answer), then closes its socket.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime

from tx_swoole.config import Listener, ServerConfig
from tx_swoole.protocols.proxy import ProxyHeaderFactory
from tx_swoole.protocols.tcp import ConnectionTable, TrackedProtocol
from tx_swoole.reactor import IServerReactor
from tx_swoole.tls import (
    PLAIN_HTTP_REFUSAL,
    adopt_tls_port,
    listen_tls,
    server_context,
    tls_enabled,
)
from tx_swoole.transport import (
    accept_queued,
    adopt_stream_port,
    adopt_unix_port,
    listen_tcp,
    listen_unix,
    refuse_new_connections,
    stop_unix_port,
)

__all__ = ["Listening", "make_factory"]


def _require_subclass(app: Any, base: type, name: str, config: ServerConfig | Listener) -> None:
    """TypeError unless ``app`` is a subclass of ``base`` (``name``), as ``config.type`` needs."""
    if not (isinstance(app, type) and issubclass(app, base)):
        label = getattr(config, "label", "[server]")
        raise TypeError(f"{label} app = {config.app!r} must be a subclass of {name} for "
                        f"type = {config.type!r}")  # fmt: skip


def make_factory(
    config: ServerConfig | Listener,
    app: Any,
    *,
    reactor: IReactorTime | None = None,
    http_app: Any = None,
) -> ConnectionTable:
    """The server factory for ``config.type`` serving ``app`` (and, for a websocket server,
    ``http_app`` for plain HTTP requests)."""
    label = getattr(config, "label", "[server]")
    if config.type == "tcp":
        _require_subclass(app, TrackedProtocol, "tx_swoole.protocols.tcp.TCPProtocol", config)
        return ConnectionTable(app, config.settings, reactor=reactor)
    s = config.settings
    if s.enable_static_handler and config.type in ("http", "websocket"):
        from tx_swoole.protocols.static import StaticFiles

        if config.type == "http":
            app = StaticFiles(s.document_root, app, s.static_handler_locations,
                              s.static_handler_follow_symlinks)  # fmt: skip
        else:
            http_app = StaticFiles(s.document_root, http_app, s.static_handler_locations,
                                   s.static_handler_follow_symlinks)  # fmt: skip
    if config.type == "websocket":
        from tx_swoole.protocols.websocket import WebSocketFactory, WebSocketProtocol

        _require_subclass(app, WebSocketProtocol,
                          "tx_swoole.protocols.websocket.WebSocketProtocol", config)  # fmt: skip
        if http_app is not None and not callable(http_app):
            raise TypeError(f"{label} http_app = {config.http_app!r} must be "
                            "callable(request, response)")  # fmt: skip
        return WebSocketFactory(app, config.settings, http_app, reactor=reactor)
    from tx_swoole.protocols.http import HTTPFactory

    if not callable(app):
        raise TypeError(f"{label} app = {config.app!r} must be callable(request, response)")
    factory: ConnectionTable = HTTPFactory(app, config.settings, reactor=reactor)
    return factory


class Listening:
    """``listener`` served in this process: ``table`` (a connection table) or ``datagrams``
    (UDP), and ``port``.  ``fd``: the master's socket to adopt, or None to bind."""

    def __init__(
        self, listener: Listener, fd: int | None, reactor: IServerReactor, server: Any
    ) -> None:
        self.listener = listener
        self.fd = fd
        self.reactor = reactor
        self.server = server  # the worker's service
        self.table: ConnectionTable | None = None
        self.datagrams: Any = None  # a DatagramServer
        self.port: Any = None

    def build(self, app: Any, http_app: Any = None) -> None:
        """The table (or the UDP handler) around ``app``."""
        x = self.listener
        if x.type == "udp":
            from tx_swoole.protocols.udp import DatagramServer, UDPProtocol

            _require_subclass(app, UDPProtocol, "tx_swoole.protocols.udp.UDPProtocol", x)
            handler = app()
            handler.server = self.server
            self.datagrams = DatagramServer(handler, x.settings, self.reactor)
            return
        self.table = make_factory(x, app, reactor=self.reactor, http_app=http_app)
        self.table.service = self.server

    @property
    def requests(self) -> int:
        if self.table is not None:
            return self.table.requestCount
        return self.datagrams.requestCount if self.datagrams is not None else 0

    @property
    def where(self) -> str:
        """Where it listens, for the log: ``host:port``, ``unix:PATH``, ``udp://host:port``."""
        x = self.listener
        addr = self.port.getHost() if self.port is not None else None
        if x.unix_path or addr is None or not hasattr(addr, "port"):
            return x.address
        return f"{'udp://' if x.type == 'udp' else ''}{addr.host}:{addr.port}"

    def listen(self) -> None:
        x, fd, reactor = self.listener, self.fd, self.reactor
        if x.type == "udp":
            size = self.datagrams.readSize
            if fd is None:
                self.port = reactor.listenUDP(x.port, self.datagrams, x.host, size)
            else:
                self.port = reactor.adoptDatagramPort(fd, _family(fd), self.datagrams, size)
            return
        table: Any = self.table
        assert table is not None
        if x.settings.open_proxy_protocol:
            table = ProxyHeaderFactory(table, x.settings.proxy_protocol_timeout, reactor)
        if x.unix_path:  # a Unix socket (no TLS on it)
            if fd is not None:
                self.port = adopt_unix_port(fd, table, x.mode, reactor=reactor)
                return
            try:
                self.port = listen_unix(x.unix_path, table, x.mode, x.settings.backlog,
                                        reactor=reactor)  # fmt: skip
            except OSError as e:
                raise CannotListenError(None, x.host, e) from None
            return
        if tls_enabled(x.settings):
            web = x.type in ("http", "websocket")
            alpn: tuple[str, ...] = ("http/1.1",) if web else ()
            if x.type == "http" and x.settings.open_http2_protocol:
                alpn = ("h2", "http/1.1")
            context = server_context(x.settings, alpn)
            refusal = PLAIN_HTTP_REFUSAL if web else b""
            timeout = x.settings.http_header_timeout  # every type: the handshake's bound
            if fd is None:
                self.port = listen_tls(x.port, table, context, x.settings.backlog, x.host,
                                       plain_refusal=refusal, handshake_timeout=timeout,
                                       reactor=reactor)  # fmt: skip
            else:
                self.port = adopt_tls_port(fd, table, context, _family(fd),
                                           plain_refusal=refusal, handshake_timeout=timeout,
                                           reactor=reactor)  # fmt: skip
            return
        if fd is None:
            self.port = listen_tcp(x.port, table, x.settings.backlog, x.host, reactor=reactor)
        else:
            self.port = adopt_stream_port(fd, table, _family(fd), reactor=reactor)

    async def stop(self, final: bool) -> None:
        """Stop accepting (a UDP socket: stop reading; :meth:`close` closes it once what is
        in progress is done): see the module docstring."""
        port, x = self.port, self.listener
        if port is None:
            return
        if self.datagrams is not None:
            port.stopReading()  # what is in progress may still answer
        elif final and self.fd is None and x.unix_path:
            await stop_unix_port(port, x.unix_path)  # refused, queued taken
        elif final:
            if self.fd is None:
                refuse_new_connections(port.socket)
            accept_queued(port)
            await port.stopListening()
        else:
            await port.stopListening()

    async def close(self) -> None:
        """Close a UDP socket once its handlers are done (the caller bounds the wait)."""
        if self.datagrams is not None and self.port is not None:
            for d in list(self.datagrams.running):
                d.cancel()  # past max_wait_time: the rest is given up
            await self.port.stopListening()


def _family(fd: int) -> socket.AddressFamily:
    with socket.socket(fileno=os.dup(fd)) as probe:
        return probe.family
