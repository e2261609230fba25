from fenliu.router.normalize import Normalizer


def test_spaces_fullwidth_traditional_and_fillers_with_positions():
    n = Normalizer(("那个", "嗯"))
    src = "嗯 那個 停電了 ＫＴＶ １２"
    out = n(src)
    assert out.text == "停电了KTV12"
    s, e = out.span(0, 2)  # 停电
    assert src[s:e].replace(" ", "") == "停電"
    s, e = out.span(3, 6)
    assert src[s:e] == "ＫＴＶ"


def test_spoken_digit_runs_become_numbers_but_short_runs_stay():
    n = Normalizer()
    assert n("打幺二三四五也没用").text == "打12345也没用"
    assert n("一二线城市").text == "一二线城市"


def test_vosk_style_spaced_transcript():
    n = Normalizer()
    out = n("我 家 停 电 了")
    assert out.text == "我家停电了"
    assert out.span(2, 4) == (4, 7)
