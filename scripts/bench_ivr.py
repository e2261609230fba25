#!/usr/bin/env python3
"""IVR front-desk benchmark: barge-in and the one-key transfer on real calls, prompt making at
load, and the flow runner's own cost. One command, Markdown tables on stdout, each measure next
to a baseline measured in the same run.

    .venv/bin/python scripts/bench_ivr.py                    # everything, 10 rounds each
    .venv/bin/python scripts/bench_ivr.py --rounds 20        # more calls / builds per measure
    .venv/bin/python scripts/bench_ivr.py --parts prompts runner   # no calls (no SIP peers)

1. Barge-in, on real calls on 127.0.0.1: the supervisor (threads mode, no ASR engine: no speech
   is needed) with its real pjsua2 SIP worker and the IVR desk, a pjsua2 caller peer and a
   pjsua2 hotline peer (``tests/sip/peers.py``). The flow (written by this script): an 8 s tone
   ``play`` → a ``collect`` menu (key 1) → ``transfer`` to the hotline 12345. The caller presses
   1 ``--key-at`` s into the prompt. Measured on the bus (a subscriber stamping every worker fact
   with ``time.perf_counter()``): the ``Dtmf`` fact → the prompt's ``PromptDone(interrupted=True)``.
   Baseline, the same call to a flow with ``barge_in = false``: the key cannot stop the prompt,
   the caller waits for its end (``Dtmf`` → ``PromptDone(interrupted=False)``), then presses 1
   again in the menu. Caller side: the caller peer's own clock when it sent the key → the moment
   the prompt's tone stops in what it recorded (the recording is placed on the clock by the
   peer's ``media`` event, when recording starts).
2. Key → hotline: ``Dtmf`` → the IVR's ``IvrStep`` (the flow decided) → ``LegDialing`` (the
   worker dials the hotline) → ``TransferUpdate`` bridged / completed (the hotline peer answers at
   once), for the key typed ahead during the prompt (barge-in calls) and the key pressed in the
   menu (baseline calls); and the caller hearing the "connecting" prompt.
3. Prompt making at load (no calls): ``PromptCache.build_all`` of the shipped front desk's
   prompts (with the default targets' offer fragments) into an empty cache directory (espeak-ng
   for every text) vs the same directory again (a restart: everything reused); and ``concat`` of
   an offer menu (4 fragments) as a call's first menu (new file) vs later calls (cached).
4. The flow runner (pure Python): scripted front-desk calls (welcome, speech, the real router's
   decision, ticks every 100 ms as ``IvrDesk`` does, offer, key, transfer or queue) — the runner's
   own time per call and inputs (steps) per second, against the router's ``decide()`` on the same
   calls' words (the baseline: the IVR's logic should be negligible next to it).

Percentiles are nearest-rank (with 10 rounds p95 is the slowest round). Every process the script
starts (the worker, the peers, espeak-ng) is stopped on exit, Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import numpy as np  # noqa: E402
from bench import cpu_model  # noqa: E402  (scripts/bench.py, this folder)

from fenliu.bus import EventBus, WorkerFact  # noqa: E402
from fenliu.ivr_flows import prompts as prompts_mod  # noqa: E402
from fenliu.ivr_flows.flow import load_flow  # noqa: E402
from fenliu.ivr_flows.prompts import PromptCache, PromptSource, duration  # noqa: E402
from fenliu.ivr_flows.runner import FlowRun, PlayPrompts  # noqa: E402
from fenliu.router import Router  # noqa: E402
from fenliu.service.ivr import IvrDesk, all_targets, flow_path  # noqa: E402
from fenliu.service.ivr import load as load_ivr  # noqa: E402
from fenliu.settings import load_settings  # noqa: E402
from fenliu.sip import protocol as P  # noqa: E402
from tests.conftest import free_port, rtp_block, tone  # noqa: E402
from tests.sip.peers import PeerProc  # noqa: E402

# -- helpers -------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]


def ms(x: float) -> str:
    if x != x:  # nan
        return "-"
    v = x * 1000
    return f"{v:.1f}" if abs(v) < 10 else f"{v:.0f}"


def us(x: float) -> str:
    if x != x:
        return "-"
    v = x * 1e6
    return f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"


def p50_p95(values: list[float], fmt: Callable[[float], str] = ms) -> str:
    return f"{fmt(statistics.median(values)) if values else '-'} / {fmt(pct(values, 0.95))}"


def ratio(base: list[float], ours: list[float]) -> float:
    if not base or not ours:
        return float("nan")
    b, o = statistics.median(base), statistics.median(ours)
    return b / o if o > 0 else float("inf")


def md_table(title: str, header: list[str], rows: Sequence[Sequence[object]], note: str = "") -> None:
    print(f"\n**{title}**\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    if note:
        print(f"\n{note}")
    sys.stdout.flush()


# -- the processes this script starts, stopped whatever happens ---------------------------------------

PEERS: list[PeerProc] = []
DESKS: list[Desk] = []


class Peer(PeerProc):
    """A PeerProc registered for clean-up as soon as its process exists (its __init__ waits for
    the peer's ``ready`` right after starting it: a Ctrl-C there still stops it)."""

    def wait(self, pred: Any, timeout: float = 15.0, since: int = 0) -> dict:
        if self not in PEERS:
            PEERS.append(self)
        return super().wait(pred, timeout, since)

    def stop(self) -> None:
        super().stop()
        if self in PEERS:
            PEERS.remove(self)

    def events_of(self, kind: str, since: int = 0) -> list[dict]:
        self.mark()
        return [e for e in self.seen[since:] if e["event"] == kind]


def my_children() -> list[int]:
    """Our own child processes still running (by /proc's parent pid)."""
    me, out = os.getpid(), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z":
            out.append(int(d.name))
    return out


def cleanup() -> None:
    for desk in list(DESKS):
        try:
            desk.stop()
        except Exception as e:  # noqa: BLE001 - go on stopping the others
            log(f"clean-up: desk: {e}")
    for peer in list(PEERS):
        try:
            peer.stop()
        except Exception as e:  # noqa: BLE001
            log(f"clean-up: peer: {e}")
    left = my_children()  # e.g. a worker whose start was interrupted: ours, stopped by pid
    for pid in left:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if p in my_children()]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in left:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -- 1 + 2: real calls -----------------------------------------------------------------------------

