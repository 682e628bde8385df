"""reload_on_change: a real master with two workers, its app edited on disk under load: the
graceful reload runs (0 failed) and serves the new code; a syntax error leaves the old workers
serving, with the traceback in the log; the fix reloads again."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import pytest

from tx_swoole.config import parse_config
from tx_swoole.errors import ConfigError
from tx_swoole.process.watcher import CodeWatcher, watch_targets

from .support import HTTPLoad, Twistd, write_config
from .test_multiprocess import ready_status, wait_until

APP = """
def handler(request, response):
    response.end("{text}")
"""


def get(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/")
    return conn.getresponse().read()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_edits_reload_under_load_and_a_syntax_error_keeps_serving(tmp_path: Path) -> None:
    app = tmp_path / "myapp.py"
    app.write_text(APP.format(text="one"))
    pidfile = tmp_path / "master.pid"
    cfg = write_config(tmp_path, {"type": "http", "port": 0, "app": "myapp:handler"},
                       {"worker_num": 2, "reload_on_change": True})  # fmt: skip
    with Twistd(cfg, f"--pidfile={pidfile}", cwd=tmp_path) as server:
        port = int(server.wait_for(rb"listening on 127.0.0.1:(\d+)")[0].group(1))
        ready_status(pidfile, 2)
        server.wait_for(rb"reload_on_change: watching")
        assert get(port) == b"one"
        with HTTPLoad(port, connections=8) as load:
            wait_until(lambda: load.ok > 100, timeout=20)
            app.write_text(APP.format(text="two"))
            server.wait_for(rb"myapp.py changed; reloading")
            server.wait_for(rb"reload to generation 2 finished", timeout=30)
            wait_until(lambda: get(port) == b"two", timeout=10)
            before = load.ok
            wait_until(lambda: load.ok > before + 100, timeout=20)
        assert load.failures == [] and load.refused == 0
        app.write_text("def handler(request, response:\n")  # a syntax error
        server.wait_for(rb"reload to generation 3 finished", timeout=30)
        assert b"SyntaxError" in server.output
        for _ in range(20):  # the old workers still serve
            assert get(port) == b"two"
        app.write_text(APP.format(text="three"))
        server.wait_for(rb"reload to generation 4 finished", timeout=30)
        wait_until(lambda: get(port) == b"three", timeout=10)
        (tmp_path / "notes.txt").write_text("not code")  # not watched: no reload
        (tmp_path / "__pycache__").mkdir(exist_ok=True)
        time.sleep(1.0)
        assert b"generation 5" not in server.output


def test_targets_and_matching(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "templates").mkdir()
    (tmp_path / "single.cfg").write_text("")
    targets = watch_targets(str(tmp_path), ["pkg", "templates/*.html", "single.cfg"])
    assert targets == [(str(tmp_path / "pkg"), "*.py"), (str(tmp_path / "templates"), "*.html"),
                       (str(tmp_path), "single.cfg")]  # fmt: skip
    watcher = CodeWatcher(None, targets, lambda path: None)
    assert watcher.matches(str(tmp_path / "pkg" / "a.py"))
    assert watcher.matches(str(tmp_path / "pkg" / "sub" / "b.py"))
    assert not watcher.matches(str(tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc"))
    assert not watcher.matches(str(tmp_path / "pkg" / "a.txt"))
    assert watcher.matches(str(tmp_path / "templates" / "x" / "page.html"))
    assert watcher.matches(str(tmp_path / "single.cfg"))
    assert not watcher.matches(str(tmp_path / "other.py"))
    assert watch_targets(str(tmp_path), []) == [(str(tmp_path), "*.py")]


def test_reload_on_change_needs_a_master() -> None:
    with pytest.raises(ConfigError, match="reload_on_change = true needs worker_num >= 1"):
        parse_config({"server": {"type": "http", "app": "a:b"},
                      "settings": {"worker_num": 0, "reload_on_change": True}})  # fmt: skip
