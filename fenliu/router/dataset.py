"""The labelled corpus the learned layer is trained and judged on (see ``corpus/README.md``).

Each case has an author; the split is by author (``corpus/split.toml``): held-out authors are
never used for training or for choosing thresholds. ``asr_variant`` makes the ASR-style copies
(homophone substitutions, dropped and repeated characters, no punctuation, fillers, word spaces)
deterministically from a case's id.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tomllib
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

import jieba

from fenliu.router.matcher import _syllable
from fenliu.router.rules import RuleSet

POLICE = "police"
_PUNCT = re.compile(r"[，。！？、；：“”‘’（）《》…—,.!?;:()\"'\[\]~～·\-]+")
_FILLERS = ("嗯", "啊", "那个", "就是", "呃", "然后")


@dataclass(frozen=True)
class Case:
    id: str
    author: str
    text: str
    target: str
    category: str  # category id, or "police"
    group: str = ""  # danger group id for police cases ("other" for other police matters)
    register: str = ""
    variant: str = ""  # "" for the written case, "asr" for a generated ASR-style copy

    @property
    def police(self) -> bool:
        return self.target == POLICE


def corpus_dir() -> Path:
    return Path(str(resources.files("fenliu.router") / "corpus"))


def load_split(folder: Path | None = None) -> tuple[str, ...]:
    """The held-out authors."""
    data = tomllib.loads(((folder or corpus_dir()) / "split.toml").read_text(encoding="utf-8"))
    return tuple(data["split"]["heldout"])


def load_jsonl(path: Path, rules: RuleSet) -> list[Case]:
    """Corpus files ({id, author, text, target, category id, group, register}) and the older
    labelled sets ({id, text, target, category name}; author = the id's prefix)."""
    by_name = {(c.name, c.target): c.id for c in rules.categories}
    known = {c.id: c.target for c in rules.categories}
    cases = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        obj = json.loads(line)
        target, cat = obj["target"], obj.get("category", POLICE)
        if target == POLICE:
            cat = POLICE
        elif cat not in known:
            cat = by_name.get((cat, target), "")
        if target != POLICE and known.get(cat) != target:
            raise ValueError(f"{path}:{n}: category {obj['category']!r} does not fit target {target!r}")
        author = obj.get("author") or obj["id"].split("-")[0]
        cases.append(Case(id=obj["id"], author=author, text=obj["text"], target=target, category=cat,
                          group=obj.get("group", ""), register=obj.get("register", "")))
    return cases


def corpus_files(folder: Path | None = None) -> list[Path]:
    return sorted((folder or corpus_dir()).glob("*.jsonl"))


def corpus_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


# -- ASR-style variants ----------------------------------------------------------------
@lru_cache(maxsize=1)
def _homophones() -> dict[str, tuple[str, ...]]:
    """Folded toneless syllable -> the common characters (GB2312 level 1) that sound like it."""
    by_sound: dict[str, list[str]] = {}
    for hi in range(0xB0, 0xD8):
        for lo in range(0xA1, 0xFF):
            try:
                ch = bytes([hi, lo]).decode("gb2312")
            except UnicodeDecodeError:
                continue
            s = _syllable(ch)
            if s != ch:
                by_sound.setdefault(s, []).append(ch)
    return {s: tuple(chs) for s, chs in by_sound.items()}


def _rng(case_id: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "big"))


def asr_variant(case: Case, rate: float = 0.08) -> Case:
    """What a recogniser might make of the case when spoken: no punctuation, words often spaced,
    ~``rate`` of the characters replaced by same-sounding ones, a few dropped or doubled, fillers."""
    rng = _rng(case.id)
    words = [w for w in jieba.cut(_PUNCT.sub(" ", case.text), HMM=False) if w.strip()]
    homo = _homophones()
    out: list[str] = []
    for w in words:
        chars = []
        for ch in w:
            r = rng.random()
            if r < rate and (alts := homo.get(_syllable(ch))):
                chars.append(rng.choice(alts))
            elif r < rate + 0.02:
                continue  # dropped
            elif r < rate + 0.04:
                chars.append(ch + ch)  # stutter
            else:
                chars.append(ch)
        if chars:
            out.append("".join(chars))
        if rng.random() < 0.05:
            out.append(rng.choice(_FILLERS))
    sep = " " if rng.random() < 0.6 else ""
    return replace(case, id=case.id + "~asr", text=sep.join(out), variant="asr", register="asr")


__all__ = ["Case", "asr_variant", "corpus_dir", "corpus_digest", "corpus_files", "load_jsonl",
           "load_split"]
