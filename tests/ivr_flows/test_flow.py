"""Loading and checking IVR flow files (docs/flows.md): every check names the file, the line and the fix."""

from __future__ import annotations

import pickle
import struct
import wave
from pathlib import Path

import pytest

from fenliu.errors import ConfigError
from fenliu.ivr_flows.flow import (
    DEFAULT_FLOW,
    Branch,
    Collect,
    Decide,
    Flow,
    FlowError,
    Hangup,
    Listen,
    Play,
    Queue,
    Sms,
    Transfer,
    load_flow,
    parse_flow,
)
from fenliu.settings import TransferSettings

FLOWS = Path(__file__).parent / "flows"
TARGETS = ("police", "12345", "12348", "12328", "12338", "95598", "social", "119", "120", "122", "fraud")
OFFERED = ("12345", "12348", "12328", "12338", "95598", "social")

MINI = """\
[flow]
name = "mini"
start = "welcome"

[prompts]
welcome = "您好，这里是110。"
bye = "再见。"

[states.welcome]
do = "play"
prompt = "welcome"
next = "menu"

[states.menu]
do = "collect"
prompt = "welcome"
branches = { "1" = "bye", "0" = "queue" }
no_input = "queue"

[states.queue]
do = "queue"

[states.bye]
do = "hangup"
prompt = "bye"
"""

