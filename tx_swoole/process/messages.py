"""Messages between the processes of one server, and the connection table across workers.

Every worker and task worker listens on a Unix socket of its own in the master's private
runtime directory (the master says where each one is, and again when one is replaced) and
connects to every other: :class:`Peers` holds those channels.  Over them go

- ``server.sendMessage(data, dstWorkerId)`` (Swoole's sendMessage; the receiver's ``[events]
  pipe_message`` gets ``(server, srcWorkerId, data)``).  Worker ids as Swoole numbers them:
  workers ``0..worker_num-1``, task workers from ``worker_num`` on;
- for a TCP or WebSocket server, each worker's connections as they open and close, so every
  process keeps a copy of the whole table: ``exists``, ``listConnections`` and
  ``getClientInfo`` answer for connections held anywhere, and ``send``, ``close``, ``push``
  and ``disconnect`` on another worker's connection are handed to that worker, which does
  them (and logs the usual NOTICE if the connection closed meanwhile).

Connection ids are unique across the server without asking anyone: a worker numbers its
connections ``n * worker_num + workerId`` (so ``worker_num = 1`` keeps 1, 2, 3...), with ``n``
starting past every id an earlier generation of that worker could have used.

A connection handed to a replacement worker (``reload_handoff``) is announced by its new
holder with the number of moves it has had, so news from its old holder arriving late (over
another channel) cannot undo the move; a call that still reaches the old holder is passed on.

Resource handling: a channel per pair of processes; the copy of the table costs one small
entry per remote connection.  Error handling: a peer that goes away takes its connections out
of the copy; a message to a worker that is not there is logged and ``sendMessage`` returns
False.  What is sent to a process just announced, while its channel opens, waits for it (up
to ``buffer_output_size`` bytes) and is dropped, logged, if the channel cannot open.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any, NamedTuple

from twisted.internet import defer
from twisted.internet.interfaces import IFileDescriptorReceiver
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from tx_swoole._log import SwooleLogger
from tx_swoole.errors import FramingError, TaskSerializationError
from tx_swoole.process._lifecycle import call_hook
from tx_swoole.process._task import (
    ADOPTED,
    CALL,
    CLOSED,
    HANDOFF,
    HELLO,
    OPENED,
    PIPE,
    FrameReader,
    dumps,
    frame,
    loads,
)
from tx_swoole.protocols.tcp import CONNECTION_DONE
from tx_swoole.reactor import IServerReactor
from tx_swoole.settings import Settings
from tx_swoole.transport import send_now, stop_unix_port

log = SwooleLogger("tx_swoole.messages")
__all__ = ["PeerServer", "Peers", "RemoteConnection"]

# CALL numbers: what the owner of a connection is asked to do with it
SEND, CLOSE, PUSH, DISCONNECT, BROADCAST = 1, 2, 3, 4, 5
_CALLS = {SEND: "send", CLOSE: "close", PUSH: "push", DISCONNECT: "disconnect",
          BROADCAST: "broadcast"}  # fmt: skip


def process_id(settings: Settings, kind: str, index: int) -> int:
    """The worker id Swoole's numbering gives process ``kind`` ``index``: workers from 0,
    task workers from ``worker_num``, ``[[process]]`` processes after the task workers."""
    if kind == "worker":
        return index
    if kind == "task":
        return settings.worker_num + index
    return settings.worker_num + settings.task_worker_num + index


class PeerServer:
    """What a process without connections of its own (a task worker, a ``[[process]]``)
    offers its code as ``server``: messages and the workers' connections, through
    ``self.peers``."""

    peers: Peers | None

    def peerReady(self, kind: str, index: int, path: str, pid: int) -> None:
        if self.peers is not None:
            self.peers.peerReady(kind, index, path, pid)

    def sendMessage(self, data: Any, dstWorkerId: int) -> bool:  # noqa: N803
        """Swoole's ``sendMessage``, from this process."""
        return self.peers is not None and self.peers.sendMessage(data, dstWorkerId)

    def send(self, connId: int, data: bytes) -> bool:  # noqa: N803
        """Send to a connection a worker holds (Swoole's task workers may)."""
        return self.peers is not None and self.peers.remoteSend(connId, data)

    def close(self, connId: int, reset: bool = False) -> bool:  # noqa: N803
        return self.peers is not None and self.peers.remoteClose(connId, reset)

    def push(self, connId: int, data: Any) -> bool:  # noqa: N803
        return self.peers is not None and self.peers.remotePush(connId, data)

    def exists(self, connId: int) -> bool:  # noqa: N803
        return self.peers is not None and connId in self.peers.remote

    def listConnections(self) -> list[int]:
        return list(self.peers.remote) if self.peers is not None else []


