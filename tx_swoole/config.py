"""The TOML config file: ``[server]``, ``[settings]``, ``[events]`` and ``[[listen]]``.

:func:`load_config` reads and validates a file into a :class:`ServerConfig`; it imports
nothing from the app.  :func:`resolve` imports a ``module:attribute`` reference with the config
file's directory and the current directory on ``sys.path``; workers call it after they start,
so a reload always runs the code as it is on disk now.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from tx_swoole.errors import AppImportError, ConfigError
from tx_swoole.settings import SERVER_WIDE, Settings, base_values, closest, make_settings
from tx_swoole.tls import server_context

SERVER_TYPES = ("http", "tcp", "websocket", "udp")
EVENTS = (
    "worker_start", "worker_stop", "worker_exit", "handshake", "open", "message", "close",
    "task", "finish", "pipe_message",
)  # fmt: skip
# Swoole's onHandshake/onOpen/onMessage/onClose: functions instead of a protocol class.
WEBSOCKET_EVENTS = ("handshake", "open", "message", "close")
_SERVER_KEYS = ("type", "host", "port", "path", "mode", "app", "http_app")
_LISTEN_KEYS = (*_SERVER_KEYS, "settings")
UNIX = "unix:"  # host = "unix:PATH": a Unix domain socket
_SECTIONS = ("server", "settings", "events", "listen", "process")
_PROCESS_KEYS = ("app", "name", "reload")


@dataclass(frozen=True)
class Listener:
    """One address the workers serve: ``[server]`` or a ``[[listen]]`` table."""

    type: str
    host: str
    port: int
    app: str
    settings: Settings
    http_app: str = ""
    mode: int = 0o660
    label: str = "[server]"  # how errors name it: [server], [[listen]] #1, ...

    @property
    def unix_path(self) -> str:
        """The Unix socket's path (``host = "unix:PATH"`` or ``path``), or ""."""
        return self.host[len(UNIX) :] if self.host.startswith(UNIX) else ""

    @property
    def address(self) -> str:
        """``host:port``, ``unix:PATH``, with ``udp://`` before a UDP one."""
        where = self.host if self.unix_path else f"{self.host}:{self.port}"
        return f"udp://{where}" if self.type == "udp" else where


@dataclass(frozen=True)
class UserProcess:
    """A ``[[process]]`` table: a process the master runs beside the workers (Swoole's
    ``addProcess``)."""

    app: str  # module:callable, called with the process's service
    name: str  # for the log, the status and the process title
    reload: bool = False  # replaced on a reload, as the workers are (Swoole's: not)


@dataclass(frozen=True)
class ServerConfig:
    """A validated config file: ``[server]`` is the first listener, ``[[listen]]`` tables
    the others (``listeners`` has them all)."""

    type: str
    host: str
    port: int
    app: str
    settings: Settings
    http_app: str = ""  # websocket servers: the plain-HTTP handler, or none
    events: Mapping[str, str] = field(default_factory=dict)
    base_dir: str = "."
    path: str = ""
    mode: int = 0o660  # a Unix socket's file mode
    extra: tuple[Listener, ...] = ()  # the [[listen]] tables
    listen_tables: tuple[Mapping[str, Any], ...] = ()  # as written, for the workers
    processes: tuple[UserProcess, ...] = ()  # the [[process]] tables

    @property
    def unix_path(self) -> str:
        """The Unix socket's path (``host = "unix:PATH"`` or ``path``), or ""."""
        return self.host[len(UNIX) :] if self.host.startswith(UNIX) else ""

    @property
    def listeners(self) -> tuple[Listener, ...]:
        """Every listener, ``[server]`` first."""
        main = Listener(self.type, self.host, self.port, self.app, self.settings,
                        self.http_app, self.mode)  # fmt: skip
        return (main, *self.extra)

    def to_dict(self) -> dict[str, Any]:
        """The raw tables, to hand to a worker process."""
        return {
            "server": {
                "type": self.type,
                "host": self.host,
                "port": self.port,
                "mode": f"{self.mode:o}",
                "app": self.app,
                **({"http_app": self.http_app} if self.http_app else {}),
            },  # fmt: skip
            "settings": {k: v for k, v in asdict(self.settings).items() if v is not None},
            "events": dict(self.events),
            "listen": [dict(t) for t in self.listen_tables],
            "process": [asdict(p) for p in self.processes],
            "base_dir": self.base_dir,
            "path": self.path,
        }


def _unknown(kind: str, name: str, valid: Any) -> ConfigError:
    return ConfigError(f"unknown {kind} {name!r}{closest(name, valid)}")


