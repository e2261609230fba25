"""One frozen dataclass per fact. Every consumer (console, store, statistics, CLI) reads these.

Times are seconds from the start of the audio stream (``t0``/``t1``) so that an offline
replay and a live call produce the same events.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SpeechStarted:
    stream_id: str
    t: float


@dataclass(frozen=True)
class SpeechStopped:
    stream_id: str
    t: float


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    conf: float


@dataclass(frozen=True)
class PartialTranscript:
    """Interim hypothesis for the utterance in progress; may still change."""

    stream_id: str
    utterance_id: int
    text: str
    t0: float
    t1: float


@dataclass(frozen=True)
class FinalTranscript:
    """Settled text of one utterance, with word timings when the engine gives them."""

    stream_id: str
    utterance_id: int
    text: str
    t0: float
    t1: float
    words: tuple[Word, ...] = ()
    source: str = "asr"  # "asr", or "reference" when a fixture's reference text stands in


@dataclass(frozen=True)
class Match:
    """A list word (or homophone of one) found in the transcript, at [start, end) characters."""

    word: str
    start: int
    end: int
    group: str = ""  # category id or danger group id
    kind: str = "word"  # "word", "pattern", "homophone", or "model" (an n-gram the learned layer weighed)
    heard: str = ""  # the text actually heard, when it differs from ``word``


@dataclass(frozen=True)
class Alternative:
    """A diversion the operator may pick with one key when the router keeps the call because two
    destinations had equal evidence (ROUTING.md: ``alternatives``)."""

    target: str
    category: str
    category_id: str
    dept: str
    evidence: tuple[Match, ...]


@dataclass(frozen=True)
class Decision:
    """The routing decision, as ROUTING.md "What a decision carries" (plus ``reason``)."""

    call_id: str
    utterance_id: int
    target: str
    category: str
    dept: str
    confidence: float
    matched: tuple[Match, ...]
    vetoed_by: tuple[Match, ...]
    urgent: bool
    rule_version: str
    reason: str = ""
    category_id: str = ""
    text: str = ""
    t: float = 0.0
    model_version: str = ""  # the learned layer's artefact version ("" when the rules decided alone)
    alternatives: tuple[Alternative, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def diverted(self) -> bool:
        return self.target != "police"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["matched"] = [_match_dict(m) for m in self.matched]
        d["vetoed_by"] = [_match_dict(m) for m in self.vetoed_by]
        d["alternatives"] = [{"target": a.target, "category": a.category, "category_id": a.category_id,
                              "dept": a.dept, "evidence": [_match_dict(m) for m in a.evidence]}
                             for a in self.alternatives]
        if not d["extra"]:
            del d["extra"]
        return d


def _match_dict(m: Match) -> dict[str, Any]:
    d: dict[str, Any] = {"word": m.word, "start": m.start, "end": m.end, "group": m.group, "kind": m.kind}
    if m.heard:
        d["heard"] = m.heard
    return d


@dataclass(frozen=True)
class StreamEnded:
    stream_id: str
    t: float
    frames: int
    dropped_frames: int = 0


Event = SpeechStarted | SpeechStopped | PartialTranscript | FinalTranscript | Decision | StreamEnded


def event_to_dict(ev: Event) -> dict[str, Any]:
    """A JSON-ready dict with a ``type`` field; used by ``--json`` output and later the console."""
    if isinstance(ev, Decision):
        d = ev.to_dict()
    else:
        d = asdict(ev)
    d["type"] = type(ev).__name__
    return d
