"""The flow runner as a pure state machine: the shipped front desk driven by keys, speech,
transcripts, the real router's decisions on Chinese text, transfer and queue outcomes, time."""

from pathlib import Path

import pytest

from fenliu.ivr_flows.flow import load_flow, parse_flow
from fenliu.ivr_flows.runner import (
    FlowRun,
    HangUp,
    PlayPrompts,
    QueueCall,
    SendSms,
    Step,
    StopPrompts,
    TransferTo,
)

FRONT = Path(__file__).resolve().parents[2] / "fenliu" / "ivr_flows" / "front_desk.toml"
TARGETS = {"police", "12345", "12348", "12328", "12338", "95598", "social", "119", "120", "122", "fraud"}


@pytest.fixture(scope="module")
def flow():
    return load_flow(FRONT, TARGETS)


def acts(out, kind):
    return [a for a in out if isinstance(a, kind)]


def steps(out):
    return [(a.state, a.kind) for a in out if isinstance(a, Step)]


class Caller:
    """Drives one run the way the service does, keeping the clock and the current prompt."""

    def __init__(self, flow, router, targets=frozenset(TARGETS)):
        self.run = FlowRun(flow, "call-1", frozenset(targets))
        self.router = router
        self.t = 100.0
        self.log: list = []
        self.feed(self.run.start(self.t))

    def feed(self, out):
        self.log += out
        return out

    @property
    def token(self):
        plays = acts(self.log, PlayPrompts)
        return plays[-1].token if plays else ""

    def prompt_ends(self, interrupted=False):
        return self.feed(self.run.prompt_done(self.token, interrupted, self.t))

    def says(self, text):
        self.feed(self.run.speech_started(self.t))
        self.t += 1.5
        self.run.speech_stopped(self.t)
        self.run.transcript_final(text, self.t)
        return self.feed(self.run.decided(self.router.decide(text), self.t))

    def wait(self, seconds):
        out = []
        end = self.t + seconds
        while self.t < end:
            self.t += 0.1
            out += self.run.tick(self.t)
        return self.feed(out)

    def key(self, digit):
        return self.feed(self.run.dtmf(digit, self.t))


def test_welcome_then_a_noise_complaint_is_offered_to_12345_and_key_1_transfers(flow, router):
    c = Caller(flow, router)
    assert acts(c.log, PlayPrompts)[0].prompts == ("welcome",)
    c.prompt_ends()
    assert c.run.state == "listen"
    c.says("楼上装修太吵了，天天晚上敲到十二点，吵得孩子睡不着")
    out = c.wait(2)
    assert ("decide", "decide") in steps(out)
    assert c.run.state == "offer"
    menu = acts(out, PlayPrompts)[-1].prompts
    assert menu == ("offer:intro:12345", "offer:key:1:12345", "offer_tail")
    c.prompt_ends()
    out = c.key("1")
    assert acts(out, TransferTo) == [TransferTo("12345", "three-way")]
    assert acts(out, PlayPrompts)[-1].prompts == ("connecting",)  # the caller is not left in silence
    out = c.feed(c.run.transfer_update("bridged", "", c.t))
    assert c.run.outcome == "transferred" and acts(out, StopPrompts)


def test_with_the_centres_offers_paused_a_noise_complaint_goes_to_the_operators(flow, router):
    c = Caller(flow, router)
    c.run.offers_paused = True  # a duty supervisor's centre-wide switch (service/controls.py)
    c.prompt_ends()
    c.says("楼上装修太吵了，天天晚上敲到十二点，吵得孩子睡不着")
    out = c.wait(2)
    assert c.run.state == "queue" and acts(out, QueueCall)
    assert not any(p.startswith("offer") for a in acts(c.log, PlayPrompts) for p in a.prompts)  # never offered
    assert not acts(c.log, TransferTo)
    assert any("暂停语音分流" in a.detail for a in acts(out, Step))


def test_a_danger_signal_goes_to_the_queue_at_once_and_urgent(flow, router):
    c = Caller(flow, router)
    c.prompt_ends()
    out = c.says("邻居装修太吵，我去说了两句他拿刀要砍我")  # at once: the listen does not wait for silence
    queue = acts(out, QueueCall)
    assert queue and queue[0].urgent
    assert c.run.state == "urgent_queue"
    assert not acts(c.log, TransferTo)  # never offered, never transferred
    assert "危险" in queue[0].reason


def test_danger_heard_during_the_offer_ends_the_menu(flow, router):
    c = Caller(flow, router)
    c.prompt_ends()
    c.says("小区停电了，一直没来电")
    c.wait(2)
    assert c.run.state == "offer"
    out = c.says("我闻到很浓的煤气味，有人晕倒了")
    assert StopPrompts() in out
    assert c.run.state == "urgent_queue" and acts(out, QueueCall)[0].urgent


