"""The figures of 非警务警情分流 for a range of days, leads (串并分析) and labelled text for a
router retrain, read from the store; CSV and XLSX writers.

Figures (``figures()``), counted over the calls whose ``day`` (the caller's calendar day in
``store.timezone``) lies in the range, both ends included. An order, a follow-up and a
flow-back belong to the day, category and hotline of the call they concern.

===================  ===============  =========================================================
key                  中文              definition
===================  ===============  =========================================================
calls                接警总量          calls received (rejected calls included)
non_police           非警务警情        the last suggestion before any diversion was a diversion
                                      target (not police, not an urgent service), or the call
                                      was diverted
diverted             已分流            a transfer to a hotline succeeded (``diverted_to`` set)
diversion_rate       分流率            diverted / non_police
per_day_diverted     日均分流          diverted / calendar days of the range (days without calls
                                      count too)
orders               工单              work orders opened for those calls
dispatched           派出              orders the platform dispatched (or completed)
dispatch_rate        派出率            dispatched / orders
completed            有效办结          orders completed and never returned
completion_rate      有效办结率        completed / orders
returned             退回              orders the platform returned
flowback             回流              diverted calls that came back: a later call of the same
                                      number about the same matter (``flowback_of``), or the
                                      order was returned; each diverted call counts once
flowback_rate        回流率            flowback / diverted
satisfaction[side]   满意率            per side ("110": the call, "hotline": the result):
                                      count, satisfied (score 1 满意 or 2 基本满意), rate =
                                      satisfied / count, scores {"1","2","3"} counts
actions              处置动作          final actions: accepted 采纳建议分流, overrode 改派其他热线,
                                      kept 建议分流但留110处置, unsuggested 无建议自行分流,
                                      police 110 处置, none (live or rejected: no final action)
===================  ===============  =========================================================

Rates are fractions (0.93), ``None`` when the denominator is 0 (shown as "—"). Every figure
is given for the whole range (``totals``), per day (``by_day``, every calendar day of the
range), per category (``by_category``: the router's category id and label) and per hotline
(``by_target``: the target diverted to, else the one suggested, else "police"); plus the
override pairs (suggested → diverted_to). The counts come from a few GROUP BY queries on the
``day`` indexes; Python only folds the grouped rows (hundreds per day, not one per call).
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any

from fenliu.hotlines.masking import mask_number
from fenliu.settings import TransferSettings, target_label
from fenliu.store.db import Database
from fenliu.store.record import FINAL_ACTIONS, SATISFACTION

COUNTS = ("calls", "non_police", "diverted", "orders", "dispatched", "completed", "returned", "flowback")
RATES = {"diversion_rate": ("diverted", "non_police"), "dispatch_rate": ("dispatched", "orders"),
         "completion_rate": ("completed", "orders"), "flowback_rate": ("flowback", "diverted")}
# (key, 中文, English) in the order of every table
METRICS: tuple[tuple[str, str, str], ...] = (
    ("calls", "接警总量", "calls"), ("non_police", "非警务警情", "non-police"), ("diverted", "已分流", "diverted"),
    ("diversion_rate", "分流率", "diversion rate"), ("per_day_diverted", "日均分流", "diverted per day"),
    ("orders", "工单", "orders"), ("dispatched", "派出", "dispatched"), ("dispatch_rate", "派出率", "dispatch rate"),
    ("completed", "有效办结", "completed"), ("completion_rate", "有效办结率", "completion rate"),
    ("returned", "退回", "returned"), ("flowback", "回流", "flow-back"), ("flowback_rate", "回流率", "flow-back rate"),
)
SIDES = {"110": "110 接警", "hotline": "热线办理"}
ACTIONS = (*FINAL_ACTIONS, "none")
ACTION_LABELS = {**FINAL_ACTIONS, "none": "未结束 / 无处置"}
UNCLASSIFIED = "未分类"

_GROUP = "c.day, COALESCE(c.suggested_category, ''), c.suggested, c.diverted_to"
_ACTION_SUMS = ", ".join(f"SUM(CASE WHEN c.final_action = '{a}' THEN 1 ELSE 0 END) AS a_{a}" for a in FINAL_ACTIONS)
# a diverted call flowed back when a later call names it in flowback_of (there is no index on
# that column): for a short range, look among the later calls of the same number (calls_number);
# for a long one, collect the flow-backs since the first day once
_FLOWBACK_SHORT = ("c.number <> '' AND EXISTS (SELECT 1 FROM calls f WHERE f.number = c.number "
                   "AND f.started_at >= c.started_at AND f.flowback_of = c.call_id)")
_FLOWBACK_LONG = "c.call_id IN (SELECT flowback_of FROM calls WHERE flowback_of IS NOT NULL AND day >= ?)"
LONG_RANGE_DAYS = 62
# one row per (day, category, suggested, diverted_to): a few dozen a day whatever the volume
_FIGURES_SQL = f"""
SELECT c.day AS day, COALESCE(c.suggested_category, '') AS cat, MAX(c.category) AS label,
       c.suggested AS suggested, c.diverted_to AS diverted_to, COUNT(*) AS calls, COUNT(w.id) AS orders,
       SUM(CASE WHEN w.dispatched_at IS NOT NULL OR w.completed_at IS NOT NULL THEN 1 ELSE 0 END) AS dispatched,
       SUM(CASE WHEN w.completed_at IS NOT NULL AND w.returned_at IS NULL THEN 1 ELSE 0 END) AS completed,
       SUM(CASE WHEN w.returned_at IS NOT NULL THEN 1 ELSE 0 END) AS returned,
       SUM(CASE WHEN c.diverted_to IS NULL THEN 0 WHEN w.returned_at IS NOT NULL THEN 1
                WHEN {{flowback}} THEN 1 ELSE 0 END) AS flowback,
       {_ACTION_SUMS}
