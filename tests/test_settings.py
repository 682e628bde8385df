"""Settings and config file validation: what a user sees when the config is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from tx_swoole.config import load_config, parse_config, resolve
from tx_swoole.errors import AppImportError, ConfigError
from tx_swoole.settings import make_settings


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"worker_nun": 2}, "unknown setting 'worker_nun'; did you mean worker_num?"),
        ({"heartbeat_idle": 2}, "did you mean heartbeat_idle_time?"),
        ({"worker_num": "2"}, "setting worker_num = '2': expected int, got str"),
        ({"worker_num": True}, "expected int, got bool"),
        ({"open_tcp_keepalive": 1}, "setting open_tcp_keepalive = 1: expected bool"),
        ({"backlog": 0}, "setting backlog = 0: allowed range is 1 to 65535"),
        ({"worker_num": -1}, "allowed range is 0 to 1024"),
        ({"log_level": "loud"}, "allowed values are debug, trace, info, notice, warning, error"),
        ({"package_length_type": "X"}, "setting package_length_type = 'X': allowed values"),
        ({"package_eof": ""}, "package_eof = '': must not be empty"),
        ({"open_eof_split": True, "open_length_check": True}, "choose one framing"),
    ],
)
def test_invalid_settings_name_key_value_and_range(values: dict, message: str) -> None:
    """A bad setting is refused with a message naming the key, the value and what is allowed."""
    with pytest.raises(ConfigError) as e:
        make_settings(values)
    assert message in str(e.value)


def test_defaults_are_swooles() -> None:
    """Unset settings take Swoole's defaults."""
    s = make_settings({})
    assert (s.max_wait_time, s.package_max_length, s.buffer_output_size) == (3, 2 << 20, 8 << 20)
    assert (s.tcp_keepidle, s.tcp_keepinterval, s.tcp_keepcount) == (3600, 60, 5)
    assert (s.http_header_max_length, s.max_conn, s.backlog) == (8192, 10000, 511)
    assert not s.open_tcp_keepalive and s.heartbeat == (0, 0)


@pytest.mark.parametrize(
    ("interval", "idle", "expected"),
    [(0, 0, (0, 0)), (5, 0, (5, 10)), (0, 10, (5, 10)), (2, 7, (2, 7))],
)
def test_heartbeat_derivation_follows_swoole(interval: float, idle: float, expected: tuple) -> None:
    """Idle defaults to 2x interval; idle alone enables the check at idle/2."""
    s = make_settings(heartbeat_check_interval=interval, heartbeat_idle_time=idle)
    assert s.heartbeat == expected


@pytest.mark.parametrize(("max_request", "grace"), [(0, 0), (10, 0), (11, 5), (1000, 500)])
def test_max_request_grace_default(max_request: int, grace: int) -> None:
    """max_request_grace defaults to max_request // 2 when max_request > 10."""
    assert make_settings(max_request=max_request).request_grace == grace


def test_int_accepted_for_float_settings() -> None:
    """Whole numbers are fine where seconds are floats."""
    assert make_settings(max_wait_time=5).max_wait_time == 5.0


