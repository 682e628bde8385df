"""A TCP server transport that writes through, shared by all our servers.

Twisted's ``transport.write`` always buffers and waits for the next reactor turn, toggling
epoll registration for every write.  :class:`WriteThroughServer` sends at once when nothing is
buffered; on a partial send or ``EAGAIN`` the rest goes through Twisted's ordinary buffer, so
order, producers and disconnect semantics stay Twisted's.  A send error (``EPIPE``,
``ECONNRESET``) is not raised: the bytes are buffered and the reactor's next write attempt
reports the loss through ``connectionLost`` as usual.

:func:`listen_tcp` and :func:`adopt_stream_port` are ``reactor.listenTCP`` and
``reactor.adoptStreamPort`` with this transport.
"""

from __future__ import annotations

import _socket
import ctypes
import errno
import os
import socket
import stat
import struct
from errno import EWOULDBLOCK
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import abstract, address, error, main, tcp, unix
from twisted.internet.interfaces import IReactorSocket, IReactorTCP

if TYPE_CHECKING:
    from tx_swoole.reactor import IServerReactor
from twisted.internet.protocol import ServerFactory

_RETRY = (BlockingIOError, InterruptedError)


_buffered_write = tcp.Connection.write  # Twisted's: buffer, or hand to TLS when started


def write_through(transport: tcp.Connection, data: bytes) -> None:
    """Send ``data`` on a Twisted TCP transport now if nothing is buffered, else buffer it.

    Works on any ``tcp.Connection`` (server or client side); with TLS started, or while
    anything is buffered or the connection is closing, it is Twisted's ``write``.
    """
    if (
        transport._tempDataLen
        or transport.dataBuffer
        or transport.disconnecting
        or not transport.connected
        or transport._writeDisconnected
        or transport.TLS
        or data.__class__ is not bytes
        or not data
    ):
        _buffered_write(transport, data)
        return
    try:
        sent = transport.socket.send(data)
    except _RETRY:
        sent = 0
    except OSError:
        sent = 0  # the buffered retry in doWrite reports the loss as connectionLost
    if sent < len(data):
        _buffered_write(transport, data[sent:])


def send_file_now(transport: Any, fd: int, count: int) -> int:
    """Send up to ``count`` bytes of file ``fd`` from its current position straight from the
    page cache (``sendfile(2)``, which moves the position), on a plain TCP transport with
    nothing buffered.  Returns the bytes sent; 0 when the socket is full (the transport then
    calls its producer's ``resumeProducing`` once it can write); -1 when it cannot (TLS,
    bytes buffered, a closing connection, the file ended early, a socket error): the caller
    writes instead, and the transport reports a lost connection as usual."""
    if (
        not isinstance(transport, tcp.Connection)
        or getattr(transport, "encrypted", False)
        or transport._tempDataLen
        or transport.dataBuffer
        or transport.disconnecting
        or not transport.connected
    ):
        return -1
    try:
        sent = os.sendfile(transport.socket.fileno(), fd, None, count)
    except _RETRY:
        transport.producerPaused = True  # doWrite resumes the producer once it can write
        transport.startWriting()
        return 0
    except OSError:
        return -1
    return sent or -1


def send_now(transport: Any, data: bytes) -> None:
    """``write_through`` on a plain socket's transport (TCP or Unix), ``write`` on any other
    (TLS among them)."""
    if isinstance(transport, tcp.Connection) and not getattr(transport, "encrypted", False):
        write_through(transport, data)
    else:
        transport.write(data)


_HOT = ("dataBuffer", "offset", "disconnecting", "_writeDisconnected", "TLS", "bufferSize")


def own_hot_attributes(transport: tcp.Connection) -> None:
    """Copy the class-level defaults that every read and send consults onto the transport.

    Twisted keeps them on the class until first changed; read through an instance they miss
    the interpreter's attribute caches and walk the class hierarchy on every call.  As
    instance attributes (same values) they are served from the cache.
    """
    for name in _HOT:
        setattr(transport, name, getattr(transport, name))


