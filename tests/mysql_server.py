"""A private MariaDB for the tests: ``mariadb-install-db`` into a temp dir, its own port and
socket, a user ``tx``/``secret`` with a database ``txdb``; tests may stop and restart it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .support import make_certificates

USER, PASSWORD, DATABASE = "tx", "secret", "txdb"
INIT = f"""
CREATE USER IF NOT EXISTS '{USER}'@'%' IDENTIFIED BY '{PASSWORD}';
CREATE USER IF NOT EXISTS 'nopass'@'%';
GRANT ALL ON *.* TO '{USER}'@'%';
GRANT ALL ON *.* TO 'nopass'@'%';
CREATE DATABASE IF NOT EXISTS {DATABASE} CHARACTER SET utf8mb4;
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MariaDB:
    """``mariadbd`` on 127.0.0.1:port and a Unix socket, with TLS (a test CA's certificate)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.unix = str(directory / "mysql.sock")
        self.data = directory / "data"
        self.proc: subprocess.Popen[bytes] | None = None
        self.certs = make_certificates(directory / "certs")
        (directory / "init.sql").write_text(INIT)
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", "--user=root", f"--datadir={self.data}",
             f"--socket={self.unix}", f"--port={self.port}", "--bind-address=127.0.0.1",
             "--skip-name-resolve", f"--init-file={self.directory / 'init.sql'}",
             f"--log-error={self.directory / 'error.log'}",
             f"--pid-file={self.directory / 'mariadb.pid'}", "--innodb-buffer-pool-size=32M",
             "--skip-log-bin", "--max-connections=500", "--max-allowed-packet=64M",
             f"--ssl-cert={self.certs['server']}", f"--ssl-key={self.certs['server_key']}",
             f"--ssl-ca={self.certs['ca']}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        log = self.directory / "error.log"
        while time.monotonic() < deadline:
            if log.exists() and b"ready for connections" in log.read_bytes():
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"mariadbd did not start on port {self.port}: "
                           f"{log.read_text() if log.exists() else 'no log'}")  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            log = self.directory / "error.log"
            if log.exists():  # the next start waits for its own "ready" line
                log.rename(self.directory / f"error.{time.monotonic_ns()}.log")


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory):
    """A MariaDB shared by the session."""
    if shutil.which("mariadbd") is None:
        pytest.fail("mariadbd is missing: apt-get install mariadb-server")
    server = MariaDB(tmp_path_factory.mktemp("mariadb"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_mariadb(tmp_path: Path):
    """A MariaDB of the test's own, free to kill and restart."""
    server = MariaDB(tmp_path)
    server.start()
    yield server
    server.stop()
