#!/usr/bin/env python3
"""Call-setup delay: what fenliu adds between a 110 caller and the operator seat.

    python scripts/bench_setup.py              # 50 calls per path
    python scripts/bench_setup.py --calls 200

A SIPp caller dials a SIPp seat (answers at once: 180 then 200) by four paths, one call at a time:
  direct        caller -> seat (the baseline)
  front/open    caller -> Kamailio front in fail-open (its worker is down) -> seat
  worker        caller -> fenliu SIP worker, B2BUA seat mode -> seat
  front+worker  caller -> Kamailio front -> fenliu worker (seat mode) -> seat (production shape)
and the caller's own clock measures INVITE -> 180 and INVITE -> 200: microsecond timestamps of
SIPp's message trace (SIPp's rtd timers, which tick in whole milliseconds, are shown beside as a
check). Through a worker the 180 is the worker's own (it rings the caller, then dials the seat),
so INVITE -> 200 is the figure that includes the seat. Needs kamailio, sipp. Loopback only: a
real network adds its round trips to every path alike.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import table  # noqa: E402  (scripts/bench.py, this folder)

from fenliu.sip.front.kamailio import KamailioFront  # noqa: E402
from fenliu.sip.link import WorkerLink  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.sip.sipp_seat import SippSeat, run_caller  # noqa: E402


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]


def dead_port() -> int:
    return free_port(2)  # nothing listens there: a worker that is down


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=50, help="calls per path (default 50)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fenliu-bench-setup-") as tmp:
        return run(args.calls, Path(tmp))


def run(n: int, work: Path) -> int:
    seat = SippSeat(work)
    cleanup = []
    results = {}
    try:
        def measure(name: str, port: int, rate: float = 10) -> None:
            r = run_caller(port, work, calls=n, rate=rate, limit=1, talk_ms=50, need_ring=True,
                           timeout=max(60, n * 2), name=name.replace("/", "-").replace("+", "-"))
            results[name] = r
            print(f"  {name}: {len(r.answer_ms)}/{n} answered (rc {r.returncode})", file=sys.stderr)

        print("measuring …", file=sys.stderr)
        measure("direct", seat.port)

        # fail-open: the front's only worker is down; wait until the front has marked it so
        # (its own log line, from the OPTIONS probes), then every call goes straight to the seat
        front = KamailioFront("127.0.0.1", free_port(2), [("127.0.0.1", dead_port())], fallback_uri=seat.uri)
        front.start()
        cleanup.append(front.stop)
        front.wait_log(lambda x: x.startswith("worker-down"), timeout=15)
        measure("front/open", front.port)

        # B2BUA seat mode: one conversation per worker (caller, seat, a leg kept for transfer),
        # so calls go one at a time with a pause for the worker to tear the last one down
        worker = WorkerLink.loopback("bench", free_port(2), free_port(2) // 2 * 2, seat_uri=seat.uri)
        worker.start()
        cleanup.append(worker.stop)
        measure("worker", worker.sip_port, rate=4)

        both = KamailioFront("127.0.0.1", free_port(2), [("127.0.0.1", worker.sip_port)], fallback_uri=seat.uri)
        both.start()
        cleanup.append(both.stop)
        measure("front+worker", both.port, rate=4)
        failopen = [x for x in both.lines() if x.startswith("failopen")]
    finally:
        for stop in reversed(cleanup):
            stop()
        seat.stop()

    base = pct(results["direct"].answer_ms, 0.5)
    rows = []
    for name, r in results.items():
        a50 = pct(r.answer_ms, 0.5)
        rows.append([name, f"{len(r.answer_ms)}/{n}",
                     f"{pct(r.ring_ms, 0.5):.2f}", f"{pct(r.ring_ms, 0.95):.2f}",
                     f"{a50:.2f}", f"{pct(r.answer_ms, 0.95):.2f}", f"{a50 / base:.1f}×", f"{a50 - base:+.2f}",
                     f"{pct(r.rtd_ring_ms, 0.5):.0f} / {pct(r.rtd_answer_ms, 0.5):.0f}"])
    table(f"Call setup, {n} calls per path, one at a time (ms; caller's clock; baseline = direct)",
          ["path", "answered", "→180 p50", "→180 p95", "→200 p50", "→200 p95", "→200 ×base", "→200 added",
           "SIPp rtd p50 180/200"], rows)
    print("\n  →180 through a worker is the worker's own 180 (sent before it dials the seat).")
    if failopen:
        print(f"  note: {len(failopen)} front+worker call(s) failed open to the seat (worker busy tearing down)")
    return 0 if all(len(r.answer_ms) == n for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
