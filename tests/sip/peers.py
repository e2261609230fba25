"""Run `fenliu.sip.ua.peer` processes (hotlines, seats, callers) and read their JSON events."""

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
        cmd = [sys.executable, "-m", "fenliu.sip.ua.peer", "--port", str(self.port), "--user", user,
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


def find_in_recording(recording: Path, prompt: Path, chunk_s: float = 0.5, span_s: float = 3.0) -> tuple[float, float]:
    """Where ``prompt`` (a WAV the service played) is in what a peer recorded, and how surely:
    (score 0..1, offset in seconds). Both are band-limited to the telephone band and compared at
    8 kHz. The prompt's first ``span_s`` seconds are cut into ``chunk_s`` pieces, each found on
    its own by normalised cross-correlation; the score is the median of the pieces' peaks, a
    piece that lands away from the others counting 0. A prompt that crossed a G.711 line scores
    ≈1 even when a loaded machine dropped or stretched a frame on the way (one correlation over
    the whole span fell to 0.59 there); a prompt that never reached the peer scores ≈0."""
    import numpy as np
    from scipy.signal import fftconvolve, resample_poly

    from fenliu.asr.audio import read_wav

    def load(p: Path) -> np.ndarray:
        clip = read_wav(p)
        x = np.frombuffer(clip.pcm, dtype=np.int16).astype(np.float64)
        return resample_poly(x, 8000, clip.rate)  # anti-aliased: what a G.711 line keeps

    rec, ref = load(recording), load(prompt)
    ref = ref[: int(8000 * span_s)]  # the start identifies a prompt (and allows barge-in cuts)
    n = int(8000 * chunk_s)
    if len(rec) < n or len(ref) < n or not ref.any():
        return 0.0, 0.0
    energy = np.sqrt(np.maximum(np.convolve(rec * rec, np.ones(n), mode="valid"), 1e-9))
    quiet = 0.1 * np.sqrt(np.mean(ref ** 2))  # pauses in the prompt identify nothing
    peaks: list[tuple[float, float]] = []
    for k in range(0, len(ref) - n + 1, n):
        piece = ref[k:k + n] - ref[k:k + n].mean()
        if np.sqrt(np.mean(piece ** 2)) < quiet:
            continue
        ncc = fftconvolve(rec, piece[::-1], mode="valid") / (np.linalg.norm(piece) * energy)
        i = int(np.argmax(ncc))
        peaks.append((float(ncc[i]), (i - k) / 8000))
    if not peaks:
        return 0.0, 0.0
    start = float(np.median([at for _, at in peaks]))
    return float(np.median([s if abs(at - start) <= 0.25 else 0.0 for s, at in peaks])), start