FROM calls c LEFT JOIN work_orders w ON w.call_id = c.call_id
WHERE c.day >= ? AND c.day <= ?
GROUP BY {_GROUP}
"""
_FOLLOWUPS_SQL = f"""
SELECT c.day AS day, COALESCE(c.suggested_category, '') AS cat, c.suggested AS suggested,
       c.diverted_to AS diverted_to, f.side AS side, f.score AS score, COUNT(*) AS n
FROM followups f JOIN calls c ON c.call_id = f.call_id
WHERE c.day >= ? AND c.day <= ?
GROUP BY {_GROUP}, f.side, f.score
"""


def default_urgent() -> set[str]:
    return {x.strip() for x in TransferSettings().urgent.split(",") if x.strip()}


def day_range(day_from: str, day_to: str) -> list[str]:
    """Every calendar day from ``day_from`` to ``day_to`` (included), as YYYY-MM-DD."""
    try:
        first, last = date.fromisoformat(day_from), date.fromisoformat(day_to)
    except ValueError:
        raise ValueError(f"日期须为 YYYY-MM-DD / dates are YYYY-MM-DD: {day_from!r}, {day_to!r}") from None
    if first > last:
        raise ValueError(f"起始日期晚于结束日期 / {day_from} is after {day_to}")
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def ratio(num: float, den: float, digits: int = 4) -> float | None:
    return round(num / den, digits) if den else None


class _Acc:
    """The counts of one row of a table (the range, a day, a category or a hotline)."""

    def __init__(self) -> None:
        self.n: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.scores: dict[str, Counter[int]] = {side: Counter() for side in SIDES}
        self.labels: Counter[str] = Counter()

    def row(self, days: int) -> dict[str, Any]:
        out: dict[str, Any] = {k: self.n[k] for k in COUNTS}
        for key, (num, den) in RATES.items():
            out[key] = ratio(self.n[num], self.n[den])
        out["per_day_diverted"] = ratio(self.n["diverted"], days, 2)
        out["satisfaction"] = {side: _satisfaction(self.scores[side]) for side in SIDES}
        out["actions"] = {a: self.actions[a] for a in ACTIONS}
        return {k: out[k] for k in (*[m[0] for m in METRICS], "satisfaction", "actions")}


def _satisfaction(scores: Counter[int]) -> dict[str, Any]:
    count = sum(scores.values())
    satisfied = scores[1] + scores[2]
    return {"count": count, "satisfied": satisfied, "rate": ratio(satisfied, count),
            "scores": {str(s): scores[s] for s in SATISFACTION}}


def target_name(target: str, names: dict[str, str] | None = None) -> str:
    """How the figures name a target: [transfer.names] (the shipped ones without a configuration)."""
    if target == "police":
        return "110 处置"
    return "".join(target_label(TransferSettings().names if names is None else names, target))


def figures(db: Database, day_from: str, day_to: str, *, urgent: Iterable[str] | None = None,
            names: dict[str, str] | None = None) -> dict[str, Any]:
    """The figures of the days ``day_from`` .. ``day_to`` (YYYY-MM-DD, both included).

    Returns ``{"from", "to", "days", "totals": ROW, "by_day": [{"day", **ROW}],
    "by_category": [{"category_id", "category", **ROW}], "by_target": [{"target",
    "target_name", **ROW}], "actions": {action: n}, "overrides": [{"suggested", "diverted_to",
    "count"}], "satisfaction": {"110"|"hotline": {"count", "satisfied", "rate", "scores"}}}``
    where ROW is every key of ``METRICS`` plus "satisfaction" and "actions" (see the module)."""
    days = day_range(day_from, day_to)
    urgent_ids = set(default_urgent() if urgent is None else urgent)

    def diversion(target: str | None) -> bool:
        return bool(target) and target != "police" and target not in urgent_ids

    total = _Acc()
    by_day: dict[str, _Acc] = {d: _Acc() for d in days}
    by_cat: dict[str, _Acc] = defaultdict(_Acc)
    by_target: dict[str, _Acc] = defaultdict(_Acc)
    overrides: Counter[tuple[str, str]] = Counter()

    def accs(r: dict[str, Any]) -> tuple[_Acc, ...]:
        target = r["diverted_to"] or r["suggested"] or "police"
        return total, by_day[r["day"]], by_cat[r["cat"]], by_target[target]

    args: tuple[str, ...] = (day_from, day_to)
    if len(days) > LONG_RANGE_DAYS:
        sql, args = _FIGURES_SQL.format(flowback=_FLOWBACK_LONG), (day_from, *args)
    else:
        sql = _FIGURES_SQL.format(flowback=_FLOWBACK_SHORT)
    for r in db.rows(sql, args):
        counts = {k: int(r[k] or 0) for k in ("calls", "orders", "dispatched", "completed", "returned", "flowback")}
        counts["non_police"] = counts["calls"] if (r["diverted_to"] or diversion(r["suggested"])) else 0
        counts["diverted"] = counts["calls"] if r["diverted_to"] else 0
        acts = {a: int(r[f"a_{a}"] or 0) for a in FINAL_ACTIONS}
        acts["none"] = counts["calls"] - sum(acts.values())
        if acts["overrode"]:
            overrides[(r["suggested"] or "", r["diverted_to"] or "")] += acts["overrode"]
        for acc in accs(r):
            acc.n.update(counts)
            acc.actions.update(acts)
            if r["label"]:
                acc.labels[r["label"]] += counts["calls"]
    for r in db.rows(_FOLLOWUPS_SQL, (day_from, day_to)):
        for acc in accs(r):
            acc.scores[r["side"]][int(r["score"])] += int(r["n"])

    n = len(days)
    totals = total.row(n)
    cats = sorted(by_cat.items(), key=lambda kv: (-kv[1].n["calls"], kv[0]))
    targets = sorted(by_target.items(), key=lambda kv: (kv[0] == "police", -kv[1].n["calls"], kv[0]))
    return {
        "from": days[0], "to": days[-1], "days": n, "totals": totals,
        "by_day": [{"day": d, **acc.row(1)} for d, acc in by_day.items()],
        "by_category": [{"category_id": c, "category": _category_label(c, acc), **acc.row(n)} for c, acc in cats],
        "by_target": [{"target": t, "target_name": target_name(t, names), **acc.row(n)} for t, acc in targets],
        "actions": totals["actions"],
        "overrides": [{"suggested": s, "diverted_to": d, "count": c}
                      for (s, d), c in sorted(overrides.items(), key=lambda kv: (-kv[1], kv[0]))],
        "satisfaction": totals["satisfaction"],
    }


def _category_label(cat: str, acc: _Acc) -> str:
    if not cat:
        return UNCLASSIFIED
    if cat == "police":
        return "警务警情"
    return acc.labels.most_common(1)[0][0] if acc.labels else cat


# -- leads (串并分析) ---------------------------------------------------------------------------
# merchant and place suffixes, longest first, each with the class that makes it one key:
# 星光医美 / 星光医美诊所 / 星光美容院 are one clinic; 星光小区 is another thing
_SUFFIX_CLASSES: dict[str, tuple[str, ...]] = {
    "beauty": ("医疗美容", "医美", "美容院", "美容店", "美容", "整形医院", "整形", "诊所", "门诊", "医院", "院"),
    "venue": ("洗浴中心", "夜总会", "酒吧", "会所", "KTV", "ktv", "网吧", "足浴", "歌厅", "茶楼"),
    "shop": ("专卖店", "4S店", "超市", "商行", "饭店", "餐厅", "酒店", "宾馆", "药店", "店"),
    "company": ("有限公司", "公司", "工作室", "培训机构", "培训学校", "机构", "物业", "中心"),
    "place": ("小区", "广场", "花园", "大厦", "市场", "商场", "公寓"),
}
_MERCHANTS = {"beauty", "venue", "shop", "company"}
_SUFFIX = {s: cls for cls, words in _SUFFIX_CLASSES.items() for s in words}
_ROAD = r"(?P<road>路|街|大道|大街)(?P<num>[0-9零〇一二两三四五六七八九十百]+)号"
_SUFFIXES_LONGEST = sorted(_SUFFIX, key=len, reverse=True)
_TRAILING_SUFFIX = re.compile("(?:" + "|".join(map(re.escape, _SUFFIXES_LONGEST)) + ")$")
_ENTITY = re.compile(_ROAD + "|(?P<sfx>" + "|".join(map(re.escape, _SUFFIXES_LONGEST)) + ")")
_NAME_CHAR = re.compile(r"[\u4e00-\u9fffA-Za-z0-9]+$")
# where a name cannot extend past, looking left from its suffix ("我在|星光医美")
_STOPS = ("我们", "你们", "他们", "她们", "那家", "这家", "一家", "我家", "那个", "这个", "一个", "附近", "旁边",
          "对面", "楼下", "楼上", "门口", "里面", "隔壁", "我", "你", "他", "她", "在", "去", "到", "的", "了", "是",
          "从", "跟", "被", "对", "向", "找", "叫", "给", "说", "就", "也", "都", "还", "又", "把", "让", "与", "啊",
          "呢", "吧", "吗", "嘛", "个", "间", "某")
_STOP_RE = re.compile("|".join(map(re.escape, _STOPS)))
_CN_DIGITS = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2}
NEAR_DUP = 0.6  # cosine of TF-IDF character 2-3 grams; one script read by two callers and
# recognised with a few characters wrong scores 0.45-0.75 (0.8 finds only exact copies)
MIN_TEXT_CHARS = 12  # shorter texts ("太吵了") are alike by accident, not by script
RARE_DF = 25  # an n-gram in at most this many texts of the window (or 0.2 % of them) is "rare"
MIN_SHARED_RARE = 5  # near-duplicates share at least this many rare n-grams
LEAD_CALLS = 50  # calls listed per lead (the most recent); "count" has them all


def caller_text(text: str) -> str:
    """The caller's lines of a transcript ("caller: …\\noperator: …"), joined; the whole
    text if it has no such lines."""
    lines = [ln[len("caller: "):] for ln in (text or "").splitlines() if ln.startswith("caller: ")]
    return "".join(lines) if lines else (text or "").strip()


def _cn_number(s: str) -> int | None:
    if s.isdigit():
        return int(s)
    if not any(c in s for c in "十百"):  # read digit by digit: 一二三 = 123
        return int("".join(str(_CN_DIGITS[c]) for c in s)) if all(c in _CN_DIGITS for c in s) else None
    total, digit = 0, 0
    for c in s:
        if c in _CN_DIGITS:
            digit = _CN_DIGITS[c]
        elif c in "十百":
            total += (digit or 1) * (10 if c == "十" else 100)
            digit = 0
        else:
            return None
    return total + digit


def _core(prefix: str) -> tuple[str, str]:
    """The name said left of a suffix (cut at the last stop word: "我在|星光医美") and its core
    without trailing suffixes ("星光医美" → "星光")."""
    m = _NAME_CHAR.search(prefix[-10:])
    name = m.group(0) if m else ""
    stops = list(_STOP_RE.finditer(name))
    if stops:
        name = name[stops[-1].end():]
    core = name
    while (m := _TRAILING_SUFFIX.search(core)) and m.start() > 0:
        core = core[: m.start()]
    return name, core


def entities(text: str) -> dict[str, str]:
    """The merchants and places a caller named: normalised key → the name as said, e.g.
    "我在星光医美诊所做的" → {"星光|beauty": "星光医美诊所"}."""
    t = unicodedata.normalize("NFKC", text or "").replace(" ", "")
    found: dict[str, str] = {}
    for m in _ENTITY.finditer(t):
        name, core = _core(t[: m.start()])
        if len(core) < 2 or core.isdigit():
            continue
        if m.group("road"):
            num = _cn_number(m.group("num"))
            if num is None:
                continue
            shown = f"{core}{m.group('road')}{num}号"
            key = f"{shown}|address"
        else:
            cls, shown = _SUFFIX[m.group("sfx")], name + m.group("sfx")
            # a merchant is known by several names (星光医美 = 星光医美诊所); a place only by its own
            key = f"{(core if cls in _MERCHANTS else shown).lower()}|{cls}"
        if len(shown) > len(found.get(key, "")):
            found[key] = shown
    return found


def leads(db: Database, since: float, min_numbers: int, *, until: float | None = None,
          threshold: float = NEAR_DUP, full_numbers: bool = False,
          urgent: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """串并分析: non-police calls started since ``since`` (and before ``until``) that point at
    the same merchant or place, or say nearly the same words, from at least ``min_numbers``
    different numbers.

    Returns ``[{"key", "reason": "entity"|"similar_text", "reason_label", "count",
    "distinct_numbers", "numbers": [..], "scripted", "categories": [..], "first_at", "last_at",
    "first_day", "last_day",
    "calls": [{"call_id", "started_at", "day", "number", "category", "target", "excerpt"}]}]``;
    numbers masked unless ``full_numbers``; ``calls`` holds the latest ``LEAD_CALLS``;
    ``scripted`` counts the calls that are near-duplicates of another number's. First come the
    merchants and places with at least half their calls scripted, then the rest, most numbers
    first."""
    urgent_ids = set(default_urgent() if urgent is None else urgent)
    rows = db.rows("SELECT call_id, number, started_at, day, suggested, category, diverted_to, "
                   "COALESCE(suggested_category, '') AS cat, text FROM calls WHERE started_at >= ? "
                   + ("AND started_at < ? " if until is not None else "")
                   + "AND (diverted_to IS NOT NULL OR suggested IS NOT NULL) ORDER BY started_at, call_id",
                   (since, until) if until is not None else (since,))
    calls = [r for r in rows if r["diverted_to"] or (r["suggested"] not in urgent_ids and r["suggested"] != "police")]
    texts = [caller_text(r["text"]) for r in calls]

    groups: list[tuple[str, str, list[int]]] = []
    by_key: dict[str, list[int]] = defaultdict(list)
    shown: dict[str, Counter[str]] = defaultdict(Counter)
    for i, t in enumerate(texts):
        for key, name in entities(t).items():
            by_key[key].append(i)
            shown[key][name] += 1
    named = [(shown[key].most_common(1)[0][0], idx) for key, idx in by_key.items()
             if _distinct(calls, idx) >= min_numbers]
    # the biggest group of calls first; one whose calls another holds already adds nothing
    # (阳光花园小区 inside 阳光花园)
    held: list[set[int]] = []
    for name, idx in sorted(named, key=lambda g: (-len(g[1]), -len(g[0]), g[0])):
        these = set(idx)
        if not any(these <= h for h in held):
            groups.append(("entity", name, idx))
            held.append(these)
    # near-identical words from different numbers (one caller repeating himself is no script)
    similar = [idx for idx in _near_duplicates(texts, threshold) if _distinct(calls, idx) >= 2]
    scripted = {i for idx in similar for i in idx}
    for idx in similar:
        if _distinct(calls, idx) >= min_numbers and not any(set(idx) <= h for h in held):
            groups.append(("similar_text", texts[idx[0]][:40], idx))

    out = [_lead(reason, key, [calls[i] for i in idx], [texts[i] for i in idx], full_numbers,
                 sum(1 for i in idx if i in scripted)) for reason, key, idx in groups]
    # first the seed's pattern: one merchant named by several numbers reading one script
    out.sort(key=lambda d: (not (d["reason"] == "entity" and 2 * d["scripted"] >= d["count"]),
                            -d["distinct_numbers"], -d["count"], -d["last_at"], d["key"]))
    return out


def _distinct(calls: list[dict[str, Any]], idx: Iterable[int]) -> int:
    return len({calls[i]["number"] for i in idx if calls[i]["number"]})


def _lead(reason: str, key: str, calls: list[dict[str, Any]], texts: list[str], full: bool,
          scripted: int) -> dict[str, Any]:
    show = (lambda n: n) if full else mask_number
    numbers = sorted({c["number"] for c in calls if c["number"]})
    listed = sorted(zip(calls, texts, strict=True), key=lambda ct: -ct[0]["started_at"])[:LEAD_CALLS]
    return {
        "key": key, "reason": reason,
        "reason_label": "同一商户/地点 / same merchant or place" if reason == "entity" else "相似诉求 / near-identical text",
        "count": len(calls), "distinct_numbers": len(numbers), "numbers": [show(n) for n in numbers],
        "scripted": scripted,
        "categories": sorted({c["category"] for c in calls if c["category"]}),
        "first_at": min(c["started_at"] for c in calls), "last_at": max(c["started_at"] for c in calls),
        "first_day": min(c["day"] for c in calls), "last_day": max(c["day"] for c in calls),
        "calls": [{"call_id": c["call_id"], "started_at": c["started_at"], "day": c["day"], "number": show(c["number"]),
                   "category": c["category"] or "", "target": c["diverted_to"] or c["suggested"] or "",
                   "excerpt": t[:120]} for c, t in listed],
    }


def _near_duplicates(texts: list[str], threshold: float, chunk: int = 2000) -> list[list[int]]:
    """Groups (connected components of ≥ 2 texts) linked by "cosine ≥ threshold" between TF-IDF
    vectors of character 2-3 grams.

    Only pairs sharing ≥ ``MIN_SHARED_RARE`` rare n-grams (in at most ``RARE_DF`` texts, or
    0.2 % of them) are compared: a script read out by a few numbers shares its rare words, while
    the everyday sentence hundreds of callers say ("楼上装修太吵了") shares only common ones and
    is no lead. It also keeps the comparison near-linear: no all-pairs similarity matrix."""
    keep = [i for i, t in enumerate(texts) if len(t) >= MIN_TEXT_CHARS]
    if len(keep) < 2:
        return []
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from sklearn.feature_extraction.text import TfidfVectorizer

    clean = [re.sub(r"[^\w]", "", texts[i]) for i in keep]
    x = TfidfVectorizer(analyzer="char", ngram_range=(2, 3), sublinear_tf=True, dtype=np.float32).fit_transform(clean)
    x = x.tocsr()
    df = np.bincount(x.indices, minlength=x.shape[1])
    rare = (x[:, np.flatnonzero(df <= max(RARE_DF, len(keep) // 500))] != 0).astype(np.float32).tocsr()
    rows, cols = [], []
    for start in range(0, rare.shape[0], chunk):
        shared = (rare[start:start + chunk] @ rare.T).tocoo()
        hit = (shared.data >= MIN_SHARED_RARE) & (shared.row + start < shared.col)
        rows.append(shared.row[hit] + start)
        cols.append(shared.col[hit])
    r, c = np.concatenate(rows), np.concatenate(cols)
    if len(r):
        cos = np.asarray(x[r].multiply(x[c]).sum(axis=1)).ravel()
        r, c = r[cos >= threshold], c[cos >= threshold]
    if not len(r):
        return []
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(len(keep), len(keep)))
    _, label = connected_components(graph, directed=False)
    comps: dict[int, list[int]] = defaultdict(list)
    for j in np.unique(np.concatenate([r, c])):
        comps[int(label[j])].append(keep[j])
    return [idx for idx in comps.values() if len(idx) >= 2]


# -- labelled text for a retrain -------------------------------------------------------------
def labels(db: Database, day_from: str, day_to: str) -> Iterator[dict[str, Any]]:
    """The operators' final word on each ended call with caller text, one day at a time:
    ``{"call_id", "day", "text", "suggested", "suggested_category", "label", "final_action"}``;
    ``label`` is the hotline diverted to, or "police" when 110 kept the call. No numbers."""
    for day in day_range(day_from, day_to):
        for r in db.rows("SELECT call_id, day, text, suggested, suggested_category, diverted_to, final_action "
                         "FROM calls WHERE day = ? AND final_action IS NOT NULL ORDER BY started_at, call_id", (day,)):
            text = caller_text(r["text"])
            if not text:
                continue
            yield {"call_id": r["call_id"], "day": r["day"], "text": text, "suggested": r["suggested"] or "",
                   "suggested_category": r["suggested_category"] or "",
                   "label": r["diverted_to"] or "police", "final_action": r["final_action"]}


# -- tables and writers ------------------------------------------------------------------------
Table = tuple[str, list[str], list[list[Any]]]  # (sheet name, header, rows); rate cells are _Rate
RATE_KEYS = {*RATES, "sat_110", "sat_hotline"}


class _Rate(float):
    """A fraction shown as a percentage."""


def _cell(key: str, value: Any) -> Any:
    if value is None:
        return None
    return _Rate(value) if key in RATE_KEYS else value


def _row_cells(row: dict[str, Any]) -> list[Any]:
    flat = {**row, "sat_110": row["satisfaction"]["110"]["rate"], "sat_hotline": row["satisfaction"]["hotline"]["rate"]}
    return [_cell(k, flat[k]) for k in _ROW_KEYS]


_ROW_KEYS = [m[0] for m in METRICS] + ["sat_110", "sat_hotline"]
_ROW_HEADER = [f"{zh} {en}" for _, zh, en in METRICS] + ["110满意率 110 satisfaction", "热线满意率 hotline satisfaction"]
_ROW_HEADER_ZH = [zh for _, zh, _ in METRICS] + ["110满意率", "热线满意率"]


def tables(figs: dict[str, Any], leads_: list[dict[str, Any]] | None = None, *,
           full_numbers: bool = False, compact: bool = False) -> list[Table]:
    """The figures (and leads) as the sheets 总览/按日/按类别/按热线/处置动作 (/串并线索);
    ``compact``: Chinese column names only (for a terminal)."""
    t = figs["totals"]
    row_header = _ROW_HEADER_ZH if compact else _ROW_HEADER
    overview: list[list[Any]] = [["范围 range", f"{figs['from']} — {figs['to']}"], ["天数 days", figs["days"]]]
    overview += [[h, c] for h, c in zip(_ROW_HEADER, _row_cells(t), strict=True)]
    for side, name in SIDES.items():
        s = t["satisfaction"][side]
        overview += [[f"{name} 回访 follow-ups ({side})", s["count"]]]
        overview += [[f"{name} {SATISFACTION[int(k)]} score {k}", v] for k, v in s["scores"].items()]
    out: list[Table] = [("总览", ["指标 figure", "数值 value"], overview)]
    out.append(("按日", ["日期 day", *row_header], [[r["day"], *_row_cells(r)] for r in figs["by_day"]]))
    out.append(("按类别", ["类别编号 category id", "类别 category", *row_header],
                [[r["category_id"], r["category"], *_row_cells(r)] for r in figs["by_category"]]))
    out.append(("按热线", ["热线 target", "名称 name", *row_header],
                [[r["target"], r["target_name"], *_row_cells(r)] for r in figs["by_target"]]))
    acts: list[list[Any]] = [[a, ACTION_LABELS[a], n] for a, n in figs["actions"].items()]
    acts += [[], ["改派 overrides: 建议 suggested", "实际分流 diverted to", "次数 count"]]
    acts += [[o["suggested"], o["diverted_to"], o["count"]] for o in figs["overrides"]]
    out.append(("处置动作", ["动作 action", "说明 meaning", "次数 count"], acts))
    if leads_ is not None:
        show = (lambda n: n) if full_numbers else mask_number
        out.append(("串并线索", ["线索 key", "依据 reason", "来电 calls", "号码数 numbers", "号码 caller numbers",
                             "首次 first day", "末次 last day", "通话 call ids"],
                    [[ld["key"], ld["reason_label"], ld["count"], ld["distinct_numbers"],
                      " ".join(show(n) for n in ld["numbers"]), ld["first_day"], ld["last_day"],
                      " ".join(c["call_id"] for c in ld["calls"])]
                     for ld in leads_]))
    return out


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, _Rate):
        return f"{value * 100:.1f}%"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def to_csv(figs: dict[str, Any], path_or_stream: str | Path | IO[str], *,
           leads: list[dict[str, Any]] | None = None, full_numbers: bool = False) -> None:
    """Every table one after the other (a title line, a header, rows, a blank line), UTF-8 with
    a byte-order mark so Excel reads the Chinese; rates as "93.0%", missing ones as "—"."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    for name, header, rows in tables(figs, leads, full_numbers=full_numbers):
        w.writerow([f"# {name}"])
        w.writerow(header)
        w.writerows([[_text(c) for c in r] for r in rows])
        w.writerow([])
    data = "\ufeff" + buf.getvalue()
    if isinstance(path_or_stream, str | Path):
        Path(path_or_stream).write_text(data, encoding="utf-8", newline="")
    else:
        path_or_stream.write(data)


