"""Measuring a router on labelled cases: the numbers ``scripts/eval_router.py`` and
``scripts/bench.py`` print. Pure code: cases and a decide function in, numbers out.

- police diverted: police cases sent anywhere but 110 (must be 0);
- exact: non-police cases sent to the labelled target (and, stricter, target + category);
- acceptable: non-police cases sent to a hotline that handles that kind of matter — the labelled
  target, or 12345 (the city hotline dispatches every city matter), never police;
- per-target precision/recall and a target confusion matrix.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fenliu.router.dataset import POLICE, Case
from fenliu.router.rules import RuleSet

TARGETS = ("police", "12345", "12348", "12328", "12338", "95598", "social")


def acceptable(case: Case, target: str) -> bool:
    return not case.police and target in (case.target, "12345")


@dataclass
class Result:
    n: int = 0
    police: int = 0
    police_diverted: list[str] = field(default_factory=list)
    non_police: int = 0
    exact_target: int = 0
    exact_category: int = 0
    acceptable: int = 0
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)  # (expected, decided)
    misses: list[tuple[Case, str, str, str]] = field(default_factory=list)  # case, target, category id, reason

    def precision_recall(self, target: str) -> tuple[float, float, int]:
        tp = self.confusion[(target, target)]
        decided = sum(n for (e, d), n in self.confusion.items() if d == target)
        expected = sum(n for (e, d), n in self.confusion.items() if e == target)
        return tp / max(decided, 1), tp / max(expected, 1), expected

    def pct(self, k: int) -> str:
        return f"{k}/{self.non_police} ({k / max(self.non_police, 1):.1%})"


# decide function: text -> (target, category id, reason)
Decide = Callable[[str], tuple[str, str, str]]


def measure(cases: Sequence[Case], decide: Decide) -> Result:
    r = Result()
    for c in cases:
        target, cat, reason = decide(c.text)
        r.n += 1
        r.confusion[(c.target, target)] += 1
        if c.police:
            r.police += 1
            if target != POLICE:
                r.police_diverted.append(c.id)
                r.misses.append((c, target, cat, reason))
            continue
        r.non_police += 1
        r.exact_target += target == c.target
        r.exact_category += target == c.target and cat == c.category
        r.acceptable += acceptable(c, target)
        if (target, cat) != (c.target, c.category):
            r.misses.append((c, target, cat, reason))
    return r


class NaiveRouter:
    """Baseline: substring scan of the same list; any danger word -> police, else the category
    with most words present (no segmentation, negation, patterns, homophones or model)."""

    def __init__(self, rules: RuleSet) -> None:
        self.danger = [w for g in rules.danger for w in g.words]
        self.cats = [(c, c.decisive + c.strong + c.weak) for c in rules.categories]

    def decide(self, text: str) -> tuple[str, str, str]:
        if any(w in text for w in self.danger):
            return (POLICE, POLICE, "danger word")
        best, score = None, 0
        for c, words in self.cats:
            s = sum(1 for w in words if w in text)
            if s > score:
                best, score = c, s
        return (best.target, best.id, "most words") if best else (POLICE, POLICE, "no word")


__all__ = ["TARGETS", "NaiveRouter", "Result", "acceptable", "measure"]
