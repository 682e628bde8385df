"""Unix domain sockets (``host = "unix:PATH"`` or ``path``): a real master with two workers
serving curl and a keep-alive load through reloads (0 failed, the load spread over both
workers), the file mode, a stale socket file from a crash, a live one refused, the file gone
at shutdown; and the in-process server."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from .support import ROOT, HTTPLoad, Twistd, write_config
from .test_multiprocess import ready_status, reloads_under_load, status, wait_until

pytestmark = pytest.mark.integration


def curl(path: Path, url: str = "http://x/") -> bytes:
    return subprocess.run(["curl", "-sS", "--unix-socket", str(path), url],
                          capture_output=True, timeout=30).stdout  # fmt: skip


@pytest.mark.timeout(120)
def test_master_on_a_unix_socket_reloads_under_load(tmp_path: Path) -> None:
    sock_path = tmp_path / "app.sock"
    pidfile = tmp_path / "master.pid"
    cfg = write_config(tmp_path, {"type": "http", "path": "app.sock", "mode": "600",
                                  "app": "tests.http_apps:handler"},
                       {"worker_num": 2})  # fmt: skip
    with Twistd(cfg, f"--pidfile={pidfile}", cwd=ROOT) as server:
        server.wait_for(rb"listening on unix:" + str(sock_path).encode())
        ready_status(pidfile, 2)
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
        assert curl(sock_path, "http://x/big?n=5") == b"xxxxx"
        with HTTPLoad(0, connections=8, keep_alive=False, unix=str(sock_path)) as load:
            wait_until(lambda: load.ok > 200, timeout=30)
            reloads_under_load(server, load, (2, 3), more=200)

            def shares() -> list[int]:
                return [w["requests"] for w in status(pidfile)["workers"]
                        if w["generation"] == 3]  # fmt: skip

            wait_until(lambda: len(shares()) == 2 and min(shares()) > 50, timeout=20)
        assert load.failures == [] and load.refused == 0
        assert sock_path.exists()  # a reload leaves the master's socket file alone
        server.signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
    assert not sock_path.exists() and not (tmp_path / "app.sock.closing").exists()


def test_stale_socket_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    sock_path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock_path))  # bound and closed without unlinking: a crash's leftover
    stale.close()
    cfg = write_config(tmp_path, {"type": "http", "host": f"unix:{sock_path}",
                                  "app": "tests.http_apps:handler"}, {"worker_num": 0})  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server:
        server.wait_for(rb"serving http app tests.http_apps:handler on unix:")
        assert curl(sock_path) == b"ok"
        second = write_config(tmp_path, {"type": "http", "host": f"unix:{sock_path}",
                                         "app": "tests.http_apps:handler"},
                              {"worker_num": 2}, name="second.toml")  # fmt: skip
        with Twistd(second, cwd=ROOT) as other:
            assert other.proc.wait(30) != 0
            other.wait_for(rb"another server listens on unix:" + str(sock_path).encode())
        assert curl(sock_path) == b"ok"  # the first one is untouched
        assert server.stop() == 0
    assert not sock_path.exists()


def test_a_path_that_is_not_a_socket_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app.sock").write_text("not a socket")
    cfg = write_config(tmp_path, {"type": "http", "path": "app.sock",
                                  "app": "tests.http_apps:handler"}, {"worker_num": 1})  # fmt: skip
    with Twistd(cfg, cwd=ROOT) as server:
        assert server.proc.wait(30) != 0
        server.wait_for(rb"exists and is not a socket")
    assert (tmp_path / "app.sock").read_text() == "not a socket"


def test_config_errors() -> None:
    from tx_swoole.config import parse_config
    from tx_swoole.errors import ConfigError

    for server, message in (
        ({"path": "a.sock", "host": "127.0.0.1"}, "a Unix socket has no host"),
        ({"path": "a.sock", "mode": "999"}, "expected an octal file mode"),
        ({"path": "a.sock", "mode": 660}, "expected an octal file mode"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_config({"server": {"type": "http", "app": "a:b", **server}})
    with pytest.raises(ConfigError, match="ssl_cert_file with a Unix socket"):
        parse_config({"server": {"type": "http", "app": "a:b", "path": "a.sock"},
                      "settings": {"ssl_cert_file": "x.pem"}})  # fmt: skip
