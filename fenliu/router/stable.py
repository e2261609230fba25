"""Incremental routing over a live call: partial and final transcripts in, decisions out.

The suggestion shown to the operator must not flap while the recogniser revises a partial:
- danger is sticky: once any transcript of the call carried a danger signal, the call stays
  with 110 for good (a revised partial does not un-ring the bell);
- the learned layer's veto takes a diversion back at once (safety first), but a vetoed call is
  offered for diversion again only on a final transcript or once the police probability has
  fallen ``veto_hysteresis`` below the threshold;
- a diversion, once suggested, is kept until another category has clearly more evidence
  (``switch_margin`` rule points, or ``model_margin`` probability for the model's suggestions)
  — or equal-or-more on a final transcript; a revised partial that lost words keeps it;
- a decision is emitted only when target, category or urgency change.
"""

from __future__ import annotations

from dataclasses import replace

from fenliu.events import Decision
from fenliu.router.decide import MODEL, MODEL_VETO, RULES, Analysis, Choice, Context, Router


class CallRouter:
    def __init__(self, router: Router, context: Context | None = None, switch_margin: float = 1.0,
                 model_margin: float = 0.15, veto_hysteresis: float = 0.1) -> None:
        self.router = router
        self.context = context or Context()
        self.switch_margin = switch_margin
        self.model_margin = model_margin
        self.veto_hysteresis = veto_hysteresis
        self.finals: list[str] = []
        self.current: Decision | None = None
        self.current_choice: Choice | None = None
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
        elif self.danger_locked:
            return None
        choice = self.router.choose(a, ctx)
        if not a.danger and not self._should_change(a, choice, final):
            return None
        self.current_choice = choice
        return self._emit(self.router.decision_from(a, ctx, choice))

    def _should_change(self, a: Analysis, choice: Choice, final: bool) -> bool:
        cur, prev = self.current, self.current_choice
        if cur is None or prev is None:
            return True
        if prev.kind == MODEL_VETO and choice.diverts and not final:
            model = self.router.model
            assert model is not None
            p = a.model.p_police if a.model is not None else 0.0
            return p < model.thresholds.veto - self.veto_hysteresis
        if not cur.diverted:
            return True
        # a diversion is held
        if choice.kind == MODEL_VETO:
            return True  # safety first
        if not choice.diverts:
            return False  # a revised partial lost words, or a rival caught up: keep the suggestion
        if choice.category_id == cur.category_id:
            return False
        if choice.kind == RULES and prev.kind == RULES:
            held = next((s.score for s in a.scores if s.category_id == cur.category_id), 0.0)
            new = choice.best.score if choice.best else 0.0
            needed = held if final else held + self.switch_margin
            return new >= needed and new > held
        if choice.kind == RULES and prev.kind == MODEL:
            return True  # the rules found words for it: better evidence than the model's guess
        if choice.kind == MODEL and prev.kind == RULES:
            return False  # the rules' words stay stronger than a guess
        # both from the model
        assert a.model is not None
        lead = a.model.prob(choice.category_id) - a.model.prob(cur.category_id)
        return lead > 0 if final else lead >= self.model_margin

    def _emit(self, d: Decision) -> Decision | None:
        prev = self.current
        self.current = d
        if prev is not None and (prev.target, prev.category, prev.urgent) == (d.target, d.category, d.urgent):
            return None
        return d


__all__ = ["CallRouter"]
