"""The ASR engine interface, and its Vosk implementation.

An engine is loaded once (one shared model) and opens one ``RecognizerStream`` per audio
stream. A stream takes 16-bit mono PCM at ``engine.sample_rate`` and returns partial and
final hypotheses; ``end_utterance()`` closes the current utterance (VAD said stop) and
``finish()`` the stream (hang-up). Another engine (a stronger Chinese model) implements the
same two small protocols.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

from fenliu.errors import ModelError
from fenliu.events import Word


@dataclass(frozen=True)
class Hypothesis:
    text: str
    final: bool
    words: tuple[Word, ...] = ()  # times in seconds of audio fed to this stream


class RecognizerStream(Protocol):
    def accept(self, pcm: bytes) -> Hypothesis | None: ...

    def end_utterance(self) -> Hypothesis: ...

    def release(self) -> None:
        """The stream is finished (hang-up): the engine may reuse what it holds."""

    @property
    def fed_seconds(self) -> float: ...


class AsrEngine(Protocol):
    name: str
    sample_rate: int

    def open_stream(self) -> RecognizerStream: ...


class VoskStream:
    """One ``KaldiRecognizer``. Vosk's own endpointing may finalise mid-utterance
    (``AcceptWaveform`` returns True); partials are de-duplicated here."""

    def __init__(self, recognizer: object, sample_rate: int, partial_every_ms: int = 200,
                 pool: RecognizerPool | None = None) -> None:
        self._rec = recognizer
        self._pool = pool
        # a reused recogniser's word times run on from the audio it decoded before (Vosk keeps
        # counting across FinalResult): subtract what it had been fed when we got it
        self._base = pool.fed(recognizer) / 2 / sample_rate if pool is not None else 0.0
        self._rate = sample_rate
        self._fed = 0
        self._last_partial = ""
        # PartialResult() re-searches the lattice: asking every 20 ms frame costs more CPU than
        # the decoding itself; every 200 ms keeps partials prompt for the router
        self._partial_bytes = sample_rate * 2 * partial_every_ms // 1000
        self._since_partial = 0

    @property
    def fed_seconds(self) -> float:
        return self._fed / 2 / self._rate

    def accept(self, pcm: bytes) -> Hypothesis | None:
        self._fed += len(pcm)
        rec = self._rec
        if rec.AcceptWaveform(pcm):  # type: ignore[attr-defined]
            self._last_partial = ""
            self._since_partial = 0
            return _final(rec.Result(), self._base)  # type: ignore[attr-defined]
        self._since_partial += len(pcm)
        if self._since_partial < self._partial_bytes:
            return None
        self._since_partial = 0
        partial = json.loads(rec.PartialResult()).get("partial", "").strip()  # type: ignore[attr-defined]
        if partial and partial != self._last_partial:
            self._last_partial = partial
            return Hypothesis(text=partial, final=False)
        return None

    def end_utterance(self) -> Hypothesis:
        self._last_partial = ""
        return _final(self._rec.FinalResult(), self._base)  # type: ignore[attr-defined]

    def release(self) -> None:
        if self._pool is not None and self._rec is not None:
            self._rec.FinalResult()  # type: ignore[attr-defined]  # no utterance carries over
            self._pool.put(self._rec, self._fed)
        self._rec = None


class RecognizerPool:
    """Warm ``KaldiRecognizer`` objects for reuse. A fresh recogniser spends ~1 s of CPU on its
    first 2 s of audio (nnet3 compiling its computations), which stalls a busy ASR process
    for every new call; one that has decoded before runs at its normal ~0.2 real-time factor.
    Thread-safe (a lock around a list)."""

    def __init__(self, make: Callable[[], object], keep: int = 16) -> None:
        self._make = make
        self._keep = keep
        self._free: list[object] = []
        self._fed: dict[int, int] = {}  # id(recogniser) -> bytes it has decoded in its life
        self._lock = threading.Lock()

    def get(self) -> object:
        with self._lock:
            if self._free:
                return self._free.pop()
        return self._make()

    def put(self, rec: object, fed: int = 0) -> None:
        with self._lock:
            self._fed[id(rec)] = self._fed.get(id(rec), 0) + fed
            if len(self._free) < self._keep:
                self._free.append(rec)
            else:
                self._fed.pop(id(rec), None)

    def fed(self, rec: object) -> int:
        with self._lock:
            return self._fed.get(id(rec), 0)

    def warm(self, n: int, pcm: bytes) -> None:
        """Make ``n`` new recognisers decode ``pcm`` once and offer each as soon as it is warm
        (the ones already warm stay available to calls meanwhile)."""
        for _ in range(n):
            rec = self._make()
            for i in range(0, len(pcm), 640):
                rec.AcceptWaveform(pcm[i:i + 640])  # type: ignore[attr-defined]
            rec.FinalResult()  # type: ignore[attr-defined]
            self.put(rec, len(pcm))

    @property
    def free(self) -> int:
        with self._lock:
            return len(self._free)


def _final(raw: str, base: float = 0.0) -> Hypothesis:
    data = json.loads(raw)
    words = tuple(Word(word=w["word"], start=round(float(w["start"]) - base, 3), end=round(float(w["end"]) - base, 3),
                       conf=float(w.get("conf", 1.0)))
                  for w in data.get("result", []))
    return Hypothesis(text=data.get("text", "").strip(), final=True, words=words)


class VoskEngine:
    """One shared ``vosk.Model``; load it once at start-up (never at import)."""

    def __init__(self, model_path: str | Path, sample_rate: int = 16000, partial_every_ms: int = 200) -> None:
        import vosk

        vosk.SetLogLevel(-1)
        path = Path(model_path)
        check_model_dir(path)
        try:
            self._model = vosk.Model(str(path))
        except Exception as e:  # vosk raises a bare Exception on a bad model
            raise ModelError(f"{path}: Vosk 无法加载该模型 / Vosk could not load this model ({e}); "
                             f"re-download it (fenliu model fetch small-cn) or point asr.model at a "
                             f"complete unpacked model") from e
        self.name = path.name
        self.path = path
        self.sample_rate = sample_rate
        self.partial_every_ms = partial_every_ms
        self.pool = RecognizerPool(self._new_recognizer)

    def __reduce__(self) -> tuple[type, tuple[Path, int, int]]:
        """To another process (an ASR process) as its recipe: it loads the model itself."""
        return VoskEngine, (self.path, self.sample_rate, self.partial_every_ms)

    def _new_recognizer(self) -> object:
        import vosk

        rec = vosk.KaldiRecognizer(self._model, self.sample_rate)
        rec.SetWords(True)
        return rec

    def open_stream(self) -> VoskStream:
        return VoskStream(self.pool.get(), self.sample_rate, self.partial_every_ms, self.pool)

    def warm(self, n: int) -> None:
        """Prepare ``n`` recognisers so the first calls do not stall (~1 s of CPU each). It takes
        speech to do it (noise leaves most of the cost for the first caller): 2.5 s of synthetic
        Mandarin shipped with fenliu; any voice or language works equally well."""
        from fenliu.asr.audio import read_wav, resample

        clip = read_wav(resources.files("fenliu.asr") / "warmup.wav")  # type: ignore[arg-type]
        self.pool.warm(n, resample(clip.pcm, clip.rate, self.sample_rate))


def check_model_dir(path: Path) -> None:
    """A Vosk model directory has an acoustic model (am/final.mdl) and a config dir."""
    if not path.is_dir():
        raise ModelError(f"{path}: 模型目录不存在 / model directory not found")
    if not ((path / "am" / "final.mdl").exists() or (path / "final.mdl").exists()):
        raise ModelError(f"{path}: 不是完整的 Vosk 模型（缺少 am/final.mdl）/ not a complete Vosk model "
                         f"(am/final.mdl missing); unpack the whole model zip here")
