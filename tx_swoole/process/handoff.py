"""``reload_handoff``: a draining worker hands its long connections to its replacement.

On a reload or a ``max_request`` recycle the master starts the replacement first and tells
the old worker to drain only once it is ready; with ``reload_handoff = true`` (per listener)
the old worker then, for each TCP or WebSocket connection of such a listener:

1. stops reading it (bytes that arrive stay in the kernel's buffer, for the new worker);
2. waits for a message boundary: no handler of it running or waiting, nothing unsent, no
   frame or fragmented message half-parsed (a TCP framer's partial message moves along);
3. sends the socket over its channel to the replacement (``SCM_RIGHTS``) with a ``HANDOFF``
   frame: the listener, the connection id, its times and byte counts, the framer's or the
   WebSocket's state, and the app's own from ``connectionHandoff()``;
4. on ``ADOPTED`` closes its own descriptor without ending the connection (reason
   ``handoff`` in its ``connectionClosed``); the new worker's protocol got
   ``connectionAdopted(state)`` with the same ``connId``, so sends by id and the other
   workers' copies of the table stay right.

A connection that cannot move (TLS, compressed WebSocket, closing, half-closed, the app's
``canHandOff()`` says no), or is not at a boundary within half of ``max_wait_time``, or whose
hand-off is not answered (the replacement died) resumes reading and drains as without the
setting (closed with reason ``reload``); each is counted in the log line.

Delivery: a send to a connection while its socket is in transit (a few milliseconds) is
refused as for a closed one (logged, returns False): at most once, as every cross-process
send.  Cost: one frame and one descriptor per connection over a local socket; see
``bench/handoff.py`` for the time per connection and the pause a client sees.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from typing import Any

from twisted.internet import defer, task

from tx_swoole._log import SwooleLogger
from tx_swoole.errors import TaskSerializationError
from tx_swoole.process._task import ADOPTED, HANDOFF, dumps, frame, loads
from tx_swoole.transport import adopt_connection, close_keeping_connection

log = SwooleLogger("tx_swoole.handoff")
__all__ = ["HandOff"]

POLL = 0.005  # seconds between looks for connections at a message boundary
CHANNEL_WAIT = 2.0  # seconds to wait for the channel to the replacement
ACK_WAIT = 5.0  # seconds to wait for the replacement's answer
BATCH = 64  # connections stopped and sent at a time


class _Adopting:
    """The factory of one adopted connection: the table's long-connection protocol, with the
    state the table gives it on ``register``."""

    def __init__(self, table: Any, state: dict[str, Any]) -> None:
        self.table, self.state = table, state

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802
        proto = self.table.handoffProtocol()
        proto.factory = self.table
        self.table.adopting(self.state)
        return proto


class HandOff:
    """Both ends of hand-offs for one worker: :meth:`run` in a draining worker, and the
    frames its replacement receives (:meth:`received`)."""

    def __init__(self, peers: Any, tables: list[Any], reactor: Any) -> None:
        self.peers, self.tables, self.reactor = peers, tables, reactor
        self._acks: dict[int, tuple[defer.Deferred[bool], int]] = {}  # by id: (ack, to pid)
        self.handed = self.kept = 0

    # -- the draining worker --------------------------------------------------------------------
    async def run(self, seconds: float) -> None:
        """Hand what can move to the replacement within ``seconds``; leave the rest."""
        tables = [(i, t) for i, t in enumerate(self.tables)
                  if t.settings.reload_handoff and t.connections]  # fmt: skip
        if not tables:
            return
        started = self.reactor.seconds()
        channel = await self._channel()
        candidates = []
        for index, table in tables:
            for proto in list(table.connections.values()):
                if channel is None or proto.handoffReady() is None:
                    self.kept += 1
                else:
                    candidates.append((index, proto))
        deadline = self.reactor.seconds() + seconds
        for start in range(0, len(candidates), BATCH):  # (a client's pause: one batch's time)
            await self._batch(channel, candidates[start : start + BATCH], deadline)
        log.info(
            "worker {id}: {handed} connections handed to the replacement, {kept} drain here "
            "(handed off in {t:.3f} s)", id=self.peers.workerId, handed=self.handed,
            kept=self.kept, t=self.reactor.seconds() - started,
        )  # fmt: skip

    async def _batch(self, channel: Any, todo: list[tuple[int, Any]], deadline: float) -> None:
        """Stop reading these connections, send each once it is at a message boundary, wait
        for the answers."""
        for _, proto in todo:
            proto.transport.stopReading()
        sent: list[defer.Deferred[Any]] = []
        while todo and self.reactor.seconds() < deadline:
            waiting = []
            for index, proto in todo:
                ready = proto.handoffReady()
                if ready:
                    sent.append(defer.ensureDeferred(self._send(channel, index, proto)))
                elif ready is None:
                    self._resume(proto)
                else:
                    waiting.append((index, proto))
            todo = waiting
            if todo:
                await task.deferLater(self.reactor, POLL, lambda: None)
        for _, proto in todo:  # not at a boundary in time: they drain here
            self._resume(proto)
        await defer.DeferredList(sent)

    async def _channel(self) -> Any:
        """The channel to this worker's replacement, once it is up (None if there is none)."""
        deadline = self.reactor.seconds() + CHANNEL_WAIT
        key = (self.peers.kind, self.peers.index)
        while True:
            pid = self.peers.newest.get(key)
            channel = self.peers.out.get(pid) if pid not in (None, os.getpid()) else None
            if channel is not None and channel.transport is not None:
                return channel
            if self.reactor.seconds() >= deadline:
                log.warn("worker {id}: no channel to a replacement; connections drain here",
                         id=self.peers.workerId)  # fmt: skip
                return None
            await task.deferLater(self.reactor, POLL, lambda: None)

    async def _send(self, channel: Any, index: int, proto: Any) -> None:
        transport = proto.transport
        try:
            family = transport.getHandle().family
            if family not in (socket.AF_INET, socket.AF_INET6):
                raise OSError("only TCP connections move (a Unix socket's stay)")
            state = proto.handoffState()
            state["family"] = family
            state["moves"] = self.peers.moves.get(proto.connId, 0) + 1
            payload = dumps((index, state), 1 << 24, "the connection's state")
        except (TaskSerializationError, OSError) as e:
            log.warn("connection {connId} not handed off: {error}", connId=proto.connId, error=e)
            self._resume(proto)
            return
        connId = proto.connId
        proto.setHandingOff(True)  # sends meanwhile are refused, as to a closed one
        ack: defer.Deferred[bool] = defer.Deferred()
        self._acks[connId] = (ack, channel.key[2])
        ack.addTimeout(ACK_WAIT, self.reactor, onTimeoutCancel=lambda *_: False)
        channel.transport.sendFileDescriptor(transport.fileno())
        channel.transport.write(frame(HANDOFF, connId, 0, payload))  # (the fd goes with it)
        adopted = await ack
        self._acks.pop(connId, None)
        if adopted:
            self.handed += 1
            self.peers.movedTo[connId] = channel.key[2]
            self.peers.moves.pop(connId, None)
            close_keeping_connection(transport)
        else:
            proto.setHandingOff(False)
            self._resume(proto)

    def _resume(self, proto: Any) -> None:
        self.kept += 1
        if proto.connected:
            proto.transport.startReading()

    def channelLost(self, pid: int) -> None:
        """The channel to process ``pid`` went (the replacement died, if it was ours): the
        hand-offs to it not answered failed."""
        for ack, to in list(self._acks.values()):
            if to == pid and not ack.called:
                ack.callback(False)

    # -- the replacement ---------------------------------------------------------------------
    def received(self, channel: Any, kind: int, connId: int, number: int,  # noqa: N803
                 payload: bytes) -> None:  # fmt: skip
        if kind == ADOPTED:
            ack, _ = self._acks.get(connId, (None, 0))
            if ack is not None and not ack.called:
                ack.callback(bool(number))
            return
        fds: deque[int] = channel.fds
        if not fds:
            log.error("hand-off of connection {connId} came without its socket", connId=connId)
            channel.write(frame(ADOPTED, connId, 0))
            return
        fd = fds.popleft()
        try:
            index, state = loads(payload, "the connection's state")
            table = self.tables[index]
            self.peers.moves[connId] = state.get("moves", 1)  # (what it announces)
            adopt_connection(fd, state["family"], _Adopting(table, state), self.reactor)
        except Exception:
            self.peers.moves.pop(connId, None)
            log.failure("adopting connection {connId} failed", connId=connId)
            channel.write(frame(ADOPTED, connId, 0))
            return
        finally:
            os.close(fd)
        channel.write(frame(ADOPTED, connId, 1))