class WriteThroughServer(tcp.Server):
    """A ``tcp.Server`` whose ``write`` sends immediately when its buffer is empty.

    Resource handling: identical to ``tcp.Server``; only the first attempt to send moves from the
    reactor's next turn to the ``write`` call.

    Error handling: ``write`` never raises for network errors; a failed immediate send falls
    back to the buffer and the reactor reports the loss.
    """

    write = write_through  # one frame per write: this is the hot path of every server

    # What every connection sets, as slots: one object, without the instance dict's header
    # and spare entry.  Anything else Twisted sets (a producer, the IPv6 address type, state
    # while closing) still goes to the instance dict.
    __slots__ = (
        "reactor", "socket", "protocol", "server", "connected", "_peer", "_tempDataLen",
        *_HOT,
    )  # fmt: skip

    def __init__(self, sock: socket.socket, protocol: Any, client: Any, server: Any,
                 sessionno: int, reactor: Any) -> None:  # fmt: skip
        """``tcp.Server.__init__`` (through ``tcp.Connection`` and ``FileDescriptor``), with
        the C socket under ``sock`` and without the per-connection attributes it sets only to
        log with (formatted when read) or that the class answers for (``fileno``)."""
        if not reactor:
            from twisted.internet import reactor
        self.reactor = reactor
        self._tempDataLen = 0
        self.dataBuffer = b""
        self.offset = 0
        self.disconnecting = False
        self._writeDisconnected = False
        self.TLS = False
        self.bufferSize = tcp.Server.bufferSize
        self.connected = 0
        self.socket = bare_socket(sock)
        self.socket.setblocking(False)
        self.protocol = protocol
        if len(client) != 2:
            self._addressType = address.IPv6Address
        self.server = server
        self._peer = _packed_peer(client, sessionno)
        self.startReading()
        self.connected = 1

    def fileno(self) -> int:
        try:
            return int(self.socket.fileno())
        except AttributeError:  # closed: Twisted deleted the socket
            return -1

    # Twisted keeps the peer as accept() gave it, a tuple of a str and an int (146 B), and the
    # session number as another int.  An IPv4 peer and the number are kept as one int instead
    # (``_peer``), (sessionno << 48) | (address << 16) | port; any other peer as
    # (client, sessionno).

    @property
    def client(self) -> Any:
        peer = self._peer
        if peer.__class__ is int:
            return (socket.inet_ntoa((peer >> 16 & 0xFFFFFFFF).to_bytes(4, "big")), peer & 0xFFFF)
        return peer[0]

    @client.setter
    def client(self, value: Any) -> None:
        self._peer = _packed_peer(value, self.sessionno)

    @property
    def sessionno(self) -> int:
        peer = self._peer
        return int(peer >> 48 if peer.__class__ is int else peer[1])

    @sessionno.setter
    def sessionno(self, value: int) -> None:
        peer = self._peer
        if peer.__class__ is int and value.__class__ is int and value >= 0:
            self._peer = value << 48 | peer & 0xFFFFFFFFFFFF
        else:
            self._peer = _packed_peer(self.client, value)

    @property
    def hostname(self) -> Any:
        return self.client[0]

    @hostname.setter
    def hostname(self, value: Any) -> None:
        pass  # Twisted sets it to client[0], which it always is here

    # Twisted gives every connection an empty list for writes waiting on the next reactor
    # turn (56 B); here the list exists only while something waits in it.
    _queuedWrites: list[bytes] | None = None

    @property
    def _tempDataBuffer(self) -> list[bytes]:
        waiting = self._queuedWrites
        if waiting is None:
            waiting = self._queuedWrites = []
        return waiting

    @_tempDataBuffer.setter
    def _tempDataBuffer(self, value: list[bytes]) -> None:
        if value or self._queuedWrites is not None:
            self._queuedWrites = value or None

    def connectionLost(self, reason: Any) -> None:
        """``tcp.Connection.connectionLost``, less its ``del self.fileno``: the class's
        ``fileno`` says -1 once the socket is gone."""
        if not hasattr(self, "socket"):  # called twice (an abort, then an error)
            return
        abstract.FileDescriptor.connectionLost(self, reason)
        self._closeSocket(not reason.check(error.ConnectionAborted))
        protocol = self.protocol
        del self.protocol
        del self.socket
        protocol.connectionLost(reason)

    # Twisted formats these two strings for every connection at accept (136 B); they are read
    # only to log or print a transport, so they are formatted then.
    @property
    def logstr(self) -> str:
        protocol = getattr(self, "protocol", None)
        prefix = self._getLogPrefix(protocol) if protocol is not None else "-"
        return f"{prefix},{self.sessionno},{self.hostname}"

    @logstr.setter
    def logstr(self, value: str) -> None:
        pass

    @property
    def repstr(self) -> str:
        protocol = getattr(self, "protocol", None)
        port = getattr(self.server, "_realPortNumber", "?")
        return f"<{type(protocol).__name__} #{self.sessionno} on {port}>"

    @repstr.setter
    def repstr(self, value: str) -> None:
        pass

    def doRead(self) -> Any:
        """Twisted's ``doRead`` and ``_dataReceived`` in one frame: the read path of every
        connection (same results: None, CONNECTION_DONE at EOF, CONNECTION_LOST on error)."""
        try:
            data = self.socket.recv(self.bufferSize)
        except OSError as se:
            if se.args[0] == EWOULDBLOCK:
                return None
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        self.protocol.dataReceived(data)
        return None

    def writeSequence(self, iovec: Any) -> None:
        self.write(b"".join(iovec))

    def pendingBytes(self) -> int:
        """Bytes accepted by ``write`` but not yet handed to the kernel."""
        return len(self.dataBuffer) - self.offset + self._tempDataLen


