#!/usr/bin/env python3
"""Soak: many short SIPp calls through one SIP worker, in batches; after each batch one row of
what must stay flat (the long form of tests/sip/test_bad_input.py's soak test).

    python scripts/soak.py --calls 1000                    # one call at a time, 600 ms each
    python scripts/soak.py --calls 1000 --concurrent 2 --talk-ms 1500

Every call must keep its audio (at least 0.5 s of caller frames reach the supervisor's side),
and the worker's memory and file descriptors must stay bounded: measured after the first batch
(allocations that happen once), the run fails if RSS grows by more than 50 MB or the open fds
by more than 10. Exit status 0 when all of that held; 1 otherwise, with the reasons.

Needs sipp and sox.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import table  # noqa: E402  (scripts/bench.py, this folder)

from fenliu.sip import protocol as P  # noqa: E402
from fenliu.sip.link import WorkerLink  # noqa: E402
from tests.conftest import FIXTURES, free_port  # noqa: E402
from tests.sip.sipp import alaw_file, caller_scenario, run_sipp  # noqa: E402

WAV = FIXTURES / "ko" / "ko-01-greeting.wav"
MIN_FRAMES = 25  # 0.5 s of 20 ms frames
MAX_RSS_GROWTH_MB = 50
MAX_FD_GROWTH = 10
HEADER = ["calls", "failed", "short audio", "min frames", "worker RSS MB", "open fds", "degraded", "batch s"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def sipp_failed(stdout: str) -> int | None:
    """SIPp's own count of failed calls (the cumulative column of its last screen)."""
    hits = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", stdout)
    return int(hits[-1]) if hits else None


class Soak:
    def __init__(self, talk_ms: int, concurrent: int, rate: int, work: Path) -> None:
        self.talk_ms = talk_ms
        self.concurrent = concurrent
        self.rate = rate
        self.work = work
        self.audio = alaw_file(WAV, work)
        self.frames: dict[int, int] = defaultdict(int)  # slot -> caller frames received here
        self.lock = threading.Lock()
        self.link = WorkerLink.loopback("soak", free_port(2), free_port(2) // 2 * 2, on_frame=self.on_frame,
                                        users=("110",))
        self.calls = 0

    def on_frame(self, slot: int, leg: int, seq: int, pcm: bytes) -> None:
        if leg == P.Leg.CALLER:
            with self.lock:
                self.frames[slot] += 1

    def batch(self, calls: int) -> dict[str, float]:
        link = self.link
        t0 = time.monotonic()
        n = link.mark()
        # SIPp's -timeout bounds the whole run: the calls one after another, plus set-up time
        budget = 60 + calls * (self.talk_ms / 1000 + 1.0) / self.concurrent
        r = run_sipp(caller_scenario(self.audio, talk_ms=self.talk_ms), link.sip_port, self.work, calls=calls,
                     rate=self.rate, limit=self.concurrent, timeout=budget)
        failed = sipp_failed(r.stdout)
        if failed is None:  # no statistics screen: count what the worker saw instead
            failed = calls if r.returncode != 0 else 0
        facts = link.facts(since=n)
        if any(isinstance(f, P.WorkerLost) for f in facts):
            raise SystemExit("the SIP worker died during the soak")
        started = [f for f in facts if isinstance(f, P.CallStarted)]
        try:  # every conversation that started must end
            link.wait(lambda f: isinstance(f, P.CallEnded), timeout=30, since=n, nth=len(started))
        except TimeoutError:
            pass
        facts = link.facts(since=n)
        ended = [f for f in facts if isinstance(f, P.CallEnded)]
        failed = max(failed, len(started) - len(ended), calls - len(started))
        received = []
        for e in ended:
            try:  # all of a call's frames are in once its end-of-audio marker came in
                link.wait_audio_closed(e.slot, timeout=5)
            except TimeoutError:
                pass
            with self.lock:
                received.append(self.frames.pop(e.slot, 0))
            link.audio_closed.discard(e.slot)  # slots are reused after 65536 calls
        self.calls += calls
        pid = link.ready.pid
        return {
            "calls": self.calls,
            "failed": failed,
            "short": sum(1 for x in received if x < MIN_FRAMES),
            "min_frames": min(received, default=0),
            "rss": rss_mb(pid),
            "fds": open_fds(pid),
            "degraded": sum(1 for f in facts if isinstance(f, P.CallDegraded)),
            "seconds": time.monotonic() - t0,
        }


