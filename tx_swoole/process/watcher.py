"""Reload on code change (``reload_on_change``): the master watches files with inotify and runs
the graceful reload when one changes.

:class:`CodeWatcher` watches what ``reload_on_change_paths`` names, relative to the config
file's directory (default: every ``*.py`` under it): a directory means the ``*.py`` files in
it and below, a file that file, a glob (``templates/*.html``) the files it matches below its
first wildcard.  Changes are debounced (:data:`SETTLE` seconds without another), so an
editor's save or a ``git checkout`` of many files is one reload.  A reload whose new code does
not boot (a syntax error) leaves the old workers serving, as any reload does, and the worker's
traceback is in the log.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import inotify
from twisted.python.filepath import FilePath

from tx_swoole._log import SwooleLogger

__all__ = ["SETTLE", "CodeWatcher", "watch_targets"]
log = SwooleLogger("tx_swoole.watcher")
SETTLE = 0.3  # seconds without another change before the reload starts
_MASK = inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO | inotify.IN_CREATE | inotify.IN_DELETE
_SKIP = ("__pycache__", ".git", ".hg", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".venv")


def watch_targets(base: str, entries: Iterable[str]) -> list[tuple[str, str]]:
    """``(directory, pattern)`` pairs for ``reload_on_change_paths`` entries (relative to
    ``base``): the pattern matches paths relative to the directory (``*`` spans ``/``)."""
    targets: list[tuple[str, str]] = []
    for entry in list(entries) or ["."]:
        path = os.path.normpath(os.path.join(base, entry))
        if any(c in entry for c in "*?["):
            parts = path.split(os.sep)
            first = next(i for i, p in enumerate(parts) if any(c in p for c in "*?["))
            root = os.sep.join(parts[:first]) or os.sep
            targets.append((root, os.sep.join(parts[first:])))
        elif os.path.isdir(path):
            targets.append((path, "*.py"))
        else:
            targets.append((os.path.dirname(path), os.path.basename(path)))
    return targets


class CodeWatcher:
    """Calls ``on_change(path)`` once changes under ``targets`` have settled.

    Resource handling: one inotify descriptor and a watch per directory (new directories are
    watched as they appear); :meth:`stop` releases them.
    """

    def __init__(self, reactor: Any, targets: list[tuple[str, str]],
                 on_change: Callable[[str], Any]) -> None:  # fmt: skip
        self.reactor = reactor
        self.targets = targets
        self.onChange = on_change
        self._notifier: inotify.INotify | None = None
        self._pending: Any = None
        self._changed = ""

    def start(self) -> None:
        self._notifier = notifier = inotify.INotify(reactor=self.reactor)
        notifier.startReading()
        for root, _ in self.targets:
            if os.path.isdir(root):
                notifier.watch(FilePath(root), mask=_MASK, autoAdd=True, recursive=True,
                               callbacks=[self._event])  # fmt: skip
            else:
                log.warn("reload_on_change: {root} is not a directory; not watched", root=root)
        log.info("reload_on_change: watching {targets}",
                 targets=", ".join(os.path.join(r, p) for r, p in self.targets))  # fmt: skip

    def stop(self) -> None:
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None

    def matches(self, path: str) -> bool:
        """True if ``path`` is one of the watched files."""
        if any(part in _SKIP for part in path.split(os.sep)):
            return False
        for root, pattern in self.targets:
            if path.startswith(root.rstrip(os.sep) + os.sep):
                if fnmatch.fnmatch(path[len(root.rstrip(os.sep)) + 1 :], pattern):
                    return True
        return False

    def _event(self, _watch: Any, filepath: FilePath[Any], mask: int) -> None:
        path = os.fsdecode(filepath.path)  # (inotify's paths are bytes)
        if not self.matches(path):
            return
        self._changed = path
        if self._pending is not None and self._pending.active():
            self._pending.reset(SETTLE)
        else:
            self._pending = self.reactor.callLater(SETTLE, self._settled)

    def _settled(self) -> None:
        self._pending = None
        log.info("reload_on_change: {path} changed; reloading", path=self._changed)
        self.onChange(self._changed)