_family = _socket.socket.family.__get__  # the int, where socket.socket's makes an enum
_kind = _socket.socket.type.__get__


def bare_socket(sock: Any) -> Any:
    """The C socket under a ``socket.socket``, same descriptor (48 B kept per connection
    instead of 88 B).  It has every method a transport calls (send, recv, fileno, shutdown,
    close, getsockopt, getpeername ...); the Python class adds makefile, sendfile, dup and
    enum values for ``family`` and ``type`` (ints here, equal to the enums)."""
    if sock.__class__ is not socket.socket:
        return sock
    return _socket.socket(_family(sock), _kind(sock), sock.proto, sock.detach())


def _packed_peer(client: Any, sessionno: int) -> Any:
    """An IPv4 ``(host, port)`` and a session number as one int (see
    ``WriteThroughServer._peer``); anything else as ``(client, sessionno)``."""
    if client.__class__ is tuple and len(client) == 2 and sessionno.__class__ is int:
        host, port = client
        try:
            packed = socket.inet_aton(host)
        except (OSError, TypeError):
            return (client, sessionno)
        if (
            port.__class__ is int
            and 0 <= port <= 0xFFFF
            and sessionno >= 0
            and socket.inet_ntoa(packed) == host
        ):
            return sessionno << 48 | int.from_bytes(packed, "big") << 16 | port
    return (client, sessionno)


def adopt_connection(fd: int, family: int, factory: Any,
                     reactor: IReactorTCP | None = None) -> WriteThroughServer | None:  # fmt: skip
    """Like ``reactor.adoptStreamConnection``, with the write-through transport: serve the
    connected socket ``fd`` with a protocol from ``factory``.  The descriptor is duplicated;
    the caller still owns ``fd``."""
    return cast(
        "WriteThroughServer | None",
        WriteThroughServer._fromConnectedSocket(fd, family, factory, server_reactor(reactor)),
    )


def close_keeping_connection(transport: tcp.Connection) -> None:
    """Close this process's descriptor of the socket without ending the connection (no
    ``shutdown``, so no FIN): another process holds it now.  Reported as an ordinary close."""
    transport._shouldShutdown = False
    transport.loseConnection()


class WriteThroughPort(tcp.Port):
    """A listening port whose accepted connections use :class:`WriteThroughServer`."""

    transport = WriteThroughServer


def server_reactor(reactor: IReactorTCP | IReactorSocket | None) -> IServerReactor:
    """``reactor``, or the default one when None."""
    if reactor is None:
        from tx_swoole.reactor import default_reactor

        return default_reactor()
    return cast("IServerReactor", reactor)


def listen_tcp(
    port: int,
    factory: ServerFactory,
    backlog: int = 511,
    interface: str = "",
    *,
    reactor: IReactorTCP | None = None,
    port_type: type[WriteThroughPort] | None = None,
    **attributes: Any,
) -> WriteThroughPort:
    """Like ``reactor.listenTCP`` but with the write-through transport (``port_type``, a
    :class:`WriteThroughPort` subclass, given ``attributes`` before it listens)."""
    p = (port_type or WriteThroughPort)(port, factory, backlog, interface, server_reactor(reactor))
    p.__dict__.update(attributes)
    p.startListening()
    return p


def adopt_stream_port(
    fd: int,
    factory: ServerFactory,
    family: int = socket.AF_INET,
    *,
    reactor: IReactorSocket | None = None,
    port_type: type[WriteThroughPort] | None = None,
    **attributes: Any,
) -> WriteThroughPort:
    """Like ``reactor.adoptStreamPort``: serve an already listening socket ``fd`` (with
    ``port_type`` and ``attributes`` as :func:`listen_tcp`).

    The descriptor is duplicated; the caller still owns ``fd``.
    """
    p: WriteThroughPort = (port_type or WriteThroughPort)._fromListeningDescriptor(
        server_reactor(reactor), fd, family, factory
    )
    p.__dict__.update(attributes)
    p.startListening()
    return p


