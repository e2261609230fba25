"""Text normalisation for caller transcripts, keeping a map back to the original characters.

ASR output (Vosk puts spaces between words), typed text and traditional characters all come
out as one compact simplified string; ``Normalized.span`` turns a match in it back into
character positions of the original transcript, which is what the operator sees highlighted.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import opencc

_DIGITS = {"零": "0", "〇": "0", "幺": "1", "一": "1", "二": "2", "两": "2", "三": "3", "四": "4",
           "五": "5", "六": "6", "七": "7", "八": "8", "九": "9"}
_PHONE_DIGITS = set(_DIGITS) - {"两"}


@dataclass(frozen=True)
class Normalized:
    original: str
    text: str
    index: tuple[int, ...]  # index[i] = position in ``original`` of text[i]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original [start, end) for normalised [start, end)."""
        if start >= end or not self.index:
            return (0, 0)
        return (self.index[start], self.index[end - 1] + 1)


class Normalizer:
    """Traditional -> simplified, full -> half width, drop spaces and fillers, spoken digit runs
    (幺二三四五) -> digits. One instance per router (the OpenCC converter is reused)."""

    def __init__(self, fillers: tuple[str, ...] = ()) -> None:
        self._t2s = opencc.OpenCC("t2s")
        longest_first = sorted(fillers, key=len, reverse=True)
        self._filler_re = re.compile("|".join(map(re.escape, longest_first))) if longest_first else None

    def __call__(self, original: str) -> Normalized:
        simplified = self._t2s.convert(original)
        if len(simplified) != len(original):  # phrase conversion changed length: go char by char
            simplified = "".join(self._t2s.convert(ch) or ch for ch in original)
            if len(simplified) != len(original):
                simplified = original
        chars: list[str] = []
        index: list[int] = []
        for i, ch in enumerate(simplified):
            if ch.isspace():
                continue
            for out in unicodedata.normalize("NFKC", ch):
                if out.isspace():
                    continue
                chars.append(out.upper() if out.isascii() else out)
                index.append(i)
        chars, index = self._drop_fillers(chars, index)
        self._spoken_digits(chars)
        return Normalized(original=original, text="".join(chars), index=tuple(index))

    def _drop_fillers(self, chars: list[str], index: list[int]) -> tuple[list[str], list[int]]:
        if self._filler_re is None:
            return chars, index
        keep = [True] * len(chars)
        for m in self._filler_re.finditer("".join(chars)):
            for k in range(m.start(), m.end()):
                keep[k] = False
        return ([c for c, k in zip(chars, keep, strict=True) if k],
                [x for x, k in zip(index, keep, strict=True) if k])

    @staticmethod
    def _spoken_digits(chars: list[str]) -> None:
        """Runs of three or more spoken digits are numbers (phone numbers, 12345), not words."""
        i = 0
        while i < len(chars):
            j = i
            while j < len(chars) and chars[j] in _PHONE_DIGITS:
                j += 1
            if j - i >= 3:
                for k in range(i, j):
                    chars[k] = _DIGITS[chars[k]]
            i = max(j, i + 1)
