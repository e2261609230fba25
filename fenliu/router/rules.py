"""The negative list: loading, validation and the typed rule set the matcher works from.

The list is TOML edited by command-centre staff (see ``negative_list.toml`` for the format).
Every error names the file, the line and what to change.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fenliu.errors import RuleListError

DEFAULT_RULES = "negative_list.toml"
_PATTERN_WINDOW = re.compile(r"@\s*(\d+)\s*$")


@dataclass(frozen=True)
class Pattern:
    """Co-occurrence rule: one word of each term group within ``window`` characters."""

    text: str
    terms: tuple[tuple[str, ...], ...]
    window: int


@dataclass(frozen=True)
class Target:
    id: str
    number: str
    name: str


@dataclass(frozen=True)
class Category:
    id: str
    name: str
    target: str
    dept: str
    strong: tuple[str, ...]
    weak: tuple[str, ...]
    patterns: tuple[Pattern, ...]
    decisive: tuple[str, ...] = ()


@dataclass(frozen=True)
class DangerGroup:
    id: str
    label: str
    dept: str
    urgent: bool
    negatable: bool
    words: tuple[str, ...]
    patterns: tuple[Pattern, ...]


@dataclass(frozen=True)
class Cues:
    negators: tuple[str, ...]
    negation_gap: frozenset[str]
    negation_max_gap: int
    now: tuple[str, ...]
    past: tuple[str, ...]
    fillers: tuple[str, ...]


@dataclass(frozen=True)
class RuleSet:
    version: str
    name: str
    window: int
    flow_back_days: int
    targets: dict[str, Target]
    categories: tuple[Category, ...]
    danger: tuple[DangerGroup, ...]
    cues: Cues
    keep_whole: tuple[str, ...]
    source: str

    def category(self, category_id: str) -> Category:
        for c in self.categories:
            if c.id == category_id:
                return c
        raise KeyError(category_id)

    def all_words(self) -> set[str]:
        """Every word the list mentions (for the jieba user dictionary)."""
        words: set[str] = set(self.keep_whole)
        for c in self.categories:
            words.update(c.decisive, c.strong, c.weak)
            for p in c.patterns:
                for t in p.terms:
                    words.update(t)
        for g in self.danger:
            words.update(g.words)
        return words


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Load and validate a negative list; ``None`` loads the list shipped with fenliu."""
    text, source = rules_text(path)
    return parse_rules(text, source)


