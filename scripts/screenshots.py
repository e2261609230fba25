#!/usr/bin/env python3
"""Retake the README's console pictures (docs/img/console-*.png) on the real product, in Chinese.

Runs the main job (`fenliu demo --live`) on two Mandarin fixtures — a noise complaint (diverted
to 12345) and a knife threat (a danger signal: kept with 110) — and logs in to its console in
Debian's Chromium (Playwright, 1366×768, zh-CN). With no Chinese model on this machine the
transcript lines are the fixtures' reference texts, and the console marks each one
"参考文本（非识别）": the pictures show the console, not recognition quality.

    .venv/bin/python scripts/screenshots.py [--out docs/img]

Needs Chromium and a Chinese font (Debian: chromium, fonts-noto-cjk).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "audio_fixtures"
PICK = ("cmn-01-noise", "cmn-11-knife")


def fixtures(folder: Path) -> Path:
    rows = [json.loads(x) for x in (FIXTURES / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    pick = [r for r in rows if r["id"] in PICK]
    (folder / "cmn").mkdir(parents=True)
    for r in pick:
        shutil.copy(FIXTURES / r["file"], folder / r["file"])
    (folder / "manifest.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in pick),
                                           encoding="utf-8")
    return folder


class DemoRun:
    """The main job in its own session; its output lines as they come."""

    def __init__(self, work: Path) -> None:
        env = {**os.environ, "FENLIU_STORE__URL": f"sqlite:///{work}/fenliu.db",
               "FENLIU_ASR__MODEL_DIR": str(work), "VOSK_MODEL_PATH": str(work)}  # reference transcripts
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fenliu", "demo", "--live", "--no-ivr", "--fixtures", str(fixtures(work / "fx")),
             "--limit", str(len(PICK)), "--key-wait", "60"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        self.text = ""
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cv:
                self.text += line
                self.cv.notify_all()

    def wait_for(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        with self.cv:
            found: list[re.Match[str]] = []

            def seen() -> bool:
                m = re.search(pattern, self.text)
                if m:
                    found.append(m)
                return bool(m) or self.proc.poll() is not None

            self.cv.wait_for(seen, timeout)
        if not found:
            raise SystemExit(f"the demo never printed {pattern!r}:\n{self.text[-3000:]}")
        return found[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("Chromium is needed: apt-get install chromium (scripts/setup.sh test)")
    fonts = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True).stdout if shutil.which("fc-list") \
        else ""
    if not fonts.strip():
        raise SystemExit("no Chinese font: the pictures would show boxes. apt-get install fonts-noto-cjk")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fenliu-shots-") as tmp:
        demo = DemoRun(Path(tmp))
        try:
            url = demo.wait_for(r"接警台 console: (\S+)").group(1)
            password = demo.wait_for(r"登录 login: demo / (\S+)").group(1)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                page = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN").new_page()
                page.goto(url)
                page.fill("#login-form input[name=username]", "demo")
                page.fill("#login-form input[name=password]", password)
                page.press("#login-form input[name=password]", "Enter")
                page.wait_for_selector('#conn:has-text("已连接")')
                # the noise complaint: the card suggests 12345; the operator presses F8
                page.wait_for_selector('#card[data-target="12345"]', timeout=60000)
                page.wait_for_selector("#transcript .utt.reference", timeout=10000)
                page.wait_for_selector("#transcript mark", timeout=10000)
                page.screenshot(path=str(args.out / "console-live.png"))
                page.keyboard.press("F8")
                # the demo answers calls itself (no operator's phone): bridged is handed over at once
                page.wait_for_selector('#transfer-progress:has-text("完成")', timeout=30000)
                page.screenshot(path=str(args.out / "console-three-way.png"))
                # the knife threat: a danger signal, the red card, no diversion offered
                page.wait_for_selector("#card .veto", timeout=90000)
                page.wait_for_selector("#transcript .utt.reference", timeout=10000)
                page.screenshot(path=str(args.out / "console-danger.png"))
                browser.close()
        finally:
            demo.stop()
    for name in ("console-live.png", "console-three-way.png", "console-danger.png"):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