FLOW = """
[flow]
name = "bench_{name}"
start = "welcome"

[prompts]
welcome = {{ wav = "welcome.wav" }}
menu = {{ wav = "menu.wav" }}
connecting = {{ wav = "connecting.wav" }}
wait = {{ wav = "wait.wav" }}

[states.welcome]
do = "play"
prompt = "welcome"
barge_in = {barge_in}
next = "menu"

[states.menu]
do = "collect"
prompt = "menu"
timeout = 15
branches = {{ "1" = "hotline" }}
no_input = "queue"

[states.hotline]
do = "transfer"
target = "12345"
prompt = "connecting"
failed = "queue"

[states.queue]
do = "queue"
prompt = "wait"
"""

HZ = {"welcome": 700.0, "menu": 1100.0, "connecting": 450.0, "wait": 1500.0,
      "hotline": 1800.0}  # the last one is played by the hotline peer when it answers


@dataclass
class Seen:
    i: int
    perf: float
    wall: float
    fact: P.Fact


class Recorder:
    """The first bus subscriber: every worker fact (and the IVR's steps) with its arrival time."""

    def __init__(self) -> None:
        self.items: list[Seen] = []
        self.cv = threading.Condition()

    def __call__(self, item: Any) -> None:
        perf, wall = time.perf_counter(), time.time()
        if isinstance(item, WorkerFact):
            with self.cv:
                self.items.append(Seen(len(self.items), perf, wall, item.fact))
                self.cv.notify_all()

    def mark(self) -> int:
        with self.cv:
            return len(self.items)

    def wait(self, cls: type, timeout: float, since: int = 0, **match: Any) -> Seen:
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for s in self.items[since:]:
                    if isinstance(s.fact, cls) and all(getattr(s.fact, k) == v for k, v in match.items()):
                        return s
                left = deadline - time.monotonic()
                if left <= 0:
                    last = [type(s.fact).__name__ for s in self.items[-8:]]
                    raise TimeoutError(f"no {cls.__name__} {match} within {timeout:.0f} s; last facts {last}")
                self.cv.wait(left)


