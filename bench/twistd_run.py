"""``twistd -n swoole -c CONFIG`` as the benchmarks start it (quiet, bench/ on the path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def twistd(config: Path, **env: str) -> subprocess.Popen[bytes]:
    """A quiet server process for ``config``; ``env`` added to its environment."""
    return subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "swoole", "-c", str(config)],
        cwd=HERE, env={**os.environ, "PYTHONPATH": str(HERE), **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
