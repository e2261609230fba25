"""Linkage lookups and texts: sites by called number and trunk, platforms per target, field
mapping, caller numbers, SMS templates; and the settings that describe them."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fenliu.errors import ConfigError
from fenliu.hotlines.linkage import Linkage, Templates, caller_number, location_of, map_fields, mobile
from fenliu.settings import load_settings

CONFIG = """
[platforms.yiling-12345]
url = "https://gw.yiling.example/orders"
fields = { gdbh = "{order_no}", nr = "{category}：{excerpt}", gjc = "{matched}", ly = "110" }
status_map = { "已签收" = "accepted" }
[platforms.xiling-12345]
url = "https://gw.xiling.example/orders"
[platforms.power]
url = "https://95598.example/api"

[sites.yiling]
name = "夷陵区"
numbers = "110"
trunks = "10.1.0.5"
platforms = { "95598" = "power", "*" = "yiling-12345" }
targets = { "12345" = "sip:12345@10.1.0.9" }
[sites.xiling]
name = "西陵区"
numbers = "110,12110"
platforms = { "*" = "xiling-12345" }
"""


def test_sites_choose_targets_and_platforms(tmp_path):
    cfg = tmp_path / "f.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    s = load_settings(cfg, env={})
    lk = Linkage(s)
    assert lk.site_for("110", "10.1.0.5") == "yiling"
    assert lk.site_for("110", "10.2.0.7") == "xiling"  # another trunk: the next site that admits it
    assert lk.site_for("12110", "10.1.0.5") == "xiling"
    assert lk.site_for("119", "10.1.0.5") == ""
    assert lk.platform_for("yiling", "12345")[0] == "yiling-12345"
    assert lk.platform_for("yiling", "95598")[0] == "power"
    assert lk.platform_for("xiling", "12348")[0] == "xiling-12345"
    assert lk.targets_for("yiling")["12345"] == "sip:12345@10.1.0.9"
    assert lk.target_id("sip:12345@10.1.0.9") == "12345"
    assert lk.is_diversion("12345") and not lk.is_diversion("120") and not lk.is_diversion("police")
    assert s.platforms["yiling-12345"].status_map == {"已签收": "accepted"}


def test_bad_platform_settings_name_the_key(tmp_path):
    cfg = tmp_path / "f.toml"
    for text, key in (('[sites.a]\nplatforms = { "*" = "nowhere" }\n', "sites.a.platforms.*"),
                      ('[platforms.p]\nurl = "ftp://x"\n', "platforms.p.url"),
                      ('[platforms.p]\nclient_cert = "a.pem"\n', "platforms.p.client_cert"),
                      ('[platforms.p]\nurll = "http://x"\n', "platforms.p.url"),
                      ('[sms]\nurl = "gateway"\n', "sms.url"),
                      ('[store]\ntimezone = "Mars/Base"\n', "store.timezone")):
        cfg.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("*", r"\*")):
            load_settings(cfg, env={})


def test_field_mapping_uses_the_platforms_names():
    body = {"order_no": "FL1", "category": "噪声扰民", "excerpt": "酒吧太吵", "matched": ["酒吧", "吵"], "n": 3}
    assert map_fields(body, {}) == body
    assert map_fields(body, {"gdbh": "{order_no}", "nr": "{category}：{excerpt}", "gjc": "{matched}",
                             "ly": "110", "x": "{missing}", "num": "{n}"}) == \
        {"gdbh": "FL1", "nr": "噪声扰民：酒吧太吵", "gjc": ["酒吧", "吵"], "ly": "110", "x": "", "num": 3}


def test_caller_numbers_and_mobiles():
    assert caller_number('"张" <sip:+8613812345678@10.0.0.1:5060>') == "13812345678"
    assert caller_number("<sip:008613812345678@pbx>") == "13812345678"
    assert caller_number("<sip:02787654321@pbx>") == "02787654321"
    assert mobile("13812345678") == "13812345678" and mobile("+86 138-1234-5678") == "13812345678"
    assert mobile("8613812345678") == "13812345678"
    for bad in ("02787654321", "12345678901", "1381234567", "anonymous", "", "110"):
        assert mobile(bad) is None


def test_location_is_what_the_caller_named():
    assert location_of("我住在解放路88号，楼下酒吧太吵") == "解放路88号"
    assert location_of("幸福小区三栋停水了") == "幸福小区"
    assert location_of("在胜利街口有辆车挡住了") == "胜利街"
    assert location_of("太吵了") == ""


def test_templates_render_and_reject_unknown_placeholders(tmp_path):
    t = Templates.load()
    text = t.render("guidance", "wage", {"hotline_name": "12345政务服务便民热线", "order_no": "FL1"})
    assert "欠薪" in text and "FL1" in text
    assert "FL2" in t.render("guidance", "no-such-category", {"order_no": "FL2"})
    bad = tmp_path / "t.toml"
    bad.write_text('[guidance]\ndefault = "{oops}"\n[followup]\ndefault = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="oops"):
        Templates.load(str(bad))
    bad.write_text('[guidance]\nwage = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="default"):
        Templates.load(str(bad))


def test_the_one_key_uses_the_calls_site_targets(tmp_path, router):
    """A call for the Yiling site goes to Yiling's 12345; another site's call to the default."""
    import asyncio

    from fenliu.bus import EventBus
    from fenliu.service.supervisor import Supervisor
    from fenliu.sip import protocol as P

    cfg = tmp_path / "f.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    s = load_settings(cfg, env={})
    loop = asyncio.new_event_loop()
    try:
        sup = Supervisor(s, router, None, EventBus(loop))
        sup._open_session("w0", P.CallStarted("y1", 0, "<sip:13800000000@10.1.0.5>", "<sip:110@fenliu>"))
        sup._open_session("w0", P.CallStarted("x1", 1, "<sip:13800000000@10.7.0.1>", "<sip:110@fenliu>"))
        assert sup._find("y1").site == "yiling" and sup._find("x1").site == "xiling"
        assert sup.resolve_target("12345", None, "yiling")[0] == "sip:12345@10.1.0.9"
        assert sup.resolve_target("12345", None, "xiling")[0] == s.transfer.targets["12345"]
    finally:
        for session in sup.sessions.values():  # end the recognition threads the sessions opened
            for leg in session.legs.values():
                leg.frames.put(None)
        loop.close()


def test_a_target_without_a_platform_of_its_own_never_borrows_another_hotlines():
    """One platform (the city's 12345, under its own name) and no [sites]: 12345's orders go
    there; 12348's stay local (待人工转交) — never posted to the 12345 platform."""
    from fenliu.settings import PlatformSettings, Settings

    s = Settings()
    one = replace(s, platforms={"yichang-12345": PlatformSettings(url="https://gw.example/orders")})
    lk = Linkage(one)
    assert lk.platform_for("", "12345")[0] == "yichang-12345"
    assert lk.platform_for("", "12348") == ("", None)
    two = replace(s, platforms={"yichang-12345": PlatformSettings(url="https://gw.example/orders"),
                                "legal": PlatformSettings(url="https://legal.example/orders", targets="12348,12338")})
    assert Linkage(two).platform_for("", "12348")[0] == "legal"
    assert Linkage(two).platform_for("", "12338")[0] == "legal"
    assert Linkage(two).platform_for("", "95598") == ("", None)
