"""The IVR front desk on real calls: a SIP worker (pjsua2) with the real Vosk Korean model and a
small Korean negative list, the shipped front-desk flow (its Chinese prompts made by espeak-ng),
callers that are a recording pjsua2 peer (speech and RFC 4733 keys sent when the test has seen
the prompt) and SIPp (speech files and SIPp's own DTMF captures), a pjsua2 hotline and a pjsua2
operators' queue. What is asserted is what the people on the line would notice: the prompt the
caller heard, the branch taken, the hotline that got the caller, the operator who got the
urgent call."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest

from fenliu.bus import CallEvent, WorkerFact
from fenliu.router import Router, parse_rules
from fenliu.service.ivr import IvrDesk
from fenliu.service.ivr import load as load_ivr
from fenliu.service.supervisor import Supervisor
from fenliu.sip import protocol as P
from fenliu.store.record import Store
from tests.commands.test_serve import Collector, settings_for
from tests.conftest import FIXTURES, heard_over_a_line, minimal_rules, tone
from tests.sip.peers import PeerProc, find_in_recording, rms_after
from tests.sip.sipp import alaw_file, caller_scenario, dtmf_rfc4733, run_sipp

pytestmark = pytest.mark.slow

SPEECH_DIVERT = FIXTURES / "ko" / "ko-03-power.wav"  # its heard words become the 12345 category
SPEECH_DANGER = FIXTURES / "ko" / "ko-02-help.wav"  # its heard words become the danger group


@pytest.fixture(scope="module")
def ko_router(ko_engine, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probe")
    divert = heard_over_a_line(ko_engine, SPEECH_DIVERT, tmp)
    danger = heard_over_a_line(ko_engine, SPEECH_DANGER, tmp)
    divert, danger = sorted(divert - danger), sorted(danger - divert)
    assert divert and danger, "the model must hear distinct words in the two clips"
    return Router(parse_rules(minimal_rules(decisive=divert, strong="없는말하나", weak="없는말", danger=danger,
                                            negator="안", name="테스트", version="ko-ivr")))


class Service:
    """Supervisor + IVR desk on a collecting bus: what `fenliu serve` runs, without the console."""

    def __init__(self, tmp: Path, engine, router, targets: dict[str, str], queue_uri: str, *, seat: str = "",
                 when: str = "always", flow: str = "front_desk", cache: Path | None = None,
                 seat_timeout: float = 10) -> None:
        s = settings_for(1)
        s = replace(s, transfer=replace(s.transfer, targets=targets),
                    sip=replace(s.sip, seat_uri=seat),
                    ivr=replace(s.ivr, flow=flow, when=when, queue_uri=queue_uri, seat_timeout=seat_timeout,
                                cache_dir=str(cache or tmp / "prompts")))
        s = replace(s, store=replace(s.store, url=f"sqlite:///{tmp / 'fenliu.db'}"))
        self.settings = s
        self.got = Collector()
        self.store = Store(s.store.url, settings=s)
        self.got.bus.subscribe(self.store.record)
        self.sup = Supervisor(s, router, engine, self.got.bus)
        self.desk = IvrDesk(s, self.sup, load_ivr(s), lambda f: self.got.bus.publish(WorkerFact("ivr", f)),
                            self.store)
        self.desk.attach(self.got.bus)
        self.sup.start()
        self.uri = f"sip:110@127.0.0.1:{s.sip.port}"

    def step(self, since: int = 0, timeout: float = 30.0, **match) -> P.IvrStep:
        it = self.got.wait(lambda it: isinstance(it, WorkerFact) and isinstance(it.fact, P.IvrStep)
                           and all(getattr(it.fact, k) == v for k, v in match.items()), timeout, since)
        return it.fact

    def fact(self, cls, since: int = 0, timeout: float = 30.0, **match):
        return self.got.wait(lambda it: isinstance(it, WorkerFact) and isinstance(it.fact, cls)
                             and all(getattr(it.fact, k) == v for k, v in match.items()), timeout, since).fact

    def facts(self, cls) -> list:
        with self.got.cv:
            return [it.fact for it in self.got.items if isinstance(it, WorkerFact) and isinstance(it.fact, cls)]

    def prompt_of(self, state: str, timeout: float = 30.0) -> P.PromptStarted:
        """The prompt the flow started on entering ``state`` (the step is published just before).
        Searched from the step on, not from the moment of asking: on a busy machine the prompt may
        have started before the test got here."""
        entered = self.got.wait(lambda it: isinstance(it, WorkerFact) and isinstance(it.fact, P.IvrStep)
                                and it.fact.state == state, timeout)
        with self.got.cv:
            at = next(i for i, it in enumerate(self.got.items) if it is entered)
        return self.fact(P.PromptStarted, since=at, timeout=10)

    def stop(self) -> None:
        self.desk.close()
        self.sup.stop()
        self.got.bus.drain()
        self.store.close()


@pytest.fixture(scope="module")
def prompt_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("prompts")


def test_front_desk_offers_the_hotline_and_the_callers_key_transfers(ko_engine, ko_router, prompt_cache, tmp_path):
    """The caller talks over the welcome (barge-in), hears "您反映的问题由12345…受理。按1转接…，按0
    继续等待人工。" to its end, presses 1, and is handed to the 12345 peer, which then hears it."""
    hot_rec, heard = tmp_path / "hotline.wav", tmp_path / "caller-heard.wav"
    hotline = PeerProc("--answer", "200", "--record", str(hot_rec), user="12345")
    queue = PeerProc("--answer", "200", user="acd")
    svc = Service(tmp_path, ko_engine, ko_router, {"12345": hotline.uri}, queue.uri, cache=prompt_cache)
    caller = None
    try:
        caller = PeerProc("--call", svc.uri, "--record", str(heard), "--commands", "--mic", user="caller")
        welcome = svc.prompt_of("welcome")
        caller.send(f"play {SPEECH_DIVERT}")  # the caller starts telling over the welcome prompt
        assert svc.step(state="welcome", step="barge_in").detail == "来电人开口说话"
        assert svc.fact(P.PromptDone, token=welcome.token).interrupted
        offer_step = svc.step(state="offer", step="offer")
        assert offer_step.detail == "1=12345"
        offer = svc.fact(P.PromptStarted, token=svc.desk.calls[welcome.call_id].run.token)
        done = svc.fact(P.PromptDone, token=offer.token, timeout=40)
        assert not done.interrupted  # the whole menu was played
        n = svc.got.mark()
        caller.send("dtmf 1")
        assert svc.step(state="offer", step="key", since=n).detail == "1 → 12345"
        assert svc.fact(P.Dtmf, since=n).method == "rfc4733"
        bridged = svc.fact(P.TransferUpdate, since=n, step=P.TransferStep.COMPLETED, timeout=30)
        assert bridged.target == hotline.uri
        assert svc.step(outcome="transferred", since=n).state == "transfer"
        hotline.wait(lambda e: e["event"] == "media")
        n = svc.got.mark()
        caller.send(f"play {SPEECH_DIVERT}")  # the caller now talks to the hotline
        svc.got.wait(lambda it: isinstance(it, CallEvent) and it.leg == "caller" and type(it.event).__name__ ==
                     "SpeechStopped", 20, n)
        caller.send("hangup")
        hotline.wait(lambda e: e["event"] == "ended", 20)
        svc.fact(P.CallEnded)
    finally:
        if caller is not None:
            caller.stop()
        svc.stop()
        hotline.stop()
        queue.stop()
    assert not queue.has("incoming")  # the queue was never needed
    assert rms_after(hot_rec, 0.3) > 200  # the hotline heard the caller
    score, at = find_in_recording(heard, Path(offer.wav))
    assert score > 0.6, f"the offer prompt did not reach the caller (score {score:.2f})"
    never, _ = find_in_recording(heard, svc.desk.prompts["to_operator_urgent"])
    assert never < 0.3, f"a prompt never played scores {never:.2f}: the check cannot tell prompts apart"


