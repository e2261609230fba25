"""Run `fenliu.sip.peer` processes (hotlines, seats, callers) and read their JSON events."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.conftest import ROOT, free_port, rtp_block


class PeerProc:
    def __init__(self, *args: str, user: str = "peer") -> None:
        self.port = free_port(2)
        self.uri = f"sip:{user}@127.0.0.1:{self.port}"
        self.events: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []
        cmd = [sys.executable, "-m", "fenliu.sip.peer", "--port", str(self.port), "--user", user,
               "--rtp-port", str(rtp_block()), *args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     stdin=subprocess.PIPE if "--commands" in args else subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda e: e["event"] == "ready", 15)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                continue

    def wait(self, pred, timeout: float = 15.0, since: int = 0) -> dict:
        for e in self.seen[since:]:
            if pred(e):
                return e
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"peer {self.uri}: no matching event; seen {self.seen[-5:]}")
            try:
                e = self.events.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(e)
            if pred(e):
                return e

    def send(self, line: str) -> None:
        """A stdin command (the peer was started with --commands): dtmf D, play FILE, hangup."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def mark(self) -> int:
        """How many events were seen so far: ``wait(pred, since=mark)`` waits for a later one."""
        while not self.events.empty():
            self.seen.append(self.events.get())
        return len(self.seen)

    def has(self, kind: str) -> bool:
        while not self.events.empty():
            self.seen.append(self.events.get())
        return any(e["event"] == kind for e in self.seen)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def rms_after(wav: Path, start_s: float = 0.0) -> float:
    import numpy as np

    from fenliu.asr.audio import read_wav

    clip = read_wav(wav)
    x = np.frombuffer(clip.pcm, dtype=np.int16).astype(float)[int(start_s * clip.rate):]
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


def fact(cls, **match):
    """A predicate for a worker fact of type ``cls`` whose fields equal ``match``."""
    return lambda f: isinstance(f, cls) and all(getattr(f, k) == v for k, v in match.items())


def find_in_recording(recording: Path, prompt: Path) -> tuple[float, float]:
    """Where ``prompt`` (a WAV the service played) is in what a peer recorded, and how surely:
    (peak normalised cross-correlation 0..1, offset in seconds). Both are band-limited to the
    telephone band and compared at 8 kHz, so a prompt that crossed a G.711 line still scores
    high (≈0.9), and a prompt that never reached the peer scores low (< 0.3)."""
    import numpy as np
    from scipy.signal import fftconvolve, resample_poly

    from fenliu.asr.audio import read_wav

    def load(p: Path) -> np.ndarray:
        clip = read_wav(p)
        x = np.frombuffer(clip.pcm, dtype=np.int16).astype(np.float64)
        return resample_poly(x, 8000, clip.rate)  # anti-aliased: what a G.711 line keeps

    rec, ref = load(recording), load(prompt)
    ref = ref[: min(len(ref), 8000 * 3)]  # the first 3 s identify a prompt (and allow barge-in cuts)
    ref = ref - ref.mean()
    if len(rec) < len(ref) or not ref.any():
        return 0.0, 0.0
    num = fftconvolve(rec, ref[::-1], mode="valid")
    energy = np.convolve(rec * rec, np.ones(len(ref)), mode="valid")
    ncc = num / (np.linalg.norm(ref) * np.sqrt(np.maximum(energy, 1e-9)))
    i = int(np.argmax(ncc))
    return float(ncc[i]), i / 8000