OFFER = """\
[flow]
name = "offer"
start = "offer"

[prompts]
tail = "按0继续等待人工。"

[states.offer]
do = "collect"
offer = "targets"
offer_intro = "您反映的问题由{name}受理。"
offer_key = "按{key}转接{name}，"
prompt = "tail"
branches = { "0" = "queue" }
offer_next = "transfer"
no_input = "queue"

[states.transfer]
do = "transfer"
target = "choice"
failed = "queue"

[states.queue]
do = "queue"
"""


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing ``needle``."""
    hits = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    assert len(hits) >= nth, f"{needle!r} not in the test text"
    return hits[nth - 1]


def error(text: str, targets=TARGETS, path: str | Path = "flows/desk.toml") -> FlowError:
    with pytest.raises(FlowError) as ei:
        parse_flow(text, path, targets)
    e = ei.value
    assert e.path == str(path)
    assert str(e).startswith(f"{path}:{e.line}: {e.message}")
    assert e.fix and str(e).endswith(f" — {e.fix}")
    return e


def sub(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# -- a good flow -------------------------------------------------------------------------------


def test_good_flow_loads_with_types_and_defaults():
    f = load_flow(FLOWS / "good.toml", TARGETS)
    assert isinstance(f, Flow)
    assert (f.name, f.start, f.voice, f.description) == ("test_desk", "welcome", "cmn", "测试用的前台流程")
    assert f.path == FLOWS / "good.toml"
    kinds = {n: type(s) for n, s in f.states.items()}
    assert kinds == {"welcome": Play, "listen": Listen, "decide": Decide, "menu": Collect, "by_target": Branch,
                     "offer": Collect, "transfer": Transfer, "text": Sms, "urgent_queue": Queue,
                     "queue": Queue, "bye": Hangup}
    assert {n: s.kind for n, s in f.states.items()}["by_target"] == "branch"

    welcome = f.state("welcome")
    assert welcome == Play(name="welcome", line=19, prompt=("welcome",), next="listen", barge_in=True)
    listen = f.state("listen")
    assert isinstance(listen, Listen)
    assert (listen.max_seconds, listen.silence, listen.no_input_seconds) == (20.0, 1.2, 6.0)
    assert isinstance(listen.max_seconds, float)

    menu = f.state("menu")
    assert isinstance(menu, Collect)
    assert menu.prompt == ("retry",) and menu.retry_prompt == "retry"
    assert (menu.digits, menu.timeout, menu.inter_digit, menu.retries, menu.terminator) == (2, 4.0, 3.0, 2, "#")
    assert isinstance(menu.timeout, float)
    assert menu.branches == {"0": "queue", "9": "bye", "*1": "by_target"}
    assert (menu.next, menu.invalid, menu.offer, menu.barge_in) == ("", "queue", "", True)
    assert menu.prompts() == ("retry", "retry")

    transfer = f.state("transfer")
    assert isinstance(transfer, Transfer)
    assert (transfer.target, transfer.mode, transfer.prompt, transfer.next) == ("choice", "three-way", ("hold",), "text")
    assert not transfer.terminal
    q = f.state("queue")
    assert isinstance(q, Queue) and q.terminal and not q.urgent and q.uri == "" and q.reason == ""
    assert q.prompt == ("hold", 'sorry "quoted"')
    uq = f.state("urgent_queue")
    assert isinstance(uq, Queue) and uq.urgent and uq.prompt == () and uq.reason == "danger"
    assert f.state("bye").terminal and not f.state("decide").terminal
    with pytest.raises(KeyError, match="nope"):
        f.state("nope")

    assert f.prompts["hold"].text == "请稍候。" and f.prompts["hold"].wav == ""
    assert f.prompts["welcome"].line == 8
    assert f.prompts['sorry "quoted"'].text == '反斜杠 \\ 和 "引号"'


def test_edges_and_terminal_of_every_kind():
    f = load_flow(FLOWS / "good.toml", TARGETS)
    assert f.state("welcome").edges() == [("next", "listen")]
    assert f.state("listen").edges() == [("next", "decide"), ("no_input", "menu")]
    assert f.state("decide").edges() == [("danger", "urgent_queue"), ("police", "queue"), ("unsure", "menu"),
                                         ("divert", "offer")]
    assert f.state("menu").edges() == [("0", "queue"), ("9", "bye"), ("*1", "by_target"), ("invalid", "queue"),
                                       ("no_input", "queue")]
    assert f.state("by_target").edges() == [("12345", "offer"), ("default", "queue")]
    assert f.state("offer").edges() == [("0", "queue"), ("offer", "transfer"), ("no_input", "queue")]
    assert f.state("transfer").edges() == [("failed", "queue"), ("next", "text")]
    assert f.state("text").edges() == [("next", "bye")]
    assert f.state("queue").edges() == [] and f.state("bye").edges() == []
    assert [s.name for s in f.states.values() if s.terminal] == ["urgent_queue", "queue", "bye"]
    plain = parse_flow(OFFER, "o.toml", TARGETS)
    assert plain.state("transfer").terminal  # a transfer without next ends the flow


def test_names_default_to_the_target_id():
    f = load_flow(FLOWS / "good.toml", TARGETS)
    assert f.names["12345"] == "12345政务服务便民热线"
    assert f.names["12348"] == "12348法律服务热线"
    assert f.names["95598"] == "95598" and f.names["fraud"] == "fraud"
    assert set(f.names) == set(TARGETS)


def test_offer_fragments_are_prepared_for_every_offerable_target():
    f = load_flow(FLOWS / "good.toml", TARGETS)
    text = (FLOWS / "good.toml").read_text(encoding="utf-8")
    intro = f.prompts[f.offer_fragment("offer", "12345")]
    assert intro.name == "offer:intro:12345"
    assert intro.text == "您反映的问题由12345政务服务便民热线受理。"
    assert intro.line == line_of(text, "offer_intro =")
    key2 = f.prompts[f.offer_fragment("offer", "12348", "2")]
    assert key2.name == "offer:key:2:12348" and key2.text == "按2转接12348法律服务热线，"
    assert key2.line == line_of(text, "offer_key =")
    fragments = {n for n in f.prompts if n.startswith("offer:")}
    assert fragments == ({f"offer:intro:{t}" for t in OFFERED}
                         | {f"offer:key:{k}:{t}" for t in OFFERED for k in "123"})
    # never offered: 110 itself and the urgent lane
    for t in ("police", "119", "120", "122", "fraud"):
        assert f.offer_fragment("offer", t) not in f.prompts


def test_offer_fragments_skip_keys_the_branches_use_and_know_the_number():
    text = sub(OFFER, 'branches = { "0" = "queue" }', 'branches = { "0" = "queue", "1" = "queue" }')
    text = sub(text, 'offer_intro = "您反映的问题由{name}受理。"', 'offer_intro = "请拨打{number}：{name}。"')
    f = parse_flow(text, "o.toml", ["12345", "police"])
    assert f.prompts["offer:intro:12345"].text == "请拨打12345：12345。"
    assert {n for n in f.prompts if ":key:" in n} == {"offer:key:2:12345", "offer:key:3:12345",
                                                      "offer:key:4:12345"}
    assert f.offer_fragment("offer", "12345", "4") == "offer:key:4:12345"


def test_targets_may_be_a_mapping_of_ids_to_uris():
    f = parse_flow(OFFER, "o.toml", TransferSettings().targets)
    assert "offer:intro:12345" in f.prompts and "offer:intro:119" not in f.prompts


def test_shipped_front_desk_loads_with_the_default_targets():
    assert DEFAULT_FLOW.name == "front_desk.toml"
    f = load_flow(DEFAULT_FLOW, TransferSettings().targets)
    assert f.name == "front_desk" and f.start in f.states
    assert any(isinstance(s, Collect) and s.offer == "targets" for s in f.states.values())
    assert all(p in f.prompts for s in f.states.values() for p in s.prompts())


def test_flow_error_is_a_config_error_and_pickles():
    e = FlowError("a.toml", 7, "bad thing", "do this")
    assert isinstance(e, ConfigError)
    assert str(e) == "a.toml:7: bad thing — do this"
    back = pickle.loads(pickle.dumps(e))
    assert (back.path, back.line, back.message, back.fix, str(back)) == ("a.toml", 7, "bad thing", "do this", str(e))


def test_missing_file_and_bad_encoding(tmp_path):
    with pytest.raises(FlowError, match="not found") as ei:
        load_flow(tmp_path / "nope.toml", TARGETS)
    assert ei.value.path == str(tmp_path / "nope.toml")
    p = tmp_path / "gbk.toml"
    p.write_bytes(MINI.replace("您好", "你好").encode("gbk"))
    with pytest.raises(FlowError, match="UTF-8"):
        load_flow(p, TARGETS)


# -- 1. TOML syntax ------------------------------------------------------------------------------


def test_toml_syntax_error_names_its_line():
    text = sub(MINI, 'next = "menu"', 'next = menu"')
    e = error(text)
    assert e.line == line_of(text, 'next = menu"')
    assert "syntax" in e.message and "TOML" in e.fix


def test_toml_syntax_error_unterminated_string():
    text = sub(MINI, 'bye = "再见。"', 'bye = "再见。')
    e = error(text)
    assert e.line == line_of(text, 'bye = "再见。')


# -- 2. [flow] --------------------------------------------------------------------------------


def test_missing_flow_table():
    text = "\n# no flow table\n" + MINI.replace('[flow]\nname = "mini"\nstart = "welcome"\n', "")
    e = error(text)
    assert e.line == 1 and "[flow]" in e.message and "start" in e.fix


def test_missing_flow_name():
    text = sub(MINI, 'name = "mini"\n', "")
    e = error(text)
    assert e.line == line_of(text, "[flow]") and "name" in e.message and 'name = "' in e.fix


def test_missing_start():
    text = sub(MINI, 'start = "welcome"\n', "")
    e = error(text)
    assert e.line == line_of(text, "[flow]") and "start" in e.message and 'start = "' in e.fix


def test_start_is_not_a_state():
    text = sub(MINI, 'start = "welcome"', 'start = "welcom"')
    e = error(text)
    assert e.line == line_of(text, 'start = "welcom"')
    assert 'did you mean "welcome"' in e.fix


def test_unknown_flow_key_and_unknown_table():
    text = sub(MINI, 'start = "welcome"', 'start = "welcome"\nstrat = "x"')
    e = error(text)
    assert e.line == line_of(text, "strat =") and 'did you mean "start"' in e.fix
    text = MINI + '\n[prompt]\nx = "y"\n'
    e = error(text)
    assert e.line == line_of(text, "[prompt]") and 'did you mean "prompts"' in e.fix


def test_flow_needs_states():
    text = MINI.split("[states.welcome]")[0]
    e = error(text)
    assert "no states" in e.message and "[states.welcome]" in e.fix


# -- 3. kinds, keys and types ---------------------------------------------------------------------


def test_unknown_do():
    text = sub(MINI, 'do = "play"', 'do = "paly"')
    e = error(text)
    assert e.line == line_of(text, 'do = "paly"') and 'did you mean "play"' in e.fix


def test_missing_do():
    text = sub(MINI, 'do = "queue"\n', "")
    e = error(text)
    assert e.line == line_of(text, "[states.queue]") and "do" in e.message and "hangup" in e.fix


def test_unknown_key_for_the_kind():
    text = sub(MINI, 'next = "menu"', 'next = "menu"\nbargein = false')
    e = error(text)
    assert e.line == line_of(text, "bargein =") and 'did you mean "barge_in"' in e.fix
    # a key of another kind is no key of this one
    text = sub(MINI, 'do = "queue"', 'do = "queue"\nnext = "bye"')
    e = error(text)
    assert e.line == line_of(text, 'next = "bye"') and "queue" in e.message and "urgent" in e.fix


def test_missing_required_key():
    text = sub(MINI, 'next = "menu"\n', "")
    e = error(text)
    assert e.line == line_of(text, "[states.welcome]") and "next" in e.message
    assert e.fix.startswith("add next = ")
    text = sub(MINI, 'no_input = "queue"\n', "")
    e = error(text)
    assert e.line == line_of(text, "[states.menu]") and "no_input" in e.message and "no_input = " in e.fix


@pytest.mark.parametrize(("old", "new", "fix"), [
    ('no_input = "queue"', 'no_input = "queue"\ndigits = "1"', "digits = 1"),
    ('no_input = "queue"', 'no_input = "queue"\ndigits = 0', "digits = 1"),
    ('no_input = "queue"', 'no_input = "queue"\nretries = -1', "retries = 2"),
    ('no_input = "queue"', 'no_input = "queue"\nretries = 1.5', "retries = 2"),
    ('no_input = "queue"', 'no_input = "queue"\nbarge_in = "yes"', "barge_in = true"),
    ('no_input = "queue"', 'no_input = "queue"\ntimeout = 0', "timeout = 5.0"),
    ('no_input = "queue"', 'no_input = "queue"\ninter_digit = -1.0', "inter_digit = 5.0"),
    ('no_input = "queue"', 'no_input = "queue"\nterminator = "##"', 'terminator = "#"'),
    ('no_input = "queue"', 'no_input = "queue"\nretry_prompt = ["bye"]', "retry_prompt = "),
    ('branches = { "1" = "bye", "0" = "queue" }', 'branches = ["1"]', "branches = {"),
    ('prompt = "welcome"\nnext', 'prompt = 3\nnext', 'prompt = "welcome"'),
    ('prompt = "welcome"\nnext', 'prompt = []\nnext', 'prompt = "welcome"'),
    ('next = "menu"', "next = 1", 'next = "STATE_NAME"'),
    ('do = "queue"', 'do = "queue"\nurgent = 1', "urgent = true"),
    ('do = "queue"', 'do = "queue"\nuri = 5', 'uri = "'),
])
def test_wrong_types_name_the_key_line(old, new, fix):
    text = sub(MINI, old, new)
    changed = new.splitlines()[-1] if new.startswith(old) else new.splitlines()[0]
    e = error(text)
    assert e.line == line_of(text, changed)
    assert fix in e.fix
    assert changed.split(" =")[0] in e.message


def test_branch_keys_must_be_phone_keys():
    text = sub(MINI, '"0" = "queue" }', '"a" = "queue" }')
    e = error(text)
    assert e.line == line_of(text, '"a" = "queue"') and "'a'" in e.message and "0-9" in e.fix


def test_branch_key_longer_than_digits():
    text = sub(MINI, '"0" = "queue" }', '"00" = "queue" }')
    e = error(text)
    assert e.line == line_of(text, '"00" = "queue"') and "digits = 1" in e.message and "digits to 2" in e.fix
    parse_flow(sub(text, 'no_input = "queue"', 'no_input = "queue"\ndigits = 2'), "f.toml", TARGETS)


def test_transfer_mode_must_be_three_way_or_refer():
    text = sub(OFFER, 'failed = "queue"', 'failed = "queue"\nmode = "refr"')
    e = error(text)
    assert e.line == line_of(text, 'mode = "refr"') and 'did you mean "refer"' in e.fix


BRANCH = """\
[flow]
name = "b"
start = "b"

