"""The numbers the evaluation prints: police diverted, exact, acceptable, per-target, confusion."""

from fenliu.router import load_rules
from fenliu.router.dataset import Case, asr_variant
from fenliu.router.evaluation import NaiveRouter, acceptable, measure

CASES = [
    Case("1", "x", "他拿刀砍人", "police", "police", "weapon"),
    Case("2", "x", "出租车绕路", "12328", "transport"),
    Case("3", "x", "楼上漏水", "12345", "neighbour"),
    Case("4", "x", "停电了", "95598", "power"),
]


def test_measure_counts_each_kind_of_outcome():
    answers = {"他拿刀砍人": ("12345", "noise"), "出租车绕路": ("12345", "transport"),
               "楼上漏水": ("12345", "neighbour"), "停电了": ("police", "police")}
    r = measure(CASES, lambda t: (*answers[t], ""))
    assert r.police_diverted == ["1"] and r.police == 1 and r.non_police == 3
    assert r.exact_target == 1 and r.exact_category == 1
    assert r.acceptable == 2  # the taxi complaint to 12345 is acceptable, the power cut kept is not
    assert r.confusion[("12328", "12345")] == 1 and r.confusion[("police", "12345")] == 1
    p, rc, n = r.precision_recall("12345")
    assert (round(p, 2), rc, n) == (0.33, 1.0, 1)
    assert {c.id for c, *_ in r.misses} == {"1", "2", "4"}


def test_acceptable_is_the_own_target_or_12345_never_police():
    taxi = CASES[1]
    assert acceptable(taxi, "12328") and acceptable(taxi, "12345")
    assert not acceptable(taxi, "police") and not acceptable(taxi, "social")
    assert not acceptable(CASES[0], "police")  # police cases are counted apart


def test_naive_baseline_is_a_substring_scan():
    naive = NaiveRouter(load_rules())
    assert naive.decide("我们整栋楼停电了")[0] == "95598"
    assert naive.decide("他拿刀砍人")[0] == "police"


def test_asr_copy_is_deterministic_keeps_author_and_label_and_changes_the_text():
    c = Case("m01-0007", "m01", "我们小区从早上开始停水了，物业也不通知", "12345", "water_supply")
    a, b = asr_variant(c), asr_variant(c)
    assert a == b and a.author == "m01" and (a.target, a.category) == ("12345", "water_supply")
    assert a.id == "m01-0007~asr" and a.variant == "asr" and "，" not in a.text