def row(m: dict[str, float]) -> list[object]:
    return [m["calls"], m["failed"], m["short"], m["min_frames"], f"{m['rss']:.1f}", m["fds"], m["degraded"],
            f"{m['seconds']:.0f}"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--concurrent", type=int, default=1, help="calls up at once (SIPp's -l)")
    ap.add_argument("--talk-ms", type=int, default=600, help="how long each caller talks before its BYE")
    ap.add_argument("--batch", type=int, default=100, help="calls between two measurements")
    ap.add_argument("--rate", type=int, default=20, help="new calls per second at most (SIPp's -r)")
    a = ap.parse_args(argv)
    if a.calls < 1 or a.batch < 1 or a.concurrent < 1:
        ap.error("--calls, --batch and --concurrent must be at least 1")
    if a.talk_ms < MIN_FRAMES * 20 + 100:
        print(f"note: calls of {a.talk_ms} ms cannot carry {MIN_FRAMES * 20} ms of audio: every call will count "
              f"as short", flush=True)

    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="fenliu-soak-") as tmp:
        soak = Soak(a.talk_ms, a.concurrent, a.rate, Path(tmp))
        ready = soak.link.start()
        print(f"worker {ready.worker} pid {ready.pid} on 127.0.0.1:{ready.sip_port} (capacity {ready.capacity}); "
              f"{a.calls} calls of {a.talk_ms} ms, {a.concurrent} at a time, rows every {a.batch}", flush=True)
        print("  " + " | ".join(HEADER), flush=True)
        rc_worker: int | None = None
        try:
            left = a.calls
            while left > 0:
                k = min(a.batch, left)
                m = soak.batch(k)
                rows.append(m)
                left -= k
                print("  " + " | ".join(str(c).rjust(len(h)) for c, h in zip(row(m), HEADER, strict=True)),
                      flush=True)
        finally:
            rc_worker = soak.link.stop()

    table(f"Soak: {a.calls} calls of {a.talk_ms} ms through one worker, {a.concurrent} at a time", HEADER,
          [row(m) for m in rows])
    problems = []
    failed = sum(m["failed"] for m in rows)
    short = sum(m["short"] for m in rows)
    if failed:
        problems.append(f"{failed} call(s) failed")
    if short:
        problems.append(f"{short} call(s) lost audio (< {MIN_FRAMES * 20} ms of caller frames)")
    first, last = rows[0], rows[-1]
    peak_rss = max(m["rss"] for m in rows)
    peak_fds = max(m["fds"] for m in rows)
    if peak_rss - first["rss"] > MAX_RSS_GROWTH_MB:
        problems.append(f"worker RSS grew {peak_rss - first['rss']:.1f} MB after the first batch "
                        f"(limit {MAX_RSS_GROWTH_MB} MB)")
    if peak_fds - first["fds"] > MAX_FD_GROWTH:
        problems.append(f"worker fds grew by {peak_fds - first['fds']} after the first batch (limit {MAX_FD_GROWTH})")
    if rc_worker != 0:
        problems.append(f"the worker did not shut down cleanly (exit status {rc_worker})")
    print(f"\nRSS {first['rss']:.1f} -> {last['rss']:.1f} MB, fds {first['fds']} -> {last['fds']} "
          f"(after the first batch -> at the end)")
    if problems:
        print("SOAK FAILED: " + "; ".join(problems))
        return 1
    print("SOAK OK: every call kept its audio; memory and file descriptors stayed bounded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
