"""SwooleReactor: installed by twistd swoole (in-process and in workers) unless a reactor was
chosen; it serves connections and survives errors raised while handling an event."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

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