def test_sipp_caller_in_danger_goes_to_the_operators_queue_urgent(ko_engine, ko_router, prompt_cache, tmp_path):
    """A SIPp caller says the danger words: the flow does not offer anything, it hands the call to
    the operators' queue at once, marked urgent, with the reason; the operator's phone rings."""
    hotline = PeerProc("--answer", "200", user="12345")
    queue = PeerProc("--answer", "200", "--hangup-after", "2", user="acd")
    svc = Service(tmp_path, ko_engine, ko_router, {"12345": hotline.uri}, queue.uri, cache=prompt_cache)
    try:
        audio = alaw_file(SPEECH_DANGER, tmp_path)
        scen = caller_scenario(audio, 0, callee_hangs_up=True).replace(f"{audio},1,8", f"{audio},-1,8")
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(r=run_sipp(scen, svc.settings.sip.port, tmp_path,
                                                                        timeout=60)))
        t.start()
        step = svc.step(step="queue", timeout=40)
        assert step.urgent and step.state == "urgent_queue" and "危险" in step.detail
        heard = svc.step(step="danger")  # at once, while the caller talks: no waiting for the end of the listen
        assert heard.urgent and heard.state in ("welcome", "listen")
        svc.fact(P.QueueUpdate, step=P.QueueStep.ANSWERED)
        assert svc.step(outcome="queued").urgent
        queue.wait(lambda e: e["event"] == "media")  # the operator has the caller
        t.join(60)
    finally:
        svc.stop()
        hotline.stop()
        queue.stop()
    assert result["r"].returncode == 0, result["r"].stdout[-1500:]  # the caller was not dropped: it got a BYE
    assert not svc.facts(P.TransferUpdate)  # nothing was offered, nothing transferred
    assert not hotline.has("incoming")


