"""The learned layer behind ``decide``: the shipped artefact, its checks, and each way it may act
(veto, suggestion, tie-break) — with real models trained here by the real training code."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from fenliu.errors import RouterModelError
from fenliu.router import CallRouter, Router, load_rules
from fenliu.router.dataset import Case, corpus_digest, load_split
from fenliu.router.model import JSON_NAME, NPY_NAME, Thresholds, default_dir, load_model
from fenliu.router.training import Trainer, training_files

# -- the shipped artefact ------------------------------------------------------------


def test_shipped_model_loads_and_its_version_is_in_every_decision(router):
    assert router.model is not None
    m = router.model
    assert m.version.startswith("rm-") and len(m.index) > 1000
    for text in ("我们小区停水了", "他拿刀砍我", "你好"):
        d = router.decide(text)
        assert d.model_version == m.version and d.rule_version == router.rules.version
        assert d.to_dict()["model_version"] == m.version


def test_shipped_model_was_built_from_the_current_training_corpus():
    """Editing the corpus without `fenliu router-model build` fails here."""
    meta = json.loads((default_dir() / JSON_NAME).read_text(encoding="utf-8"))
    files = training_files()
    assert meta["trained_on"]["files"] == [p.name for p in files]
    assert meta["trained_on"]["corpus_sha256"] == corpus_digest(files), "corpus changed: run fenliu router-model build"


def test_held_out_authors_never_reach_training():
    heldout = set(load_split())
    assert heldout
    meta = json.loads((default_dir() / JSON_NAME).read_text(encoding="utf-8"))
    assert heldout.isdisjoint(meta["trained_on"]["authors"])
    assert all(Path(f).stem not in heldout for f in meta["trained_on"]["files"])
    assert sorted(meta["trained_on"]["heldout"]) == sorted(heldout)


def test_shipped_artefact_is_small():
    size = sum((default_dir() / n).stat().st_size for n in (JSON_NAME, NPY_NAME))
    assert size < 30e6


# -- a broken artefact is a clear start-up error --------------------------------------


@pytest.fixture
def artefact(tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(default_dir(), dst)
    return dst


def _fails(path, *needles):
    with pytest.raises(RouterModelError) as e:
        load_model(path)
    msg = str(e.value)
    assert "fenliu router-model build" in msg
    for n in needles:
        assert n in msg
    return msg


def test_missing_artefact_names_the_file_and_the_rebuild_command(artefact):
    (artefact / NPY_NAME).unlink()
    _fails(artefact, NPY_NAME, "missing")


def test_corrupt_weights_fail_the_checksum(artefact):
    raw = bytearray((artefact / NPY_NAME).read_bytes())
    raw[-7] ^= 0xFF
    (artefact / NPY_NAME).write_bytes(bytes(raw))
    _fails(artefact, "checksum")


def test_unparseable_metadata(artefact):
    (artefact / JSON_NAME).write_text("{not json", encoding="utf-8")
    _fails(artefact, JSON_NAME, "unreadable")


def test_metadata_that_does_not_fit_the_weights(artefact):
    meta = json.loads((artefact / JSON_NAME).read_text(encoding="utf-8"))
    meta["features"] = meta["features"][:-1]
    (artefact / JSON_NAME).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    _fails(artefact, "shape")


def test_wrong_format(artefact):
    meta = json.loads((artefact / JSON_NAME).read_text(encoding="utf-8"))
    meta["format"] = 99
    (artefact / JSON_NAME).write_text(json.dumps(meta), encoding="utf-8")
    _fails(artefact, "format")


# -- each role, with a small model trained here ----------------------------------------

RULES = load_rules()

# 'the heater' wording is police (carbon monoxide) in this tiny world; 'the wall lamp' wording is
# a municipal matter the shipped list has no word for
TINY = [
    *(Case(f"p{i}", "t", t, "police", "police") for i, t in enumerate([
        "屋里烧着炉子 一家人脑袋发沉", "炉子烧了一晚上 老人脑袋发沉", "烤火炉子 孩子脑袋发沉犯迷糊",
        "煤炉子 脑袋发沉 犯迷糊", "炉子 脑袋发沉 快来"])),
    *(Case(f"m{i}", "t", t, "12345", "municipal") for i, t in enumerate([
        "路边那排壁灯 晚上一个都不亮", "桥下面的壁灯坏了好久", "广场的壁灯不亮 黑乎乎的",
        "小路上的壁灯全灭了", "壁灯不亮 没人修"])),
    *(Case(f"n{i}", "t", t, "12345", "noise") for i, t in enumerate([
        "楼下广场舞音响太吵", "半夜装修电钻声音", "酒吧音乐声太大 睡不着", "工地晚上施工吵", "楼上蹦迪一样吵"])),
    *(Case(f"w{i}", "t", t, "social", "water_repair") for i, t in enumerate([
        "家里卫生间水管滴水 要找师傅", "厨房水龙头坏了 家里一直滴", "家里的暖气管子接口滴水 要人来修",
        "家里马桶水箱一直流水 修不好", "洗手间管子滴答 找个维修工"])),
    *(Case(f"s{i}", "t", t, "12345", "water_supply") for i, t in enumerate([
        "整个小区都没有自来水", "街上水管爆了 全街停水", "自来水发黄 有味道", "一整天没来水 整栋楼",
        "片区停水也没通知"])),
]


@pytest.fixture(scope="module")
def tiny():
    tr = Trainer(RULES)
    meta, matrix = tr.fit(TINY, tr.counts(TINY))
    return tr.model(meta, matrix, Thresholds(veto=0.5, veto_agree=2.0, veto_high=0.5, partial_police=0.5, partial_category=0.3, silent_police=0.5, silent_category=0.3))


def test_veto_keeps_a_rule_diversion_when_the_detector_says_police(tiny):
    text = "暖气不热 屋里烧着炉子取暖 一家人脑袋发沉"
    alone = Router(RULES, model=None).decide(text)
    assert alone.target == "12345" and alone.category_id == "gas_heating"  # the rules would divert
    d = Router(RULES, model=tiny).decide(text)
    assert d.target == "police" and not d.diverted
    assert "模型判断疑似警情" in d.reason and "供气" in d.reason
    assert d.vetoed_by and all(v.kind == "model" for v in d.vetoed_by)
    assert any("炉子" in v.word or "发沉" in v.word for v in d.vetoed_by)
    assert d.matched and d.matched[0].group == "gas_heating"  # the category is still shown


def test_model_suggests_where_the_rules_are_silent_and_says_so(tiny):
    text = "我们那条路的壁灯晚上都不亮"
    assert Router(RULES, model=None).decide(text).target == "police"  # no list word
    d = Router(RULES, model=tiny).decide(text)
    assert (d.target, d.category_id) == ("12345", "municipal")
    assert d.reason.startswith("模型建议")
    assert d.matched and all(m.kind == "model" for m in d.matched)
    assert any("壁灯" in m.word for m in d.matched)
    # positions point into the original text
    m = next(m for m in d.matched if m.word == "壁灯")
    assert text[m.start:m.end] == "壁灯"
    assert d.confidence <= 0.6


def test_model_suggestion_never_overrides_danger(tiny):
    d = Router(RULES, model=tiny).decide("壁灯不亮 有个人拿刀站在灯下面")
    assert d.target == "police" and d.vetoed_by and d.vetoed_by[0].kind == "word"


def test_tie_between_two_diversions_keeps_the_call_with_alternatives():
    text = "自来水的总阀拧坏了"
    d = Router(RULES, model=None).decide(text)
    assert d.target == "police"
    assert {a.category_id for a in d.alternatives} == {"water_supply", "water_repair"}
    assert {a.target for a in d.alternatives} == {"12345", "social"}
    assert all(a.evidence for a in d.alternatives)
    assert "一键选择" in d.reason
    obj = d.to_dict()
    assert {a["target"] for a in obj["alternatives"]} == {"12345", "social"}


def test_a_tie_stays_with_110_even_when_the_model_prefers_one(tiny):
    """ROUTING.md: when two diversions tie, the target stays police; the operator picks."""
    d = Router(RULES, model=tiny).decide("整个小区自来水总阀")
    assert d.target == "police" and {a.category_id for a in d.alternatives} == {"water_supply", "water_repair"}


def test_a_custom_list_gets_no_model_unless_given():
    from fenliu.router import parse_rules
    from tests.conftest import minimal_rules

    r = Router(parse_rules(minimal_rules()))
    assert r.model is None and r.decide("噪音扰民").model_version == ""


def test_text_the_model_does_not_know_gets_no_opinion(router):
    a = router.analyze("회사 전기 연결 안돼요")
    assert a.model is None


def test_partials_do_not_flap_with_the_learned_layer(router):
    """A caller's sentence arriving word by word, with the recogniser revising the last word:
    the suggestion changes at most twice (keep -> divert, or one correction)."""
    words = "喂 你好 我 想 反映 一下 我们 小区 门口 那 条 路 的 路灯 坏 了 好 几 天 晚上 黑 乎乎 的".split()
    cr = CallRouter(router)
    emitted = []
    for i in range(1, len(words) + 1):
        for revision in (words[: i - 1] + ["嗯"], words[:i]):
            d = cr.on_partial(1, " ".join(revision))
            if d is not None:
                emitted.append((d.target, d.category))
    d = cr.on_final(1, " ".join(words))
    if d is not None:
        emitted.append((d.target, d.category))
    assert len(emitted) <= 3
    assert cr.current is not None and cr.current.target == "12345"


def test_model_veto_takes_a_diversion_back_at_once_but_returns_only_with_hysteresis(tiny):
    cr = CallRouter(Router(RULES, model=tiny))
    first = cr.on_partial(1, "暖气不热")
    assert first is not None and first.target == "12345"
    vetoed = cr.on_partial(1, "暖气不热 屋里烧着炉子 一家人脑袋发沉")
    assert vetoed is not None and vetoed.target == "police" and "模型" in vetoed.reason
    # a revised partial that lost the symptom words does not bring the diversion back …
    assert cr.on_partial(1, "暖气不热 屋里烧着炉子") is None or cr.current.target == "police"
    assert cr.current.target == "police"


# -- training is deterministic ---------------------------------------------------------


def test_build_is_deterministic(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "split.toml").write_text('[split]\nheldout = ["z9"]\n', encoding="utf-8")
    for author in ("t1", "t2", "t3"):
        with (corpus / f"{author}.jsonl").open("w", encoding="utf-8") as f:
            for c in TINY[int(author[1]) - 1 :: 3]:
                f.write(json.dumps({"id": f"{author}-{c.id}", "author": author, "text": c.text, "target": c.target,
                                    "category": c.category}, ensure_ascii=False) + "\n")
    (corpus / "z9.jsonl").write_text(json.dumps({"id": "z9-1", "author": "z9", "text": "壁灯", "target": "12345",
                                                 "category": "municipal"}, ensure_ascii=False) + "\n", encoding="utf-8")
    digests = []
    for run in ("a", "b"):
        Trainer(RULES).build(tmp_path / run, corpus)
        digests.append(tuple(hashlib.sha256((tmp_path / run / n).read_bytes()).hexdigest() for n in (JSON_NAME, NPY_NAME)))
    assert digests[0] == digests[1]
    meta = json.loads((tmp_path / "a" / JSON_NAME).read_text(encoding="utf-8"))
    assert "z9" not in meta["trained_on"]["authors"] and "z9.jsonl" not in meta["trained_on"]["files"]
    assert load_model(tmp_path / "a").version == meta["version"]
