"""Voice activity segmentation: a synchronous state machine over fixed-size frames.

The frame classifier is injected (``is_speech(frame) -> bool``; webrtcvad in production) so
the hysteresis logic is pure and tested with literal frame sequences.

States: QUIET -> (enough voice in the start window) -> SPEAKING -> (stop_ms of continuous
silence, or the maximum utterance length) -> QUIET. Speech start is back-dated by the
padding (pre-roll) so the recogniser hears the first syllable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class VadState(Enum):
    QUIET = "quiet"
    SPEAKING = "speaking"


@dataclass(frozen=True)
class VadConfig:
    frame_ms: int = 20
    aggressiveness: int = 2  # webrtcvad mode 0..3
    energy_floor_dbfs: float = -50.0  # quieter frames are silence (line hiss); -100 disables
    min_speech_ms: int = 200  # voiced audio within the start window needed to start
    start_window_ms: int = 300
    stop_ms: int = 600  # continuous silence that ends an utterance
    padding_ms: int = 300  # pre-roll kept before the detected start
    max_utterance_ms: int = 15000


@dataclass(frozen=True)
class Start:
    t: float  # seconds, back-dated by the pre-roll


@dataclass(frozen=True)
class Voice:
    pcm: bytes


@dataclass(frozen=True)
class Stop:
    t: float
    forced: bool = False  # cut at the maximum utterance length


SegmentEvent = Start | Voice | Stop


class VadSegmenter:
    def __init__(self, is_speech: Callable[[bytes], bool], rate: int, config: VadConfig | None = None) -> None:
        self.config = c = config or VadConfig()
        self.is_speech = is_speech
        self.rate = rate
        self.frame_bytes = rate * c.frame_ms // 1000 * 2
        self.frame_s = c.frame_ms / 1000
        n = max(1, c.start_window_ms // c.frame_ms)
        self._window: deque[bool] = deque(maxlen=n)
        self._need = max(1, min(n, c.min_speech_ms // c.frame_ms))
        self._preroll: deque[bytes] = deque(maxlen=max(n, c.padding_ms // c.frame_ms))
        self._stop_frames = max(1, c.stop_ms // c.frame_ms)
        self._max_frames = max(1, c.max_utterance_ms // c.frame_ms)
        self.state = VadState.QUIET
        self.frames = 0  # frames seen
        self.voiced_frames = 0
        self._silence = 0
        self._utt_frames = 0

    @property
    def t(self) -> float:
        return self.frames * self.frame_s

    def push(self, frame: bytes) -> list[SegmentEvent]:
        """One frame of exactly ``frame_bytes``; returns the segment events it causes."""
        if len(frame) != self.frame_bytes:
            raise ValueError(f"VAD frame must be {self.frame_bytes} bytes, got {len(frame)}")
        voiced = self.is_speech(frame)
        self.frames += 1
        self.voiced_frames += voiced
        out: list[SegmentEvent] = []
        if self.state is VadState.QUIET:
            self._window.append(voiced)
            self._preroll.append(frame)
            if sum(self._window) >= self._need:
                self.state = VadState.SPEAKING
                self._silence = 0
                self._utt_frames = len(self._preroll)
                out.append(Start(t=max(0.0, self.t - len(self._preroll) * self.frame_s)))
                out.extend(Voice(f) for f in self._preroll)
                self._preroll.clear()
                self._window.clear()
            return out
        out.append(Voice(frame))
        self._utt_frames += 1
        self._silence = 0 if voiced else self._silence + 1
        if self._silence >= self._stop_frames:
            self.state = VadState.QUIET
            out.append(Stop(t=self.t))
        elif self._utt_frames >= self._max_frames:
            self.state = VadState.QUIET
            out.append(Stop(t=self.t, forced=True))
        return out

    def flush(self) -> list[SegmentEvent]:
        """End of stream: close an open utterance."""
        if self.state is VadState.SPEAKING:
            self.state = VadState.QUIET
            return [Stop(t=self.t)]
        return []


def webrtc_classifier(rate: int, aggressiveness: int, energy_floor_dbfs: float | None = -50.0
                      ) -> Callable[[bytes], bool]:
    """webrtcvad's frame classifier (10/20/30 ms frames at 8/16/32/48 kHz), behind an energy
    floor: webrtcvad adapts its noise estimate to loud speech and then calls quiet line noise
    speech for seconds (measured: a -60 dBFS hiss after an utterance kept the VAD open for the
    whole pause), so frames quieter than the floor are silence whatever webrtcvad says."""
    import numpy as np
    import webrtcvad

    vad = webrtcvad.Vad(aggressiveness)
    floor = None if energy_floor_dbfs is None else (32768.0 * 10 ** (energy_floor_dbfs / 20)) ** 2

    def is_speech(frame: bytes) -> bool:
        if floor is not None:
            x = np.frombuffer(frame, dtype=np.int16).astype(np.float32)
            if float(np.dot(x, x)) / len(x) < floor:
                return False
        return bool(vad.is_speech(frame, rate))

    return is_speech