[states.b]
do = "branch"
on = "target"
cases = { "12345" = "q" }
default = "q"

[states.q]
do = "queue"
"""


def test_branch_on_must_be_known():
    text = sub(BRANCH, 'on = "target"', 'on = "targets"')
    e = error(text)
    assert e.line == line_of(text, 'on = "targets"') and 'did you mean "target"' in e.fix


def test_branch_cases_must_be_possible_values():
    f = parse_flow(BRANCH, "b.toml", TARGETS)
    assert f.state("b") == Branch(name="b", line=5, on="target", cases={"12345": "q"}, default="q")
    e = error(sub(BRANCH, '"12345" = "q"', '"12354" = "q"'))
    assert e.line == 8 and "did you mean" in e.fix and '"12345"' in e.fix
    text = sub(sub(BRANCH, 'on = "target"', 'on = "urgent"'), '"12345" = "q"', 'yes = "q"')
    e = error(text)
    assert e.line == 8 and "true, false" in e.fix
    parse_flow(sub(sub(BRANCH, 'on = "target"', 'on = "urgent"'), '"12345" = "q"', 'true = "q"'), "b.toml", TARGETS)
    parse_flow(sub(sub(BRANCH, 'on = "target"', 'on = "category"'), '"12345"', "noise"), "b.toml", TARGETS)
    e = error(sub(BRANCH, "cases = {", "kases = {"))
    assert e.line == line_of(BRANCH, "cases = {") and 'did you mean "cases"' in e.fix


def test_sms_text_placeholders():
    text = sub(BRANCH, 'default = "q"', 'default = "s"') + '\n[states.s]\ndo = "sms"\ntext = "请拨打{hotine}"\nnext = "q"\n'
    e = error(text)
    assert e.line == line_of(text, "text = ") and "{hotine}" in e.message and 'did you mean "hotline"' in e.fix


# -- 4. references -------------------------------------------------------------------------------


def test_reference_to_a_missing_state():
    text = sub(MINI, 'next = "menu"', 'next = "mneu"')
    e = error(text)
    assert e.line == line_of(text, 'next = "mneu"') and "mneu" in e.message and 'did you mean "menu"' in e.fix


def test_reference_from_a_branch_key_names_the_branches_line():
    text = sub(MINI, '"1" = "bye"', '"1" = "goodbye"')
    e = error(text)
    assert e.line == line_of(text, '"1" = "goodbye"') and "goodbye" in e.message
    assert "[states.goodbye]" in e.fix


def test_dotted_headers_and_dotted_keys_are_located():
    text = sub(MINI, 'branches = { "1" = "bye", "0" = "queue" }\n', "")
    text += '\n[states.menu.branches]\n"0" = "queue"\n\n"1" = "byee"\n'
    e = error(text)
    assert e.line == line_of(text, '"1" = "byee"')
    text = sub(MINI, 'branches = { "1" = "bye", "0" = "queue" }', 'branches."0" = "queue"\nbranches."1" = "byee"')
    e = error(text)
    assert e.line == line_of(text, 'branches."1" = "byee"')


def test_inline_state_tables_and_multiline_values_are_located():
    text = """\
