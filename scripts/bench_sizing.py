#!/usr/bin/env python3
"""Sizing benchmark: recognised live calls per worker process and per core, in answer mode and
in seat mode, measured here — and what a centre of 20 or 60 seats needs, scaled on paper.

    .venv/bin/python scripts/bench_sizing.py              # N = 2 and 4 calls in each mode
    .venv/bin/python scripts/bench_sizing.py --calls 4 8  # choose N

Each level is ``scripts/bench_live.run_level``: real SIPp callers (three Korean fixture
utterances with pauses, 8 kHz A-law, arriving 2 a second) → real SIP workers (pjsua2, one
process each) → live Vosk recognition (the Korean test model, threads mode) → the router. In
**answer mode** a worker holds 2 conversations (caller + a reserved transfer leg, of pjsua2's 4);
in **seat mode** 1 (caller + seat + a reserved transfer leg), and the seat's leg is recognised
too: each call rings a seat of a ``sip.seats`` list — real pjsua2 peers that answer and play the
same fixture audio into the call (an operator who talks as much as the caller: the worst case for
recognition). CPU is the supervisor's and the workers' processes' (user + system) over the
calls' wall time; memory is the workers' resident size at start (each is a pjsua2 endpoint) and
the supervisor's growth per call.

Scaling on paper (printed under the table): a centre of S seats with all S on a call is S
conversations; workers = S / conversations per worker (+1 spare); cores = S × CPU per
conversation ÷ 0.6 (keep 40 % for the operators' consoles, the database, bursts and the
recognition latency goal); memory = supervisor + workers × worker RSS + S × per-call growth.
The Korean test model is smaller and cheaper than ``vosk-model-small-cn-0.22`` is for Chinese:
a centre must repeat the run with its model (``--model``) before buying machines.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import cpu_model, table  # noqa: E402
from bench_live import call_audio, run_level  # noqa: E402

from fenliu.asr.engine import VoskEngine  # noqa: E402
from fenliu.asr.models import resolve_model  # noqa: E402
from fenliu.router import Router, parse_rules  # noqa: E402
from tests.conftest import minimal_rules  # noqa: E402
from tests.sip.peers import PeerProc  # noqa: E402

HEADROOM = 0.6  # the share of a core's time recognition may take


def one_level(mode: str, n: int, model: str) -> dict:
    """One level in this (fresh) process: the supervisor's memory is that level's alone."""
    engine = VoskEngine(resolve_model(model))
    router = Router(parse_rules(minimal_rules(decisive="전기", strong="회사", weak="연결", danger="살려",
                                              negator="안", name="테스트", version="bench")))
    with tempfile.TemporaryDirectory(prefix="fenliu-bench-sizing-") as tmp:
        work = Path(tmp)
        audio, dur = call_audio(work, "ko")
        peers = [PeerProc("--answer", "200", "--play", str(work / "call.wav"), user=f"seat{i + 1:02d}")
                 for i in range(n)] if mode == "seat" else []
        try:
            r = run_level(n, "threads", engine, router, audio, dur, work, seats=tuple(p.uri for p in peers))
        finally:
            for p in peers:
                p.stop()
    return {**r, "dur": dur}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--model", default="ko-test")
    ap.add_argument("--centres", type=int, nargs="+", default=[20, 60], help="seat counts to scale to")
    ap.add_argument("--one", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)  # a level, in a child
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(one_level(a.one[0], int(a.one[1]), a.model)), flush=True)
        return 0
    rows, results = [], {}
    dur = 0.0
    for mode in ("answer", "seat"):
        for n in a.calls:
            out = subprocess.run([sys.executable, __file__, "--one", mode, str(n), "--model", a.model],
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
            dur = r["dur"]
            results[(mode, n)] = r
            per_worker = math.ceil(n / r["workers"])
            rows.append([mode, n, r["calls"], r["workers"], per_worker, f"{r['cpu_per_call']:.3f}",
                         f"{1 / r['cpu_per_call']:.1f}", f"{r['worker_rss']:.0f}", f"{r['supervisor_rss']:.0f}",
                         f"{r['mem_per_call']:.0f}", f"{r['p95']:.2f}", r["dropped"]])
            print(" | ".join(str(x) for x in rows[-1]), file=sys.stderr, flush=True)
    base = results[("answer", a.calls[0])]["cpu_per_call"]
    for row, key in zip(rows, results, strict=True):
        row.append(f"{results[key]['cpu_per_call'] / base:.2f}x")
    table(f"Recognised live calls per worker and per core ({cpu_model() or 'CPU'}, {os.cpu_count()} cores, "
          f"model {a.model}, threads mode, {dur:.1f} s calls; baseline: answer mode N={a.calls[0]})",
          ["mode", "N", "calls seen", "workers", "calls/worker", "cores per call", "calls per core",
           "worker RSS MB", "supervisor RSS MB", "MB per call", "final p95 s", "frames dropped", "CPU vs baseline"],
          rows)
    sizing = []
    for mode, per_worker in (("answer", 2), ("seat", 1)):
        biggest = results[(mode, max(a.calls))]
        for seats in a.centres:
            workers = math.ceil(seats / per_worker) + 1
            cores = seats * biggest["cpu_per_call"] / HEADROOM
            memory = biggest["supervisor_rss"] + workers * biggest["worker_rss"] + seats * max(biggest["mem_per_call"], 0)
            sizing.append([mode, seats, workers, f"{cores:.1f}", f"{max(2, math.ceil(cores / 2))} × 2-core or "
                           f"{max(1, math.ceil(cores / 8))} × 8-core", f"{memory / 1024:.1f}"])
    table(f"Sizing on paper from the N={max(a.calls)} rows (all seats on a call; cores at {HEADROOM:.0%} busy; "
          f"+1 spare worker; add a second instance of the same size for redundancy)",
          ["mode", "seats", "workers", "cores", "machines (each instance)", "memory GB"], sizing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
