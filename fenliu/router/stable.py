"""Incremental routing over a live call: partial and final transcripts in, decisions out.

The suggestion shown to the operator must not flap while the recogniser revises a partial:
- danger is sticky: once any transcript of the call carried a danger signal, the call stays
  with 110 for good (a revised partial does not un-ring the bell);
- a diversion, once suggested, is kept until another category has clearly more evidence
  (``switch_margin``) — or equal-or-more on a final transcript;
- a decision is emitted only when target, category or urgency change.
"""

from __future__ import annotations

from dataclasses import replace

from fenliu.events import Decision
from fenliu.router.decide import Context, Router


class CallRouter:
    def __init__(self, router: Router, context: Context | None = None, switch_margin: float = 1.0) -> None:
        self.router = router
        self.context = context or Context()
        self.switch_margin = switch_margin
        self.finals: list[str] = []
        self.current: Decision | None = None
        self.danger_locked = False

    def on_partial(self, utterance_id: int, text: str, t: float = 0.0) -> Decision | None:
        return self._update(" ".join([*self.finals, text]), utterance_id, t, final=False)

    def on_final(self, utterance_id: int, text: str, t: float = 0.0) -> Decision | None:
        if text.strip():
            self.finals.append(text.strip())
        return self._update(" ".join(self.finals), utterance_id, t, final=True)

    def _update(self, text: str, utterance_id: int, t: float, final: bool) -> Decision | None:
        if not text.strip():
            return None
        a = self.router.analyze(text)
        ctx = replace(self.context, utterance_id=utterance_id, t=t)
        if a.danger:
            self.danger_locked = True
            return self._emit(self.router.decision_from(a, ctx))
        if self.danger_locked:
            return None
        cur = self.current
        best = a.best
        if cur is not None and cur.diverted:
            if best is None or best.category_id == cur.category_id:
                return None  # same suggestion, or a revised partial lost words: keep it
            held = next((s.score for s in a.scores if s.category_id == cur.category_id), 0.0)
            needed = held if final else held + self.switch_margin
            if best.score < needed or best.score <= held:
                return None
        return self._emit(self.router.decision_from(a, ctx, best))

    def _emit(self, d: Decision) -> Decision | None:
        prev = self.current
        self.current = d
        if prev is not None and (prev.target, prev.category, prev.urgent) == (d.target, d.category, d.urgent):
            return None
        return d