def test_nothing_said_goes_to_the_queue_and_unclear_speech_is_urgent(flow, router):
    c = Caller(flow, router)
    c.prompt_ends()
    out = c.wait(9)
    assert ("listen", "no_input") in steps(out)
    assert acts(out, QueueCall) and not acts(out, QueueCall)[0].urgent
    c2 = Caller(flow, router)
    c2.prompt_ends()
    c2.says("喂喂，那个，我想问一下")
    out = c2.wait(2)
    assert c2.run.state == "urgent_queue"  # unsure: an operator decides, with priority


def test_key_0_and_no_key_go_to_the_queue(flow, router):
    c = Caller(flow, router)
    c.prompt_ends()
    c.says("我的工资老板拖欠三个月了不给")
    c.wait(2)
    c.prompt_ends()
    out = c.key("0")
    assert c.run.state == "queue" and acts(out, QueueCall)
    c2 = Caller(flow, router)
    c2.prompt_ends()
    c2.says("我的工资老板拖欠三个月了不给")
    c2.wait(2)
    c2.prompt_ends()
    out = c2.wait(7)  # 6 s: no key → the retry prompt and the menu again
    assert ("offer", "retry") in steps(out)
    assert acts(out, PlayPrompts)[-1].prompts[0] == "not_understood"
    c2.prompt_ends()
    out = c2.wait(7)
    assert ("offer", "give_up") in steps(out) and c2.run.state == "queue"


def test_a_key_barges_into_the_menu_and_speech_into_the_welcome(flow, router):
    c = Caller(flow, router)
    out = c.feed(c.run.speech_started(c.t))  # the caller starts talking over the welcome prompt
    assert StopPrompts() in out and c.run.state == "listen" and c.run.heard
    c.t += 2
    c.run.speech_stopped(c.t)
    c.run.transcript_final("停电了，整栋楼都没电", c.t)
    c.feed(c.run.decided(c.router.decide("停电了，整栋楼都没电"), c.t))
    c.wait(2)
    assert c.run.state == "offer"
    out = c.key("1")  # before the menu finished
    assert StopPrompts() in out and acts(out, TransferTo) == [TransferTo("95598", "three-way")]
    assert c.run.prompt_done("stale", True, c.t) == []  # the stopped prompt's report changes nothing


def test_a_tie_offers_one_key_per_hotline(flow):
    from fenliu.events import Alternative, Decision

    tie = Decision(call_id="c", utterance_id=1, target="police", category="police", dept="", confidence=0.5,
                   matched=(), vetoed_by=(), urgent=False, rule_version="t",
                   alternatives=(Alternative("12345", "物业纠纷", "property", "住建", ()),
                                 Alternative("12348", "法律咨询", "legal", "司法", ())))
    run = FlowRun(flow, "c", frozenset(TARGETS))
    run.start(0)
    run.prompt_done(run.token, False, 0)
    run.speech_started(1)
    run.speech_stopped(2)
    run.transcript_final("x", 2)
    run.decided(tie, 2)
    out = []
    for i in range(40):
        out += run.tick(2 + i * 0.1)
    assert run.offer == {"1": "12345", "2": "12348"}
    assert acts(out, PlayPrompts)[-1].prompts == ("offer:intro:12345", "offer:key:1:12345", "offer:key:2:12348",
                                                  "offer_tail")
    out = run.dtmf("2", 6)
    assert acts(out, TransferTo) == [TransferTo("12348", "three-way")]


def test_a_hotline_the_site_cannot_reach_is_not_offered(flow, router):
    c = Caller(flow, router, targets={"police", "12345"})
    c.prompt_ends()
    c.says("停电了，整栋楼都没电")
    c.wait(2)
    assert c.run.state != "offer" or "95598" not in c.run.offer.values()
    assert not acts(c.log, TransferTo)


def test_a_failed_transfer_goes_to_the_queue_and_a_failed_queue_is_dialled_again(flow, router):
    c = Caller(flow, router)
    c.prompt_ends()
    c.says("出租车司机绕路多收了我五十块钱")
    c.wait(2)
    c.key("1")
    out = c.feed(c.run.transfer_update("failed", "486 Busy Here", c.t))
    assert c.run.state == "queue" and acts(out, QueueCall)
    out = c.feed(c.run.queue_update("failed", "no answer (timeout)", c.t))
    assert not acts(out, QueueCall)  # not at once: after a pause, with the hold prompt going on
    out = c.wait(4)
    assert acts(out, QueueCall)
    out = c.feed(c.run.queue_update("answered", "", c.t))
    assert c.run.outcome == "queued" and ("queue", "queued") in steps(out)