class RemoteConnection(NamedTuple):
    """A connection another process holds, as this one knows it."""

    pid: int  # of the worker that holds it
    workerId: int  # noqa: N815
    host: str
    port: int
    connectTime: float  # noqa: N815
    moves: int = 0  # hand-offs it has had: news of it with fewer moves is older than this


@implementer(IFileDescriptorReceiver)
class _Channel(Protocol):
    """Either end of a channel: frames in, handed to :class:`Peers`; descriptors in (the
    sockets of connections handed over), kept for the frames they come with."""

    def __init__(self, peers: Peers, outgoing: bool, key: tuple[str, int, int]) -> None:
        self.peers = peers
        self.outgoing = outgoing
        self.key = key  # (kind, id, pid) of the other end (learnt from HELLO when incoming)
        self.reader = FrameReader(max(peers.settings.package_max_length, 1 << 24))
        self.fds: deque[int] = deque()

    def fileDescriptorReceived(self, descriptor: int) -> None:  # noqa: N802
        self.fds.append(descriptor)

    def connectionMade(self) -> None:
        if self.outgoing:
            self.peers.channelUp(self)

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except FramingError as e:
            log.error("channel to {key} closed: {error}", key=self.key, error=e)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        for f in frames:
            self.peers.received(self, f.kind, f.taskId, f.number, f.payload)

    def write(self, data: bytes) -> None:
        send_now(self.transport, data)

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        while self.fds:  # (of hand-offs whose frames never came)
            os.close(self.fds.popleft())
        self.peers.channelLost(self)


class _Out(ClientFactory):
    noisy = False

    def __init__(self, peers: Peers, key: tuple[str, int, int]) -> None:
        self.peers, self.key = peers, key

    def buildProtocol(self, addr: Any) -> _Channel:
        return _Channel(self.peers, True, self.key)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        log.info("cannot reach {kind} {id} (pid {pid}): {error}", kind=self.key[0],
                 id=self.key[1], pid=self.key[2], error=reason.getErrorMessage())  # fmt: skip
        self.peers.unreachable(self.key[2])


class _In(Factory):
    noisy = False

    def __init__(self, peers: Peers) -> None:
        self.peers = peers

    def buildProtocol(self, addr: Any) -> _Channel:
        return _Channel(self.peers, False, ("?", -1, 0))