def _check_ref(key: str, value: Any) -> str:
    if not isinstance(value, str) or value.count(":") != 1 or not all(value.split(":")):
        raise ConfigError(f"{key} = {value!r}: expected a 'module:attribute' string")
    return value


def _server(
    table: Mapping[str, Any], base_dir: str = ".", label: str = "[server]"
) -> dict[str, Any]:
    keys = _SERVER_KEYS if label == "[server]" else _LISTEN_KEYS
    for key in table:
        if key not in keys:
            raise _unknown(f"key {label}", key, keys)
    kind = table.get("type", "http")
    if kind not in SERVER_TYPES:
        raise ConfigError(f"{label} type = {kind!r}: allowed values are {', '.join(SERVER_TYPES)}")
    host = table.get("host", "127.0.0.1")
    if not isinstance(host, str) or not host:
        raise ConfigError(f"{label} host = {host!r}: expected a host name or address")
    if label != "[server]" and "port" not in table and "path" not in table and (
        not host.startswith(UNIX)
    ):  # fmt: skip
        raise ConfigError(f"{label} needs port (or path, or host = \"unix:PATH\"): where it "
                          "listens")  # fmt: skip
    port = table.get("port", 9501)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"{label} port = {port!r}: allowed range is 0 to 65535")
    path = table.get("path", host[len(UNIX) :] if host.startswith(UNIX) else "")
    if not isinstance(path, str):
        raise ConfigError(f"{label} path = {path!r}: expected the Unix socket's file path")
    if path:  # a Unix socket: made absolute against the config file's directory
        if "host" in table and not host.startswith(UNIX):
            raise ConfigError(f"{label} path = {path!r} and host = {host!r}: a Unix socket "
                              "has no host; give one of them")  # fmt: skip
        if kind == "udp":
            raise ConfigError(f"{label} type = 'udp' with a Unix socket path: UDP listens on "
                              "a host and port")  # fmt: skip
        host, port = UNIX + os.path.join(os.path.abspath(base_dir), path), 0
    mode = table.get("mode", "660")
    try:
        mode_bits = int(mode, 8) if isinstance(mode, str) else -1
    except ValueError:
        mode_bits = -1
    if not 0 <= mode_bits <= 0o777:
        raise ConfigError(f"{label} mode = {mode!r}: expected an octal file mode as a string, "
                          'such as "660"')  # fmt: skip
    if "app" not in table and kind != "websocket":
        raise ConfigError(f"{label} app is missing: expected a 'module:attribute' string")
    server = {
        "type": kind,
        "host": host,
        "port": port,
        "mode": mode_bits,
        "app": _check_ref(f"{label} app", table["app"]) if "app" in table else "",
    }
    if "http_app" in table:
        if kind != "websocket":
            raise ConfigError(f"{label} http_app is for type = 'websocket', not {kind!r}: "
                              "the app itself answers HTTP")  # fmt: skip
        server["http_app"] = _check_ref(f"{label} http_app", table["http_app"])
    return server


def _events(table: Mapping[str, Any]) -> dict[str, str]:
    events = {}
    for key, value in table.items():
        if key not in EVENTS:
            raise _unknown("event", key, EVENTS)
        events[key] = _check_ref(f"[events] {key}", value)
    return events


