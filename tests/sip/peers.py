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
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
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
