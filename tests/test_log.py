"""Swoole log levels on twisted.logger: the log_level setting filters our events."""

from __future__ import annotations

import pytest
from twisted.logger import LogLevel, capturedLogs

from tx_swoole._log import LEVELS, SwooleLogger, get_log_level, set_log_level

log = SwooleLogger("tests.log")


@pytest.fixture(autouse=True)
def restore_level():
    before = get_log_level()
    yield
    set_log_level(before)


def emit_all() -> list[tuple[str, LogLevel]]:
    with capturedLogs() as events:
        log.debug("d")
        log.trace("t")
        log.info("i")
        log.notice("n")
        log.warn("w")
        log.error("e")
    return [(e["swoole_level"], e["log_level"]) for e in events]


@pytest.mark.parametrize("level", LEVELS)
def test_log_level_keeps_that_level_and_above(level: str) -> None:
    """log_level = X drops the events below X and keeps the rest, Swoole's order."""
    set_log_level(level)
    kept = [name for name, _ in emit_all()]
    assert kept == list(LEVELS[LEVELS.index(level) :])


def test_notice_and_trace_map_to_twisted_levels() -> None:
    """NOTICE is Twisted info and TRACE Twisted debug, with the Swoole level kept."""
    set_log_level("debug")
    assert dict(emit_all()) == {
        "debug": LogLevel.debug, "trace": LogLevel.debug, "info": LogLevel.info,
        "notice": LogLevel.info, "warning": LogLevel.warn, "error": LogLevel.error,
    }  # fmt: skip


def test_unknown_level_refused() -> None:
    """An unknown level names the allowed ones."""
    with pytest.raises(ValueError, match="debug, trace, info, notice, warning, error"):
        set_log_level("loud")


def test_text_log_shows_swoole_level_names() -> None:
    """Twisted's text log format shows [namespace#notice], #trace and #warning for our events
    (not #info, #debug, #warn)."""
    from twisted.logger import formatEventAsClassicLogText

    set_log_level("debug")
    with capturedLogs() as events:
        log.notice("n")
        log.trace("t")
        log.warn("w")
        log.info("i")
    texts = [formatEventAsClassicLogText(e) for e in events]
    assert [t.split("] ")[0].split(" [")[1] for t in texts] == [
        "tests.log#notice", "tests.log#trace", "tests.log#warning", "tests.log#info"
    ]  # fmt: skip