def parse_config(data: Mapping[str, Any], base_dir: str = ".", path: str = "") -> ServerConfig:
    """Validate the tables of a config file (already parsed) into a :class:`ServerConfig`.

    Raises :class:`~tx_swoole.errors.ConfigError` naming the key and value at fault.
    """
    for section, table in data.items():
        if section not in _SECTIONS:
            raise _unknown("section", section, _SECTIONS)
        if section in ("listen", "process"):
            if not isinstance(table, list) or not all(isinstance(t, Mapping) for t in table):
                raise ConfigError(f"{section} must be an array of tables: write each one as "
                                  f"[[{section}]]")  # fmt: skip
        elif not isinstance(table, Mapping):
            raise ConfigError(f"[{section}] must be a table, got {type(table).__name__}")
    if "server" not in data:
        raise ConfigError("the [server] table is missing")
    server = _server(data["server"], base_dir)
    raw_settings = make_settings(data.get("settings", {}))
    events = _events(data.get("events", {}))
    settings = _listener_settings(raw_settings, base_dir, "[server]", server)
    extra = tuple(
        _listener(table, base_dir, f"[[listen]] #{n}", raw_settings)
        for n, table in enumerate(data.get("listen", ()), 1)
    )
    _check_addresses([Listener(settings=settings, **server), *extra])
    if server["type"] == "websocket" and server["app"] and "message" in events:
        raise ConfigError(
            "a websocket server needs [server] app (a WebSocketProtocol subclass) or "
            "[events] message (with open, close and handshake if wanted), not both"
        )
    functions = [e for e in WEBSOCKET_EVENTS if e in events]
    kinds = [(server["type"], server["app"], "[server]")] + [
        (x.type, x.app, x.label) for x in extra
    ]
    if functions and not any(k == "websocket" and not app for k, app, _ in kinds):
        raise ConfigError(f"[events] {functions[0]} is for a websocket listener without an app "
                          "(its functions stand for the protocol class)")  # fmt: skip
    for kind, app, label in kinds:
        if kind == "websocket" and not app and "message" not in events:
            raise ConfigError(f"{label} app is missing: name a WebSocketProtocol subclass, "
                              "or the functions [events] message (and open, close, "
                              "handshake)")  # fmt: skip
    if settings.task_worker_num and "task" not in events:
        raise ConfigError(f"task_worker_num = {settings.task_worker_num} needs [events] task = "
                          '"module:function" (what the task workers run)')  # fmt: skip
    if "task" in events and not settings.task_worker_num:
        raise ConfigError("[events] task is set but task_worker_num = 0: set task_worker_num "
                          "(task worker processes to run it)")  # fmt: skip
    if settings.reload_handoff and not settings.worker_num:
        raise ConfigError("reload_handoff = true needs worker_num >= 1: connections are handed "
                          "from a worker to its replacement (worker_num = 0 serves in one "
                          "process)")  # fmt: skip
    if settings.reload_on_change and not settings.worker_num:
        raise ConfigError("reload_on_change = true needs worker_num >= 1: the master reloads "
                          "its workers (worker_num = 0 serves in one process)")  # fmt: skip
    processes = tuple(_process(t, n) for n, t in enumerate(data.get("process", ()), 1))
    if processes and not settings.worker_num:
        raise ConfigError("[[process]] needs worker_num >= 1: the master runs the processes "
                          "(worker_num = 0 serves in one process)")  # fmt: skip
    if settings.task_worker_num and not settings.worker_num:
        raise ConfigError(f"task_worker_num = {settings.task_worker_num} needs worker_num >= 1: "
                          "task workers are processes the master supervises (worker_num = 0 "
                          "serves in one process)")  # fmt: skip
    return ServerConfig(
        settings=settings,
        events=events,
        base_dir=os.path.abspath(base_dir),
        path=path,
        extra=extra,
        listen_tables=tuple(data.get("listen", ())),
        processes=processes,
        **server,
    )


def _process(table: Mapping[str, Any], n: int) -> UserProcess:
    label = f"[[process]] #{n}"
    for key in table:
        if key not in _PROCESS_KEYS:
            raise _unknown(f"key {label}", key, _PROCESS_KEYS)
    if "app" not in table:
        raise ConfigError(f"{label} app is missing: expected a 'module:callable' string (what "
                          "the process runs)")  # fmt: skip
    app = _check_ref(f"{label} app", table["app"])
    name = table.get("name", app.rpartition(":")[2])
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{label} name = {name!r}: expected a non-empty string")
    reload = table.get("reload", False)
    if not isinstance(reload, bool):
        raise ConfigError(f"{label} reload = {reload!r}: expected true or false")
    return UserProcess(app, name, reload)


def _listener(table: Mapping[str, Any], base_dir: str, label: str, base: Settings) -> Listener:
    """A ``[[listen]]`` table: its address and app, ``[settings]`` with its own
    ``[listen.settings]`` over them."""
    server = _server(table, base_dir, label)
    own = table.get("settings", {})
    if not isinstance(own, Mapping):
        raise ConfigError(f"{label} settings must be a table: [listen.settings] after it")
    for name in own:
        if name in SERVER_WIDE:
            raise ConfigError(f"setting {name} in {label}: it is one for the whole server "
                              "(its processes); set it in [settings]")  # fmt: skip
    try:
        settings = make_settings(base_values(base), **own)
    except ConfigError as e:
        raise ConfigError(f"{label} settings: {e}") from None
    return Listener(settings=_listener_settings(settings, base_dir, label, server), label=label,
                    **server)  # fmt: skip


