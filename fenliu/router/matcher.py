"""Find the negative list's words, patterns and near-homophones in a normalised transcript.

Pure code: jieba (segmentation) and pypinyin (homophones) are libraries, not I/O.

- Category words count only where segmentation agrees they are words: a jieba token, a dictionary
  word inside a longer token (公交 in 公交车), or a run of whole tokens — so 动手 is not read out
  of 移动手机 for a category. The list's own words are added to jieba's dictionary so it keeps
  them whole.
- Danger words err toward matching: any substring counts (noisy ASR text segments badly), except
  inside a longer word the list names as harmless (``[segmentation] keep_whole``: 移动手机,
  拆除钢管, 打不着火 …) or inside a longer category word.
- Single-character words match only whole jieba tokens ("打车" is not "打").
- Strong words of two or more characters (danger words of three or more) also match by fuzzy
  pinyin, so an ASR error like 工自 for 工资 still counts, flagged ``homophone``.
- A pattern matches when one alternative of each term is found within its window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import ahocorasick
import jieba
from pypinyin import Style, lazy_pinyin

from fenliu.router.rules import Pattern, RuleSet

jieba.setLogLevel(logging.WARNING)

# Owner kinds
DECISIVE = "decisive"
STRONG = "strong"
WEAK = "weak"
DANGER = "danger"
KEEP = "keep"  # [segmentation] keep_whole words: they only shadow danger words inside them
DANGER_HOMOPHONE_MIN = 3
CATEGORY_ROLES = frozenset({DECISIVE, STRONG, WEAK})


@dataclass(frozen=True)
class Hit:
    """One occurrence in the normalised text [start, end)."""

    word: str  # the list's word (or pattern text)
    start: int
    end: int
    group: str  # category or danger group id
    role: str  # DECISIVE, STRONG, WEAK, DANGER (patterns of categories count as STRONG)
    kind: str  # "word", "pattern", "homophone"
    heard: str = ""  # what the text says, for homophones


@lru_cache(maxsize=8192)
def _syllable(ch: str) -> str:
    """Toneless pinyin of one character, folded for common ASR/accent confusions
    (zh/z ch/c sh/s, n/l, -ng/-n). Non-Chinese characters map to themselves."""
    py = lazy_pinyin(ch, style=Style.NORMAL, errors=lambda s: list(s))  # type: ignore[arg-type,return-value]
    s = py[0] if py else ch
    if s == ch:
        return ch
    if s[:2] in ("zh", "ch", "sh"):
        s = s[0] + s[2:]
    elif s.startswith("n"):
        s = "l" + s[1:]
    if s.endswith("ng") and s != "ng":
        s = s[:-1]
    return s


def syllables(text: str) -> tuple[str, ...]:
    return tuple(_syllable(ch) for ch in text)


class Matcher:
    """Built once per rule set; ``find(text)`` is pure and thread-safe."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        # word -> list of (group, role)
        self.owners: dict[str, list[tuple[str, str]]] = {}
        for c in rules.categories:
            for w in c.decisive:
                self.owners.setdefault(w, []).append((c.id, DECISIVE))
            for w in c.strong:
                self.owners.setdefault(w, []).append((c.id, STRONG))
            for w in c.weak:
                self.owners.setdefault(w, []).append((c.id, WEAK))
        for g in rules.danger:
            for w in g.words:
                self.owners.setdefault(w, []).append((g.id, DANGER))
        for w in rules.keep_whole:
            self.owners.setdefault(w, []).append(("", KEEP))

        self.single = frozenset(w for w in self.owners if len(w) == 1)
        self.by_sound: dict[tuple[str, ...], list[str]] = {}
        for w, owners in self.owners.items():
            if not all("\u4e00" <= ch <= "\u9fff" for ch in w):
                continue
            # two-character homophones are everywhere (显示/想死): danger words need three or more
            # weak words are too common to guess at: only strong and danger words match by sound
            roles = {r for _, r in owners}
            min_len = DANGER_HOMOPHONE_MIN if DANGER in roles else 2
            if len(w) >= min_len and roles & {DECISIVE, STRONG, DANGER}:
                self.by_sound.setdefault(syllables(w), []).append(w)
        # first two syllables -> the sound keys starting with them (most positions have none)
        self.sound_prefix: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        for key in self.by_sound:
            self.sound_prefix.setdefault(key[:2], []).append(key)

        self.tokenizer = jieba.Tokenizer()
        self.tokenizer.initialize()
        for w in sorted(rules.all_words()):
            if len(w) > 1:
                self.tokenizer.add_word(w, freq=200000)

        self.patterns: list[tuple[str, str, Pattern]] = []
        for c in rules.categories:
            self.patterns += [(c.id, STRONG, p) for p in c.patterns]
        for g in rules.danger:
            self.patterns += [(g.id, DANGER, p) for p in g.patterns]

        # one Aho-Corasick pass finds every multi-character word and every pattern term
        self.automaton = ahocorasick.Automaton()
        needles = {w for w in self.owners if len(w) > 1}
        needles.update(a for _, _, p in self.patterns for alts in p.terms for a in alts)
        for w in needles:
            self.automaton.add_word(w, w)
        self.automaton.make_automaton()

    def tokens(self, text: str) -> list[tuple[str, int, int]]:
        return list(self.tokenizer.tokenize(text, HMM=False))

    def _segments(self, tokens: list[tuple[str, int, int]]) -> tuple[set[tuple[int, int]], set[int]]:
        """(word spans, token boundaries): every token, and the dictionary words of two or three
        characters inside a longer token (jieba's search mode: 公交 in 公交车)."""
        words: set[tuple[int, int]] = set()
        bounds: set[int] = set()
        freq = self.tokenizer.FREQ
        for tok, s, e in tokens:
            words.add((s, e))
            bounds.update((s, e))
            for n in (2, 3):
                if len(tok) > n:
                    for i in range(len(tok) - n + 1):
                        if freq.get(tok[i : i + n]):
                            words.add((s + i, s + i + n))
        return words, bounds

    def find(self, text: str) -> list[Hit]:
        hits: list[Hit] = []
        exact_spans: set[tuple[int, int]] = set()
        found: dict[str, list[tuple[int, int]]] = {}
        for end, w in self.automaton.iter(text):
            found.setdefault(w, []).append((end + 1 - len(w), end + 1))
        # multi-character words: substring (single characters found here are pattern terms)
        for w, spans in found.items():
            if len(w) == 1:
                continue
            for group, role in self.owners.get(w, ()):
                for s, e in spans:
                    hits.append(Hit(w, s, e, group, role, "word"))
            if w in self.owners:
                exact_spans.update(spans)
        # segmentation, when a category word or a single-character word needs it
        if any(h.role in CATEGORY_ROLES for h in hits) or not self.single.isdisjoint(text):
            tokens = self.tokens(text)
            words, bounds = self._segments(tokens)
            hits = [h for h in hits if h.role not in CATEGORY_ROLES
                    or (h.start, h.end) in words or (h.start in bounds and h.end in bounds)]
            # single characters: whole tokens only
            for tok, s, e in tokens:
                if tok in self.single:
                    exact_spans.add((s, e))
                    for group, role in self.owners[tok]:
                        hits.append(Hit(tok, s, e, group, role, "word"))
        # near-homophones of the list's words, where the exact word is not there
        sy = syllables(text)
        for i in range(len(text) - 1):
            for key in self.sound_prefix.get(sy[i : i + 2], ()):
                n = len(key)
                if sy[i : i + n] != key:
                    continue
                sounds_like = self.by_sound[key]
                heard = text[i : i + n]
                if (i, i + n) in exact_spans or heard in self.owners:
                    continue
                for w in sounds_like:
                    for group, role in self.owners[w]:
                        if role in (DECISIVE, STRONG) or (role == DANGER and n >= DANGER_HOMOPHONE_MIN):
                            hits.append(Hit(w, i, i + n, group, role, "homophone", heard=heard))
        # co-occurrence patterns
        for group, role, p in self.patterns:
            span = match_pattern(found, p)
            if span is not None:
                hits.append(Hit(p.text, span[0], span[1], group, role, "pattern", heard=text[span[0]:span[1]]))
        return _drop_shadowed_danger(hits)


