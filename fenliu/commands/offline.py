"""Offline mode: a recorded call through exactly the live chain (WAV source instead of SIP)."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fenliu.asr.audio import read_wav
from fenliu.asr.engine import AsrEngine
from fenliu.asr.pipeline import StreamPipeline, call_router, vad_config
from fenliu.errors import FenliuError
from fenliu.events import (
    Decision,
    Event,
    FinalTranscript,
    PartialTranscript,
    SpeechStarted,
    SpeechStopped,
    StreamEnded,
    event_to_dict,
)
from fenliu.router import Router
from fenliu.settings import Settings

CHUNK_MS = 20  # the size of the pieces a WAV source hands to the chain, as RTP would


def replay_events(path: str | Path, settings: Settings, engine: AsrEngine | None, router: Router,
                  realtime: bool = False, channel: int | str = 0, reference_text: str | None = None,
                  vad_enabled: bool | None = None, stream_id: str | None = None) -> Iterator[Event]:
    """Yield the chain's events as they happen while the recording is fed in 20 ms chunks."""
    clip = read_wav(path, channel)
    sid = stream_id or Path(path).stem
    pipe = StreamPipeline(sid, clip.rate, engine, vad=vad_config(settings),
                          vad_enabled=settings.vad.enabled if vad_enabled is None else vad_enabled,
                          router=call_router(router, settings, sid), reference_text=reference_text)
    step = clip.rate * CHUNK_MS // 1000 * 2
    start = time.monotonic()
    for i in range(0, len(clip.pcm), step):
        if realtime:
            due = start + i / 2 / clip.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield from pipe.push(clip.pcm[i : i + step])
    yield from pipe.close()


def format_event(ev: Event) -> str:
    """One human line per event, Chinese first."""
    if isinstance(ev, SpeechStarted):
        return f"[{ev.t:7.2f}s] 开始说话 speech started"
    if isinstance(ev, SpeechStopped):
        return f"[{ev.t:7.2f}s] 停止说话 speech stopped"
    if isinstance(ev, PartialTranscript):
        return f"[{ev.t1:7.2f}s] … 部分识别 partial #{ev.utterance_id}: {ev.text}"
    if isinstance(ev, FinalTranscript):
        label = "参考文本（非识别结果）reference transcript, not recognition" if ev.source == "reference" \
            else "识别结果 final"
        return f"[{ev.t1:7.2f}s] ✔ {label} #{ev.utterance_id} ({ev.t0:.2f}–{ev.t1:.2f}s): {ev.text}"
    if isinstance(ev, Decision):
        return f"[{ev.t:7.2f}s] ➜ {describe_decision(ev)}"
    if isinstance(ev, StreamEnded):
        return f"[{ev.t:7.2f}s] 结束 end of stream ({ev.frames} frames, {ev.dropped_frames} dropped)"
    return repr(ev)


def describe_decision(d: Decision) -> str:
    words = "、".join(f"{m.heard or m.word}@{m.start}-{m.end}" for m in d.matched[:6])
    veto = "、".join(f"{m.heard or m.word}@{m.start}-{m.end}" for m in d.vetoed_by[:6])
    if d.target == "police":
        head = f"留110{'【紧急】' if d.urgent else ''}（{d.dept}）"
    else:
        head = f"建议分流 → {d.target} {d.category}（{d.dept}）"
    parts = [head, f"置信度 {d.confidence:.2f}"]
    if words:
        parts.append(f"命中 {words}")
    if veto:
        parts.append(f"否决 {veto}")
    parts.append(d.reason)
    parts.append(f"规则 {d.rule_version}")
    return " | ".join(parts)


def write_events(events: Iterator[Event], out: IO[str], as_json: bool) -> Decision | None:
    last: Decision | None = None
    for ev in events:
        if isinstance(ev, Decision):
            last = ev
        if as_json:
            out.write(json.dumps(event_to_dict(ev), ensure_ascii=False) + "\n")
        else:
            out.write(format_event(ev) + "\n")
        out.flush()
    return last


@dataclass
class FileReport:
    file: str
    ok: bool
    duration: float = 0.0
    transcript: str = ""
    target: str = ""
    category: str = ""
    urgent: bool = False
    confidence: float = 0.0
    error: str = ""
    seconds: float = 0.0


def transcribe_dir(folder: str | Path, settings: Settings, engine: AsrEngine | None, router: Router,
                   channel: int | str = 0, progress: bool = True,
                   on_report: Callable[[FileReport], None] | None = None) -> list[FileReport]:
    """Every WAV in ``folder`` (sorted, recursive); a bad file is reported and the batch goes on."""
    from tqdm import tqdm

    root = Path(folder)
    if not root.is_dir():
        raise FenliuError(f"{root}: 不是目录 / not a directory; pass a folder of .wav files")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() == ".wav")
    reports = []
    for p in tqdm(files, desc="转写 transcribe", unit="file", disable=not progress, file=sys.stderr):
        t0 = time.monotonic()
        try:
            finals, decision, duration = [], None, 0.0
            for ev in replay_events(p, settings, engine, router, channel=channel):
                if isinstance(ev, FinalTranscript):
                    finals.append(ev.text)
                elif isinstance(ev, Decision):
                    decision = ev
                elif isinstance(ev, StreamEnded):
                    duration = ev.t
            r = FileReport(file=str(p.relative_to(root)), ok=True, duration=round(duration, 2),
                           transcript=" ".join(finals))
            if decision is not None:
                r.target, r.category, r.urgent = decision.target, decision.category, decision.urgent
                r.confidence = decision.confidence
        except FenliuError as e:
            r = FileReport(file=str(p.relative_to(root)), ok=False, error=str(e))
        r.seconds = round(time.monotonic() - t0, 3)
        reports.append(r)
        if on_report:
            on_report(r)
    return reports


REPORT_FIELDS = ["file", "ok", "duration", "transcript", "target", "category", "urgent", "confidence",
                 "error", "seconds"]


def write_report(reports: list[FileReport], path: str | Path) -> None:
    p = Path(path)
    rows = [{k: getattr(r, k) for k in REPORT_FIELDS} for r in reports]
    if p.suffix.lower() == ".csv":
        with open(p, "w", newline="", encoding="utf-8-sig") as f:  # BOM: opens cleanly in Excel
            w = csv.DictWriter(f, fieldnames=REPORT_FIELDS)
            w.writeheader()
            w.writerows(rows)
    else:
        with open(p, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