def _listener_settings(
    settings: Settings, base_dir: str, label: str, server: Mapping[str, Any]
) -> Settings:
    """A listener's settings checked against its type and address, paths made absolute."""
    if settings.ssl_cert_file and server["host"].startswith(UNIX):
        raise ConfigError(f"ssl_cert_file with a Unix socket ({label}): TLS is for TCP "
                          "listeners (the socket file's mode guards a Unix socket)")  # fmt: skip
    if settings.ssl_cert_file and server["type"] == "udp":
        raise ConfigError(f"ssl_cert_file with type = 'udp' ({label}): TLS is for TCP "
                          'listeners; set ssl_cert_file = "" in its [listen.settings]')  # fmt: skip
    if settings.open_proxy_protocol and (settings.ssl_cert_file or server["type"] == "udp"):
        what = "ssl_cert_file" if settings.ssl_cert_file else "type = 'udp'"
        raise ConfigError(f"open_proxy_protocol with {what} ({label}): the PROXY header is read "
                          "on plain stream listeners; terminate TLS at the proxy, or give the "
                          "proxy a listener without TLS")  # fmt: skip
    settings = _tls(_static(settings, base_dir), base_dir)
    if settings.upload_tmp_dir:
        tmp = os.path.join(os.path.abspath(base_dir), settings.upload_tmp_dir)
        if not os.path.isdir(tmp) or not os.access(tmp, os.W_OK | os.X_OK):
            raise ConfigError(f"upload_tmp_dir = {settings.upload_tmp_dir!r}: {tmp} is not a "
                              "writable directory")  # fmt: skip
        settings = dataclasses.replace(settings, upload_tmp_dir=tmp)
    return settings


def _check_addresses(listeners: list[Listener]) -> None:
    """No two listeners on one address: SO_REUSEPORT would let both bind and split the
    traffic between them."""
    seen: dict[tuple[str, str, int], str] = {}
    for x in listeners:
        key = ("udp" if x.type == "udp" else "stream", x.host, x.port)
        if x.port == 0 and not x.unix_path:
            continue  # each gets a port of its own
        if key in seen:
            raise ConfigError(f"{x.label} listens on {x.address}, as {seen[key]} does: give "
                              "it another port or path")  # fmt: skip
        seen[key] = x.label


def _static(settings: Settings, base_dir: str) -> Settings:
    """The static handler's settings checked, ``document_root`` made absolute."""
    for loc in settings.static_handler_locations:
        if not loc.startswith("/"):
            raise ConfigError(f"static_handler_locations entry {loc!r} must start with '/' "
                              "(a URL path prefix)")  # fmt: skip
    if not settings.enable_static_handler:
        return settings
    if not settings.document_root:
        raise ConfigError("enable_static_handler = true needs document_root (the directory "
                          "of the files)")  # fmt: skip
    root = os.path.join(os.path.abspath(base_dir), settings.document_root)
    if not os.path.isdir(root):
        raise ConfigError(f"document_root = {settings.document_root!r}: {root} is not a "
                          "directory")  # fmt: skip
    return dataclasses.replace(settings, document_root=root)


def _tls(settings: Settings, base_dir: str) -> Settings:
    """The ``ssl_*`` settings checked (the certificate and key loaded once, so a bad file
    stops the server before it binds), their paths made absolute."""
    names = ("ssl_cert_file", "ssl_key_file", "ssl_client_cert_file")
    if not settings.ssl_cert_file:
        for name in names[1:]:
            if getattr(settings, name):
                raise ConfigError(f"setting {name} needs ssl_cert_file (the server's "
                                  "certificate: it turns TLS on)")  # fmt: skip
        return settings
    base = os.path.abspath(base_dir)
    paths: dict[str, Any] = {
        n: os.path.join(base, getattr(settings, n)) for n in names if getattr(settings, n)
    }
    settings = dataclasses.replace(settings, **paths)
    server_context(settings)
    return settings


def load_config(path: str) -> ServerConfig:
    """Read and validate the TOML file at ``path``.

    Raises :class:`~tx_swoole.errors.ConfigError` when the file is missing, is not TOML, or
    holds an invalid key or value.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    try:
        return parse_config(data, os.path.dirname(os.path.abspath(path)), os.path.abspath(path))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def resolve(ref: str, base_dir: str = ".") -> Any:
    """Import ``module:attribute``, with ``base_dir`` and the current directory on ``sys.path``.

    Raises :class:`~tx_swoole.errors.AppImportError` (with the original error chained) when the
    module cannot be imported or has no such attribute.
    """
    for entry in (os.getcwd(), os.path.abspath(base_dir)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise AppImportError(f"cannot import {module_name!r} for {ref!r}: {e!r}") from e
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppImportError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj
