from fenliu.router import CallRouter


def test_decision_appears_on_a_partial_before_the_caller_stops(router):
    cr = CallRouter(router)
    cr.on_partial(1, "喂 我们小区")
    d = cr.on_partial(1, "喂 我们小区停水了")
    assert d is not None and d.target == "12345"


def test_no_flapping_when_a_partial_is_revised(router):
    cr = CallRouter(router)
    emitted = [cr.on_partial(1, "我们小区停水了"), cr.on_partial(1, "我们小区停睡了"),
               cr.on_partial(1, "我们小区停水了 三天")]
    decisions = [d for d in emitted if d is not None]
    assert len(decisions) == 1 and decisions[0].target == "12345"
    assert cr.current.target == "12345"


def test_danger_is_sticky_and_immediate(router):
    cr = CallRouter(router)
    assert cr.on_final(1, "楼上装修太吵了").target == "12345"
    d = cr.on_partial(2, "他拿着刀")
    assert d is not None and d.target == "police" and d.urgent
    # the recogniser revises the partial: still police
    assert cr.on_partial(2, "他拿着到") is None
    assert cr.on_final(2, "他拿着到") is None
    assert cr.current.target == "police"


def test_switches_only_on_clearly_more_evidence(router):
    cr = CallRouter(router, switch_margin=1.0)
    assert cr.on_final(1, "楼上漏水").category == "邻里纠纷"
    # one weak word of another category is not enough to switch
    assert cr.on_partial(2, "吵") is None
    d = cr.on_final(2, "还天天半夜装修 噪音太吵了 扰民")
    assert d is not None and d.category == "噪声扰民"


def test_evidence_accumulates_across_utterances(router):
    cr = CallRouter(router)
    first = cr.on_final(1, "我那个老板")
    assert first is not None and first.target == "police"  # one weak word: not yet
    d = cr.on_final(2, "三个月不发工资")
    assert d is not None and d.category == "劳资纠纷 / 拖欠工资"
