"""Helpers shared by the tests: real twistd processes and fake transports."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from twisted.internet.testing import StringTransport

from tx_swoole.cli import pid_alive
from tx_swoole.clients.redis import RedisPool

__all__ = ["pid_alive"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
_LISTEN = re.compile(rb"serving \w+ app \S+ on ([\d.]+):(\d+)")


class EndpointPool(RedisPool):
    """A pool connecting through ``fake`` (RedisPool has slots: a subclass takes attributes)."""

    fake: Any

    def endpoint(self) -> Any:
        return self.fake


def write_config(
    tmp: Path,
    server: dict[str, Any],
    settings: dict[str, Any] | None = None,
    events: dict[str, str] | None = None,
    name: str = "server.toml",
) -> Path:
    """Write a TOML config file with the given tables and return its path."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return repr(v)

    lines = []
    for title, table in (("server", server), ("settings", settings), ("events", events)):
        if table:
            lines.append(f"[{title}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
    path = tmp / name
    path.write_text("\n".join(lines) + "\n")
    return path


class Twistd:
    """A real ``twistd -n swoole -c CONFIG`` process; its output is collected in ``output``."""

    def __init__(self, config: Path, *args: str, cwd: Path | None = None,
                 env: dict[str, str] | None = None,
                 prefix: tuple[str, ...] = ()) -> None:  # fmt: skip
        if "--pidfile" not in " ".join(args):
            args = ("--pidfile=", *args)
        self.output = bytearray()
        self.proc = subprocess.Popen(
            [*prefix, *TWISTD, *args, "-n", "swoole", "-c", str(config)],
            cwd=str(cwd or config.parent),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env} if env else None,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            self.output += line

    def wait_for(self, pattern: bytes, timeout: float = 15.0, count: int = 1) -> list[Any]:
        """Wait until ``pattern`` (a regex) has matched ``count`` times in the output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(re.finditer(pattern, bytes(self.output)))
            if len(found) >= count:
                return found
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(
            f"{pattern!r} not seen; output:\n{self.output.decode(errors='replace')}"
        )

    def port(self, timeout: float = 15.0) -> int:
        """The port the server logged it is serving on."""
        return int(self.wait_for(_LISTEN.pattern, timeout)[0].group(2))

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait; kill the whole group if it will not go. Returns the exit code."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self._reader.join(5)
        return code

    def __enter__(self) -> Twistd:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.stop()


def make_certificates(where: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1 (twice: ``server`` and ``renewed``),
    a client certificate (CN "alice"), all signed by the CA, and an unrelated key, made with
    the ``openssl`` command; returns their paths by name (``*_key`` for keys)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    where.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca_key.pem", "-out", "ca.pem", "-days", "3",
        "-subj", "/CN=test CA")  # fmt: skip
    (where / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, cn in (("server", "localhost"), ("renewed", "localhost"), ("client", "alice")):
        run("req", *ec, "-keyout", f"{name}_key.pem", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca_key.pem",
            "-CAcreateserial", "-days", "3", "-out", f"{name}.pem",
            *(("-extfile", "san.ext") if cn == "localhost" else ()))  # fmt: skip
    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-out", "other_key.pem")  # fmt: skip
    names = ("ca", "ca_key", "server", "server_key", "renewed", "renewed_key", "client",
             "client_key", "other_key")  # fmt: skip
    return {n: where / f"{n}.pem" for n in names}


@contextlib.contextmanager
def headless_chromium(profile: Path, *flags: str) -> Iterator[str]:
    """A headless Chromium (Debian's) with ``flags``; yields its DevTools WebSocket URL."""
    proc = subprocess.Popen(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-dev-shm-usage", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         *flags, "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and len(active.read_text().split()) == 2):
            assert proc.poll() is None and time.monotonic() < deadline, "chromium did not start"
            time.sleep(0.1)
        port, path = active.read_text().split()
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        proc.kill()
        proc.wait()


class FakeSocket:
    """Records setsockopt calls, like the socket behind a real transport."""

    def __init__(self) -> None:
        self.options: dict[tuple[int, int], Any] = {}

    def setsockopt(self, level: int, opt: int, value: Any) -> None:
        self.options[(level, opt)] = value


class SocketStringTransport(StringTransport):
    """A StringTransport with a handle and Twisted's abortConnection semantics."""

    def __init__(self) -> None:
        super().__init__()
        self.handle = FakeSocket()
        self.aborted = False

    def getHandle(self) -> FakeSocket:
        return self.handle

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class HalfCloseTransport(SocketStringTransport):
    """Also records half-closes (``loseWriteConnection``), as the lingering close uses."""

    writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


class HTTPLoad:
    """A bounded HTTP load from threads over raw sockets, classifying every outcome.

    ``ok``: 200 responses; ``refused``: connects refused (a clean way to learn of a shutdown);
    ``failures``: anything a user would call a dropped request: a reset or EOF after the
    request was written, a short response, or a non-200 status.
    """

    REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
    REQUEST_CLOSE = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"

    def __init__(self, port: int, connections: int = 16, keep_alive: bool = True,
                 tls: Any = None, unix: str = "") -> None:  # fmt: skip
        self.port = port
        self.unix = unix  # a Unix socket's path: connect there instead
        self.keep_alive = keep_alive
        self.tls = tls  # an ssl.SSLContext: HTTPS
        self.ok = 0
        self.refused = 0
        self.failures: list[str] = []
        self.closes = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(connections)
        ]

    def __enter__(self) -> HTTPLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def _count(self, what: str) -> None:
        with self._lock:
            if what == "ok":
                self.ok += 1
            elif what == "refused":
                self.refused += 1
            elif what == "close":
                self.closes += 1
            else:
                self.failures.append(what)

    def _run(self) -> None:
        import socket as _socket

        sock = None
        buf = b""
        while not self._stop.is_set():
            if sock is None:
                try:
                    if self.unix:
                        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
                        sock.settimeout(10)
                        try:
                            sock.connect(self.unix)
                        except OSError:
                            sock.close()
                            raise
                    else:
                        sock = _socket.create_connection(("127.0.0.1", self.port), timeout=10)
                    if self.tls is not None:
                        sock = self.tls.wrap_socket(sock, server_hostname="localhost")
                except ConnectionRefusedError:
                    self._count("refused")
                    time.sleep(0.05)
                    continue
                except OSError as e:
                    self._count(f"connect error {e!r}")
                    time.sleep(0.05)
                    continue
                buf = b""
            try:
                sock.sendall(self.REQUEST if self.keep_alive else self.REQUEST_CLOSE)
                while b"\r\n\r\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise EOFError("EOF before response")
                    buf += chunk
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                while len(rest) < length:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise EOFError("EOF in body")
                    rest += chunk
                buf = rest[length:]
                status = int(head.split(b" ", 2)[1])
                self._count("ok" if status == 200 else f"status {status}")
                if b"connection: close" in head.lower() or not self.keep_alive:
                    self._count("close")
                    sock.close()
                    sock = None
            except ConnectionRefusedError:
                self._count("refused")
                sock = None
            except (OSError, EOFError, ValueError, IndexError) as e:
                self._count(f"{e.__class__.__name__}: {e}")
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            sock.close()
