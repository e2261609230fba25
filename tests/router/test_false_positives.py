"""Real false positives of word matching: a danger word inside a harmless compound, a category
word across a word boundary. Each must not be matched; danger words still match in real danger."""

import json
from pathlib import Path

import pytest

CASES = [json.loads(x) for x in (Path(__file__).parent / "false_positive_cases.jsonl").read_text(
    encoding="utf-8").splitlines() if x.strip()]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_false_positive_is_not_matched(router, case):
    d = router.decide(case["text"])
    seen = {m.word for m in d.matched if m.kind == "word"} | {v.word for v in d.vetoed_by}
    assert not seen & set(case["not_matched"]), (case["note"], d.reason)
    assert not any(v.kind == "word" for v in d.vetoed_by), d.reason
    if case["target"]:
        assert d.target == case["target"], d.reason


@pytest.mark.parametrize("text,word", [("他拿着钢管在楼下追着人打", "钢管"), ("两个人动手了 打得头破血流", "动手"),
                                       ("厨房着火了 烟很大", "着火"), ("那个人手里拿着一把菜刀", "菜刀")])
def test_the_same_danger_words_still_count_in_real_danger(router, text, word):
    d = router.decide(text)
    assert d.target == "police" and word in {v.word for v in d.vetoed_by}


def test_danger_words_err_toward_matching_in_noisy_text(router):
    """Segmentation of ASR text is uncertain: a danger word split across tokens still counts."""
    d = router.decide("他 拿 刀 砍 人 了")
    assert d.target == "police" and d.vetoed_by
