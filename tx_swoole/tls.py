"""TLS for every server type, on the standard library's ``ssl`` (OpenSSL's memory BIOs).

:func:`server_context` builds the ``ssl.SSLContext`` the ``ssl_*`` settings describe (and
names the file and the reason when it cannot).  :class:`TLSServer` is the write-through TCP
transport with TLS inside it: protocols see plain bytes through the same transport object, so
producers, pausing, ``getPeer``, socket options and the output limits work unchanged;
``getPeerCertificate()`` and ``negotiatedProtocol()`` tell the app what the handshake agreed.
A handshake that fails is logged with the peer and OpenSSL's reason and closes the connection;
a plain HTTP request sent to an HTTPS port is answered with a 400 that says so.

:func:`listen_tls` and :func:`adopt_tls_port` are :func:`~tx_swoole.transport.listen_tcp` and
:func:`~tx_swoole.transport.adopt_stream_port` with TLS.
"""

from __future__ import annotations

import socket
import ssl
from errno import EWOULDBLOCK
from typing import Any, cast

from twisted.internet import main
from twisted.internet.interfaces import IReactorSocket, IReactorTCP
from twisted.internet.protocol import ServerFactory
from twisted.python.failure import Failure

from tx_swoole._log import SwooleLogger
from tx_swoole.errors import ConfigError
from tx_swoole.settings import Settings
from tx_swoole.transport import (
    WriteThroughPort,
    WriteThroughServer,
    adopt_stream_port,
    listen_tcp,
    write_through,
)

log = SwooleLogger("tx_swoole.tls")

PROTOCOLS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_HTTP_METHODS = (b"GET ", b"POST", b"HEAD", b"PUT ", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC")
_HINTS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": " (ssl_verify_peer = true: a client certificate is "
    "required)",
    "CERTIFICATE_VERIFY_FAILED": " (the client certificate does not chain to ssl_client_cert_file)",
    "UNSUPPORTED_PROTOCOL": " (the client's TLS version is not in ssl_protocols)",
    "NO_SHARED_CIPHER": " (no cipher in common: see ssl_ciphers)",
}
PLAIN_HTTP_REFUSAL = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 48\r\n"
    b"Connection: close\r\n\r\nThe plain HTTP request was sent to an HTTPS port\n"
)


def tls_enabled(settings: Settings) -> bool:
    """True when the settings ask for TLS (``ssl_cert_file`` is set)."""
    return bool(settings.ssl_cert_file)


