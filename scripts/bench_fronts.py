#!/usr/bin/env python3
"""Fronts benchmark: calls per second through one `fenliu front` and through two, over the same
two instances — does a second front (the redundancy of issue 21) cost the call path anything?

    .venv/bin/python scripts/bench_fronts.py                 # 60 calls at 6/s per row
    .venv/bin/python scripts/bench_fronts.py --calls 120 --rate 10

Set-up: two real `fenliu serve` (two SIP workers each, SQLite stores, the Korean test model in
threads mode; the callers send no audio) and one or two real `fenliu front` (Kamailio) over all
four workers. SIPp callers (``tests.sip.sipp_seat.run_caller``: INVITE → 200 → 300 ms → BYE),
``--calls`` per row at ``--rate`` calls per second in all — through one front, or split half and
half over two fronts at the same time. Answer time = INVITE sent → 200 received (SIPp's message
trace, µs). The baseline row is one front; "× baseline" compares the p95 answer time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import cpu_model, table  # noqa: E402

from tests.conftest import free_port  # noqa: E402
from tests.sip.sipp_seat import CallerRun, run_caller  # noqa: E402
from tests.sip.test_two_instances import WORKERS, Proc, event, serve  # noqa: E402


def pct(v: list[float], q: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))] if v else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=60)
    ap.add_argument("--rate", type=float, default=6.0, help="calls per second in all")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="fenliu-bench-fronts-") as tmp:
        work = Path(tmp)
        (ia, a_ports), (ib, b_ports) = serve(work, "a"), serve(work, "b")
        fronts: list[Proc] = []
        try:
            for inst in (ia, ib):
                inst.wait_for(event("ready"), count=WORKERS, timeout=120)
            instances = f"127.0.0.1:{a_ports[0]}-{a_ports[-1]},127.0.0.1:{b_ports[0]}-{b_ports[-1]}"
            ports = [free_port(2), free_port(2)]
            for port in ports:
                f = Proc([sys.executable, "-m", "fenliu", "front", "--port", str(port), "--instances", instances],
                         {**os.environ})
                f.wait_for(lambda x: x.startswith("fenliu front: udp:"), timeout=30)
                fronts.append(f)
            results: dict[str, list[CallerRun]] = {}
            results["one front"] = [run_caller(ports[0], work, calls=a.calls, rate=a.rate, talk_ms=300,
                                               timeout=120, name="one")]
            box: dict[int, CallerRun] = {}
            threads = [threading.Thread(target=lambda i=i: box.setdefault(i, run_caller(
                ports[i], work, calls=a.calls // 2, rate=a.rate / 2, talk_ms=300, timeout=120, name=f"two-{i}")))
                for i in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(200)
            results["two fronts (half each)"] = [box[0], box[1]]
        finally:
            for f in fronts:
                f.stop()
            for inst in (ia, ib):
                inst.stop()
    base = None
    for label, runs in results.items():
        answer = [ms for r in runs for ms in r.answer_ms]
        answered = sum(len(r.answered_by) for r in runs)
        sent = a.calls if label == "one front" else 2 * (a.calls // 2)
        p95 = pct(answer, 0.95)
        base = base or p95
        rows.append([label, f"{a.rate:g}", f"{answered}/{sent}", f"{statistics.median(answer):.1f}",
                     f"{p95:.1f}", f"{max(answer):.1f}", f"{p95 / base:.2f}"])
    print(f"\nmachine: {cpu_model() or 'CPU'}, {os.cpu_count()} cores")
    table(f"Calls through the front(s) to two instances (4 workers), {a.calls} calls per row, INVITE → 200",
          ["path", "calls/s", "answered", "p50 ms", "p95 ms", "max ms", "p95 × one front"], rows)
    return 0 if all(r[2].split("/")[0] == r[2].split("/")[1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
