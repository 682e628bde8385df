"""Structured logging on :mod:`twisted.logger` with Swoole's levels.

Swoole has six levels (``debug``, ``trace``, ``info``, ``notice``, ``warning``, ``error``);
Twisted has five.  ``trace`` maps to Twisted's debug and ``notice`` to Twisted's info, with the
Swoole level kept in the event's ``swoole_level`` field, and text logs show it:
``[tx_swoole.tcp#notice]``, ``[tx_swoole.http#warning]``.  The ``log_level`` setting filters the
events of this library's loggers (:class:`SwooleLogger`), whatever observer twistd installed.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger, LogLevel

LEVELS = ("debug", "trace", "info", "notice", "warning", "error")
_RANK = {name: rank for rank, name in enumerate(LEVELS)}
_TWISTED_RANK = {
    LogLevel.debug: _RANK["debug"],
    LogLevel.info: _RANK["info"],
    LogLevel.warn: _RANK["warning"],
    LogLevel.error: _RANK["error"],
    LogLevel.critical: _RANK["error"],
}
_threshold = _RANK["info"]


def set_log_level(name: str) -> None:
    """Drop events of this library below the Swoole level ``name``.

    Raises ``ValueError`` for a name that is not one of :data:`LEVELS`.
    """
    global _threshold
    if name not in _RANK:
        raise ValueError(f"log_level={name!r} is not one of {', '.join(LEVELS)}")
    _threshold = _RANK[name]


def get_log_level() -> str:
    """The Swoole level currently in force."""
    return LEVELS[_threshold]


class SwooleLogger(Logger):
    """A Twisted :class:`~twisted.logger.Logger` that honours ``log_level``.

    Adds :meth:`notice` and :meth:`trace`, which emit at Twisted's info and debug levels with
    ``swoole_level`` set, so observers can still tell them apart.
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        swoole_level = kwargs.get("swoole_level")
        rank = _RANK[swoole_level] if swoole_level else _TWISTED_RANK[level]
        if rank < _threshold:
            return
        name = kwargs.setdefault("swoole_level", LEVELS[rank])
        # Text logs show [namespace#level]: with Swoole's level names (notice, trace,
        # warning), where users look for them.
        kwargs.setdefault("log_system", f"{self.namespace}#{name}")
        super().emit(level, format, **kwargs)

    def notice(self, format: str | None = None, **kwargs: Any) -> None:
        """Log at Swoole's NOTICE level (Twisted info)."""
        self.emit(LogLevel.info, format, swoole_level="notice", **kwargs)

    def trace(self, format: str | None = None, **kwargs: Any) -> None:
        """Log at Swoole's TRACE level (Twisted debug)."""
        self.emit(LogLevel.debug, format, swoole_level="trace", **kwargs)