def test_caller_hanging_up_ends_the_run_and_later_events_do_nothing(flow, router):
    c = Caller(flow, router)
    out = c.run.caller_gone()
    assert c.run.outcome == "caller_left" and steps(out) == [("welcome", "end")]
    assert c.run.dtmf("1", c.t) == [] and c.run.tick(c.t + 30) == []


SMALL = """
[flow]
name = "t"
start = "menu"
[prompts]
menu = "请按键"
bye = "再见"
[states.menu]
do = "collect"
prompt = "menu"
digits = 4
terminator = "#"
inter_digit = 2
branches = { "9" = "sms" }
next = "check"
no_input = "bye"
[states.check]
do = "branch"
on = "digits"
cases = { "1234" = "sms" }
default = "bye"
[states.sms]
do = "sms"
text = "您好，您的来电已记录。"
next = "bye"
[states.bye]
do = "hangup"
prompt = "bye"
"""


def test_collect_with_terminator_branch_sms_and_hangup(tmp_path):
    flow = parse_flow(SMALL, tmp_path / "t.toml", TARGETS)
    run = FlowRun(flow, "c")
    run.start(0)
    run.prompt_done(run.token, False, 0)
    assert run.dtmf("1", 1) == [] and run.dtmf("2", 1.5) == []
    out = run.dtmf("#", 2)  # two digits and the terminator: "12" goes to next → branch default
    assert run.state == "bye" and not acts(out, SendSms)
    assert acts(out, PlayPrompts)[-1].prompts == ("bye",)
    out = run.prompt_done(run.token, False, 3)
    assert acts(out, HangUp) and run.outcome == "hung_up"

    run = FlowRun(flow, "c")
    run.start(0)
    run.prompt_done(run.token, False, 0)
    out = []
    for i, d in enumerate("1234"):
        out += run.dtmf(d, 1 + i * 0.5)
    assert acts(out, SendSms)[0].text == "您好，您的来电已记录。" and run.state == "bye"

    run = FlowRun(flow, "c")
    run.start(0)
    run.prompt_done(run.token, False, 0)
    run.dtmf("1", 1)
    out = run.tick(3.5)  # inter-digit quiet ends the entry
    assert run.state == "bye" and ("menu", "key") in steps(out)


def test_the_hold_prompt_is_said_again_while_the_queue_rings(flow, router):
    c = Caller(flow, router)
    c.prompt_ends()
    c.wait(9)  # nothing said → queue
    assert c.run.state == "queue"
    first = c.token
    c.prompt_ends()
    out = c.wait(3)
    assert not acts(out, PlayPrompts)  # a pause first
    out = c.wait(2)
    assert acts(out, PlayPrompts)[0].prompts == ("to_operator",) and c.token != first
    c.feed(c.run.queue_update("answered", "", c.t))
    c.prompt_ends()
    assert not acts(c.wait(10), PlayPrompts)  # an operator has the caller: no more hold prompts


AHEAD = """
[flow]
name = "ahead"
start = "hi"
[prompts]
hi = "您好"
menu = "请按1"
bye = "再见"
[states.hi]
do = "play"
prompt = "hi"
next = "menu"
[states.menu]
do = "collect"
prompt = "menu"
branches = { "1" = "bye" }
no_input = "bye"
[states.bye]
do = "hangup"
prompt = "bye"
"""


def test_a_key_typed_during_a_prompt_chooses_in_the_menu_without_the_menu_being_said(tmp_path):
    run = FlowRun(parse_flow(AHEAD, tmp_path / "a.toml", TARGETS), "c")
    run.start(0)
    out = run.dtmf("1", 0.5)
    assert StopPrompts() in out and ("menu", "key") in steps(out)
    assert [p.prompts for p in acts(out, PlayPrompts)] == [("bye",)]  # "请按1" never started


def test_danger_heard_while_the_hotline_rings_cancels_the_transfer(flow, router):
    from fenliu.ivr_flows.runner import CancelTransfer

    c = Caller(flow, router)
    c.prompt_ends()
    c.says("小区停电了，一直没来电")
    c.wait(2)
    c.key("1")
    assert c.run.state == "transfer"
    out = c.says("等等，有人拿刀冲进来了")
    assert CancelTransfer() in out and c.run.state == "urgent_queue" and acts(out, QueueCall)[0].urgent
    assert c.feed(c.run.transfer_update("failed", "cancelled by the operator", c.t)) == []  # already handled