class WriteThroughUnixServer(unix.Server):
    """A Unix-socket server transport that writes through, as :class:`WriteThroughServer`."""

    write = write_through

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(bare_socket(sock), *args, **kwargs)
        own_hot_attributes(self)

    def pendingBytes(self) -> int:
        return len(self.dataBuffer) - self.offset + self._tempDataLen


class WriteThroughUnixPort(unix.Port):
    """A listening Unix socket whose connections use :class:`WriteThroughUnixServer`;
    ``keepFile``: the socket file is someone else's (the master's), left in place on close."""

    transport = WriteThroughUnixServer
    keepFile = False

    def connectionLost(self, reason: Any) -> None:
        if self.keepFile:
            tcp.Port.connectionLost(self, reason)
        else:
            super().connectionLost(reason)


def clear_stale_socket(path: str) -> None:
    """Remove ``path`` if it is a Unix socket nothing listens on (left by a crash).

    Raises ``OSError`` naming the path when a server still listens there or the path is not
    a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"unix:{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # stale: nobody accepts on it
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another server listens on unix:{path}")


def unix_listening_socket(path: str, mode: int, backlog: int) -> socket.socket:
    """A non-blocking listening Unix socket at ``path`` with file ``mode`` (a stale socket
    file from a crash is replaced)."""
    clear_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def listen_unix(path: str, factory: ServerFactory, mode: int = 0o660, backlog: int = 511, *,
                reactor: Any = None) -> WriteThroughUnixPort:  # fmt: skip
    """Like ``reactor.listenUNIX`` with the write-through transport; a stale socket file from
    a crash is replaced, a live one refused (``OSError``)."""
    clear_stale_socket(path)
    p = WriteThroughUnixPort(path, factory, backlog, mode, server_reactor(reactor))  # type: ignore[arg-type]
    p.startListening()
    return p


def adopt_unix_port(fd: int, factory: ServerFactory, mode: int = 0o660, *,
                    reactor: Any = None) -> Any:  # fmt: skip
    """Serve the already listening Unix socket ``fd`` (the master's) with the write-through
    transport (Twisted sets the file's ``mode`` again); the caller still owns ``fd``."""
    p = WriteThroughUnixPort._fromListeningDescriptor(server_reactor(reactor), fd, factory)
    p.keepFile, p.mode = True, mode
    # Twisted's unix.Port, unlike tcp.Port, shuts an adopted socket down when it stops
    # listening: that would refuse connects for every other worker sharing it.
    p._shouldShutdown = False
    p.startListening()
    return p


# Classic BPF program "ret #0": drop every packet the socket would receive.
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)


def refuse_new_connections(sock: socket.socket) -> bool:
    """Stop new TCP handshakes completing on the listening ``sock`` (Linux).

    Attaches a drop-all socket filter: incoming SYNs are dropped, so clients retry and then
    meet a refused connect once the socket closes, instead of being queued and reset when it
    closes.  Connections already queued stay acceptable.  Returns False where unsupported.
    A Unix socket has no handshake to drop: its file is moved aside
    (:func:`refuse_unix_connects`), so connects are refused at once.
    """
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        return bool(isinstance(name, str) and name and refuse_unix_connects(name))
    program = ctypes.create_string_buffer(_DROP_ALL)
    fprog = struct.pack("HL", 1, ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def accept_queued(port: Any, rounds: int = 1000) -> None:
    """Accept every connection already waiting on listening ``port`` (TCP or Unix), so that
    none is reset when it closes."""
    for _ in range(rounds):
        before = port.sessionno
        port.numberAccepts = 1000
        port.doRead()
        if port.sessionno == before:
            return


def refuse_unix_connects(path: str) -> str:
    """Make connects to the Unix socket at ``path`` fail at once (ECONNREFUSED) while the
    socket still accepts what is queued on it: it moves aside to ``PATH.closing`` and a plain
    file takes its place.  Returns where it went ("" if it could not be moved); removing both
    files is the caller's."""
    aside = path + ".closing"
    try:
        os.rename(path, aside)
        open(path, "w").close()
    except OSError:
        return ""
    return aside


def stop_unix_port(port: Any, path: str) -> Any:
    """Stop listening Unix ``port`` at ``path`` without resetting a connection: new ones are
    refused at once (a plain file takes the socket's place), those already queued are
    accepted, then the port closes.  Returns ``stopListening``'s Deferred."""
    aside = refuse_unix_connects(path)  # (Twisted removes the plain file at close)
    accept_queued(port)
    d = port.stopListening()

    def tidy(result: Any) -> Any:
        if aside and os.path.exists(aside):
            os.unlink(aside)
        return result

    return d.addBoth(tidy)
