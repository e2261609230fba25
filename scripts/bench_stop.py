#!/usr/bin/env python3
"""How long the main job takes to stop, and whether it leaves anything behind.

Runs `fenliu demo --live` (no Chinese model: reference transcripts) several times and stops it
with Ctrl-C (SIGINT to its process group, as a terminal does) or SIGTERM (to the demo alone, as a
service manager does), either in the middle of a call (the caller is talking and the service
hears it) or — the baseline, in the same run — while it is idle before its first call. Prints the
seconds from the signal to the demo's exit (p50 / max), the ratio to the idle baseline, and how
many processes it had started were still alive afterwards.

    .venv/bin/python scripts/bench_stop.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.commands.test_live_demo import Demo, alive, descendants  # noqa: E402


def one(sig: str, in_call: bool) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="fenliu-bench-stop-") as tmp:
        demo = Demo(Path(tmp))
        try:
            if in_call:
                demo.wait_for("通话中")
                demo.wait_for("参考文本")
            else:
                demo.wait_for("登录 login:")
            started = descendants(demo.proc.pid)
            t0 = time.monotonic()
            if sig == "SIGINT":
                os.killpg(demo.proc.pid, signal.SIGINT)
            else:
                demo.proc.send_signal(signal.SIGTERM)
            demo.proc.wait(60)
            took = time.monotonic() - t0
            return took, sum(1 for p in started if alive(p))
        finally:
            demo.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    rows = []
    for sig in ("SIGINT", "SIGTERM"):
        base = [one(sig, False) for _ in range(args.runs)]
        call = [one(sig, True) for _ in range(args.runs)]
        b50 = statistics.median(t for t, _ in base)
        for label, runs in (("idle (baseline)", base), ("mid-call", call)):
            ts = [t for t, _ in runs]
            rows.append((sig, label, statistics.median(ts), max(ts), statistics.median(ts) / b50,
                         sum(n for _, n in runs)))
    print(f"{'signal':8} {'when':16} {'p50 s':>7} {'max s':>7} {'× idle':>7} {'left behind':>12}")
    for sig, label, p50, mx, ratio, left in rows:
        print(f"{sig:8} {label:16} {p50:7.2f} {mx:7.2f} {ratio:7.2f} {left:12d}")
    print(f"({args.runs} runs each; 'left behind' counts processes the demo started that were alive after it exited)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
