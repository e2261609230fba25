"""``decide(text, context) -> Decision``: danger veto first, then the best diverted category.

Safety rules (ROUTING.md):
- any danger signal that is not negated keeps the call with 110, whatever else matched;
- a single weak word, or homophones alone, never divert;
- two categories with different targets and equal evidence: keep with 110 and carry both as
  ``alternatives`` (the operator may pick one with one key);
- the same caller reporting the same matter again within the flow-back window stays with 110.

The learned layer (``model.py``) sits behind the same ``decide``; it can
- keep a rule diversion with 110 when its police-matter detector says so (a veto, never a diversion);
- suggest a category where the rules are silent (says so in ``reason``, lower confidence, the
  n-grams that drove it as ``matched`` with kind ``model``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fenliu.events import Alternative, Decision, Match
from fenliu.router.features import clean
from fenliu.router.features import shown as shown_feature
from fenliu.router.matcher import DANGER, DECISIVE, STRONG, WEAK, Hit, Matcher
from fenliu.router.model import Evidence, ModelView, RouterModel, Thresholds, load_model
from fenliu.router.normalize import Normalized, Normalizer
from fenliu.router.rules import RuleSet, load_rules

# Evidence weights. A decisive word (停电, 开锁, 离婚) diverts alone; a strong word needs one
# more piece of evidence; weak words never divert by themselves. The bar was raised from 2 to 3
# after blind test sets showed single topical words (公交车, 婆婆, 外卖) diverting police calls
# whose danger was told in words the list did not know.
W_DECISIVE, W_STRONG, W_WEAK, W_PATTERN = 3.0, 2.0, 1.0, 2.5
HOMOPHONE_FACTOR = 0.5
DIVERT_SCORE = 3.0
# the model suggests nothing for a text shorter than this (a word or two is no evidence: ROUTING's
# "a single weak word never diverts" holds for the model too)
MODEL_MIN_CHARS = 6
WEIGHTS = {DECISIVE: W_DECISIVE, STRONG: W_STRONG, WEAK: W_WEAK}


@dataclass(frozen=True)
class PriorReport:
    """An earlier call from the same number (from the store), for flow-back (防回流)."""

    category_id: str
    target: str
    age_days: float


@dataclass(frozen=True)
class Context:
    call_id: str = ""
    utterance_id: int = 0
    caller: str = ""
    t: float = 0.0
    history: tuple[PriorReport, ...] = ()


@dataclass
class CategoryScore:
    category_id: str
    score: float = 0.0
    hits: list[Hit] = field(default_factory=list)

    @property
    def eligible(self) -> bool:
        """Enough evidence to suggest a diversion."""
        if self.score < DIVERT_SCORE:
            return False
        # at least one exact decisive word, strong word or pattern: weak words and homophones
        # only add to it
        return any(h.role != WEAK and h.kind != "homophone" for h in self.hits)


@dataclass
class Analysis:
    """Everything ``decide`` found, before the decision is made (used by the stable router)."""

    norm: Normalized
    danger: list[Hit]
    negated: list[Hit]
    scores: list[CategoryScore]  # best first, eligible or not
    model: ModelView | None = None  # the learned layer's view (None: no model, or no opinion)

    @property
    def best(self) -> CategoryScore | None:
        """The highest-scoring category with enough evidence to divert."""
        return next((s for s in self.scores if s.eligible), None)


# Choice kinds
DANGER_KEEP = "danger"  # a danger signal: police
RULES = "rules"  # the rules divert
MODEL = "model"  # the learned layer suggests a category the rules did not find
TIE = "tie"  # two destinations with equal evidence: police, with alternatives
MODEL_VETO = "model_veto"  # the rules would divert, the police-matter detector keeps the call
FLOW_BACK = "flow_back"  # the same matter again within the flow-back window: police
INSUFFICIENT = "insufficient"  # not enough evidence: police


@dataclass(frozen=True)
class Choice:
    """What ``decide`` chose and why, before it is dressed as a Decision."""

    kind: str
    category_id: str = ""  # the diverted (or vetoed, or flowed-back) category
    best: CategoryScore | None = None  # the rules' evidence for it, when the rules found it
    tied: tuple[CategoryScore, ...] = ()  # TIE: the categories with equal evidence
    prior: PriorReport | None = None

    @property
    def diverts(self) -> bool:
        return self.kind in (RULES, MODEL)


_AUTO = object()


class Router:
    """Holds the rule set, its matcher and the learned layer; ``decide`` is pure and thread-safe.

    ``model``: a loaded ``RouterModel``, ``None`` for the rules alone, or (default) the artefact
    shipped with fenliu when the rules are the shipped list too (a custom list gets no model
    unless one is passed: the model knows the shipped list's categories)."""

    def __init__(self, rules: RuleSet | None = None, model: RouterModel | None | object = _AUTO) -> None:
        if model is _AUTO:
            model = load_model() if rules is None else None
        self.rules = rules or load_rules()
        self.matcher = Matcher(self.rules)
        self.normalize = Normalizer(self.rules.cues.fillers)
        self._danger = {g.id: g for g in self.rules.danger}
        self.model: RouterModel | None = model  # type: ignore[assignment]
        self.model_version = self.model.version if self.model else ""
        # the model never suggests a category this list does not have
        self._categories = frozenset(c.id for c in self.rules.categories)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Sent to another process (an ASR process) as its recipe: the rule set and where the
        model artefact is; the receiver rebuilds matcher, normaliser and model itself."""
        return _rebuild_router, (self.rules, self.model.source if self.model else None)

    # -- analysis --------------------------------------------------------------------
    def analyze(self, text: str) -> Analysis:
        norm = self.normalize(text)
        hits = self.matcher.find(norm.text)
        danger: list[Hit] = []
        negated: list[Hit] = []
        per_cat: dict[str, CategoryScore] = {}
        for h in hits:
            if h.role == DANGER:
                (negated if self._negated(norm.text, h) else danger).append(h)
            else:
                per_cat.setdefault(h.group, CategoryScore(h.group)).hits.append(h)
        # a danger word overlapping or right after a negated one is part of the same negated
        # phrase (没闻到什么烧焦味: 烧焦 is negated, so is 焦味; 没看见冒烟着火: so is 着火)
        for h in sorted(danger, key=lambda h: h.start):
            if any(n.group == h.group and n.start <= h.start <= n.end for n in negated):
                danger.remove(h)
                negated.append(h)
        for cs in per_cat.values():
            cs.hits = _outermost(cs.hits)
            cs.score = _score(cs.hits)
        order = {c.id: i for i, c in enumerate(self.rules.categories)}
        scores = sorted(per_cat.values(), key=lambda c: (-c.score, order[c.category_id]))
        view = self.model.view(norm.text) if self.model is not None and not danger else None
        return Analysis(norm=norm, danger=danger, negated=negated, scores=scores, model=view)

    def _negated(self, text: str, h: Hit) -> bool:
        """A negator right before the danger word, separated only by filler characters
        (没有人受伤, 没闻到什么烧焦味). Groups marked negatable=false are never negated."""
        if not self._danger[h.group].negatable:
            return False
        cues = self.rules.cues
        for neg in cues.negators:
            lo = max(0, h.start - len(neg) - cues.negation_max_gap)
            pos = text.rfind(neg, lo, h.start)
            if pos == -1:
                continue
            gap = text[pos + len(neg) : h.start]
            if len(gap) <= cues.negation_max_gap and all(ch in cues.negation_gap for ch in gap):
                return True
        return False

    # -- choice ------------------------------------------------------------------------
    def choose(self, a: Analysis, ctx: Context | None = None, thresholds: Thresholds | None = None) -> Choice:
        """Danger, then the rules' best category (ties, the model's veto, flow-back), then the
        model's suggestion where the rules found nothing. ``thresholds`` (default: the model's
        own) lets training try candidates on validation folds through this same code."""
        if a.danger:
            return Choice(DANGER_KEEP)
        mv, th = a.model, thresholds or (self.model.thresholds if self.model else None)
        best = a.best
        if best is None:
            cand = self.model_candidate(a)
            if cand is not None and th is not None:
                cid, p, partial = cand
                bound_police, bound_p = ((th.partial_police, th.partial_category) if partial
                                         else (th.silent_police, th.silent_category))
                if mv is not None and mv.p_police < bound_police and p >= bound_p:
                    return self._flow_back(Choice(MODEL, category_id=cid), ctx)
            return Choice(INSUFFICIENT)
        target = self.rules.category(best.category_id).target
        rivals = [s for s in a.scores if s is not best and s.score >= best.score
                  and self.rules.category(s.category_id).target != target]
        if rivals:  # when unsure, keep: the operator may pick one of them with one key
            return Choice(TIE, tied=(best, *rivals))
        if mv is not None and th is not None and th.vetoes(mv.p_police, mv.prob(best.category_id)):
            return Choice(MODEL_VETO, category_id=best.category_id, best=best)
        return self._flow_back(Choice(RULES, category_id=best.category_id, best=best), ctx)

    def model_candidate(self, a: Analysis) -> tuple[str, float, bool] | None:
        """The category the model would suggest where the rules cannot divert: (category id, its
        probability, whether the rules found part of the evidence for it); None when the model
        has no opinion or the text is too short to be evidence."""
        if a.model is None or len(clean(a.norm.text)) < MODEL_MIN_CHARS:
            return None
        cid, p = next(((c, p) for c, p in a.model.categories if c in self._categories), ("", 0.0))
        if not cid:
            return None
        return cid, p, any(s.category_id == cid and s.score > 0 for s in a.scores)

    def _flow_back(self, choice: Choice, ctx: Context | None) -> Choice:
        for prior in (ctx.history if ctx else ()):
            if (prior.category_id == choice.category_id and prior.age_days <= self.rules.flow_back_days
                    and prior.target != "police"):
                return Choice(FLOW_BACK, category_id=choice.category_id, best=choice.best, prior=prior)
        return choice

    # -- decision --------------------------------------------------------------------
    def decide(self, text: str, context: Context | None = None) -> Decision:
        ctx = context or Context()
        a = self.analyze(text)
        return self.decision_from(a, ctx, self.choose(a, ctx))

    def decision_from(self, a: Analysis, ctx: Context, choice: Choice | None = None) -> Decision:
        """Turn an analysis and a choice into a decision; the stable router passes its own choice."""
        rules = self.rules
        choice = choice or self.choose(a, ctx)
        base: dict[str, Any] = dict(call_id=ctx.call_id, utterance_id=ctx.utterance_id, rule_version=rules.version,
                    model_version=self.model_version, text=a.norm.original, t=ctx.t)
        negated = [self._match(a.norm, h) for h in a.negated]
        extra: dict = {"negated": [m.word for m in negated]} if negated else {}
        if a.model is not None:
            top, p = a.model.top
            extra["model"] = {"p_police": round(a.model.p_police, 3), "category": top, "p": round(p, 3)}
        keep: dict[str, Any] = dict(target="police", category="police", dept="110 接警员", vetoed_by=(), urgent=False)

        if choice.kind == DANGER_KEEP:
            return self._police_for_danger(a, base, extra)
        if choice.kind == INSUFFICIENT:
            reason = "未匹配到可分流的类别，留110接警员处理"
            if a.scores:
                top_s = a.scores[0]
                reason = (f"证据不足（{rules.category(top_s.category_id).name} 得分 {top_s.score:.1f}，需 {DIVERT_SCORE:.0f}："
                          f"一个决定词，或强词/组合再加其他证据；弱词和近音词只作补充），留110")
            if a.model is not None:
                reason += f"；模型也不确定（警情可能 {a.model.p_police:.2f}）"
            return Decision(confidence=0.5, reason=reason, extra=extra, **keep, **base,
                            matched=tuple(self._match(a.norm, h) for h in (a.scores[0].hits if a.scores else [])))
        if choice.kind == TIE:
            alts = tuple(self._alternative(a.norm, s) for s in choice.tied)
            names = "”与“".join(alt.category for alt in alts)
            return Decision(confidence=0.5, alternatives=alts, extra=extra, **keep, **base,
                            matched=tuple(m for alt in alts for m in alt.evidence),
                            reason=f"“{names}”证据相当、去向不同，留110；接警员可一键选择其一")

        cat = rules.category(choice.category_id)
        if choice.best is not None:
            matched = tuple(self._match(a.norm, h) for h in sorted(choice.best.hits, key=lambda h: h.start))
        else:
            assert a.model is not None
            matched = self._model_matches(a.norm, a.model.category_evidence(cat.id), cat.id)
        if choice.kind == MODEL_VETO:
            assert a.model is not None and self.model is not None
            vetoes = self._model_matches(a.norm, a.model.police_evidence, "model:police")
            words = "、".join(dict.fromkeys(m.word for m in vetoes))
            return Decision(confidence=round(a.model.p_police, 3), matched=matched, extra=extra,
                            **{**keep, "vetoed_by": vetoes}, **base,
                            reason=f"模型判断疑似警情（警情可能 {a.model.p_police:.2f}，阈值 {self.model.thresholds.veto:.2f}，"
                                   f"依据：{words}）；虽命中“{cat.name}”，留110核实")
        if choice.kind == FLOW_BACK:
            assert choice.prior is not None
            veto = Match(word=f"{rules.flow_back_days}天内同一事项再次报警", start=0, end=0,
                         group="repeat_caller", kind="history")
            return Decision(confidence=0.8, matched=matched, extra=extra, **{**keep, "vetoed_by": (veto,)}, **base,
                            reason=f"防回流：该号码 {choice.prior.age_days:.1f} 天前已就“{cat.name}”分流过，"
                                   f"问题未解决，留110跟进")

        words = "、".join(dict.fromkeys(_shown(m) for m in matched))
        if choice.kind == MODEL:
            assert a.model is not None
            p = a.model.prob(cat.id)
            return Decision(target=cat.target, category=cat.name, category_id=cat.id, dept=cat.dept,
                            confidence=round(0.6 * p, 3), matched=matched, vetoed_by=(), urgent=False, extra=extra,
                            reason=f"模型建议（规则证据不足）：像“{cat.name}”（概率 {p:.2f}，警情可能 "
                                   f"{a.model.p_police:.2f}），依据：{words}；无危险信号，请接警员确认", **base)

        best = choice.best
        assert best is not None
        # the strongest evidence for another destination (eligible or not) lowers our confidence
        rival = next((s for s in a.scores if s is not best
                      and rules.category(s.category_id).target != cat.target), None)
        confidence = 1 - 0.5 ** (best.score / 1.5)
        if rival is not None:
            confidence *= 1 - 0.5 * rival.score / best.score
        reason = f"命中“{cat.name}”：{words}；无危险信号"
        return Decision(target=cat.target, category=cat.name, category_id=cat.id, dept=cat.dept,
                        confidence=round(min(confidence, 0.99), 3), matched=matched, vetoed_by=(),
                        urgent=False, reason=reason, extra=extra, **base)

    def _alternative(self, norm: Normalized, s: CategoryScore) -> Alternative:
        c = self.rules.category(s.category_id)
        return Alternative(target=c.target, category=c.name, category_id=c.id, dept=c.dept,
                           evidence=tuple(self._match(norm, h) for h in sorted(s.hits, key=lambda h: h.start)))

    @staticmethod
    def _model_matches(norm: Normalized, evidence: tuple[Evidence, ...], group: str) -> tuple[Match, ...]:
        """Evidence as the operator reads it: the stretch of the transcript a feature stands for
        (a pinyin pair shows the characters heard), with its position in the original text."""
        out = []
        for ev in evidence:
            s, e = norm.span(ev.start, ev.end)
            heard = norm.text[ev.start : ev.end]
            out.append(Match(word=heard or shown_feature(ev.feature), start=s, end=e, group=group, kind="model",
                             heard=ev.feature))
        return tuple(out)

    def _police_for_danger(self, a: Analysis, base: dict, extra: dict) -> Decision:
        groups = [self._danger[gid] for gid in dict.fromkeys(h.group for h in a.danger)]
        text = a.norm.text
        cues = self.rules.cues
        now = any(c in text for c in cues.now)
        past = any(c in text for c in cues.past)
        urgent = any(g.urgent for g in groups) and not (past and not now)
        lead = next((g for g in groups if g.id == "fraud"), None) or \
            next((g for g in groups if g.urgent), groups[0])
        exact = any(h.kind != "homophone" for h in a.danger)
        vetoes = tuple(self._match(a.norm, h) for h in sorted(a.danger, key=lambda h: h.start))
        labels = "、".join(g.label for g in groups)
        words = "、".join(dict.fromkeys(_shown(v) for v in vetoes))
        reason = f"危险信号（{labels}）：{words}——警情，不分流"
        if not exact:
            reason = f"疑似危险信号（近音：{words}，{labels}）——宁可留110核实"
        matched = tuple(self._match(a.norm, h) for s in a.scores[:1] for h in s.hits)
        if matched:
            cat = self.rules.category(a.scores[0].category_id)
            reason += f"；虽涉及“{cat.name}”，危险优先"
        return Decision(target="police", category="police", dept=lead.dept,
                        confidence=0.95 if exact else 0.6, matched=matched, vetoed_by=vetoes,
                        urgent=urgent, reason=reason, extra=extra, **base)

    @staticmethod
    def _match(norm: Normalized, h: Hit) -> Match:
        s, e = norm.span(h.start, h.end)
        return Match(word=h.word, start=s, end=e, group=h.group, kind=h.kind, heard=h.heard)


def _shown(m: Match) -> str:
    """How a match reads in a reason: the word; what was heard for a homophone; the matched
    stretch of text for a pattern."""
    if m.kind == "homophone":
        return f"{m.heard}≈{m.word}"
    if m.kind == "pattern":
        return f"「{m.heard}」"
    return m.word


def _outermost(hits: list[Hit]) -> list[Hit]:
    """Within one category a word inside a longer matched word is the same evidence
    (工头 in 包工头, 拖欠 in 拖欠工资): keep the longer one only."""
    words = [h for h in hits if h.kind != "pattern"]
    return [h for h in hits if h.kind == "pattern" or not any(
        o is not h and o.start <= h.start and h.end <= o.end and o.end - o.start > h.end - h.start for o in words)]


def _score(hits: list[Hit]) -> float:
    """Distinct words count once; homophones count half."""
    seen: set[tuple[str, str]] = set()
    total = 0.0
    for h in sorted(hits, key=lambda h: h.kind == "homophone"):
        key = (h.word, h.kind if h.kind == "pattern" else "")
        if key in seen or (h.word, "") in seen:
            continue
        seen.add(key)
        if h.kind == "pattern":
            total += W_PATTERN
        else:
            total += WEIGHTS[h.role] * (HOMOPHONE_FACTOR if h.kind == "homophone" else 1.0)
    return total


__all__ = ["Analysis", "CategoryScore", "Choice", "Context", "PriorReport", "Router"]


def _rebuild_router(rules: RuleSet, model_source: str | None) -> Router:
    return Router(rules, model=load_model(model_source) if model_source else None)