GOOD = {"server": {"type": "tcp", "port": 0, "app": "mod:Proto"}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**GOOD, "setings": {}}, "unknown section 'setings'; did you mean settings?"),
        ({"settings": {}}, "the [server] table is missing"),
        (
            {"server": {"type": "sctp", "app": "a:b"}},
            "type = 'sctp': allowed values are http, tcp, websocket, udp",
        ),
        ({"server": {"app": "a:b", "port": 70000}}, "port = 70000: allowed range is 0 to 65535"),
        ({"server": {"app": "nocolon"}}, "app = 'nocolon': expected a 'module:attribute'"),
        ({"server": {"type": "tcp"}}, "[server] app is missing"),
        (
            {"server": {"app": "a:b", "hots": "x"}},
            "unknown key [server] 'hots'; did you mean host?",
        ),
        ({**GOOD, "events": {"worker_strat": "a:b"}}, "did you mean worker_start?"),
        ({**GOOD, "settings": {"max_con": 5}}, "did you mean max_conn?"),
        ({"server": {"type": "websocket"}}, "name a WebSocketProtocol subclass, or the functions"),
        (
            {"server": {"type": "websocket", "app": "a:B"}, "events": {"message": "a:m"}},
            "[server] app (a WebSocketProtocol subclass) or [events] message",
        ),
        ({**GOOD, "events": {"message": "a:m"}}, "[events] message is for a websocket listener"),
        ({**GOOD, "listen": {"port": 1}}, "listen must be an array of tables: write each one"),
        ({**GOOD, "listen": [{"app": "a:b"}]}, "[[listen]] #1 needs port (or path"),
        (
            {**GOOD, "listen": [{"app": "a:b", "port": 1, "prot": 2}]},
            "unknown key [[listen]] #1 'prot'; did you mean port?",
        ),
        ({**GOOD, "listen": [{"type": "tcp", "port": 1}]}, "[[listen]] #1 app is missing"),
        (
            {**GOOD, "listen": [{"app": "a:b", "port": 1, "settings": {"worker_num": 2}}]},
            "setting worker_num in [[listen]] #1: it is one for the whole server",
        ),
        (
            {**GOOD, "listen": [{"app": "a:b", "port": 1, "settings": {"backlog": 0}}]},
            "[[listen]] #1 settings: setting backlog = 0: allowed range is 1 to 65535",
        ),
        (
            {"server": {"app": "a:b", "port": 7000}, "listen": [{"app": "a:c", "port": 7000}]},
            "[[listen]] #1 listens on 127.0.0.1:7000, as [server] does",
        ),
        (
            {**GOOD, "listen": [{"type": "udp", "app": "a:c", "path": "x.sock"}]},
            "[[listen]] #1 type = 'udp' with a Unix socket path",
        ),
        (
            {**GOOD, "listen": [{"type": "websocket", "port": 1}]},
            "[[listen]] #1 app is missing: name a WebSocketProtocol subclass",
        ),
        ({"server": {"app": "a:h", "http_app": "a:h"}}, "http_app is for type = 'websocket'"),
    ],
)
def test_invalid_config_tables(data: dict, message: str) -> None:
    """Config file mistakes are named precisely."""
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert message in str(e.value)


def test_load_config_reads_toml(tmp_path: Path) -> None:
    """A valid file gives the server, settings and events it declares."""
    path = tmp_path / "c.toml"
    path.write_text(
        '[server]\ntype = "http"\nport = 0\napp = "m:h"\n[settings]\nworker_num = 0\n'
        '[events]\nworker_start = "m:start"\n'
    )
    config = load_config(str(path))
    assert (config.type, config.port, config.app) == ("http", 0, "m:h")
    assert config.settings.worker_num == 0 and config.events == {"worker_start": "m:start"}
    assert config.base_dir == str(tmp_path)


def test_load_config_bad_toml_and_missing_file(tmp_path: Path) -> None:
    """Unreadable and non-TOML files are config errors naming the file."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match="bad.toml is not valid TOML"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="cannot read config file .*nope.toml"):
        load_config(str(tmp_path / "nope.toml"))


def test_resolve_uses_config_dir(tmp_path: Path) -> None:
    """module:attribute is imported from the config file's directory."""
    (tmp_path / "resolve_me_mod.py").write_text("VALUE = 42\n")
    assert resolve("resolve_me_mod:VALUE", str(tmp_path)) == 42
    with pytest.raises(AppImportError, match="has no attribute 'NOPE'"):
        resolve("resolve_me_mod:NOPE", str(tmp_path))
    with pytest.raises(AppImportError, match="cannot import 'no_such_module_xyz'"):
        resolve("no_such_module_xyz:x", str(tmp_path))


@pytest.mark.parametrize("name", ["task_ipc_mode", "ssl_verify_depth", "http2_max_frame_size"])
def test_known_swoole_setting_not_supported_yet(name: str) -> None:
    """A Swoole setting we do not have yet says so, instead of a typo hint."""
    with pytest.raises(ConfigError, match="does not support yet") as info:
        make_settings({name: 1})
    assert "did you mean" not in str(info.value) and name in str(info.value)
