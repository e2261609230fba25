"""ROUTING.md's subtleties, each a test, on literal Chinese text."""

import pytest

from fenliu.router import Context, PriorReport


def test_decision_carries_every_field_of_routing_md(router):
    d = router.decide("我们小区从早上开始停水了", Context(call_id="c1", utterance_id=3))
    obj = d.to_dict()
    for key in ("call_id", "utterance_id", "target", "category", "dept", "confidence", "matched", "vetoed_by",
                "urgent", "rule_version"):
        assert key in obj
    assert (d.call_id, d.utterance_id, d.target, d.category) == ("c1", 3, "12345", "供水 / 漏水")
    assert d.rule_version == router.rules.version


def test_matched_positions_point_into_the_original_transcript(router):
    text = "喂 那个 我们 整条 街 都 停 电 了"
    d = router.decide(text)
    assert d.target == "95598"
    words = {m.word: m for m in d.matched if m.kind == "word"}
    m = words["停电"]
    assert text[m.start : m.end].replace(" ", "") == "停电"


def test_danger_wins_over_a_category(router):
    d = router.decide("老板欠薪还把我打了")
    assert d.target == "police" and d.category == "police"
    assert any(v.group == "violence" for v in d.vetoed_by)
    assert "欠薪" in {m.word for m in d.matched}  # the category is still shown, vetoed


def test_negated_danger_does_not_veto(router):
    d = router.decide("没有人受伤，就是噪音太大")
    assert d.target == "12345" and d.category == "噪声扰民"
    assert "受伤" in d.extra["negated"]


def test_negation_must_be_close_and_plain(router):
    # 没办法 is not a negation of 打我
    d = router.decide("噪音太大我没办法他打我")
    assert d.target == "police"


def test_future_threat_never_diverts(router):
    d = router.decide("楼上太吵了 他说要打我")
    assert d.target == "police"
    assert d.vetoed_by


def test_threat_group_cannot_be_negated(router):
    assert router.decide("装修噪音太大 他没说要弄死我 但是说了小心点").target == "police"


@pytest.mark.parametrize("text", ["刚才有人冒充客服 我把验证码告诉他了 卡里少了两万",
                                  "他让我转账到安全账户 我刚转了", "我被骗了 刚转了五千"])
def test_fraud_is_police_urgent_and_goes_to_the_anti_fraud_desk(router, text):
    d = router.decide(text)
    assert (d.target, d.urgent) == ("police", True)
    assert "反诈" in d.dept


def test_old_fraud_is_police_but_not_urgent(router):
    d = router.decide("我去年被骗了三万 当时没报案 现在想问问还能不能追回来")
    assert (d.target, d.urgent) == ("police", False)


def test_repeat_caller_with_the_same_matter_stays_with_police(router):
    text = "楼下酒吧又吵到半夜两点"
    assert router.decide(text).target == "12345"
    ctx = Context(caller="13800000000", history=(PriorReport("noise", "12345", age_days=2.0),))
    d = router.decide(text, ctx)
    assert d.target == "police"
    assert d.vetoed_by[0].group == "repeat_caller"
    old = Context(history=(PriorReport("noise", "12345", age_days=30.0),))
    assert router.decide(text, old).target == "12345"


def test_asr_homophone_counts_but_alone_never_diverts(rules_router):
    """The rules' homophone matching (with the learned layer the short text may also be vetoed)."""
    router = rules_router
    alone = router.decide("工自")
    assert alone.target == "police"
    d = router.decide("包工头 不给 工自")  # 工自 ≈ 工资
    assert d.target == "12345" and d.category == "劳资纠纷 / 拖欠工资"
    h = [m for m in d.matched if m.kind == "homophone"]
    assert h and "工自" in h[0].heard and "工资" in h[0].word  # e.g. 不给工自 ≈ 不给工资


def test_a_single_weak_word_never_diverts(router):
    for text in ("老板", "我想问一下", "楼上"):
        d = router.decide(text)
        assert d.target == "police", text
        assert "证据不足" in d.reason or "未匹配" in d.reason


def test_nothing_matched_stays_with_police_and_says_why(router):
    d = router.decide("喂 你好 请问是110吗")
    assert d.target == "police" and d.confidence <= 0.5
    assert d.reason


def test_single_character_danger_words_need_a_whole_token(router):
    # 打车 is not 打; 抢修 is not 抢
    assert router.decide("我打车的时候司机绕路多收钱").target == "12328"
    assert router.decide("我们小区停电了 抢修的人一直没来").target == "95598"
    assert router.decide("他们抢我手机").target == "police"


def test_danger_word_inside_a_longer_category_word_is_not_danger(router):
    d = router.decide("灶台打不着火了 天然气没了 也没闻到味道")
    assert d.target == "12345" and d.category == "供气 / 供暖"


def test_gas_smell_is_fire_police_urgent(router):
    d = router.decide("楼道里一股很冲的煤气味 越来越大")
    assert (d.target, d.urgent) == ("police", True)
    assert "119" in d.dept


def test_traditional_characters_and_spaces(router):
    d = router.decide("我們 整 棟 樓 都 停 電 了")
    assert d.target == "95598"


def test_decide_is_deterministic(router):
    a = router.decide("房东押金不退")
    b = router.decide("房东押金不退")
    assert a == b


def test_a_decisive_word_diverts_alone_a_strong_word_needs_support(router):
    assert router.decide("喂 我家没电了").target == "95598"  # 没电: decisive
    assert router.decide("我要找人开锁").target == "social"
    lone = router.decide("婆婆")  # strong for 婚姻家庭, but alone it is only a topic
    assert lone.target == "police" and "证据不足" in lone.reason
    assert router.decide("婆婆天天跟我吵 老公也不管").target == "12338"


def test_equal_evidence_for_two_destinations_stays_with_police(router):
    d = router.decide("停电 宽带")  # 95598 and 12345, one decisive word each
    assert d.target == "police"
    assert "证据相当" in d.reason
    one_sided = router.decide("停电 宽带 电费 跳闸")
    assert one_sided.target == "95598"
    assert one_sided.confidence < router.decide("停电 电费 跳闸").confidence  # the rival costs confidence