class Desk:
    """Supervisor (one pjsua2 worker, threads mode, no ASR engine) + IVR desk on its own bus:
    what `fenliu serve` runs for the voice front, without the console."""

    def __init__(self, name: str, flow: Path, hotline_uri: str, cache_dir: Path, router: Router) -> None:
        from fenliu.service.supervisor import Supervisor

        DESKS.append(self)
        s = load_settings(env={})
        base = free_port(2)
        while base + 1 >= 65000:
            base = free_port(2)
        targets = {**s.transfer.targets, "12345": hotline_uri}
        s = replace(s, sip=replace(s.sip, port=base, workers=1, rtp_port=rtp_block(40)),
                    transfer=replace(s.transfer, targets=targets),
                    ivr=replace(s.ivr, flow=str(flow), when="always", queue_uri="sip:acd@127.0.0.1:9",
                                cache_dir=str(cache_dir)))
        self.name = name
        self.bus = EventBus.on_thread(f"bench-bus-{name}")
        self.rec = Recorder()
        self.bus.subscribe(self.rec)  # first: stamps a fact before the desk acts on it
        self.sup: Any = Supervisor(s, router, None, self.bus)
        self.desk: IvrDesk | None = IvrDesk(s, self.sup, load_ivr(s), lambda f: self.bus.publish(WorkerFact("ivr", f)))
        self.desk.attach(self.bus)
        self.sup.start()
        self.uri = f"sip:110@127.0.0.1:{s.sip.port}"
        self.wav = {k: str(v) for k, v in self.desk.prompts.items()}

    def stop(self) -> None:
        if self in DESKS:
            DESKS.remove(self)
        if self.desk is not None:
            self.desk.close()
        self.sup.stop()
        self.bus.close()


def sleep_until_perf(t: float) -> None:
    while True:
        left = t - time.perf_counter()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