class Peers:
    """This process's channels to the others (module docstring).

    ``kind`` and ``index``: what this process is (``worker`` N, or ``task`` N); ``server``: what
    the ``pipe_message`` hook gets; ``pipe_message``: that hook, or None.
    """

    def __init__(
        self,
        settings: Settings,
        kind: str,
        index: int,
        reactor: IServerReactor,
        server: Any = None,
        pipe_message: Any = None,
    ) -> None:
        self.settings = settings
        self.kind, self.index = kind, index
        self.workerId = process_id(settings, kind, index)
        self.reactor = reactor
        self.server = server
        self.pipeMessage = pipe_message
        self.tables: list[Any] = []  # this worker's ConnectionTables it shares
        self.out: dict[int, _Channel] = {}  # by the other end's pid
        self.newest: dict[tuple[str, int], int] = {}  # (kind, index) -> pid of the newest
        self.remote: dict[int, RemoteConnection] = {}
        # Connections that moved: the hand-offs each has had, for those this process holds;
        # and for those it handed to its replacement, that replacement's pid, to pass on the
        # calls that still come here (from a process that has not yet heard of the move).
        self.moves: dict[int, int] = {}
        self.movedTo: dict[int, int] = {}
        # Frames for a process announced but whose channel is still being opened (sent once it
        # is up), by its pid, with their size in bytes.
        self.connecting: dict[int, tuple[list[bytes], int]] = {}
        self.port: Any = None
        self.path = ""
        self.messageCount = 0
        self.handoff: Any = None  # the worker's HandOff (reload_handoff), or None

    # -- set-up ---------------------------------------------------------------------------------
    def listen(self, path: str) -> None:
        self.path = path
        if os.path.exists(path):
            os.unlink(path)
        self.port = self.reactor.listenUNIX(path, _In(self), mode=0o600)

    def peerReady(self, kind: str, index: int, path: str, pid: int) -> None:
        """The master says process ``kind`` ``index`` (``pid``) listens at ``path``."""
        if pid == os.getpid():
            return
        self.newest[(kind, index)] = pid
        if pid not in self.out:
            self.connecting.setdefault(pid, ([], 0))
            self.reactor.connectUNIX(path, _Out(self, (kind, index, pid)), timeout=10)

    def _canReach(self, pid: int) -> bool:
        """Whether there is a channel to process ``pid``, up or being opened."""
        return pid in self.out or pid in self.connecting

    def _write(self, pid: int, data: bytes) -> bool:
        """``data`` to process ``pid``: now, or once its channel is up if it is being opened
        (up to ``buffer_output_size`` bytes); False if there is no way to it."""
        channel = self.out.get(pid)
        if channel is not None:
            channel.write(data)
            return True
        waiting = self.connecting.get(pid)
        if waiting is None:
            return False
        frames, size = waiting
        limit = self.settings.buffer_output_size
        if size + len(data) > limit:
            log.warn("{n} bytes for pid {pid} dropped: {size} already wait for its channel to "
                     "open (buffer_output_size={limit})", n=len(data), pid=pid, size=size,
                     limit=limit)  # fmt: skip
            return False
        frames.append(data)
        self.connecting[pid] = (frames, size + len(data))
        return True

    def unreachable(self, pid: int) -> None:
        """The channel to ``pid`` could not be opened: what waited for it is dropped."""
        frames, _ = self.connecting.pop(pid, ([], 0))
        if frames:
            log.notice("{n} messages for pid {pid} dropped: its channel did not open",
                       n=len(frames), pid=pid)  # fmt: skip

    def channelUp(self, channel: _Channel) -> None:
        pid = channel.key[2]
        self.out[pid] = channel
        channel.write(frame(HELLO, 0, os.getpid(), dumps((self.kind, self.index), 1 << 16, "")))
        for table in self.tables:  # what we hold, for its copy of the table
            for p in list(table.connections.values()):
                if table.isShared(p):
                    channel.write(self._opened(p))
        frames, _ = self.connecting.pop(pid, ([], 0))
        for data in frames:  # what was sent to it meanwhile, in order
            channel.write(data)

    def channelLost(self, channel: _Channel) -> None:
        kind, index, pid = channel.key
        if channel.outgoing:
            if self.out.get(pid) is channel:
                del self.out[pid]
            if self.handoff is not None:
                self.handoff.channelLost(pid)
            return
        gone = [c for c, r in self.remote.items() if r.pid == pid]
        for connId in gone:
            del self.remote[connId]
        self.unreachable(pid)  # (if we were still opening ours to it, it will not open)

    def close(self) -> None:
        if self.port is not None:  # what made it in is read, not reset
            stop_unix_port(self.port, self.path)
        for channel in list(self.out.values()):
            channel.transport.loseConnection()  # type: ignore[union-attr]

    # -- the copy of the table --------------------------------------------------------------------
    def share(self, table: Any) -> None:
        """Share ``table``'s connections with the other processes, and answer for theirs
        (every listener's table is shared: ids are unique across them)."""
        self.tables.append(table)
        table.peers = self

    def _opened(self, proto: Any, transport: Any = None) -> bytes:
        peer = (transport or proto.transport).getPeer()
        info = (proto.connId, getattr(peer, "host", str(peer)), getattr(peer, "port", 0),
                proto.connectTime, self.moves.get(proto.connId, 0))  # fmt: skip
        return frame(OPENED, proto.connId, self.workerId, dumps(info, 1 << 16, "connection"))

    def localOpened(self, proto: Any, transport: Any = None) -> None:
        data = self._opened(proto, transport)
        for channel in self.out.values():
            channel.write(data)

    def localClosed(self, connId: int) -> None:
        data = frame(CLOSED, connId, self.workerId, b"%d" % self.moves.pop(connId, 0))
        for channel in self.out.values():
            channel.write(data)

    def forward(self, call: int, connId: int, *args: Any) -> bool:
        """Ask the worker holding ``connId`` to ``send``/``close``/``push``/``disconnect`` it."""
        where = self.remote.get(connId)
        if where is None or not self._canReach(where.pid):
            log.notice("{call} to unknown connection {connId} dropped", call=_CALLS[call],
                       connId=connId)  # fmt: skip
            return False
        try:
            payload = dumps(args, self.settings.package_max_length, f"{_CALLS[call]} data")
        except TaskSerializationError as e:
            log.warn("{call} to connection {connId} refused: {error}", call=_CALLS[call],
                     connId=connId, error=e)  # fmt: skip
            return False
        return self._write(where.pid, frame(CALL, connId, call, payload))

    def remoteSend(self, connId: int, data: bytes) -> bool:  # noqa: N803
        return self.forward(SEND, connId, data)

    def remoteClose(self, connId: int, reset: bool = False) -> bool:  # noqa: N803
        return self.forward(CLOSE, connId, reset)

    def remotePush(self, connId: int, data: Any) -> bool:  # noqa: N803
        return self.forward(PUSH, connId, data)

    def remoteDisconnect(self, connId: int, code: int, reason: str) -> bool:  # noqa: N803
        return self.forward(DISCONNECT, connId, code, reason)

    def remoteBroadcast(self, data: Any) -> int:
        """``data`` to every WebSocket connection of the other workers (each broadcasts its
        own); how many connections they hold."""
        try:
            payload = dumps((data,), self.settings.package_max_length, "broadcast data")
        except TaskSerializationError as e:
            log.warn("broadcast refused: {error}", error=e)
            return 0
        data = frame(CALL, 0, BROADCAST, payload)
        reached = {pid for pid in {r.pid for r in self.remote.values()} if self._write(pid, data)}
        return sum(1 for r in self.remote.values() if r.pid in reached)

    # -- messages -------------------------------------------------------------------------------
    def sendMessage(self, data: Any, dstWorkerId: int) -> bool:  # noqa: N803
        """Swoole's ``sendMessage``: ``data`` to the ``pipe_message`` hook of worker
        ``dstWorkerId`` (task workers from ``worker_num`` on, then the ``[[process]]``
        processes); False (logged) if there is no such process, or it is this one."""
        s = self.settings
        if dstWorkerId == self.workerId:
            log.notice("sendMessage to worker {id}, this process, dropped: it cannot send to "
                       "itself", id=dstWorkerId)  # fmt: skip
            return False
        if dstWorkerId < s.worker_num:
            key = ("worker", dstWorkerId)
        elif dstWorkerId < s.worker_num + s.task_worker_num:
            key = ("task", dstWorkerId - s.worker_num)
        else:
            key = ("process", dstWorkerId - s.worker_num - s.task_worker_num)
        pid = self.newest.get(key)
        if pid is None or not self._canReach(pid):
            log.notice("sendMessage to worker {id} dropped: no such process is reachable "
                       "(worker_num={w}, task_worker_num={t})", id=dstWorkerId,
                       w=s.worker_num, t=s.task_worker_num)  # fmt: skip
            return False
        try:
            payload = dumps(data, s.package_max_length, "the message")
        except TaskSerializationError as e:
            log.warn("sendMessage to worker {id} refused: {error}", id=dstWorkerId, error=e)
            return False
        return self._write(pid, frame(PIPE, 0, self.workerId, payload))

    def received(
        self, channel: _Channel, kind: int, ident: int, number: int, payload: bytes
    ) -> None:
        if kind == OPENED:
            connId, host, port, connected, moves = loads(payload, "connection")
            known = self.remote.get(connId)
            if known is None or known.moves <= moves:  # (not an old owner's late news)
                self.remote[connId] = RemoteConnection(
                    channel.key[2], number, host, port, connected, moves
                )
        elif kind == CLOSED:
            known = self.remote.get(ident)
            if known is not None and known.moves <= int(payload or b"0"):
                del self.remote[ident]
        elif kind == CALL:
            self._call(number, ident, payload)
        elif kind == PIPE:
            self._pipe(number, payload)
        elif kind == HELLO:
            peer_kind, peer_index = loads(payload, "hello")
            channel.key = (peer_kind, peer_index, number)
        elif kind in (HANDOFF, ADOPTED) and self.handoff is not None:
            self.handoff.received(channel, kind, ident, number, payload)

    def _call(self, call: int, connId: int, payload: bytes) -> None:
        if not self.tables:
            return
        args = loads(payload, "call")
        if call == BROADCAST:  # (one table's broadcast reaches every listener's)
            for table in self.tables:
                if hasattr(table, "broadcast"):
                    table.broadcast(*args, local=True)
                    break
            return
        table = next((t for t in self.tables if connId in t.connections), None)
        moved = self.out.get(self.movedTo.get(connId, 0)) if table is None else None
        if moved is not None:  # handed to our replacement: the caller has not heard yet
            moved.write(frame(CALL, connId, call, payload))
            return
        if table is None or (call in (PUSH, DISCONNECT) and not hasattr(table, "push")):
            log.notice("{call} to closed connection {connId} dropped" if table is None else
                       "{call} to connection {connId} dropped: it is not a WebSocket one",
                       call=_CALLS.get(call), connId=connId)  # fmt: skip
            return
        if call == SEND:
            table.send(connId, *args)
        elif call == CLOSE:
            table.close(connId, *args)
        elif call == PUSH:
            table.push(connId, *args)
        elif call == DISCONNECT:
            table.disconnect(connId, *args)

    def _pipe(self, src: int, payload: bytes) -> None:
        self.messageCount += 1
        hook = self.pipeMessage
        if hook is None:
            log.notice("a message from worker {src} arrived but there is no [events] "
                       "pipe_message to take it", src=src)  # fmt: skip
            return
        try:
            data = loads(payload, "the message")
        except TaskSerializationError:
            log.failure("pipe_message from worker {src} failed", src=src)
            return
        defer.ensureDeferred(call_hook(hook, self.server, src, data)).addErrback(
            lambda f: log.failure("pipe_message from worker {src} failed", f, src=src)
        )
