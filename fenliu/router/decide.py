"""``decide(text, context) -> Decision``: danger veto first, then the best diverted category.

Safety rules (ROUTING.md):
- any danger signal that is not negated keeps the call with 110, whatever else matched;
- a single weak word, or homophones alone, never divert;
- two categories with different targets and equal evidence: keep with 110 and say so;
- the same caller reporting the same matter again within the flow-back window stays with 110.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fenliu.events import Decision, Match
from fenliu.router.matcher import DANGER, DECISIVE, STRONG, WEAK, Hit, Matcher
from fenliu.router.normalize import Normalized, Normalizer
from fenliu.router.rules import RuleSet, load_rules

# Evidence weights. A decisive word (停电, 开锁, 离婚) diverts alone; a strong word needs one
# more piece of evidence; weak words never divert by themselves. The bar was raised from 2 to 3
# after blind test sets showed single topical words (公交车, 婆婆, 外卖) diverting police calls
# whose danger was told in words the list did not know.
W_DECISIVE, W_STRONG, W_WEAK, W_PATTERN = 3.0, 2.0, 1.0, 2.5
HOMOPHONE_FACTOR = 0.5
DIVERT_SCORE = 3.0
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

    @property
    def best(self) -> CategoryScore | None:
        """The highest-scoring category with enough evidence to divert."""
        return next((s for s in self.scores if s.eligible), None)


class Router:
    """Holds the rule set and its matcher; ``decide`` is pure and safe to call from threads."""

    def __init__(self, rules: RuleSet | None = None) -> None:
        self.rules = rules or load_rules()
        self.matcher = Matcher(self.rules)
        self.normalize = Normalizer(self.rules.cues.fillers)
        self._danger = {g.id: g for g in self.rules.danger}

    # -- analysis --------------------------------------------------------------------
    def analyze(self, text: str) -> Analysis:
        norm = self.normalize(text)
        hits = self.matcher.find(norm.text)
        danger, negated = [], []
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
        return Analysis(norm=norm, danger=danger, negated=negated, scores=scores)

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

    # -- decision --------------------------------------------------------------------
    def decide(self, text: str, context: Context | None = None) -> Decision:
        return self.decision_from(self.analyze(text), context or Context())

    def decision_from(self, a: Analysis, ctx: Context, best: CategoryScore | None = None) -> Decision:
        """Turn an analysis into a decision; ``best`` lets the stable router keep its choice."""
        rules = self.rules
        base = dict(call_id=ctx.call_id, utterance_id=ctx.utterance_id, rule_version=rules.version,
                    text=a.norm.original, t=ctx.t)
        negated = [self._match(a.norm, h) for h in a.negated]
        extra = {"negated": [m.word for m in negated]} if negated else {}
        if a.danger:
            return self._police_for_danger(a, base, extra)

        best = best if best is not None else a.best
        if best is None:
            reason = "未匹配到可分流的类别，留110接警员处理"
            if a.scores:
                top = a.scores[0]
                reason = (f"证据不足（{rules.category(top.category_id).name} 得分 {top.score:.1f}，需 {DIVERT_SCORE:.0f}："
                          f"一个决定词，或强词/组合再加其他证据；弱词和近音词只作补充），留110")
            return Decision(target="police", category="police", dept="110 接警员", confidence=0.5,
                            matched=tuple(self._match(a.norm, h) for h in (a.scores[0].hits if a.scores else [])),
                            vetoed_by=(), urgent=False, reason=reason, extra=extra, **base)

        cat = rules.category(best.category_id)
        # the strongest evidence for another destination (eligible or not): as much as ours
        # means the operator should decide; less lowers our confidence
        rival = next((s for s in a.scores if s is not best
                      and rules.category(s.category_id).target != cat.target), None)
        matched = tuple(self._match(a.norm, h) for h in sorted(best.hits, key=lambda h: h.start))
        if rival is not None and rival.score >= best.score:
            rcat = rules.category(rival.category_id)
            return Decision(target="police", category="police", dept="110 接警员", confidence=0.5,
                            matched=matched, vetoed_by=(), urgent=False,
                            reason=f"“{cat.name}”与“{rcat.name}”证据相当、去向不同，留110由接警员判断",
                            extra=extra, **base)

        for prior in ctx.history:
            if prior.category_id == cat.id and prior.age_days <= rules.flow_back_days and prior.target != "police":
                veto = Match(word=f"{rules.flow_back_days}天内同一事项再次报警", start=0, end=0,
                             group="repeat_caller", kind="history")
                return Decision(target="police", category="police", dept="110 接警员", confidence=0.8,
                                matched=matched, vetoed_by=(veto,), urgent=False,
                                reason=f"防回流：该号码 {prior.age_days:.1f} 天前已就“{cat.name}”分流过，"
                                       f"问题未解决，留110跟进",
                                extra=extra, **base)

        confidence = 1 - 0.5 ** (best.score / 1.5)
        if rival is not None:
            confidence *= 1 - 0.5 * rival.score / best.score
        words = "、".join(dict.fromkeys(_shown(m) for m in matched))
        return Decision(target=cat.target, category=cat.name, category_id=cat.id, dept=cat.dept,
                        confidence=round(min(confidence, 0.99), 3), matched=matched, vetoed_by=(),
                        urgent=False, reason=f"命中“{cat.name}”：{words}；无危险信号", extra=extra, **base)

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


__all__ = ["Analysis", "CategoryScore", "Context", "PriorReport", "Router"]