MENU_FLOW = """
[flow]
name = "menu"
start = "welcome"

[prompts]
welcome = {{ wav = "{welcome}" }}
menu = "请按1转接12345，按2转人工。"
wait = "请稍候。"

[states.welcome]
do = "play"
prompt = "welcome"
next = "menu"

[states.menu]
do = "collect"
prompt = "menu"
timeout = 15
branches = {{ "1" = "to_12345", "2" = "text_me" }}
no_input = "queue"

[states.text_me]
do = "sms"
text = "【110】您的来电已转人工，请保持电话畅通。"
next = "queue"

[states.to_12345]
do = "transfer"
target = "12345"
prompt = "wait"
failed = "queue"

[states.queue]
do = "queue"
prompt = "wait"
"""


@pytest.mark.parametrize("key, branch", [("1", "to_12345"), ("2", "queue")])
def test_sipp_dtmf_chooses_the_branch(ko_engine, ko_router, prompt_cache, tmp_path, key, branch):
    """A recorded welcome (an 8 kHz WAV, converted at load) and a menu; SIPp presses a key with its
    RFC 4733 capture — during the welcome: the key is kept for the menu (type-ahead)."""
    flow = tmp_path / "menu.toml"
    flow.write_text(MENU_FLOW.format(welcome=tone(tmp_path / "welcome.wav", 700, 6)), encoding="utf-8")
    # the hotline takes the caller and talks longer than transfer.min_talk (3 s) before it hangs up
    hotline = PeerProc("--answer", "200", "--hangup-after", "4", user="12345")
    queue = PeerProc("--answer", "200", "--hangup-after", "2", user="acd")
    svc = Service(tmp_path, ko_engine, ko_router, {"12345": hotline.uri}, queue.uri, flow=str(flow),
                  cache=prompt_cache)
    try:
        middle = '<pause milliseconds="1500"/>\n  ' + dtmf_rfc4733(key)
        scen = caller_scenario(None, 0, callee_hangs_up=True, middle=middle)
        r = run_sipp(scen, svc.settings.sip.port, tmp_path, timeout=60)
        assert r.returncode == 0, r.stdout[-1500:]  # the caller's call ended with a BYE to it
        assert svc.step(state="welcome", step="barge_in").detail == f"按键 {key}"
        assert svc.step(state="menu", step="key").detail == key
        svc.step(state=branch)
        peer = hotline if branch == "to_12345" else queue
        other = queue if peer is hotline else hotline
        peer.wait(lambda e: e["event"] == "media")
        if branch == "queue":  # on the way, the flow texted the caller (SIPp calls from 13800000000)
            svc.step(state="text_me")
    finally:
        svc.stop()
        hotline.stop()
        queue.stop()
    assert not other.has("incoming")
    store = Store(svc.settings.store.url, settings=svc.settings)
    sms = [dict(r) for r in store.db.rows("SELECT * FROM sms")]
    store.close()
    if branch == "queue":
        assert len(sms) == 1 and sms[0]["purpose"] == "ivr:text_me" and sms[0]["number"] == "13800000000"
        assert sms[0]["body"] == "【110】您的来电已转人工，请保持电话畅通。" and sms[0]["status"] == "local"  # no gateway
    else:  # the transfer's guidance SMS, as for an operator's transfer
        assert [m["purpose"] for m in sms] == ["guidance"]


