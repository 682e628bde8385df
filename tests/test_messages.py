"""Messages between processes and the connection table across workers: Peers linked over
in-memory transports (unit), then real masters (the chat examples with two workers, and
sendMessage between workers and task workers)."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from tx_swoole.process._task import OPENED
from tx_swoole.process.messages import Peers, _Channel
from tx_swoole.protocols.tcp import ConnectionTable, TCPProtocol
from tx_swoole.settings import make_settings

SETTINGS = make_settings({"worker_num": 2, "task_worker_num": 1})


class Process:
    """One process's Peers (and, for a worker, its table), pid made up."""

    def __init__(self, kind: str, index: int, pid: int) -> None:
        self.pid = pid
        self.got: list[tuple[int, Any]] = []
        self.peers = Peers(
            SETTINGS,
            kind,
            index,
            task.Clock(),  # type: ignore[arg-type]
            server=self,
            pipe_message=lambda s, src, d: self.got.append((src, d)),
        )
        self.table: ConnectionTable | None = None
        if kind == "worker":
            self.table = ConnectionTable(TCPProtocol, SETTINGS, reactor=task.Clock())
            self.table.numberIds(index, SETTINGS.worker_num)
            self.peers.share(self.table)

    def connect(self) -> tuple[TCPProtocol, StringTransport]:
        assert self.table is not None
        proto = self.table.buildProtocol(IPv4Address("TCP", "10.0.0.9", 5000 + self.pid))
        assert proto is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 5000 + self.pid))
        proto.makeConnection(transport)
        return proto, transport  # type: ignore[return-value]


class Mesh:
    def __init__(self, *processes: Process) -> None:
        self.processes = processes
        self.wires: list[tuple[StringTransport, _Channel, StringTransport, _Channel]] = []
        real = os.getpid
        for a in processes:
            for b in processes:
                if a is b:
                    continue
                out = _Channel(a.peers, True, (b.peers.kind, b.peers.index, b.pid))
                inc = _Channel(b.peers, False, ("?", -1, 0))
                ot, it = StringTransport(), StringTransport()
                os.getpid = lambda a=a: a.pid  # type: ignore[assignment]  # HELLO says its pid
                try:
                    inc.makeConnection(it)
                    a.peers.newest[(b.peers.kind, b.peers.index)] = b.pid
                    out.makeConnection(ot)
                finally:
                    os.getpid = real  # type: ignore[assignment]
                self.wires.append((ot, inc, it, out))
        self.pump()

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for ot, inc, it, out in self.wires:
                for src, dst in ((ot, inc), (it, out)):
                    data = src.value()
                    if data:
                        src.clear()
                        dst.dataReceived(data)
                        moved = True


def test_send_message_between_workers_and_to_a_task_worker() -> None:
    w0, w1, t0 = Process("worker", 0, 100), Process("worker", 1, 101), Process("task", 0, 102)
    mesh = Mesh(w0, w1, t0)
    assert w0.peers.sendMessage({"hi": 1}, 1) and w0.peers.sendMessage("to task", 2)
    assert t0.peers.sendMessage(b"from task", 0)
    mesh.pump()
    assert w1.got == [(0, {"hi": 1})] and t0.got == [(0, "to task")]
    assert w0.got == [(2, b"from task")]
    assert not w0.peers.sendMessage("me", 0) and not w0.peers.sendMessage("nobody", 7)
    assert not w0.peers.sendMessage(lambda: 1, 1)  # pickle refuses it: logged, False


