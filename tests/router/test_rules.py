import pytest

from fenliu.errors import RuleListError
from fenliu.router import load_rules, parse_rules
from tests.conftest import minimal_rules

MINIMAL = minimal_rules()


def test_shipped_list_loads_with_all_22_categories_and_targets():
    rules = load_rules()
    names = {c.name for c in rules.categories}
    assert len(names) == 22
    assert set(rules.targets) == {"police", "12345", "12348", "12328", "12338", "95598", "social"}
    assert rules.version
    assert {g.id for g in rules.danger} >= {"violence", "threat", "fraud", "fire", "traffic_accident", "missing"}


def test_minimal_list_parses():
    r = parse_rules(MINIMAL)
    assert r.category("noise").strong == ("噪音",)


def _line_of_error(text: str) -> tuple[str, int]:
    with pytest.raises(RuleListError) as ei:
        parse_rules(text, "list.toml")
    msg = str(ei.value)
    line = int(msg.split(":")[1]) if msg.startswith("list.toml:") and msg.split(":")[1].isdigit() else 0
    return msg, line


def test_duplicate_word_names_its_line():
    text = MINIMAL.replace('weak = ["吵"]', 'weak = ["吵"]\n').replace('strong = ["噪音"]', 'strong = ["噪音", "噪音"]')
    msg, line = _line_of_error(text)
    assert "重复" in msg and "噪音" in msg
    assert text.splitlines()[line - 1].startswith("strong")


def test_unknown_target_is_rejected_with_the_known_ones():
    msg, line = _line_of_error(MINIMAL.replace('target = "12345"', 'target = "12399"'))
    assert "12399" in msg and "12345" in msg and line > 0


def test_empty_category_is_rejected():
    msg, _ = _line_of_error(MINIMAL.replace('strong = ["噪音"]', "strong = []").replace('decisive = ["扰民"]', ""))
    assert "空类别" in msg or "empty category" in msg


def test_strong_word_in_two_categories_is_rejected():
    text = MINIMAL + '\n[[category]]\nid = "other"\nname = "其他"\ntarget = "12345"\nstrong = ["噪音"]\n'
    msg, _ = _line_of_error(text)
    assert "噪音" in msg and "noise" in msg and "other" in msg


def test_danger_word_cannot_be_a_category_word():
    msg, _ = _line_of_error(MINIMAL.replace('weak = ["吵"]', 'weak = ["打人"]'))
    assert "打人" in msg and "danger" in msg


def test_category_cannot_target_police():
    msg, _ = _line_of_error(MINIMAL.replace('target = "12345"', 'target = "police"'))
    assert "police" in msg


def test_bad_pattern_and_syntax_errors():
    msg, _ = _line_of_error(MINIMAL.replace('weak = ["吵"]', 'weak = ["吵"]\npatterns = ["只有一组"]'))
    assert "+" in msg
    msg, _ = _line_of_error(MINIMAL.replace('[meta]', '[meta'))
    assert "syntax" in msg


def test_missing_file_says_so(tmp_path):
    with pytest.raises(RuleListError, match="not found"):
        load_rules(tmp_path / "nope.toml")