@pytest.mark.parametrize("seat_answer, why", [("486", "Busy Here"), ("none", "no answer within 2 s")])
def test_a_busy_or_silent_seat_overflows_to_the_front_desk_and_silence_goes_to_the_queue(
        ko_engine, ko_router, prompt_cache, tmp_path, seat_answer, why):
    """Seat mode: the operator seat answers 486 (or rings past ivr.seat_timeout), so the caller is
    answered by the front desk (not turned away), hears the whole welcome, says nothing, and is
    handed to the queue."""
    heard = tmp_path / "caller-heard.wav"
    seat = PeerProc("--answer", seat_answer, user="seat")
    queue = PeerProc("--answer", "200", user="acd")
    hotline = PeerProc("--answer", "200", user="12345")
    svc = Service(tmp_path, ko_engine, ko_router, {"12345": hotline.uri}, queue.uri, seat=seat.uri, when="overflow",
                  cache=prompt_cache, seat_timeout=2)
    caller = None
    try:
        caller = PeerProc("--call", svc.uri, "--record", str(heard), "--commands", "--mic", user="caller")
        over = svc.fact(P.Overflowed)
        assert over.reason == why
        if seat_answer == "none":
            seat.wait(lambda e: e["event"] == "ended")  # its ringing was cancelled when the front desk took the caller
        welcome = svc.prompt_of("welcome")
        assert not svc.fact(P.PromptDone, token=welcome.token, timeout=20).interrupted
        assert svc.step(state="listen", step="no_input").detail == "未听到来电内容"
        svc.fact(P.QueueUpdate, step=P.QueueStep.ANSWERED, timeout=20)
        queue.wait(lambda e: e["event"] == "media")
        caller.send("hangup")
        svc.fact(P.CallEnded)
    finally:
        if caller is not None:
            caller.stop()
        svc.stop()
        seat.stop()
        queue.stop()
        hotline.stop()
    assert seat.has("incoming")  # the seat was tried first
    score, _ = find_in_recording(heard, Path(welcome.wav))
    assert score > 0.6, f"the welcome did not reach the caller (score {score:.2f})"


def test_a_caller_hanging_up_while_the_hotline_rings_leaves_nobody_on_the_line(ko_engine, ko_router, prompt_cache,
                                                                              tmp_path):
    """The caller presses 1 and hangs up before the hotline answers: the hotline's ringing is
    cancelled (nobody picks up a dead line), the flow ends as "caller left", nothing is queued."""
    flow = tmp_path / "menu.toml"
    flow.write_text(MENU_FLOW.format(welcome=tone(tmp_path / "welcome.wav", 700, 2)), encoding="utf-8")
    hotline = PeerProc("--answer", "none", user="12345")  # rings, never answers
    queue = PeerProc("--answer", "200", user="acd")
    svc = Service(tmp_path, ko_engine, ko_router, {"12345": hotline.uri}, queue.uri, flow=str(flow),
                  cache=prompt_cache)
    caller = None
    try:
        caller = PeerProc("--call", svc.uri, "--commands", "--mic", user="caller")
        svc.prompt_of("menu")
        caller.send("dtmf 1")
        svc.fact(P.TransferUpdate, step=P.TransferStep.STARTED)
        hotline.wait(lambda e: e["event"] == "incoming")
        caller.send("hangup")
        end = svc.step(step="end")
        assert end.outcome == "caller_left" and end.state == "to_12345"
        failed = svc.fact(P.TransferUpdate, step=P.TransferStep.FAILED)
        assert "caller hung up" in failed.reason
        hotline.wait(lambda e: e["event"] == "ended")  # its ringing was cancelled
        svc.fact(P.CallEnded)
    finally:
        if caller is not None:
            caller.stop()
        svc.stop()
        hotline.stop()
        queue.stop()
    assert not queue.has("incoming") and not svc.facts(P.QueueUpdate)
