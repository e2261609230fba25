"""The router on labelled sets: no police case may ever be diverted; report accuracy."""

import json
from pathlib import Path

import pytest

from tests.conftest import SHARED

CORPUS = Path(__file__).resolve().parents[2] / "fenliu" / "router" / "corpus"


def _load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _measure(router, cases):
    diverted_police, correct, non_police = [], 0, 0
    for c in cases:
        d = router.decide(c["text"])
        if c["target"] == "police":
            if d.target != "police":
                diverted_police.append((c["id"], d.target, d.reason))
        else:
            non_police += 1
            correct += d.target == c["target"] and d.category == c["category"]
    return diverted_police, correct / max(non_police, 1)


def test_dev_cases_no_police_case_diverted(router):
    path = SHARED / "eval" / "dev_cases.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present (shared/ is laid beside the checkout in CI)")
    diverted, accuracy = _measure(router, _load(path))
    assert diverted == []
    assert accuracy >= 0.9


def test_paraphrase_cases_no_police_case_diverted(router):
    diverted, accuracy = _measure(router, _load(CORPUS / "paraphrase_p.jsonl"))
    assert diverted == []
    assert accuracy >= 0.75


def test_regression_cases_no_police_case_diverted(router):
    """450 cases written blind by a separate author (h-*, b-*, c-*), then used to widen the list:
    a regression set now, not a blind measure (see README for the blind numbers)."""
    diverted, accuracy = _measure(router, _load(CORPUS / "regression_hbc.jsonl"))
    assert diverted == []
    assert accuracy >= 0.72


def test_held_out_authors_no_police_case_diverted(router):
    """The corpus authors kept out of training and tuning (split.toml), and their ASR-style copies:
    the safety contract holds on wording the system never learnt from."""
    from fenliu.router.dataset import asr_variant, corpus_files, load_jsonl, load_split

    held = set(load_split())
    cases = [c for p in corpus_files() for c in load_jsonl(p, router.rules) if c.author in held]
    assert len({c.author for c in cases}) >= 2 and len(cases) > 500
    for c in cases + [asr_variant(c) for c in cases]:
        if c.police:
            d = router.decide(c.text)
            assert d.target == "police", (c.id, c.text, d.reason)
