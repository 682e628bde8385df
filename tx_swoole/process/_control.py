"""Sans-IO master <-> worker control messages: one JSON object per line.

Worker → master: ``ready`` (serving), ``boot_failed`` (with the error), ``stats``
(connections, requests), ``recycle`` (``max_request`` reached).  Master → worker: ``drain``
(stop accepting, finish, exit), with ``final`` set on shutdown (accept what is queued first).
No Twisted import here.
"""

from __future__ import annotations

import json
from typing import Any

MAX_LINE = 64 * 1024  # a control line longer than this is a bug or garbage: dropped


def encode(kind: str, /, **fields: Any) -> bytes:
    """One message as a JSON line."""
    return json.dumps({"type": kind, **fields}, separators=(",", ":")).encode() + b"\n"


class LineDecoder:
    """Splits a byte stream into JSON messages; bad or oversized lines are skipped."""

    __slots__ = ("_buf", "errors")

    def __init__(self) -> None:
        self._buf = b""
        self.errors = 0

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Return the complete messages in ``data`` (plus what was buffered)."""
        buf = self._buf + data
        *lines, self._buf = buf.split(b"\n")
        if len(self._buf) > MAX_LINE:
            self._buf = b""
            self.errors += 1
        out = []
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                self.errors += 1
                continue
            if isinstance(message, dict) and isinstance(message.get("type"), str):
                out.append(message)
            else:
                self.errors += 1
        return out
