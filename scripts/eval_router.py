#!/usr/bin/env python3
"""Evaluate the router on labelled JSON lines ({id, text, target, category, urgent}).

    python scripts/eval_router.py ../shared/eval/dev_cases.jsonl tests/router/regression_cases.jsonl

Prints, per file: police cases diverted (must be 0), exact target+category on non-police cases,
urgent-flag agreement on police cases, and precision/recall per target; then lists the misses.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fenliu.router import Router  # noqa: E402


def evaluate(router: Router, path: Path, show_misses: bool) -> None:
    cases = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    diverted, exact, non_police, urgent_ok, urgent_n, police = [], 0, 0, 0, 0, 0
    misses = []
    for c in cases:
        d = router.decide(c["text"])
        if d.target == c["target"]:
            tp[c["target"]] += 1
        else:
            fp[d.target] += 1
            fn[c["target"]] += 1
        if c["target"] == "police":
            police += 1
            if d.target != "police":
                diverted.append(c["id"])
                misses.append((c, d))
            elif "urgent" in c:
                urgent_n += 1
                urgent_ok += d.urgent == c["urgent"]
        else:
            non_police += 1
            if (d.target, d.category) == (c["target"], c["category"]):
                exact += 1
            else:
                misses.append((c, d))
    print(f"\n{path} ({len(cases)} cases)")
    print(f"  police cases diverted: {len(diverted)}/{police} {diverted if diverted else ''}")
    print(f"  non-police, exact target+category: {exact}/{non_police} ({exact / max(non_police, 1):.0%})")
    print(f"  urgent flag agrees (police cases kept, labelled): {urgent_ok}/{urgent_n}")
    print(f"  {'target':8} {'precision':>9} {'recall':>7} {'n':>4}")
    for t in sorted(set(tp) | set(fn) | set(fp)):
        p = tp[t] / max(tp[t] + fp[t], 1)
        r = tp[t] / max(tp[t] + fn[t], 1)
        print(f"  {t:8} {p:9.2f} {r:7.2f} {tp[t] + fn[t]:4}")
    if show_misses:
        for c, d in misses:
            print(f"  ✘ {c['id']}: expected {c['target']} {c.get('category', '')}, got {d.target} {d.category} — "
                  f"{d.reason[:80]}")


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--misses"]
    if not args:
        sys.exit(__doc__)
    router = Router()
    for a in args:
        evaluate(router, Path(a), "--misses" in sys.argv)


if __name__ == "__main__":
    main()
