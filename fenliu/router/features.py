"""Text features for the learned layer: character n-grams, jieba words and pinyin syllable pairs.

Pure code. The same function feeds training (``fenliu.router.training``) and inference
(``fenliu.router.model``), so what the model learnt is exactly what it sees at run time.

- ``c:`` character 1-, 2- and 3-grams of the compact text: robust to unknown words and to
  word-boundary errors of noisy ASR text;
- ``w:`` jieba words (a plain dictionary, independent of the negative list, so editing the list
  never changes what the model sees);
- ``p:`` pairs of folded toneless pinyin syllables (zh/z, n/l, -ng/-n), so that a transcript
  with same-sounding wrong characters (着伙 for 着火, 工自 for 工资) still shares features with
  the correctly written text.

Digit runs become ``#`` (amounts and phone numbers vary; their presence is what matters).
"""

from __future__ import annotations

import logging
import re
from collections import Counter

import jieba

from fenliu.router.matcher import syllables

jieba.setLogLevel(logging.WARNING)

_KEEP = re.compile(r"[\u4e00-\u9fffA-Za-z#]+")
_DIGITS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def clean(text: str) -> str:
    """Normalised text (``Normalizer`` output) -> only CJK, Latin letters and ``#`` for numbers."""
    return "".join(_KEEP.findall(_DIGITS.sub("#", text)))


class Featurizer:
    """Built once (loads jieba's dictionary); ``__call__`` is pure and thread-safe."""

    def __init__(self) -> None:
        self.tokenizer = jieba.Tokenizer()
        self.tokenizer.initialize()

    def __call__(self, normalized_text: str) -> Counter[str]:
        text = clean(normalized_text)
        n = len(text)
        feats = [f"c:{text[i : i + size]}" for size in (1, 2, 3) for i in range(n - size + 1)]
        feats += [f"w:{w}" for w in self.tokenizer.cut(text, HMM=False) if len(w) > 1]
        sy = syllables(text)
        # pairs of Chinese syllables (a character without pinyin maps to itself)
        feats += [f"p:{sy[i]} {sy[i + 1]}" for i in range(n - 1) if sy[i] != text[i] and sy[i + 1] != text[i + 1]]
        return Counter(feats)


def shown(feature: str) -> str:
    """How a feature reads as evidence for the operator: the characters, the word, or the
    pinyin pair as heard."""
    kind, _, value = feature.partition(":")
    return value if kind in ("c", "w") else f"[{value}]"


__all__ = ["Featurizer", "clean", "shown"]