def to_xlsx(figs: dict[str, Any], path: str | Path, *, leads: list[dict[str, Any]] | None = None,
            full_numbers: bool = False) -> None:
    """One sheet per table; rates are numbers formatted as percentages, missing ones "—"."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    wb.remove(wb.active)
    for name, header, rows in tables(figs, leads, full_numbers=full_numbers):
        ws = wb.create_sheet(name)
        ws.append(header)
        for cell in ws[1]:
            cell.font = Font(bold=True)
        for r in rows:
            ws.append(["—" if c is None else (float(c) if isinstance(c, _Rate) else c) for c in r])
            for cell, value in zip(ws[ws.max_row], r, strict=False):
                if isinstance(value, _Rate):
                    cell.number_format = "0.0%"
        for i, col in enumerate(header, start=1):
            width = max([_width(col)] + [_width(_text(r[i - 1])) for r in rows if len(r) >= i])
            ws.column_dimensions[ws.cell(1, i).column_letter].width = min(60, width + 2)
        ws.freeze_panes = "B2"
    wb.save(str(path))


def _width(s: str) -> int:
    """Display width: Chinese characters take two columns."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def render_text(figs: dict[str, Any], leads_: list[dict[str, Any]] | None = None, *,
                full_numbers: bool = False) -> str:
    """The tables as aligned plain text (Chinese characters count two columns)."""
    out: list[str] = []
    for name, header, rows in tables(figs, leads_, full_numbers=full_numbers, compact=True):
        cells = [header] + [[_text(c) for c in r] for r in rows if r]
        cols = max(len(r) for r in cells)
        cells = [r + [""] * (cols - len(r)) for r in cells]
        widths = [max(_width(r[i]) for r in cells) for i in range(cols)]
        out.append(f"\n== {name} ==")
        for i, r in enumerate(cells):
            out.append("  ".join(c + " " * (w - _width(c)) for c, w in zip(r, widths, strict=True)).rstrip())
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
    return "\n".join(out).lstrip("\n") + "\n"
