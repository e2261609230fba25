"""`fenliu dial FILE.wav`: place a real SIP call that plays a recording into the service (拨测).

Runs the pjsua2 peer as a caller in its own process (one endpoint per process), so it works
against a local `fenliu serve`, a PBX, or a remote deployment alike.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import soundfile as sf

from fenliu.asr.audio import read_wav, resample
from fenliu.errors import FenliuError


def die_with_parent() -> None:
    """``preexec_fn`` for a helper process (test hotline, caller): the kernel sends it SIGTERM when
    the process that started it dies, even by SIGKILL, so no peer outlives its demo or dial."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_all(procs: list[subprocess.Popen[str]], timeout: float = 5.0) -> None:
    """Ask every process to stop at once (SIGTERM), then wait; kill what has not stopped."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(OSError):
                p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside: SIGTERM raises ``Terminated`` (a KeyboardInterrupt) in the main thread, so a
    ``finally`` stops what the command started, as for Ctrl-C."""
    from fenliu.errors import Terminated

    def raise_terminated(_sig: int, _frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """While inside (a clean-up): a second Ctrl-C or SIGTERM does not cut the clean-up short."""
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def free_udp_port(address: str = "127.0.0.1") -> int:
    """A UDP port the kernel has free now, for a local pjsua2 peer's SIP port."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def playable(wav: str | Path, folder: Path) -> Path:
    """A copy of ``wav`` the pjsua2 player takes (16-bit PCM, 16 kHz; the bridge resamples)."""
    import numpy as np

    clip = read_wav(wav)
    play = folder / f"{Path(wav).stem}-play.wav"
    sf.write(play, np.frombuffer(resample(clip.pcm, clip.rate, 16000), dtype=np.int16), 16000, subtype="PCM_16")
    return play


def dial(wav: str | Path, to: str, port: int = 0, tail_s: float = 1.5, ring_timeout: float = 30.0,
         caller: str = "dialer") -> int:
    clip = read_wav(wav)  # validates the file with the same clear errors as replay
    if not to.startswith("sip:"):
        raise FenliuError(f"--to 须是 SIP URI / --to must be a sip: URI, got {to!r}")
    with tempfile.TemporaryDirectory(prefix="fenliu-dial-") as tmp:
        play = playable(wav, Path(tmp))
        port = port or free_udp_port()
        cmd = [sys.executable, "-m", "fenliu.sip.ua.peer", "--port", str(port), "--user", caller, "--call", to,
               "--play", str(play), "--hangup-after", f"{clip.duration + tail_s:.2f}", "--exit-after-call",
               "--ring-timeout", str(ring_timeout)]
        limit = ring_timeout + clip.duration + 30
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                preexec_fn=die_with_parent)
        outcome: dict[str, Any] = {"status": 0, "reason": "no answer"}
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    continue  # pjlib's own start-up lines
                kind = ev.get("event")
                if kind == "state":
                    print(f"呼叫 call: {ev['state']} {ev.get('status', '')} {ev.get('reason', '')}".rstrip())
                elif kind == "media":
                    print(f"通话中，播放 / playing {Path(wav).name} ({clip.duration:.1f} s)")
                elif kind == "ended":
                    outcome = ev
                elif kind == "error":
                    print(f"错误 / error: {ev.get('message')}", file=sys.stderr)
            proc.wait(limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise FenliuError(f"呼叫超时 / the call did not finish within {limit:.0f} s") from None
        finally:  # interrupted (Ctrl-C, SIGTERM) or failed: the caller process ends with us
            stop_all([proc])
    status = int(outcome.get("status") or 0)
    if status >= 300 or float(outcome.get("duration") or 0) == 0:
        raise FenliuError(f"呼叫未接通 / the call was not answered: {status} {outcome.get('reason')}; "
                          f"is something listening at {to}?")
    print(f"✔ 通话结束 / call ended after {float(outcome['duration']):.1f} s")
    return 0