def rules_text(path: str | Path | None = None) -> tuple[str, str]:
    """A negative list's text and where it came from (``None``: the list shipped with fenliu)."""
    if path is None:
        text = resources.files("fenliu.router").joinpath(DEFAULT_RULES).read_text(encoding="utf-8")
        source = f"fenliu/router/{DEFAULT_RULES}"
    else:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError as e:
            raise RuleListError(f"{p}: 负面清单文件不存在 / rule file not found; check the path "
                                f"(settings key router.rules_path)") from e
        except UnicodeDecodeError as e:
            raise RuleListError(f"{p}: 不是 UTF-8 编码 / not UTF-8 text; save the file as UTF-8") from e
        source = str(p)
    return text, source


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RuleListError(f"{source}: TOML 语法错误 / syntax error: {e}") from e
    return _Parser(text, source).build(data)


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    # -- error helpers ---------------------------------------------------------------
    def line_of(self, needle: str, start: int = 0) -> int:
        """1-based line of the first line at or after ``start`` containing ``needle`` (0 if none)."""
        for i in range(start, len(self.lines)):
            if needle in self.lines[i]:
                return i + 1
        return 0

    def fail(self, msg: str, needle: str | None = None, after: str | None = None) -> RuleListError:
        start = 0
        if after:
            start = max(self.line_of(after) - 1, 0)
        line = self.line_of(needle, start) if needle else 0
        where = f"{self.source}:{line}" if line else self.source
        return RuleListError(f"{where}: {msg}")

    # -- sections ----------------------------------------------------------------------
    def build(self, data: dict[str, Any]) -> RuleSet:
        meta = self.table(data, "meta")
        version = self.string(meta, "version", "[meta]")
        window = self.integer(meta, "window", "[meta]", default=14)
        flow_back_days = self.integer(meta, "flow_back_days", "[meta]", default=7)
        targets = self.targets(self.table(data, "targets"))
        cues = self.cues(self.table(data, "cues"))
        seg = data.get("segmentation", {})
        keep_whole = tuple(self.words(seg, "keep_whole", "[segmentation]", required=False))

        danger = tuple(self.danger(d, window) for d in self.array(data, "danger"))
        categories = tuple(self.category(c, window, targets) for c in self.array(data, "category"))
        self.check_ids([g.id for g in danger], "danger")
        self.check_ids([c.id for c in categories], "category")
        self.check_duplicates(danger, categories)
        if "police" not in targets:
            raise self.fail("targets 里缺少 police（110 本身）/ the targets table needs a 'police' entry",
                            "[targets")
        return RuleSet(version=version, name=str(meta.get("name", "")), window=window,
                       flow_back_days=flow_back_days, targets=targets, categories=categories,
                       danger=danger, cues=cues, keep_whole=keep_whole, source=self.source)

    def table(self, data: dict[str, Any], key: str) -> dict[str, Any]:
        v = data.get(key)
        if not isinstance(v, dict):
            raise self.fail(f"缺少 [{key}] 表 / missing table [{key}]; see the shipped negative_list.toml")
        return v

    def array(self, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
        v = data.get(key)
        if not isinstance(v, list) or not v:
            raise self.fail(f"缺少 [[{key}]] 条目 / no [[{key}]] entries; the list needs at least one")
        return v

    def string(self, t: dict[str, Any], key: str, where: str, needle: str | None = None) -> str:
        v = t.get(key)
        if not isinstance(v, str) or not v.strip():
            raise self.fail(f"{where} 缺少 {key}（字符串）/ {where} needs a non-empty string '{key}'",
                            needle or where)
        return v.strip()

    def integer(self, t: dict[str, Any], key: str, where: str, default: int) -> int:
        v = t.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise self.fail(f"{where} {key} 必须是正整数 / must be a positive integer, got {v!r}",
                            f"{key} =")
        return v

    def words(self, t: dict[str, Any], key: str, where: str, required: bool = True) -> list[str]:
        v = t.get(key, [])
        if not isinstance(v, list) or not all(isinstance(w, str) for w in v):
            raise self.fail(f"{where} {key} 必须是字符串列表 / must be a list of strings", f"{key} =",
                            after=where)
        out = []
        for w in v:
            w = w.strip()
            if not w:
                raise self.fail(f"{where} {key} 里有空词 / has an empty word", f"{key} =", after=where)
            out.append(w)
        if required and not out:
            raise self.fail(f"{where} {key} 为空 / is empty", f"{key} =", after=where)
        return out

    def pattern(self, text: str, default_window: int, where: str) -> Pattern:
        window = default_window
        body = text
        m = _PATTERN_WINDOW.search(text)
        if m:
            window = int(m.group(1))
            body = text[: m.start()]
        groups = []
        for part in body.split("+"):
            alts = tuple(a.strip() for a in part.split("|") if a.strip())
            if not alts:
                raise self.fail(f"{where} 组合 '{text}' 有空的一组 / has an empty term; write 'A|B + C'",
                                text)
            groups.append(alts)
        if len(groups) < 2:
            raise self.fail(f"{where} 组合 '{text}' 至少要两组，用 + 连接 / a pattern needs two or more "
                            f"terms joined by '+'", text)
        if window < 2:
            raise self.fail(f"{where} 组合 '{text}' 窗口太小 / window must be at least 2", text)
        return Pattern(text=text, terms=tuple(groups), window=window)

    def targets(self, t: dict[str, Any]) -> dict[str, Target]:
        out = {}
        for tid, v in t.items():
            if not isinstance(v, dict):
                raise self.fail(f"targets.{tid} 必须是表 / must be a table", f"[targets.{tid}")
            out[tid] = Target(id=tid, number=str(v.get("number", "")), name=str(v.get("name", tid)))
        return out

    def cues(self, t: dict[str, Any]) -> Cues:
        gap = t.get("negation_gap", "")
        if not isinstance(gap, str):
            raise self.fail("cues.negation_gap 必须是字符串 / must be a string", "negation_gap")
        return Cues(
            negators=tuple(sorted(self.words(t, "negators", "[cues]"), key=len, reverse=True)),
            negation_gap=frozenset(gap),
            negation_max_gap=self.integer(t, "negation_max_gap", "[cues]", default=5),
            now=tuple(self.words(t, "now", "[cues]", required=False)),
            past=tuple(self.words(t, "past", "[cues]", required=False)),
            fillers=tuple(sorted(self.words(t, "fillers", "[cues]", required=False), key=len, reverse=True)),
        )

    def danger(self, d: dict[str, Any], window: int) -> DangerGroup:
        gid = self.string(d, "id", "[[danger]]", needle="[[danger]]")
        where = f'[[danger]] id="{gid}"'
        anchor = f'id = "{gid}"'
        words = self.words(d, "words", where, required=False)
        pats = [self.pattern(p, window, where) for p in self.words(d, "patterns", where, required=False)]
        if not words and not pats:
            raise self.fail(f"{where} 没有任何词或组合 / has neither words nor patterns", anchor)
        return DangerGroup(id=gid, label=str(d.get("label", gid)), dept=str(d.get("dept", "110")),
                           urgent=bool(d.get("urgent", True)), negatable=bool(d.get("negatable", True)),
                           words=tuple(words), patterns=tuple(pats))

    def category(self, c: dict[str, Any], window: int, targets: dict[str, Target]) -> Category:
        cid = self.string(c, "id", "[[category]]", needle="[[category]]")
        where = f'[[category]] id="{cid}"'
        anchor = f'id = "{cid}"'
        name = self.string(c, "name", where, needle=anchor)
        target = self.string(c, "target", where, needle=anchor)
        if target not in targets:
            raise self.fail(f"{where} 的 target '{target}' 不在 [targets] 里 / unknown target; use one of "
                            f"{', '.join(sorted(targets))}", f'target = "{target}"', after=anchor)
        if target == "police":
            raise self.fail(f"{where} 的 target 不能是 police：分流类别必须指向热线 / a diverted category "
                            f"cannot target police", 'target = "police"', after=anchor)
        decisive = self.words(c, "decisive", where, required=False)
        strong = self.words(c, "strong", where, required=False)
        weak = self.words(c, "weak", where, required=False)
        pats = [self.pattern(p, window, where) for p in self.words(c, "patterns", where, required=False)]
        if not decisive and not strong and not pats:
            raise self.fail(f"{where} 是空类别：没有决定词、强词或组合，永远不会命中 / empty category: add "
                            f"decisive or strong words or patterns", anchor)
        return Category(id=cid, name=name, target=target, dept=str(c.get("dept", "")),
                        strong=tuple(strong), weak=tuple(weak), patterns=tuple(pats), decisive=tuple(decisive))

    def check_ids(self, ids: list[str], kind: str) -> None:
        seen: set[str] = set()
        for i in ids:
            if i in seen:
                raise self.fail(f"[[{kind}]] id '{i}' 重复 / duplicate id", f'id = "{i}"')
            seen.add(i)

    def check_duplicates(self, danger: tuple[DangerGroup, ...], categories: tuple[Category, ...]) -> None:
        """A word may appear once per group; a strong word in one category only; a danger word
        never as a category word (it would be ambiguous which one the list means)."""
        danger_owner: dict[str, str] = {}
        for g in danger:
            self._no_repeats(g.words, f'[[danger]] id="{g.id}"')
            for w in g.words:
                if w in danger_owner:
                    raise self.fail(f"危险词 '{w}' 同时在 {danger_owner[w]} 和 {g.id} 里 / duplicate danger "
                                    f"word; keep it in one group", f'"{w}"')
                danger_owner[w] = g.id
        strong_owner: dict[str, str] = {}
        for c in categories:
            where = f'[[category]] id="{c.id}"'
            self._no_repeats(c.decisive + c.strong + c.weak, where)
            for w in c.decisive + c.strong + c.weak:
                if w in danger_owner:
                    raise self.fail(f"'{w}' 既是危险词（{danger_owner[w]}）又是类别词（{c.id}）/ a word "
                                    f"cannot be both a danger signal and a category word", f'"{w}"',
                                    after=f'id = "{c.id}"')
            for w in c.decisive + c.strong:
                if w in strong_owner:
                    raise self.fail(f"强词 '{w}' 同时在 {strong_owner[w]} 和 {c.id} 里 / a strong word "
                                    f"belongs to one category; make it weak or keep one", f'"{w}"',
                                    after=f'id = "{c.id}"')
                strong_owner[w] = c.id

    def _no_repeats(self, words: tuple[str, ...], where: str) -> None:
        seen: set[str] = set()
        for w in words:
            if w in seen:
                anchor = where.split(" ", 1)[1].replace("=", " = ")
                raise self.fail(f"{where} 里 '{w}' 重复 / duplicate word", f'"{w}"', after=anchor)
            seen.add(w)