def test_the_table_across_workers_ids_exist_send_close_and_go() -> None:
    w0, w1, t0 = Process("worker", 0, 100), Process("worker", 1, 101), Process("task", 0, 102)
    mesh = Mesh(w0, w1, t0)
    assert w0.table is not None and w1.table is not None
    a, at = w0.connect()
    b, bt = w1.connect()
    mesh.pump()
    assert a.connId % 2 == 0 and b.connId % 2 == 1  # n * worker_num + workerId
    assert sorted(w0.table.listConnections()) == sorted([a.connId, b.connId])
    assert w0.table.exists(b.connId) and t0.peers.remote.keys() == {a.connId, b.connId}
    info = w0.table.getClientInfo(b.connId)
    assert info is not None and info.remote_host == "10.0.0.9" and info.worker_id == 1
    assert w0.table.send(b.connId, b"across") and t0.peers.remoteSend(a.connId, b"from task")
    mesh.pump()
    assert bt.value() == b"across" and at.value() == b"from task"
    assert w0.table.close(b.connId)
    mesh.pump()
    assert bt.disconnecting
    b.connectionLost(None)  # type: ignore[arg-type]
    mesh.pump()
    assert not w0.table.exists(b.connId) and w0.table.listConnections() == [a.connId]
    assert not w0.table.send(b.connId, b"late")  # the usual NOTICE and False


def test_a_worker_that_joins_late_hears_of_every_open_connection() -> None:
    w0 = Process("worker", 0, 100)
    assert w0.table is not None
    first, _ = w0.connect()
    w1 = Process("worker", 1, 101)
    Mesh(w0, w1)
    assert w1.peers.remote.keys() == {first.connId}


def test_a_lost_worker_takes_its_connections_out_of_the_copy() -> None:
    w0, w1 = Process("worker", 0, 100), Process("worker", 1, 101)
    mesh = Mesh(w0, w1)
    w1.connect()
    mesh.pump()
    assert len(w0.peers.remote) == 1
    for _ot, inc, _it, _out in mesh.wires:
        if inc.peers is w0.peers:  # w1's channel into w0 goes
            inc.connectionLost(None)  # type: ignore[arg-type]
    assert w0.peers.remote == {}


def test_news_of_a_moved_connection_counts_its_moves_whatever_order_it_comes_in() -> None:
    """After a hand-off the copies of the table follow the connection's newest holder, in
    whatever order the two holders' news arrive (they come over different channels): the old
    holder's late table (fewer moves) neither replaces the new one's entry nor does its
    close remove it; in order, the newer news wins as before."""
    from tx_swoole.process._task import CLOSED, OPENED, dumps

    w1 = Process("worker", 1, 101)
    old = _Channel(w1.peers, False, ("worker", 0, 100))
    new = _Channel(w1.peers, False, ("worker", 0, 200))

    def opened(connId: int, moves: int) -> bytes:  # noqa: N803
        return dumps((connId, "10.0.0.9", 5000, 1.0, moves), 1 << 16, "connection")

    w1.peers.received(new, OPENED, 4, 0, opened(4, 1))
    w1.peers.received(old, OPENED, 4, 0, opened(4, 0))  # the old holder's table, late
    assert w1.peers.remote[4].pid == 200 and w1.peers.remote[4].moves == 1
    w1.peers.received(old, CLOSED, 4, 0, b"0")
    assert w1.peers.remote[4].pid == 200
    w1.peers.received(new, CLOSED, 4, 0, b"1")
    assert 4 not in w1.peers.remote
    w1.peers.received(old, OPENED, 6, 0, opened(6, 0))
    w1.peers.received(new, OPENED, 6, 0, opened(6, 1))
    assert w1.peers.remote[6].pid == 200


def test_a_call_that_reaches_the_old_holder_is_passed_to_the_new_one() -> None:
    """A process that has not yet heard of a hand-off sends its call to the old holder,
    which passes it on to the replacement it handed the connection to."""
    from tx_swoole.process._task import CALL, FrameReader, dumps
    from tx_swoole.process.messages import SEND

    w0 = Process("worker", 0, 100)
    to_new = StringTransport()
    channel = _Channel(w0.peers, True, ("worker", 0, 200))
    channel.makeConnection(to_new)
    w0.peers.out[200] = channel
    to_new.clear()  # (its HELLO)
    w0.peers.movedTo[4] = 200
    payload = dumps((b"hi",), 1 << 16, "send data")
    w0.peers.received(channel, CALL, 4, SEND, payload)
    [passed] = FrameReader(1 << 16).feed(to_new.value())
    assert (passed.kind, passed.taskId, passed.number, passed.payload) == (
        CALL, 4, SEND, payload,
    )  # fmt: skip


def test_what_is_sent_while_a_channel_opens_goes_once_it_is_up() -> None:
    """A process just announced (its channel still opening): messages and calls for its
    connections wait and go, in order, after its channel's greeting; bounded by
    buffer_output_size; dropped (logged) if the channel cannot open."""
    from twisted.internet.testing import MemoryReactor

    from tx_swoole.process._task import CALL, HELLO, PIPE, FrameReader, dumps
    from tx_swoole.process.messages import _Out

    w0 = Process("worker", 0, 100)
    reactor = MemoryReactor()
    w0.peers.reactor = reactor  # type: ignore[assignment]
    w0.peers.peerReady("worker", 1, "/run/peer-1.sock", 101)
    assert w0.peers.sendMessage("early", 1)
    w0.peers.received(
        _Channel(w0.peers, False, ("worker", 1, 101)), OPENED, 7, 1,
        dumps((7, "10.0.0.9", 5000, 1.0, 0), 1 << 16, "connection"),
    )  # fmt: skip
    assert w0.peers.remoteSend(7, b"to 7")
    big = b"x" * SETTINGS.buffer_output_size
    assert not w0.peers.sendMessage(big, 1)  # past the bound: refused, the rest kept
    [(path, factory, _, _)] = reactor.unixClients
    assert path == "/run/peer-1.sock" and isinstance(factory, _Out)
    wire = StringTransport()
    factory.buildProtocol(None).makeConnection(wire)
    frames = FrameReader(1 << 24).feed(wire.value())
    assert [f.kind for f in frames] == [HELLO, PIPE, CALL] and frames[2].taskId == 7

    w0.peers.peerReady("worker", 2, "/run/peer-2.sock", 102)
    w0.peers.connecting[102][0].append(b"waits")
    with capturedLogs() as events:
        reactor.unixClients[-1][1].clientConnectionFailed(None, Failure(OSError("refused")))
    assert 102 not in w0.peers.connecting
    assert any("dropped: its channel did not open" in formatEvent(e) for e in events)


def test_ids_of_a_later_generation_never_meet_an_earlier_ones() -> None:
    old = ConnectionTable(TCPProtocol, SETTINGS, reactor=task.Clock())
    new = ConnectionTable(TCPProtocol, SETTINGS, reactor=task.Clock())
    old.numberIds(0, 2, generation=1)
    new.numberIds(0, 2, generation=2)
    assert old.acceptCount == new.acceptCount == 0
    single = ConnectionTable(TCPProtocol, {"worker_num": 1}, reactor=task.Clock())
    single.numberIds(0, 1)
    ids = []
    for table in (old, new, single):
        proto = table.buildProtocol(IPv4Address("TCP", "1.2.3.4", 1))
        assert proto is not None
        proto.makeConnection(StringTransport())
        ids.append(proto.connId)
    assert ids == [2, 2 * (2**32 + 1), 1]


# -- real masters ---------------------------------------------------------------------------------
import contextlib  # noqa: E402
import http.client  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402

from .support import EXAMPLES, ROOT, Twistd, write_config  # noqa: E402


def chat_frame(text: str) -> bytes:
    body = text.encode()
    return struct.pack(">I", len(body)) + body


class ChatClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""
        self.lines: list[str] = []
        self.id = int(self.next_line().split("#")[1])  # "welcome #N"

    def next_line(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 4:
                (n,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + n:
                    line, self.buf = self.buf[4 : 4 + n].decode(), self.buf[4 + n :]
                    return line
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            assert data, "closed"
            self.buf += data

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(deadline - time.monotonic())
            if predicate(line):
                return line

    def say(self, text: str) -> None:
        self.sock.sendall(chat_frame(text))


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_tcp_chat_with_two_workers_every_member_sees_every_message(tmp_path: Path) -> None:
    cfg = tmp_path / "tcp_chat.toml"
    text = (EXAMPLES / "tcp_chat.toml").read_text()
    assert "worker_num = 2" in text  # the example as it ships
    cfg.write_text(text.replace("port = 9503", "port = 0"))
    with Twistd(cfg, cwd=EXAMPLES) as server:
        server.wait_for(rb"listening on 127.0.0.1:(\d+)")
        port = int(server.wait_for(rb"listening on 127.0.0.1:(\d+)")[0].group(1))
        server.wait_for(rb"\) ready", count=2)
        members: list[ChatClient] = []
        while len({m.id % 2 for m in members}) < 2 or len(members) < 4:  # both workers
            members.append(ChatClient(port))
            assert len(members) < 40, "the kernel sent every connection to one worker"
        everyone = {m.id for m in members}
        for m in members:  # each sees the whole room, whichever worker holds whom

            def whole(line: str, m: ChatClient = m) -> bool:
                if {int(x[1:]) for x in line.split() if x.startswith("#")} >= everyone:
                    return True
                m.say("/who")
                return False

            m.say("/who")
            m.wait_for(whole)
        for m in members:
            m.say(f"hello from {m.id}")
        for m in members:
            heard = set()
            while len(heard) < len(members) - 1:
                line = m.next_line()
                if ": hello from " in line:
                    heard.add(int(line.split(": hello from ")[1]))
            assert heard == everyone - {m.id}


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_websocket_broadcast_and_push_reach_every_worker(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"type": "websocket", "port": 0, "app": "tests.ws_apps:Room"},
                       {"worker_num": 2})  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server, contextlib.ExitStack() as stack:
        port = int(server.wait_for(rb"listening on 127.0.0.1:(\d+)")[0].group(1))
        server.wait_for(rb"\) ready", count=2)
        clients: dict[int, Any] = {}
        while len({i % 2 for i in clients}) < 2 or len(clients) < 4:  # on both workers
            c = stack.enter_context(ws_connect(f"ws://127.0.0.1:{port}/", open_timeout=10))
            newest = int(c.recv(timeout=10).split()[1])
            clients[newest] = c
            assert len(clients) < 40, "the kernel sent every connection to one worker"
        for c in clients.values():  # its join reaches everyone, whichever worker holds whom
            while c.recv(timeout=10) != f"joined {newest}":
                pass
        odd, even = min(i for i in clients if i % 2), min(i for i in clients if not i % 2)
        clients[odd].send("to all")
        for c in clients.values():
            while c.recv(timeout=10) != f"{odd}: to all":
                pass
        clients[even].send(f"push {odd} across")  # to a connection of the other worker
        assert clients[even].recv(timeout=10) == "pushed True"
        while clients[odd].recv(timeout=10) != "across":
            pass


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_send_message_between_workers_and_task_workers(tmp_path: Path) -> None:
    events = {"pipe_message": "tests.message_apps:on_pipe", "task": "tests.message_apps:on_task"}
    cfg = write_config(tmp_path, {"type": "http", "port": 0, "app": "tests.message_apps:send"},
                       {"worker_num": 2, "task_worker_num": 1}, events)  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server:
        port = int(server.wait_for(rb"listening on 127.0.0.1:(\d+)")[0].group(1))
        server.wait_for(rb"\) ready", count=3)

        def order(**o: Any) -> str:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("POST", "/", body=repr({"dir": str(tmp_path), **o}))
            return conn.getresponse().read().decode()

        def heard(name: str, text: str) -> None:
            """Wait until the process ``name`` wrote ``text`` (its hook got the message)."""
            path = tmp_path / name
            deadline = time.monotonic() + 10
            while not (path.exists() and text in path.read_text()):
                assert time.monotonic() < deadline, f"{name} never got {text!r}"
                time.sleep(0.02)

        answers = {order(dst=1) for _ in range(6)}  # from worker 0 True, from 1 False (itself)
        assert "True" in answers
        heard("got-worker-1", "hello from worker 0 from 0")
        assert order(dst=2) == "True"
        heard("got-task-2", "hello from worker")
        assert order(dst=0, via_task=True) == "True"
        heard("got-worker-0", "hello from a task worker from 2")
        assert order(dst=9) == "False"
    assert b"sendMessage to worker 9 dropped" in server.output
