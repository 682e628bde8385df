"""Swoole-named server settings: types, defaults, ranges and validation.

Every setting has Swoole's name and, unless noted, Swoole's default.  :func:`make_settings`
validates a mapping once (the ``[settings]`` table of a config file, or keyword arguments) and
returns an immutable :class:`Settings`; an unknown key, a wrong type or a value out of range is
a :class:`~tx_swoole.errors.ConfigError` naming the key, the value, what is allowed and, for
typos, the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tx_swoole.errors import ConfigError

_MAX_INT = 2**31 - 1
LENGTH_TYPES = ("c", "C", "s", "S", "n", "N", "l", "L", "v", "V", "q", "Q", "J", "P")
LOG_LEVELS = ("debug", "trace", "info", "notice", "warning", "error")


def _meta(lo: float | None = None, hi: float | None = None, choices: tuple[str, ...] = ()) -> Any:
    return {"lo": lo, "hi": hi, "choices": choices}


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated server settings (Swoole's names).  Build with :func:`make_settings`."""

    # Processes.  Swoole defaults worker_num to the CPU count; 0 runs the app in-process.
    worker_num: int = field(default=os.cpu_count() or 1, metadata=_meta(0, 1024))
    max_request: int = field(default=0, metadata=_meta(0, _MAX_INT))
    # Seconds the reactor may go without turning before a WARNING shows what blocks it (with
    # the stack), once per stall; 0 = no watchdog.
    reactor_stall_timeout: float = field(default=0.0, metadata=_meta(0, 3600))
    # Task workers (Swoole's): processes running [events] task for server.task(); 0 = none.
    task_worker_num: int = field(default=0, metadata=_meta(0, 1024))
    # Tasks after which a task worker is replaced (0 = never), jittered as max_request is.
    task_max_request: int = field(default=0, metadata=_meta(0, _MAX_INT))
    # Tasks one worker may have outstanding (sent or waiting) before task() refuses more.
    task_queue_max: int = field(default=10000, metadata=_meta(1, _MAX_INT))
    # None = Swoole's default: max_request // 2 when max_request > 10, else 0.
    max_request_grace: int | None = field(default=None, metadata=_meta(0, _MAX_INT))
    max_wait_time: float = field(default=3.0, metadata=_meta(0.01, 3600))
    reload_async: bool = True
    # Ours: the master reloads the workers when watched files change (inotify): the paths or
    # globs in reload_on_change_paths, relative to the config file (default: its *.py files).
    reload_on_change: bool = False
    reload_on_change_paths: tuple[str, ...] = ()
    # Ours: a reload or max_request recycle hands each long connection (TCP, WebSocket) to the
    # replacement worker, socket and state, instead of closing it.
    reload_handoff: bool = False
    # Heartbeat (Swoole: idle time defaults to 2 x interval; idle alone enables check at idle/2).
    heartbeat_check_interval: float = field(default=0.0, metadata=_meta(0, 86400))
    heartbeat_idle_time: float = field(default=0.0, metadata=_meta(0, 86400 * 7))
    # TCP keepalive, off by default as in Swoole; Linux defaults when on.
    open_tcp_keepalive: bool = False
    tcp_keepidle: int = field(default=3600, metadata=_meta(1, 32767))
    tcp_keepinterval: int = field(default=60, metadata=_meta(1, 32767))
    tcp_keepcount: int = field(default=5, metadata=_meta(1, 127))
    tcp_user_timeout: int = field(default=0, metadata=_meta(0, _MAX_INT))
    # Framing for TCP message protocols.
    open_eof_split: bool = False
    package_eof: str = "\r\n"
    open_length_check: bool = False
    package_length_type: str = field(default="N", metadata=_meta(choices=LENGTH_TYPES))
    package_length_offset: int = field(default=0, metadata=_meta(0, 65535))
    package_body_offset: int = field(default=4, metadata=_meta(0, 65535))
    # Swoole: 2 MiB; max framed message (tcp) / max request body (http).
    package_max_length: int = field(default=2 * 1024 * 1024, metadata=_meta(64, 2**40))
    # HTTP.  8 KiB like nginx's large_client_header_buffers and Swoole's http_header buffer.
    http_header_max_length: int = field(default=8192, metadata=_meta(256, 1024 * 1024))
    # Seconds an idle keep-alive connection is kept (nginx keepalive_timeout is 75 s).
    http_keepalive_timeout: float = field(default=60.0, metadata=_meta(0, 86400))
    # Seconds a client may take to send a whole request head (nginx client_header_timeout).
    http_header_timeout: float = field(default=30.0, metadata=_meta(0, 86400))
    # Seconds a client may go without sending a byte of a request body it started (nginx
    # client_body_timeout is 60 s); then 408.
    http_body_timeout: float = field(default=60.0, metadata=_meta(0, 86400))
    # Seconds a client may go without reading any of a response it has unsent (nginx
    # send_timeout is 60 s); then the connection is aborted.
    http_send_timeout: float = field(default=60.0, metadata=_meta(0, 86400))
    # TCP_NODELAY on accepted sockets (Swoole's default: on), so small writes go out at once.
    open_tcp_nodelay: bool = True
    # Ours: each connection starts with a PROXY protocol header (HAProxy v1 or v2) naming the
    # client a load balancer relays; the app sees that address.  Without it (off), such a
    # header is refused as bad input.  The header must arrive within proxy_protocol_timeout.
    open_proxy_protocol: bool = False
    proxy_protocol_timeout: float = field(default=5.0, metadata=_meta(0, 3600))
    # WebSocket: accept permessage-deflate offers (RFC 7692); off by default, as in Swoole.
    websocket_compression: bool = False
    # Seconds between the server's pings to each WebSocket connection (0: none); a connection
    # that has not answered one ping by the next is closed (reason heartbeat).
    websocket_ping_interval: float = field(default=0.0, metadata=_meta(0, 86400))
    # Swoole's: hand WebSocket pings (then not answered for you: the application sends the
    # pong), pongs, and the peer's close frame to the message hook as frame objects.
    open_websocket_ping_frame: bool = False
    open_websocket_pong_frame: bool = False
    open_websocket_close_frame: bool = False
    # Seconds a WebSocket reader may keep more than buffer_output_size unsent before it is
    # closed with 1008 (0: never; pushes are refused meanwhile either way).
    websocket_send_timeout: float = field(default=60.0, metadata=_meta(0, 86400))
    # Static files (Swoole's): files under document_root served before the handler; with
    # static_handler_locations (URL prefixes) only those paths, a missing file a 404.
    enable_static_handler: bool = False
    document_root: str = ""
    static_handler_locations: tuple[str, ...] = ()
    # Serve files whose symlinks lead out of document_root (off: 403).
    static_handler_follow_symlinks: bool = False
    # Compression (Swoole's): gzip or deflate by Accept-Encoding for bodies of at least
    # http_compression_min_length bytes whose type is in http_compression_types (() = text,
    # JSON, JavaScript, XML, SVG, ...); level 1 (fastest) to 9.
    http_compression: bool = True
    http_compression_level: int = field(default=1, metadata=_meta(1, 9))
    http_compression_min_length: int = field(default=20, metadata=_meta(0, _MAX_INT))
    http_compression_types: tuple[str, ...] = ()
    # HTTP/2 (Swoole's): h2 by ALPN over TLS and h2c with prior knowledge; streams a client
    # may have open at once on one connection.
    open_http2_protocol: bool = False
    http2_max_concurrent_streams: int = field(default=128, metadata=_meta(1, 65535))
    # Uploads (Swoole's): multipart/form-data file parts go to files in upload_tmp_dir
    # ("" = the system's temporary directory), each at most upload_max_filesize bytes (0: only
    # package_max_length bounds them); ours: at most upload_max_files file parts per request.
    upload_tmp_dir: str = ""
    upload_max_filesize: int = field(default=0, metadata=_meta(0, 2**40))
    upload_max_files: int = field(default=100, metadata=_meta(1, 100000))
    # TLS (Swoole's): on when ssl_cert_file is set (PEM; the key in it unless ssl_key_file);
    # ssl_ciphers an OpenSSL cipher list for TLS 1.2 ("" = OpenSSL's default); client
    # certificates checked against the CAs in ssl_client_cert_file, required with
    # ssl_verify_peer.  Paths are relative to the config file.
    ssl_cert_file: str = ""
    ssl_key_file: str = ""
    ssl_ciphers: str = ""
    ssl_protocols: tuple[str, ...] = field(
        default=("TLSv1.2", "TLSv1.3"), metadata=_meta(choices=("TLSv1.2", "TLSv1.3"))
    )
    ssl_verify_peer: bool = False
    ssl_client_cert_file: str = ""
    # Connections and buffers.  Swoole: 8 MiB output buffer per connection.
    buffer_output_size: int = field(default=8 * 1024 * 1024, metadata=_meta(1024, 2**40))
    max_conn: int = field(default=10000, metadata=_meta(1, 1_000_000))
    socket_buffer_size: int = field(default=0, metadata=_meta(0, _MAX_INT))
    backlog: int = field(default=511, metadata=_meta(1, 65535))
    log_level: str = field(default="info", metadata=_meta(choices=LOG_LEVELS))

    @property
    def heartbeat(self) -> tuple[float, float]:
        """``(check_interval, idle_time)`` as Swoole derives them; ``(0, 0)`` when off."""
        interval, idle = self.heartbeat_check_interval, self.heartbeat_idle_time
        if interval and not idle:
            idle = 2 * interval
        elif idle and not interval:
            interval = idle / 2
        return interval, idle

    @property
    def request_grace(self) -> int:
        """``max_request_grace`` with Swoole's default applied."""
        if self.max_request_grace is not None:
            return self.max_request_grace
        return self.max_request // 2 if self.max_request > 10 else 0


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
# Settings of the whole server (its processes), set in [settings] only; every other one can
# differ per listener ([listen.settings]).
SERVER_WIDE = frozenset({
    "worker_num", "max_request", "max_request_grace", "reactor_stall_timeout",
    "task_worker_num", "task_max_request", "task_queue_max", "max_wait_time", "reload_async",
    "reload_on_change", "reload_on_change_paths", "log_level",
})  # fmt: skip
# Swoole settings this library does not have (yet): named as such, not taken for typos.
NOT_SUPPORTED = frozenset({
    "task_ipc_mode", "task_enable_coroutine",
    "task_tmpdir", "ssl_allow_self_signed", "ssl_verify_depth", "ssl_sni_certs",
    "open_websocket_protocol", "http_gzip_level", "http2_header_table_size",
    "http2_initial_window_size", "http2_max_frame_size", "http2_max_header_list_size",
    "open_mqtt_protocol", "open_redis_protocol", "reactor_num", "dispatch_mode",
    "dispatch_func", "daemonize", "log_file", "log_rotation", "pid_file", "user", "group",
    "chroot", "open_cpu_affinity", "cpu_affinity_ignore", "enable_coroutine", "max_coroutine",
    "hook_flags", "message_queue_key", "discard_timeout_request", "enable_reuse_port",
    "enable_delay_receive", "tcp_defer_accept", "tcp_fastopen", "request_slowlog_timeout",
    "request_slowlog_file", "http_parse_post", "http_parse_cookie", "http_parse_files",
    "input_buffer_size", "pipe_buffer_size", "send_yield",
})  # fmt: skip