[flow]
name = "x"
start = "a"
description = '''
[states.b]
next = "nowhere"
'''

[prompts]
p = \"\"\"first line
second = "line"
\"\"\"

[states]
a = { do = "play", prompt = [
  "p",
  "p",
], next = "b" }
b = { do = "hangup", prompt = "p", next = "c" }
"""
    e = error(text)
    assert e.line == line_of(text, "b = {") and "next" in e.message and "hangup" in e.message


# -- 5. unreachable -----------------------------------------------------------------------------


def test_unreachable_state():
    text = MINI + '\n[states.orphan]\ndo = "hangup"\n'
    e = error(text)
    assert e.line == line_of(text, "[states.orphan]") and "orphan" in e.message
    assert "delete it" in e.fix


# -- 6. loops with no exit ---------------------------------------------------------------------------


def test_loop_with_no_way_out():
    text = sub(MINI, 'no_input = "queue"', 'no_input = "again"') + """
[states.again]
do = "play"
prompt = "welcome"
next = "again2"

[states.again2]
do = "listen"
next = "again"
no_input = "again"
"""
    e = error(text)
    assert "again → again2 → again" in e.message
    assert e.line == line_of(text, "[states.again]")
    assert "queue or hangup" in e.fix


def test_self_loop_with_no_way_out():
    text = sub(MINI, '"1" = "bye"', '"1" = "bye", "2" = "x"') + '\n[states.x]\ndo = "play"\nprompt = "bye"\nnext = "x"\n'
    e = error(text)
    assert "x → x" in e.message and e.line == line_of(text, "[states.x]")


def test_a_loop_with_an_exit_is_fine():
    text = sub(MINI, 'no_input = "queue"', 'no_input = "menu"')  # retries forever, but a key leads out
    f = parse_flow(text, "f.toml", TARGETS)
    assert ("no_input", "menu") in f.state("menu").edges()


# -- 7. prompts and WAV files -------------------------------------------------------------------------


def test_prompt_not_in_prompts():
    text = sub(MINI, 'prompt = "bye"', 'prompt = "by"')
    e = error(text)
    assert e.line == line_of(text, 'prompt = "by"') and "'by'" in e.message and 'did you mean "bye"' in e.fix


def test_retry_prompt_not_in_prompts():
    text = sub(MINI, 'no_input = "queue"', 'no_input = "queue"\nretry_prompt = "again"')
    e = error(text)
    assert e.line == line_of(text, "retry_prompt =") and "[prompts]" in e.fix


@pytest.mark.parametrize("value", ['""', "{}", '{ text = "  " }', '{ wav = "" }'])
def test_prompt_with_neither_text_nor_wav(value):
    text = sub(MINI, 'bye = "再见。"', f"bye = {value}")
    e = error(text)
    assert e.line == line_of(text, "bye = ") and "neither text nor wav" in e.message and "wav =" in e.fix


def test_prompt_unknown_key():
    text = sub(MINI, 'bye = "再见。"', 'bye = { txt = "再见。" }')
    e = error(text)
    assert e.line == line_of(text, "bye = ") and 'did you mean "text"' in e.fix


def write_wav(path: Path, frames: int, rate: int = 8000, channels: int = 2, width: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{frames * channels}h", *([1000] * frames * channels)) if width == 2
                      else bytes(frames * channels * width))
    return path


def wav_flow(tmp_path: Path, wav: str) -> tuple[Path, str]:
    text = sub(MINI, 'bye = "再见。"', f'bye = {{ wav = "{wav}", text = "再见。" }}')
    p = tmp_path / "desk" / "flow.toml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p, text


def test_wav_relative_to_the_flow_file_is_resolved(tmp_path, monkeypatch):
    write_wav(tmp_path / "desk" / "prompts" / "bye.wav", 800)  # 8 kHz stereo: converted elsewhere, fine here
    write_wav(tmp_path / "other.wav", 10, rate=44100, channels=1, width=1)  # 8-bit is no error here either
    p, _ = wav_flow(tmp_path, "prompts/bye.wav")
    monkeypatch.chdir(tmp_path)
    f = load_flow(p, TARGETS)
    bye = f.prompts["bye"]
    assert bye.wav == str((tmp_path / "desk" / "prompts" / "bye.wav").resolve())
    assert Path(bye.wav).is_absolute() and bye.text == "再见。"
    p, _ = wav_flow(tmp_path, str(tmp_path / "other.wav"))
    assert load_flow(p, TARGETS).prompts["bye"].wav == str((tmp_path / "other.wav").resolve())


def test_missing_wav(tmp_path):
    p, text = wav_flow(tmp_path, "prompts/bye.wav")
    with pytest.raises(FlowError) as ei:
        load_flow(p, TARGETS)
    e = ei.value
    assert e.path == str(p) and e.line == line_of(text, "bye = ")
    assert "not found" in e.message and "bye.wav" in e.message and "check the path" in e.fix


def test_broken_wav(tmp_path):
    (tmp_path / "desk").mkdir()
    (tmp_path / "desk" / "bye.wav").write_bytes(b"ID3\x03\x00 this is an mp3, not a wav" * 10)
    p, text = wav_flow(tmp_path, "bye.wav")
    with pytest.raises(FlowError) as ei:
        load_flow(p, TARGETS)
    e = ei.value
    assert e.line == line_of(text, "bye = ") and "not a readable WAV" in e.message and "sox" in e.fix


def test_truncated_wav(tmp_path):
    good = write_wav(tmp_path / "desk" / "bye.wav", 800)
    good.write_bytes(good.read_bytes()[:20])
    p, text = wav_flow(tmp_path, "bye.wav")
    with pytest.raises(FlowError, match="not a readable WAV") as ei:
        load_flow(p, TARGETS)
    assert ei.value.line == line_of(text, "bye = ")


def test_empty_wav(tmp_path):
    write_wav(tmp_path / "desk" / "bye.wav", 0)
    p, text = wav_flow(tmp_path, "bye.wav")
    with pytest.raises(FlowError) as ei:
        load_flow(p, TARGETS)
    e = ei.value
    assert e.line == line_of(text, "bye = ") and "0 frames" in e.message and "record" in e.fix


def test_wav_that_is_a_directory(tmp_path):
    (tmp_path / "desk" / "bye.wav").mkdir(parents=True)
    p, _ = wav_flow(tmp_path, "bye.wav")
    with pytest.raises(FlowError, match="not found"):
        load_flow(p, TARGETS)


# -- 8. transfer targets ---------------------------------------------------------------------------------


def test_transfer_to_an_unconfigured_target():
    text = sub(OFFER, 'target = "choice"', 'target = "12346"')
    e = error(text, targets=("police", "12345", "12348"))
    assert e.line == line_of(text, 'target = "12346"')
    assert "12346" in e.message and "police, 12345, 12348" in e.message
    assert "did you mean" in e.fix and '"12345"' in e.fix and "[transfer.targets]" in e.fix


def test_transfer_to_a_configured_target():
    text = sub(OFFER, 'target = "choice"', 'target = "12345"')
    text = sub(text, 'offer_next = "transfer"', 'offer_next = "queue"')
    text = sub(text, 'branches = { "0" = "queue" }', 'branches = { "0" = "queue", "9" = "transfer" }')
    f = parse_flow(text, "f.toml", TARGETS)
    assert f.state("transfer").target == "12345"


def test_choice_without_an_offer_leading_to_it():
    text = sub(OFFER, 'offer_next = "transfer"', 'offer_next = "queue"')
    text = sub(text, 'branches = { "0" = "queue" }', 'branches = { "0" = "queue", "9" = "transfer" }')
    e = error(text)
    assert e.line == line_of(text, 'target = "choice"') and "choice" in e.message
    assert 'offer_next = "transfer"' in e.fix


# -- 9. offers ---------------------------------------------------------------------------------------------


def test_offer_must_be_targets():
    text = sub(OFFER, 'offer = "targets"', 'offer = "hotlines"')
    e = error(text)
    assert e.line == line_of(text, 'offer = "hotlines"') and 'offer = "targets"' in e.fix


@pytest.mark.parametrize("key", ["offer_next", "offer_intro", "offer_key"])
def test_offer_needs_next_intro_and_key(key):
    text = "\n".join(line for line in OFFER.splitlines() if not line.startswith(f"{key} =")) + "\n"
    if key == "offer_next":
        text = sub(text, "[states.transfer]", '[states.unused]\ndo = "hangup"\n\n[states.transfer]')
    e = error(text)
    assert key in e.message
    assert f"add {key} = " in e.fix
    assert e.line == line_of(text, "[states.offer]")


def test_offer_keys_without_offer():
    text = sub(OFFER, 'offer = "targets"\n', "")
    e = error(text)
    assert e.line == line_of(text, "offer_intro =") and 'add offer = "targets"' in e.fix


@pytest.mark.parametrize(("key", "template", "fix"), [
    ("offer_intro", "您反映的问题由{nmae}受理。", 'did you mean "name"'),
    ("offer_intro", "按{key}转接", "{name}, {number}"),
    ("offer_key", "按{key}转接{nmae}，", 'did you mean "name"'),
    ("offer_key", "按{}转接", "{key}, {name}, {number}"),
    ("offer_key", "按{key转接", "{{"),
    ("offer_key", "按{key!x}转接", "placeholders"),
])
def test_offer_bad_placeholder(key, template, fix):
    text = "\n".join(f'{key} = "{template}"' if line.startswith(f"{key} =") else line
                     for line in OFFER.splitlines()) + "\n"
    e = error(text)
    assert e.line == line_of(text, f"{key} =")
    assert key in e.message and fix in e.fix