def _drop_shadowed_danger(hits: list[Hit]) -> list[Hit]:
    """A danger word lying wholly inside a longer exact category or keep-whole word is that
    word, not a danger signal (着火 in 打不着火 or 睡着了). Keep-whole hits are dropped here."""
    longer = [h for h in hits if h.role != DANGER and h.kind == "word"]
    return [h for h in hits if h.role != KEEP and not (
        h.role == DANGER and h.kind != "pattern"
        and any(c.start <= h.start and h.end <= c.end and c.end - c.start > h.end - h.start for c in longer))]


def match_pattern(found: dict[str, list[tuple[int, int]]], p: Pattern) -> tuple[int, int] | None:
    """Smallest-start span where every term has an alternative inside ``p.window`` chars.
    ``found`` maps each needle to its [start, end) occurrences in the text."""
    occurrences: list[list[tuple[int, int]]] = []
    for alts in p.terms:
        occ = [span for a in alts for span in found.get(a, ())]
        if not occ:
            return None
        occurrences.append(sorted(occ))
    for s0, e0 in occurrences[0]:
        lo, hi = s0, e0
        ok = True
        for occ in occurrences[1:]:
            best = None
            for s, e in occ:
                nlo, nhi = min(lo, s), max(hi, e)
                if nhi - nlo <= p.window and (best is None or nhi - nlo < best[1] - best[0]):
                    best = (nlo, nhi)
            if best is None:
                ok = False
                break
            lo, hi = best
        if ok:
            return (lo, hi)
    return None