def server_context(settings: Settings, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    """The server-side context of ``ssl_cert_file``, ``ssl_key_file`` (default: the key is in
    the certificate file), ``ssl_protocols``, ``ssl_ciphers``, ``ssl_verify_peer`` with
    ``ssl_client_cert_file`` (the CAs client certificates must chain to), and ``alpn``.

    Raises :class:`~tx_swoole.errors.ConfigError` naming the file and OpenSSL's reason.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = sorted(PROTOCOLS[p] for p in settings.ssl_protocols)
    ctx.minimum_version, ctx.maximum_version = versions[0], versions[-1]
    # no renegotiation (a client could make the server redo handshakes at will), no
    # compression (CRIME); a fresh ECDH key per handshake
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION | ssl.OP_SINGLE_ECDH_USE
    cert, key = settings.ssl_cert_file, settings.ssl_key_file or settings.ssl_cert_file
    for name, path in (("ssl_cert_file", cert), ("ssl_key_file", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise ConfigError(f"setting {name} = {path!r}: cannot read it: {e.strerror}") from None
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        if "KEY_VALUES_MISMATCH" in str(e) or e.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"setting ssl_key_file = {key!r}: the key does not match the "
                              f"certificate in ssl_cert_file = {cert!r}") from None  # fmt: skip
        why = e.reason or e
        raise ConfigError(f"settings ssl_cert_file = {cert!r}, ssl_key_file = {key!r}: not a "
                          f"PEM certificate and its private key ({why})") from None  # fmt: skip
    if settings.ssl_ciphers:
        try:
            ctx.set_ciphers(settings.ssl_ciphers)
        except ssl.SSLError:
            raise ConfigError(f"setting ssl_ciphers = {settings.ssl_ciphers!r}: OpenSSL "
                              "knows none of these (`openssl ciphers -v`)") from None  # fmt: skip
    if settings.ssl_verify_peer:
        if not settings.ssl_client_cert_file:
            raise ConfigError("ssl_verify_peer = true needs ssl_client_cert_file (the CA "
                              "certificates client certificates must chain to)")  # fmt: skip
        ctx.verify_mode = ssl.CERT_REQUIRED
    if settings.ssl_client_cert_file:
        path = settings.ssl_client_cert_file
        try:
            ctx.load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError) as e:
            reason = getattr(e, "strerror", None) or getattr(e, "reason", None) or e
            raise ConfigError(f"setting ssl_client_cert_file = {path!r}: cannot load CA "
                              f"certificates from it ({reason})") from None  # fmt: skip
        if not settings.ssl_verify_peer:
            ctx.verify_mode = ssl.CERT_OPTIONAL  # asked for, checked when given
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class TLSServer(WriteThroughServer):
    """A write-through server transport that speaks TLS on the socket and plain bytes to its
    protocol.  Bytes written before the handshake completes are held and sent after it.

    Resource handling: one SSL object and two memory BIOs per connection, freed with it; the
    held writes count in :meth:`pendingBytes`, so the output limits see them.

    Error handling: a failed handshake or a bad record closes the connection (logged with
    the peer and the reason); ``connectionLost`` follows as for any lost connection.
    """

    encrypted = True

    def __init__(self, sock: socket.socket, protocol: Any, client: Any, server: Any,
                 sessionno: int, reactor: Any) -> None:  # fmt: skip
        super().__init__(sock, protocol, client, server, sessionno, reactor)
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._tls = server.context.wrap_bio(self._in, self._out, server_side=True)
        self._plainRefusal: bytes = server.plainRefusal
        self._held: list[bytes] | None = []  # writes before the handshake; None after it
        self._heldLen = 0
        self._shut = False
        self._closeAfterHandshake = False
        self._refused = False  # a plain HTTP request answered in plain text
        self._readPaused = False
        timeout = server.handshakeTimeout
        self._timer = reactor.callLater(timeout, self._handshakeExpired) if timeout else None

    def _handshakeExpired(self) -> None:
        self._timer = None
        if self._held is not None and self.connected:
            peer = self.getPeer()
            log.info("TLS handshake with {host}:{port} not done within {timeout}s "
                     "(http_header_timeout): closed", host=peer.host, port=peer.port,
                     timeout=self.server.handshakeTimeout)  # type: ignore[attr-defined]  # fmt: skip
            self.abortConnection()

    def connectionLost(self, reason: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connectionLost(reason)

    # -- reading ----------------------------------------------------------------------------
    def doRead(self) -> Any:
        try:
            data = self.socket.recv(self.bufferSize)
        except OSError as se:
            if se.args[0] == EWOULDBLOCK:
                return None
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        self._in.write(data)
        if self._held is not None:
            return self._handshake(data)
        return self._deliver()

    def _handshake(self, data: bytes) -> Any:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return None
        except ssl.SSLError as e:
            self._flush()  # the alert, if any
            peer = self.getPeer()
            if self._plainRefusal and data[:4] in _HTTP_METHODS:
                self._refused = True
                log.info("plain HTTP from {host}:{port} on a TLS port: 400", host=peer.host,
                         port=peer.port)  # fmt: skip
                self._held = None
                write_through(self, self._plainRefusal)
                WriteThroughServer.loseConnection(self)
                return None
            reason = e.reason or str(e)
            log.info("TLS handshake with {host}:{port} failed: {reason}{hint}", host=peer.host,
                     port=peer.port, reason=reason, hint=_HINTS.get(reason, ""))  # fmt: skip
            return main.CONNECTION_LOST
        held, self._held, self._heldLen = self._held, None, 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()
        if held:
            self.write(b"".join(held))
        if self._closeAfterHandshake:  # closed while the handshake went on
            self.loseConnection()
        hook = getattr(self.protocol, "tlsHandshakeDone", None)
        if hook is not None:  # (the HTTP protocol hands ALPN h2 to HTTP/2 here)
            hook(self._tls.selected_alpn_protocol())
        return self._deliver()

    def _deliver(self) -> Any:
        read, tls, incoming, proto = self._tls.read, self._tls, self._in, self.protocol
        size = self.bufferSize
        while not self._readPaused:
            try:
                plain = read(size)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                plain = b""
            except ssl.SSLError as e:
                peer = self.getPeer()
                log.info("TLS error from {host}:{port}: {reason}", host=peer.host,
                         port=peer.port, reason=e.reason or e)  # fmt: skip
                return main.CONNECTION_LOST
            if not plain:  # the peer's close_notify: answered, then EOF
                self._closeNotify()
                return main.CONNECTION_DONE
            proto.dataReceived(plain)
            if not incoming.pending and not tls.pending():
                break
        if self._out.pending:  # TLS 1.3 tickets, key updates
            self._flush()
        return None

    def pauseProducing(self) -> None:
        self._readPaused = True
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self._readPaused = False
        super().resumeProducing()
        if (
            self._held is None
            and self._tls is not None
            and (self._in.pending or self._tls.pending())
        ):  # records that arrived while paused, already read off the socket
            self.reactor.callLater(0, self._deliverLater)  # type: ignore[attr-defined]

    def _deliverLater(self) -> None:
        if self.connected and not self.disconnected and not self._readPaused:
            why = self._deliver()
            if why is not None:
                self.connectionLost(Failure(why))

    # -- writing ----------------------------------------------------------------------------
    def _flush(self) -> None:
        data = self._out.read()
        if data:
            write_through(self, data)

    def write(self, data: Any) -> None:
        if not data or self._shut or not self.connected:
            return
        if self._held is not None:
            self._held.append(bytes(data))
            self._heldLen += len(data)
            return
        self._tls.write(data)
        write_through(self, self._out.read())

    def writeSequence(self, iovec: Any) -> None:
        self.write(b"".join(iovec))

    def pendingBytes(self) -> int:
        return super().pendingBytes() + self._heldLen

    def _closeNotify(self) -> None:
        if self._held is None and not self._shut and self.connected and not self._refused:
            self._shut = True
            try:
                self._tls.unwrap()
            except ssl.SSLError:  # ours is sent; the peer's is not awaited
                pass
            self._flush()

    def loseConnection(self) -> None:
        """Close after what is written is sent, ending with TLS's close_notify."""
        self._closeNotify()
        if self._held:  # after the handshake, what is held goes, then the close
            self._closeAfterHandshake = True
            return
        super().loseConnection()

    # -- what the handshake agreed ------------------------------------------------------------
    def getPeerCertificate(self) -> dict[str, Any] | None:
        """The client's verified certificate as ``ssl.SSLObject.getpeercert()`` gives it, or
        None (none asked for, none sent, or the handshake is not done)."""
        if self._held is not None or self._refused:
            return None
        return self._tls.getpeercert() or None

    def getPeerCertificatePEM(self) -> str | None:
        """The client's certificate in PEM, or None."""
        if self._held is not None or self._refused:
            return None
        der = self._tls.getpeercert(binary_form=True)
        return ssl.DER_cert_to_PEM_cert(der) if der else None

    def negotiatedProtocol(self) -> str | None:
        """The ALPN protocol the handshake chose (``"h2"``, ``"http/1.1"``), or None."""
        if self._held is not None or self._refused:
            return None
        chosen: str | None = self._tls.selected_alpn_protocol()
        return chosen

    def tlsVersion(self) -> str | None:
        """``"TLSv1.3"`` or ``"TLSv1.2"`` once the handshake is done, else None."""
        if self._held is not None or self._refused:
            return None
        version: str | None = self._tls.version()
        return version


class TLSPort(WriteThroughPort):
    """A listening port whose connections speak TLS with ``context``; ``plainRefusal`` is
    what a plain HTTP request gets (HTTP servers), or empty (the connection just closes)."""

    transport = TLSServer
    context: ssl.SSLContext
    plainRefusal = b""
    handshakeTimeout = 0.0  # seconds a handshake may take (0: unbounded)


def listen_tls(
    port: int,
    factory: ServerFactory,
    context: ssl.SSLContext,
    backlog: int = 511,
    interface: str = "",
    *,
    plain_refusal: bytes = b"",
    handshake_timeout: float = 0.0,
    reactor: IReactorTCP | None = None,
) -> TLSPort:
    """Like :func:`~tx_swoole.transport.listen_tcp`, with TLS on every connection."""
    p = listen_tcp(port, factory, backlog, interface, reactor=reactor, port_type=TLSPort,
                   context=context, plainRefusal=plain_refusal,
                   handshakeTimeout=handshake_timeout)  # fmt: skip
    return cast(TLSPort, p)


def adopt_tls_port(
    fd: int,
    factory: ServerFactory,
    context: ssl.SSLContext,
    family: int = socket.AF_INET,
    *,
    plain_refusal: bytes = b"",
    handshake_timeout: float = 0.0,
    reactor: IReactorSocket | None = None,
) -> TLSPort:
    """Like :func:`~tx_swoole.transport.adopt_stream_port`, with TLS on every connection."""
    p = adopt_stream_port(fd, factory, family, reactor=reactor, port_type=TLSPort,
                          context=context, plainRefusal=plain_refusal,
                          handshakeTimeout=handshake_timeout)  # fmt: skip
    return cast(TLSPort, p)
