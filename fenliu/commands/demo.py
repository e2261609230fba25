"""`fenliu demo`: the main job until live calls land — replay the fixture calls through the
whole chain (VAD -> ASR -> router -> events) and compare with the expected decisions.

Without a Chinese model it says so, says how to get one, and still runs the chain: the VAD on
the real audio, and the fixture's reference transcript (clearly labelled) into the router.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

import fenliu
from fenliu.asr.models import CHINESE_DEFAULT, HOW_TO_GET
from fenliu.commands.offline import replay_events, write_events
from fenliu.errors import FenliuError, ModelError
from fenliu.events import Decision
from fenliu.router import Router
from fenliu.service.wiring import build_engine
from fenliu.settings import Settings


def default_fixtures() -> Path:
    return Path(fenliu.__file__).resolve().parent.parent / "audio_fixtures"


def load_manifest(folder: Path, lang: str | None = "cmn") -> list[dict[str, Any]]:
    manifest = folder / "manifest.jsonl"
    if not manifest.exists():
        raise FenliuError(f"{manifest}: 找不到测试录音清单 / fixture manifest not found; pass --fixtures DIR "
                          f"or regenerate with python scripts/make_fixtures.py")
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if lang is None or r.get("lang") == lang]


def run_demo(settings: Settings, router: Router, out: IO[str], fixtures: Path | None = None,
             model: str | None = None, as_json: bool = False) -> int:
    folder = fixtures or default_fixtures()
    rows = load_manifest(folder)
    engine = None
    try:
        engine = build_engine(settings, model)
        out.write(f"ASR 模型 / model: {engine.path}\n")
    except ModelError as e:
        out.write("=" * 72 + "\n")
        out.write(f"未找到中文 ASR 模型 / no Chinese ASR model available ({model or settings.asr.model}).\n")
        out.write(f"{str(e).replace(HOW_TO_GET, '').strip()}\n{HOW_TO_GET}\n")
        out.write("下面仍跑完整链路：VAD 处理真实录音，然后把录音的【参考文本】（不是识别结果）交给路由器。\n")
        out.write("Running the rest of the chain anyway: VAD on the real audio, then each fixture's REFERENCE\n"
                  "transcript (not recognition) into the router.\n")
        out.write("=" * 72 + "\n")
    if engine is not None and "cn" not in engine.name:
        out.write(f"注意 / note: {engine.name} is not a Chinese model ({CHINESE_DEFAULT} expected); "
                  f"Chinese decisions will be poor.\n")
    results: list[tuple[dict[str, Any], Decision | None]] = []
    for row in rows:
        wav = folder / row["file"]
        out.write(f"\n── {row['id']}  ({wav.name})\n")
        try:
            last = write_events(replay_events(wav, settings, engine, router,
                                              reference_text=None if engine else row["text"]), out, as_json)
        except FenliuError as e:
            out.write(f"错误 / error: {e}\n")
            results.append((row, None))
            continue
        results.append((row, last))
    out.write("\n" + summary_table(results) + "\n")
    return 0


def summary_table(results: list[tuple[dict[str, Any], Any]]) -> str:
    lines = [f"{'fixture':24} {'expected':22} {'decided':22} ok", "-" * 74]
    good = 0
    for row, d in results:
        exp = row.get("expected", {})
        e = f"{exp.get('target', '?')} {exp.get('category', '')}"[:22]
        got = f"{d.target} {d.category}"[:22] if d is not None else "(no decision)"
        ok = d is not None and d.target == exp.get("target") and (d.target == "police" or d.category == exp.get("category"))
        good += ok
        lines.append(f"{row['id']:24} {e:22} {got:22} {'✔' if ok else '✘'}")
    lines.append(f"{good}/{len(results)} 与预期一致 / match the expected decision")
    return "\n".join(lines)