def closest(name: str, valid: Any) -> str:
    """A ``"; did you mean X?"`` suffix for the closest of ``valid``, or ``""``."""
    match = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


def _check_type(name: str, value: Any, annotation: str) -> Any:
    kind = annotation.replace(" | None", "")
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind == "str" and isinstance(value, str):
        return value
    elif kind == "tuple[str, ...]":
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        kind = "a list of strings"
    raise ConfigError(f"setting {name} = {value!r}: expected {kind}, got {type(value).__name__}")


def _check_range(name: str, value: Any, meta: Mapping[str, Any], raw: Any) -> None:
    choices = meta.get("choices") or ()
    if choices and isinstance(value, tuple):
        if not value or any(v not in choices for v in value):
            raise ConfigError(f"setting {name} = {raw!r}: name one or more of {', '.join(choices)}")
    elif choices and value not in choices:
        raise ConfigError(f"setting {name} = {raw!r}: allowed values are {', '.join(choices)}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and hi is not None and not lo <= value <= hi:
        raise ConfigError(f"setting {name} = {raw!r}: allowed range is {lo} to {hi}")


def base_values(settings: Settings) -> dict[str, Any]:
    """``settings`` as the mapping :func:`make_settings` takes (what was set or defaulted)."""
    return {f: getattr(settings, f) for f in FIELDS if getattr(settings, f) is not None}


def make_settings(values: Mapping[str, Any] | None = None, **overrides: Any) -> Settings:
    """Validate ``values`` (and keyword ``overrides``) into a :class:`Settings`.

    Raises :class:`~tx_swoole.errors.ConfigError` for an unknown key, a wrong type or a value
    out of range, naming the key, the value and what is allowed.
    """
    merged = {**(values or {}), **overrides}
    clean: dict[str, Any] = {}
    for name, value in merged.items():
        spec = FIELDS.get(name)
        if spec is None:
            if name in NOT_SUPPORTED:
                raise ConfigError(
                    f"setting {name!r} is a Swoole setting tx_swoole does not support yet; "
                    "remove it from [settings]"
                )
            raise ConfigError(f"unknown setting {name!r}{closest(name, FIELDS)}")
        clean[name] = _check_type(name, value, str(spec.type))
        _check_range(name, clean[name], spec.metadata, value)
    if clean.get("package_eof") == "":
        raise ConfigError("setting package_eof = '': must not be empty")
    settings = Settings(**clean)
    if settings.open_eof_split and settings.open_length_check:
        raise ConfigError("settings open_eof_split and open_length_check: choose one framing")
    return settings
