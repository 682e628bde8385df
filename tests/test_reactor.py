"""SwooleReactor: installed by twistd swoole (in-process and in workers) unless a reactor was
chosen; it serves connections and survives errors raised while handling an event."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from .support import Twistd, write_config

APP = """
from twisted.internet import reactor


def handler(request, response):
    response.end(type(reactor).__name__)
"""


def reactor_of(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    return conn.getresponse().read().decode()


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize(
    ("args", "expected"), [((), "SwooleReactor"), (("--reactor=poll",), "PollReactor")]
)
def test_twistd_swoole_reactor_unless_chosen(
    tmp_path: Path, workers: int, args: tuple[str, ...], expected: str
) -> None:
    """twistd swoole runs the app on SwooleReactor, in-process and in every worker; a reactor
    chosen with --reactor is kept, workers included."""
    (tmp_path / "which_reactor.py").write_text(APP)
    cfg = write_config(
        tmp_path,
        {"type": "http", "port": 0, "app": "which_reactor:handler"},
        {"worker_num": workers},
    )
    with Twistd(cfg, *args) as server:
        if workers:
            port = int(server.wait_for(rb"listening on 127.0.0.1:(\d+)")[0].group(1))
            server.wait_for(rb"ready", count=workers)
        else:
            port = server.port()
        assert {reactor_of(port) for _ in range(8)} == {expected}


SCRIPT = """
import socket, sys
from tx_swoole.reactor import install
reactor = install()
from twisted.internet.protocol import Factory, Protocol

class Flaky(Protocol):
    def dataReceived(self, data):
        self.transport.write(data.upper())
    def connectionLost(self, reason):
        raise RuntimeError("bug in connectionLost")

port = reactor.listenTCP(0, Factory.forProtocol(Flaky), interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.callLater(20, reactor.stop)
reactor.run()
"""


def test_reactor_serves_and_survives_errors_in_event_handling() -> None:
    """Reads and writes are dispatched; an exception escaping a connection's loss handling is
    logged and the loop goes on serving."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"hello")
                assert s.recv(100) == b"HELLO"
        assert proc.poll() is None
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    assert err.count(b"bug in connectionLost") >= 2  # logged, not fatal


def test_reactor_reads_every_descriptor_but_the_write_only_ones() -> None:
    """SwooleReactor keeps no set entry per reading descriptor: what it reads is what is
    registered, less the descriptors only written to.  Every mix of adding and removing
    readers and writers gives Twisted's answers, and epoll is told the same."""
    import select

    from twisted.internet.abstract import FileDescriptor

    from tx_swoole.reactor import SwooleReactor

    class Pipe(FileDescriptor):
        def __init__(self, sock: socket.socket) -> None:
            super().__init__(reactor)
            self.sock = sock

        def fileno(self) -> int:
            return self.sock.fileno()

    reactor = SwooleReactor()
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        a, b, c = (Pipe(s) for s, _ in pairs)
        for _, far in pairs:
            far.send(b"x")  # every descriptor is readable, and writable

        own = set(reactor.getReaders())  # the reactor's waker
        mine = {a.fileno(), b.fileno(), c.fileno()}

        def state() -> tuple[set[Any], set[Any], dict[int, int]]:
            events = {fd: e for fd, e in reactor._poller.poll(0) if fd in mine}
            return set(reactor.getReaders()) - own, set(reactor.getWriters()), events

        reactor.addReader(a)
        reactor.addReader(b)
        reactor.addWriter(b)
        reactor.addWriter(c)
        readers, writers, events = state()
        assert readers == {a, b} and writers == {b, c}
        assert events[a.fileno()] == select.EPOLLIN and events[c.fileno()] == select.EPOLLOUT
        assert events[b.fileno()] == select.EPOLLIN | select.EPOLLOUT
        assert reactor._writeOnly == {c.fileno()}
        reactor.removeReader(b)  # b stays, written to only
        reactor.addReader(c)  # c is read too now
        readers, writers, events = state()
        assert readers == {a, c} and writers == {b, c}
        assert events[b.fileno()] == select.EPOLLOUT
        assert events[c.fileno()] == select.EPOLLIN | select.EPOLLOUT
        reactor.removeWriter(b)
        reactor.removeWriter(c)
        reactor.removeReader(a)
        readers, writers, events = state()
        assert readers == {c} and writers == set() and set(events) == {c.fileno()}
        assert reactor._writeOnly == set() and b.fileno() not in reactor._selectables
        reactor.addWriter(a)
        assert set(reactor.removeAll()) == {a, c} and state() == (set(), set(), {})
    finally:
        for near, far in pairs:
            near.close()
            far.close()
        reactor._poller.close()
