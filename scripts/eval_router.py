#!/usr/bin/env python3
"""Evaluate the router honestly: held-out authors first, the naive baseline beside it.

    python scripts/eval_router.py                  # the default sets (below)
    python scripts/eval_router.py FILE… [--misses] # any labelled JSON lines
    python scripts/eval_router.py --cv             # re-run the author-held-out cross-validation

Default sets: the held-out authors of fenliu/router/corpus/split.toml (never used to train the
learned layer, choose its thresholds or tune the list), their generated ASR-style copies, the
shared dev set (../shared/eval/dev_cases.jsonl) and, for reference only, the training corpus
(which the model has learnt).

For each set and router (naive substring baseline, rules alone, rules + learned layer): police
cases diverted (must be 0), non-police to the exact target, exact target + category, and to an
acceptable target (its own target or 12345); then for the full router per-target precision and
recall and a confusion matrix of expected (rows) against decided (columns) targets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import table  # noqa: E402  (scripts/bench.py, this folder)

from fenliu.router import Router, load_rules  # noqa: E402
from fenliu.router.dataset import Case, asr_variant, corpus_files, load_jsonl, load_split  # noqa: E402
from fenliu.router.evaluation import TARGETS, NaiveRouter, Result, measure  # noqa: E402


def default_sets(rules) -> list[tuple[str, list[Case]]]:  # type: ignore[no-untyped-def]
    heldout = set(load_split())
    held: list[Case] = []
    train: list[Case] = []
    for p in corpus_files():
        for c in load_jsonl(p, rules):
            (held if c.author in heldout else train).append(c)
    sets = [(f"held-out authors {'+'.join(sorted(heldout))} ({len(held)})", held),
            (f"held-out authors, ASR-style copies ({len(held)})", [asr_variant(c) for c in held]),
            (f"held-out, written complaints only ({sum(c.register == 'written' for c in held)})",
             [c for c in held if c.register == "written"])]
    dev = ROOT.parent / "shared" / "eval" / "dev_cases.jsonl"
    if dev.exists():
        sets.append((f"shared dev set (list tuned on it; model never trained on it) ({sum(1 for _ in dev.open())})",
                     load_jsonl(dev, rules)))
    sets.append((f"training corpus (learnt: reference only) ({len(train)})", train))
    return sets


def report(sets: list[tuple[str, list[Case]]], routers: dict, show_misses: bool) -> None:
    rows = []
    full: dict[str, Result] = {}
    for name, cases in sets:
        for label, decide in routers.items():
            r = measure(cases, decide)
            if label == "rules + learned layer":
                full[name] = r
            rows.append([name if label == "naive baseline" else "", label,
                         f"{len(r.police_diverted)}/{r.police}", r.pct(r.exact_target), r.pct(r.exact_category),
                         r.pct(r.acceptable)])
    table("Router quality (police diverted must be 0)",
          ["set", "router", "police diverted", "non-police exact target", "exact target+category",
           "acceptable target"], rows)
    for name, r in full.items():
        table(f"rules + learned layer on {name}: per target",
              ["target", "precision", "recall", "n"],
              [[t, f"{p:.2f}", f"{rc:.2f}", n] for t in TARGETS
               for p, rc, n in [r.precision_recall(t)] if n or r.confusion.get((t, t))])
        present = [t for t in TARGETS if any(r.confusion[(t, d)] or r.confusion[(d, t)] for d in TARGETS)]
        table("confusion (rows expected, columns decided)", ["expected \\ decided", *present],
              [[e, *(r.confusion[(e, d)] or "." for d in present)] for e in present])
        if show_misses:
            for c, target, cat, reason in r.misses:
                print(f"  ✘ {c.id} [{c.register}] expected {c.target}/{c.category} got {target}/{cat}: "
                      f"{c.text[:60]} — {reason[:70]}")


def cross_validation() -> None:
    """Re-run the author-held-out cross-validation the thresholds were chosen with."""
    from fenliu.router.training import Report, Trainer

    tr = Trainer()
    _, cases = tr.training_cases()
    rep = Report()
    tr.validate(cases, tr.counts(cases), rep)
    print("\nAuthor-held-out cross-validation on the training authors (each fold's model never saw its authors)")
    print("\n".join("  " + x for x in rep.lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--misses", action="store_true", help="list every miss of the full router")
    ap.add_argument("--cv", action="store_true", help="re-run the author-held-out cross-validation (slow)")
    args = ap.parse_args()
    rules = load_rules()
    full = Router()
    alone = Router(rules, model=None)
    naive = NaiveRouter(rules)

    def via(router: Router):  # type: ignore[no-untyped-def]
        def decide(text: str) -> tuple[str, str, str]:
            d = router.decide(text)
            return d.target, d.category_id or "police", d.reason
        return decide

    routers = {"naive baseline": naive.decide, "rules alone": via(alone), "rules + learned layer": via(full)}
    sets = [(str(p), load_jsonl(p, rules)) for p in args.files] if args.files else default_sets(rules)
    print(f"negative list {rules.version}; learned layer {full.model_version}")
    for line in full.model.meta.get("validation", []) if full.model else []:
        print(f"  (training) {line}")
    report(sets, routers, args.misses)
    if args.cv:
        cross_validation()


if __name__ == "__main__":
    main()
