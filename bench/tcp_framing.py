"""CPU seconds to frame one large message arriving in reads of various sizes.

``python bench/tcp_framing.py`` feeds a 2 MiB message (256 KiB for one-byte reads) to the EOF
and the length-prefix framers in reads of 64 KiB, 1 KiB and 1 byte, and prints the CPU time
and the time per MiB: linear framers cost the same per MiB whatever the read size, up to the
per-call overhead of tiny reads.  ``OURS=DIR`` measures another checkout.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.environ.get("OURS", os.path.join(os.path.dirname(__file__), "..")))

from tx_swoole.protocols._framing import EOFFramer, LengthFramer  # noqa: E402


def cpu(framer: object, message: bytes, step: int) -> float:
    start = time.process_time()
    feed = framer.feed  # type: ignore[attr-defined]
    got = []
    for i in range(0, len(message), step):
        got += feed(message[i : i + step])
    assert got == [message], "message not framed"
    return time.process_time() - start


def main() -> None:
    print(f"{'framer':8} {'read':>7} {'size':>9} {'CPU s':>8} {'s per MiB':>10}")
    for step in (65536, 1024, 1):
        size = (2 << 20) if step > 1 else (256 << 10)
        body = b"m" * (size - 2)
        for name, framer, message in (
            ("eof", EOFFramer(b"\r\n", 4 << 20), body + b"\r\n"),
            ("length", LengthFramer("N", 0, 4, 4 << 20), LengthFramer.pack("N", body)),
        ):
            t = cpu(framer, message, step)
            print(f"{name:8} {step:7} {len(message):9} {t:8.3f} {t / (len(message) / 2**20):10.3f}")


if __name__ == "__main__":
    main()