def tone_spans(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Where each prompt's tone is in a recording: (start s, end s) spans, 10 ms resolution."""
    from fenliu.asr.audio import read_wav

    clip = read_wav(path)
    x = np.frombuffer(clip.pcm, dtype=np.int16).astype(np.float64)
    hop = clip.rate // 100
    n = len(x) // hop
    out: dict[str, list[tuple[float, float]]] = {}
    if n == 0:
        return {k: [] for k in HZ}
    frames = x[: n * hop].reshape(n, hop)
    t = np.arange(hop) / clip.rate
    for name, hz in HZ.items():
        amp = 2 * np.abs(frames @ np.exp(-2j * np.pi * hz * t)) / hop
        on = amp > 1500.0  # the tones are sent at 8000 (−12 dBFS); silence and the other tones stay far below
        spans, start = [], None
        for i, v in enumerate(on):
            if v and start is None:
                start = i
            elif not v and start is not None:
                spans.append((start / 100, i / 100))
                start = None
        if start is not None:
            spans.append((start / 100, n / 100))
        out[name] = spans
    return out


def call_round(svc: Desk, hotline: Peer, barge: bool, key_at: float, menu_key_at: float, prompt_s: float,
               work: Path, i: int) -> dict[str, Any]:
    """One call: key ``key_at`` s into the welcome; in the no-barge-in flow, the key again
    ``menu_key_at`` s into the menu. Returns the times (s)."""
    rec_path = work / f"{svc.name}-{i}.wav"
    rec = svc.rec
    n, hn = rec.mark(), hotline.mark()
    r: dict[str, Any] = {"barge": barge}
    caller = Peer("--call", svc.uri, "--record", str(rec_path), "--commands", user="caller")
    try:
        ps = rec.wait(P.PromptStarted, 30, n, wav=svc.wav["welcome"])
        cid, token = ps.fact.call_id, ps.fact.token  # type: ignore[attr-defined]
        media = caller.wait(lambda e: e["event"] == "media", 15)
        sleep_until_perf(ps.perf + key_at)
        cm = caller.mark()
        caller.send("dtmf 1")
        sent = caller.wait(lambda e: e["event"] == "dtmf_sent", 10, cm)
        key = rec.wait(P.Dtmf, 10, n, call_id=cid, leg="caller")
        done = rec.wait(P.PromptDone, prompt_s + 15, n, call_id=cid, token=token)
        r.update(started_wall=ps.wall, media_t=media["t"], sent_t=sent["t"], key_wall=key.wall,
                 stop=done.perf - key.perf, interrupted=done.fact.interrupted)  # type: ignore[attr-defined]
        key2, sent2 = key, sent
        if not barge:  # the key did nothing: the caller hears the menu, then presses 1 again
            mps = rec.wait(P.PromptStarted, 15, done.i, call_id=cid, wav=svc.wav["menu"])
            sleep_until_perf(mps.perf + menu_key_at)
            cm = caller.mark()
            caller.send("dtmf 1")
            sent2 = caller.wait(lambda e: e["event"] == "dtmf_sent", 10, cm)
            key2 = rec.wait(P.Dtmf, 10, mps.i, call_id=cid, leg="caller")
        step = rec.wait(P.IvrStep, 10, key2.i, call_id=cid, step="key")
        dial = rec.wait(P.LegDialing, 15, key2.i, call_id=cid, leg="hotline")
        bridged = rec.wait(P.TransferUpdate, 30, key2.i, call_id=cid, step=P.TransferStep.BRIDGED)
        completed = rec.wait(P.TransferUpdate, 30, key2.i, call_id=cid, step=P.TransferStep.COMPLETED)
        rec.wait(P.IvrStep, 10, key2.i, call_id=cid, outcome="transferred")
        ring = hotline.wait(lambda e: e["event"] == "incoming", 15, hn)
        hotline.wait(lambda e: e["event"] == "media", 15, hn)
        r.update(sent2_t=sent2["t"], key2_wall=key2.wall, decided=step.perf - key2.perf, dial=dial.perf - key2.perf,
                 ring=ring["t"] - key2.wall, bridged=bridged.perf - key2.perf, completed=completed.perf - key2.perf)
        time.sleep(0.3)  # a moment of the bridged call in the caller's recording
        caller.send("hangup")
        rec.wait(P.CallEnded, 15, n, call_id=cid)
        with rec.cv:
            r["errors"] = [str(s.fact) for s in rec.items[n:] if isinstance(s.fact, P.WorkerError)]
    finally:
        caller.stop()  # ends the recording (its WAV header is written when the peer stops)
    spans = tone_spans(rec_path)
    welcome, menu, hot = spans["welcome"], spans["menu"], spans["hotline"]
    if welcome:
        r["heard_start"] = r["media_t"] + welcome[0][0] - r["started_wall"]  # bus PromptStarted → caller hears it
        r["caller_wait"] = r["media_t"] + welcome[-1][1] - r["sent_t"]  # key sent → the prompt stops in the ear
        r["welcome_heard"] = welcome[-1][1] - welcome[0][0]
    r["menu_heard"] = sum(b - a for a, b in menu)
    if hot:
        r["hears_hotline"] = r["media_t"] + hot[0][0] - r["sent2_t"]  # key sent → the hotline's voice in the ear
    rec_path.unlink(missing_ok=True)
    return r


def bench_calls(rounds: int, key_at: float, menu_key_at: float, prompt_s: float, router: Router,
                work: Path) -> None:
    for name, hz, secs in (("welcome", HZ["welcome"], prompt_s), ("menu", HZ["menu"], 3.0),
                           ("connecting", HZ["connecting"], 4.0), ("wait", HZ["wait"], 2.0)):
        tone(work / f"{name}.wav", hz, secs)
    flows = {}
    for barge in (True, False):
        p = work / f"flow-{'barge' if barge else 'nobarge'}.toml"
        p.write_text(FLOW.format(name="barge" if barge else "nobarge", barge_in=str(barge).lower()), encoding="utf-8")
        flows[barge] = p
    log("starting the hotline peer and two desks (barge-in flow, no-barge-in flow) ...")
    hotline = Peer("--answer", "200", "--play", str(tone(work / "hotline.wav", HZ["hotline"], 3.0)), user="12345")
    desks = {barge: Desk("barge" if barge else "nobarge", flows[barge], hotline.uri, work / "prompts", router)
             for barge in (True, False)}
    results: dict[bool, list[dict]] = {True: [], False: []}
    failures: list[str] = []
    for i in range(rounds):
        for barge in (True, False):  # interleaved: both see the same machine moments
            try:
                r = call_round(desks[barge], hotline, barge, key_at, menu_key_at, prompt_s, work, i)
            except (TimeoutError, OSError) as e:
                failures.append(f"{'barge-in' if barge else 'no barge-in'} round {i + 1}: {e}")
                log(f"  round {i + 1} {'barge-in' if barge else 'no barge-in'}: FAILED {e}")
                continue
            results[barge].append(r)
            log(f"  round {i + 1} {'barge-in' if barge else 'no barge-in'}: key→prompt stopped {ms(r['stop'])} ms "
                f"(interrupted={r['interrupted']}), caller wait {ms(r.get('caller_wait', float('nan')))} ms, "
                f"key→dialled {ms(r['dial'])} ms, key→bridged {ms(r['bridged'])} ms")
    for d in desks.values():
        d.stop()
    hotline.stop()

    def col(barge: bool, k: str) -> list[float]:
        return [r[k] for r in results[barge] if k in r and r[k] == r[k]]

    a, b = results[True], results[False]
    bad = [r for r in a if not r["interrupted"]] + [r for r in b if r["interrupted"]]
    rows = [
        ["key → prompt stopped, on the bus (`Dtmf` → `PromptDone`)", p50_p95(col(True, "stop")),
         p50_p95(col(False, "stop")), f"{ratio(col(False, 'stop'), col(True, 'stop')):.0f}x sooner"],
        ["caller side: key sent → the prompt goes silent in the caller's ear", p50_p95(col(True, "caller_wait")),
         p50_p95(col(False, "caller_wait")),
         f"{ratio(col(False, 'caller_wait'), col(True, 'caller_wait')):.0f}x sooner"],
        ["(alignment check) `PromptStarted` on the bus → the caller hears the prompt",
         p50_p95(col(True, "heard_start")), p50_p95(col(False, "heard_start")), "-"],
        ["(caller side) key sent → `Dtmf` on the bus",
         p50_p95([r["key_wall"] - r["sent_t"] for r in a]), p50_p95([r["key_wall"] - r["sent_t"] for r in b]), "-"],
    ]
    md_table(f"Barge-in on real calls (pjsua2 caller → pjsua2 worker → IVR desk, 127.0.0.1; {prompt_s:g} s prompt, "
             f"key pressed {key_at:g} s in; {len(a)} + {len(b)} calls), ms p50 / p95",
             ["measure", "barge-in (`barge_in = true`)", "baseline: no barge-in, the key waits for the prompt's end",
              "ratio"], rows,
             note=(f"Prompts heard by the caller per call: with barge-in {p50_p95(col(True, 'welcome_heard'))} ms of "
                   f"the {prompt_s:g} s prompt (p50 / p95), without {p50_p95(col(False, 'welcome_heard'))} ms. "
                   f"The key typed ahead during the prompt also chooses in the menu: the menu prompt the flow starts "
                   f"and stops at once reached the caller for {p50_p95(col(True, 'menu_heard'))} ms (p50 / p95)."
                   + (f" {len(bad)} call(s) had the wrong interrupted flag." if bad else "")))
    rows = [
        ["`Dtmf` → the flow decided (`IvrStep` key)", p50_p95(col(True, "decided")), p50_p95(col(False, "decided"))],
        ["`Dtmf` → hotline dialled (`LegDialing`)", p50_p95(col(True, "dial")), p50_p95(col(False, "dial"))],
        ["`Dtmf` → the hotline's phone rings (hotline peer's INVITE)", p50_p95(col(True, "ring")),
         p50_p95(col(False, "ring"))],
        ["`Dtmf` → three-way bridged (`TransferUpdate` bridged)", p50_p95(col(True, "bridged")),
         p50_p95(col(False, "bridged"))],
        ["`Dtmf` → handed over (`TransferUpdate` completed)", p50_p95(col(True, "completed")),
         p50_p95(col(False, "completed"))],
        ["caller side: key sent → the caller hears the hotline (its tone in the caller's ear)",
         p50_p95(col(True, "hears_hotline")), p50_p95(col(False, "hears_hotline"))],
    ]
    md_table("Key → hotline on real calls (the hotline peer answers at once and plays a tone), ms p50 / p95",
             ["measure", "key typed ahead during the prompt (barge-in calls)",
              "key pressed in the menu (baseline calls)"], rows)
    if failures:
        print(f"\n{len(failures)} call(s) failed: " + "; ".join(failures))
    errors = [e for r in a + b for e in r.get("errors", [])]
    if errors:
        print(f"\nWorker errors during the calls: {errors[:5]}")


# -- 3: prompts at load ----------------------------------------------------------------------------


def bench_prompts(rounds: int, work: Path) -> None:
    settings = load_settings(env={})
    targets = all_targets(settings)
    t0 = time.perf_counter()
    flow = load_flow(flow_path("front_desk"), targets)
    load_s = time.perf_counter() - t0
    loads = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        load_flow(flow_path("front_desk"), targets)
        loads.append(time.perf_counter() - t0)
    sources = [PromptSource(pr.name, pr.text, pr.wav, pr.line, str(flow.path)) for pr in flow.prompts.values()]
    texts = sum(1 for s in sources if not s.wav and s.text.strip())
    cold, warm = [], []
    paths: dict[str, Path] = {}
    for i in range(rounds):
        d = work / f"cold-{i}"
        cache = PromptCache(d, voice=flow.voice)
        t0 = time.perf_counter()
        paths = cache.build_all(sources)
        cold.append(time.perf_counter() - t0)
        assert cache.stats["espeak_runs"] == texts, cache.stats
        again = PromptCache(d, voice=flow.voice)  # a restart: a new cache object on the same directory
        t0 = time.perf_counter()
        again.build_all(sources)
        warm.append(time.perf_counter() - t0)
        assert again.stats["reused"] == len(sources) and not again.stats["espeak_runs"], again.stats
        log(f"  prompts round {i + 1}: cold {cold[-1]:.2f} s, warm {1000 * warm[-1]:.1f} ms")
    audio_s = sum(duration(p) for p in paths.values())
    # the offer menu as IvrDesk plays it: intro of the first hotline, one line per key, the tail
    menu = [paths[flow.offer_fragment("offer", "12345")], paths[flow.offer_fragment("offer", "12345", "1")],
            paths[flow.offer_fragment("offer", "95598", "2")], paths["offer_tail"]]
    cache = PromptCache(work / f"cold-{rounds - 1}", voice=flow.voice)
    out = cache.concat(menu)
    menu_s = duration(out)
    first, later = [], []
    for _ in range(max(rounds, 20)):
        out.unlink()
        t0 = time.perf_counter()
        cache.concat(menu)
        first.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cache.concat(menu)
        later.append(time.perf_counter() - t0)
    assert cache.stats["concat_reused"] >= len(later), cache.stats
    rows = [
        [f"build all {len(sources)} front-desk prompts ({texts} texts by espeak-ng, {audio_s:.0f} s of audio)",
         p50_p95(warm), p50_p95(cold), f"{ratio(cold, warm):.0f}x faster"],
        [f"`concat` of an offer menu ({len(menu)} fragments, {menu_s:.1f} s) per call",
         p50_p95(later), p50_p95(first), f"{ratio(first, later):.1f}x faster"],
        ["(for scale) flow file load + checks (`load_flow`)", p50_p95(loads), f"{ms(load_s)} (first, cold imports)",
         "-"],
    ]
    md_table(f"Prompts at load, no calls ({rounds} rounds), ms p50 / p95",
             ["measure", "warm: cached (a restart; later calls)", "baseline: cold (empty cache; a call's first menu)",
              "ratio"], rows,
             note=f"espeak-ng runs {getattr(prompts_mod, '_WORKERS', 2)} prompts at a time (`PromptCache.build_all`); "
                  "the cold build is per service start with an empty `ivr.cache_dir` (or a changed text), never "
                  "during a call.")


# -- 4: the runner ---------------------------------------------------------------------------------

SCRIPTS = [  # (what the caller says, the key pressed in the offer)
    ("楼上装修太吵了，天天晚上敲到十二点，吵得孩子睡不着", "1"),
    ("小区停电了，一直没来电", "1"),
    ("我的工资老板拖欠三个月了不给", "0"),
    ("邻居装修太吵，我去说了两句他拿刀要砍我", ""),
    ("", ""),  # says nothing: no input → the operators' queue
]
TICK = 0.1


def scripted_call(flow: Any, targets: frozenset[str], text: str, decision: Any, key: str, n: int) -> tuple[int, str]:
    """One call through the front desk, fed as IvrDesk feeds it (ticks every 100 ms). Returns
    the number of inputs given to the runner and the outcome."""
    run = FlowRun(flow, f"bench-call-{n:06d}", targets)
    t, steps = 0.0, 0
    token = ""

    def feed(acts: list) -> None:
        nonlocal token
        for a in acts:
            if isinstance(a, PlayPrompts):
                token = a.token

    def ticks(seconds: float) -> None:
        nonlocal t, steps
        end = t + seconds
        while t < end and not run.done:
            t += TICK
            feed(run.tick(t))
            steps += 1

    feed(run.start(t))
    steps += 1
    ticks(4.0)  # the welcome
    feed(run.prompt_done(token, False, t))
    steps += 1
    if text:
        ticks(0.5)
        feed(run.speech_started(t))
        ticks(1.5)
        run.speech_stopped(t)
        run.transcript_final(text, t)
        feed(run.decided(decision, t))
        steps += 4
    for _ in range(200):  # until the flow acts: the listen ends, the decide branches
        if run.state not in ("welcome", "listen"):
            break
        ticks(TICK)
    if run.state == "offer":
        ticks(5.0)  # the menu
        feed(run.prompt_done(token, False, t))
        ticks(1.0)
        feed(run.dtmf(key, t))
        steps += 2
    if run.state == "transfer":
        ticks(1.5)
        feed(run.transfer_update("bridged", "", t))
        steps += 1
    elif run.state in ("queue", "urgent_queue"):
        ticks(2.0)
        feed(run.queue_update("answered", "", t))
        steps += 1
    return steps, run.outcome


def bench_runner(calls: int, router: Router) -> None:
    settings = load_settings(env={})
    targets = all_targets(settings)
    flow = load_flow(flow_path("front_desk"), targets)
    tset = frozenset(targets)
    decisions = [router.decide(text) if text else None for text, _ in SCRIPTS]
    for (text, key), d in zip(SCRIPTS, decisions, strict=True):  # warm up, and see that every script ends
        steps, outcome = scripted_call(flow, tset, text, d, key, 0)
        if not outcome:
            raise RuntimeError(f"scripted call {text!r} did not end (state left open)")
    ivr, dec, nsteps = [], [], []
    outcomes: dict[str, int] = {}
    for i in range(calls):
        text, key = SCRIPTS[i % len(SCRIPTS)]
        d = decisions[i % len(SCRIPTS)]
        t0 = time.perf_counter()
        steps, outcome = scripted_call(flow, tset, text, d, key, i)
        ivr.append(time.perf_counter() - t0)
        nsteps.append(steps)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if text:
            t0 = time.perf_counter()
            router.decide(text)
            dec.append(time.perf_counter() - t0)
    steps_per_s = sum(nsteps) / sum(ivr)
    spoken = [x for x, (text, _) in zip(ivr, (SCRIPTS[i % len(SCRIPTS)] for i in range(calls)), strict=True) if text]
    rows = [
        ["IVR flow runner, one scripted front-desk call (all its inputs)", p50_p95(ivr, us),
         f"{statistics.median(nsteps):.0f}", f"{steps_per_s:,.0f}", "-"],
        ["  the same, calls where the caller spoke", p50_p95(spoken, us), "-", "-",
         f"{statistics.median(spoken) / statistics.median(dec):.2f}x of decide()"],
        ["baseline: the router's `decide()` on the call's words (once per call)", p50_p95(dec, us), "1",
         f"{len(dec) / sum(dec):,.0f}", "1.00"],
    ]
    md_table(f"The flow runner's own cost (pure Python, one thread, {calls} scripted calls: "
             + ", ".join(f"{v} {k}" for k, v in sorted(outcomes.items())) + "), µs p50 / p95",
             ["measure", "µs per call p50 / p95", "runner inputs per call", "inputs (or decisions) per s",
              "ratio"], rows,
             note="A call's inputs: start, every 100 ms tick while the caller is in the flow (as `IvrDesk` ticks), "
                  "prompt ends, speech start/stop, the final transcript, the router's decision, the key, the "
                  "transfer or queue outcome. The live service also runs the router on every partial transcript, so "
                  "its real router cost per call is several times this baseline.")


# -- main -------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10, help="calls per variant, and cold/warm prompt builds (10)")
    ap.add_argument("--parts", nargs="+", default=["calls", "prompts", "runner"],
                    choices=["calls", "prompts", "runner"])
    ap.add_argument("--prompt-s", type=float, default=8.0, help="length of the barge-in prompt (8 s)")
    ap.add_argument("--key-at", type=float, default=3.0, help="the caller presses its key this far into it (3 s)")
    ap.add_argument("--menu-key-at", type=float, default=0.5,
                    help="no-barge-in calls: the key again this far into the menu (0.5 s)")
    ap.add_argument("--runner-calls", type=int, default=5000, help="scripted calls through the runner (5000)")
    a = ap.parse_args()
    if a.key_at >= a.prompt_s:
        ap.error("--key-at must be within the prompt (< --prompt-s)")
    signal.signal(signal.SIGTERM, on_sigterm)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"fenliu IVR benchmark — {cpu_model() or platform.processor() or 'unknown CPU'}, {cores} cores "
          f"({os.cpu_count()} online), Linux {platform.release()}, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    t0 = time.perf_counter()
    router = Router()
    log(f"router (shipped list + learned layer) loaded in {time.perf_counter() - t0:.2f} s")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ivr-") as tmp:
            work = Path(tmp)
            if "calls" in a.parts:
                bench_calls(a.rounds, a.key_at, a.menu_key_at, a.prompt_s, router, work)
            if "prompts" in a.parts:
                bench_prompts(a.rounds, work)
            if "runner" in a.parts:
                bench_runner(a.runner_calls, router)
    except KeyboardInterrupt:
        log("interrupted: stopping the processes this benchmark started")
        return 130
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
