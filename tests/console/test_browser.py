"""The operator console in a real browser (Debian's Chromium driven by Playwright) on the real
service: SIP worker, Vosk (the Korean test model), router, event feed, store. A SIPp caller
speaks; the operator logs in, watches the transcript arrive, sees the suggestion card, presses
F8, sees the hotline join (three-way), leaves with F9; a supervisor in a second browser sees the
same call."""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from fenliu.bus import CallEvent, EventBus, WorkerFact
from fenliu.console.server import Console
from fenliu.events import Alternative, Decision, FinalTranscript, PartialTranscript
from fenliu.router import Router, parse_rules
from fenliu.service.supervisor import Supervisor
from fenliu.settings import load_settings
from fenliu.sip import protocol as P
from fenliu.store.record import Store
from tests.conftest import FIXTURES, free_port, heard_over_a_line, minimal_rules, rtp_block
from tests.console.conftest import open_console as login_page
from tests.sip.peers import PeerProc, rms_after
from tests.sip.sipp import alaw_file, run_sipp, talking_caller

pytestmark = pytest.mark.slow
PASSWORD = "browser-test-pw"
SHOTS = os.environ.get("FENLIU_SCREENSHOTS")  # a folder: the README's screenshots are taken here


@pytest.fixture(scope="module")
def heard_words(ko_engine, tmp_path_factory):
    """The words the Korean model hears in the caller's audio over an A-law line: the test's
    negative list diverts on them (the Chinese list is tested on Chinese text elsewhere)."""
    words = sorted(heard_over_a_line(ko_engine, FIXTURES / "ko" / "ko-02-help.wav", tmp_path_factory.mktemp("probe")))
    assert words, "the model heard nothing in the probe"
    return words


@pytest.fixture
def service(ko_engine, heard_words, tmp_path):
    """fenliu's service as `fenliu serve` wires it, in this process (console on a free port)."""
    hotline = PeerProc("--answer", "200", "--record", str(tmp_path / "hotline.wav"), user="12345")
    seat = PeerProc("--answer", "200", user="seat01")  # the operator's SIP phone (B2BUA seat mode)
    ambulance = PeerProc("--answer", "none", user="120")  # an urgent service that rings and rings
    s = load_settings(env={})
    port = free_port(2)
    s = replace(s, sip=replace(s.sip, port=port, workers=1, rtp_port=rtp_block(40), seat_uri=seat.uri,
                               media_timeout=60.0),  # the danger test's caller sends no audio
                transfer=replace(s.transfer, targets={"12345": hotline.uri, "119": "sip:119@127.0.0.1:9",
                                                      "120": ambulance.uri, "fraud": "sip:96110@127.0.0.1:9"},
                                 urgent="119,120"),
                console=replace(s.console, port=free_port()),
                store=replace(s.store, url=f"sqlite:///{tmp_path}/fenliu.db"))
    rules = parse_rules(minimal_rules(decisive=heard_words, strong="없는말하나", weak="없는말", danger="살려줘요",
                                      negator="안", name="噪声扰民", version="ko-browser"))
    bus = EventBus.on_thread()
    store = Store(s.store.url, seat="seat01")
    bus.subscribe(store.record)
    sup = Supervisor(s, Router(rules), ko_engine, bus)
    console = Console(s, sup, store)
    sup.start()
    url = asyncio.run_coroutine_threadsafe(console.start(), bus.loop).result(20)
    console.accounts.add_user("op1", "operator", PASSWORD, seat="seat01")
    console.accounts.add_user("boss", "supervisor", PASSWORD)
    try:
        yield {"settings": s, "sup": sup, "bus": bus, "store": store, "url": url, "hotline": hotline,
               "seat": seat, "ambulance": ambulance, "recording": tmp_path / "hotline.wav"}
    finally:
        asyncio.run_coroutine_threadsafe(console.stop(), bus.loop).result(20)
        sup.stop()
        bus.close()
        store.close()
        hotline.stop()
        seat.stop()
        ambulance.stop()


def open_console(browser, url: str, user: str):
    return login_page(browser, url, user, PASSWORD)


def hang_up_all(sup: Supervisor) -> None:
    """The test is done with its callers (they talk until a BYE): end their calls."""
    for c in sup.calls():
        try:
            sup.hangup(c["call_id"])
        except LookupError:
            pass  # ended meanwhile


def shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name))


def test_operator_sees_the_call_presses_f8_and_the_hotline_joins(service, browser, heard_words, tmp_path):
    op, op_errors = open_console(browser, service["url"], "op1")
    boss, boss_errors = open_console(browser, service["url"], "boss")
    assert op.locator("#calls li[data-call-id]").count() == 0  # nothing yet: the call comes after

    audio = alaw_file(FIXTURES / "ko" / "ko-02-help.wav", tmp_path)
    scen = talking_caller(audio)
    box: dict = {}
    caller = threading.Thread(target=lambda: box.setdefault("r", run_sipp(scen, service["settings"].sip.port,
                                                                           tmp_path, timeout=60)))
    caller.start()
    try:
        item = op.wait_for_selector("#calls li[data-call-id]", timeout=20000)
        call_id = item.get_attribute("data-call-id")
        assert "****" in item.inner_text()  # the operator sees the number masked
        # the caller's words arrive as a final transcript, then the suggestion card
        op.wait_for_selector('#transcript .utt.final[data-leg="caller"]', timeout=30000)
        op.wait_for_selector('#card[data-target="12345"]', timeout=30000)
        card = op.inner_text("#card")
        assert "12345" in card and any(w in card for w in heard_words)
        transcript = op.inner_text("#transcript")
        # the matched words, highlighted in the transcript (the line may settle after the card)
        op.wait_for_selector("#transcript mark", timeout=10000)
        # the supervisor's console shows the same call, with the full number
        b_item = boss.wait_for_selector(f'#calls li[data-call-id="{call_id}"]', timeout=10000)
        assert "13800000000" in b_item.inner_text()
        shot(op, "console-live.png")

        # an utterance with markup in it is shown as text, never run
        service["bus"].publish(CallEvent(call_id, "caller", "w0", FinalTranscript(
            call_id, 999, '<img src=x onerror="alert(1)"><script>alert(2)</script>', 0.0, 1.0)))
        op.wait_for_selector('#transcript .utt.final:has-text("<img src=x")', timeout=10000)
        assert op.locator("#transcript img, #transcript script").count() == 0  # and no alert (see errors)

        # the one key
        op.keyboard.press("F8")
        op.wait_for_selector('#transfer-progress:has-text("三方")', timeout=30000)
        service["hotline"].wait(lambda e: e["event"] == "media", 20)
        boss.wait_for_selector(f'#calls li[data-call-id="{call_id}"]:has-text("三方")', timeout=10000)
        shot(op, "console-three-way.png")
        op.keyboard.press("F9")  # the operator leaves; caller and hotline talk on
        op.wait_for_selector('#transfer-progress:has-text("退出")', timeout=20000)
        service["seat"].wait(lambda e: e["event"] == "ended", 20)  # the operator's phone left
        service["hotline"].wait(lambda e: e["event"] == "heard", 30)  # the caller's voice reached the hotline
        n = service["hotline"].mark()
        assert [c["call_id"] for c in service["sup"].calls()] == [call_id]  # caller and hotline talk on
        service["sup"].hangup(call_id)
        service["hotline"].wait(lambda e: e["event"] == "ended", 40, since=n)
    finally:
        hang_up_all(service["sup"])
        caller.join(70)
    assert box["r"].returncode == 0, box["r"].stdout[-1500:]
    service["hotline"].stop()  # the recorder writes its file when the peer ends
    assert rms_after(service["recording"], 0.3) > 200  # the hotline heard the caller
    actions = [(a["user"], a["action"]) for a in service["store"].audit_log()]
    assert ("op1", "transfer") in actions and ("op1", "release") in actions
    # history: the ended call is found by a word of its transcript, with its outcome
    said = next(w for w in heard_words if w in transcript)
    op.click("#tab-history")
    op.fill('#history-search input[name=q]', said)
    op.press('#history-search input[name=q]', "Enter")
    row = op.wait_for_selector(f'#history-results tbody tr[data-call-id="{call_id}"]', timeout=10000)
    assert "completed" in row.inner_text() or "完成" in row.inner_text()
    assert not op_errors and not boss_errors, op_errors + boss_errors


def test_danger_card_and_session_expiry(service, browser, tmp_path):
    """A decision vetoed by a danger word shows the red 不可分流 card and no one-key diversion;
    a session ended on the server closes the page's stream and shows the login with the reason."""
    op, errors = open_console(browser, service["url"], "op1")
    # a caller that says nothing: the only decision on this call is the one published below
    # (a speaking caller's own decisions would race with it for the card)
    scen = talking_caller(None)
    caller = threading.Thread(target=lambda: run_sipp(scen, service["settings"].sip.port, tmp_path, timeout=120))
    caller.start()
    try:
        item = op.wait_for_selector("#calls li[data-call-id]", timeout=20000)
        call_id = item.get_attribute("data-call-id")
        d = Router().decide("他拿着刀在门口说要砍人，着火了")  # the shipped Chinese list: a danger veto
        assert d.target == "police" and d.vetoed_by
        service["bus"].publish(CallEvent(call_id, "caller", "w0", replace(d, call_id=call_id)))
        op.wait_for_selector("#card .veto", timeout=10000)
        assert "不可分流" in op.inner_text("#card")
        shot(op, "console-danger.png")
        # the session ends on the server (a password change, an idle timeout, a logout elsewhere):
        # the server closes the page's event stream and the page shows the login with the reason,
        # without the operator doing anything
        service["store"].db.execute("DELETE FROM sessions")
        op.wait_for_selector("#login-form", state="visible", timeout=10000)
        assert "会话已结束" in op.inner_text("#login-error")
        assert op.locator("#calls li[data-call-id]").count() == 0  # nothing of the calls is left on screen
    finally:
        hang_up_all(service["sup"])
        caller.join(50)
    assert not errors, errors
    assert isinstance(d, Decision)


def test_card_states_urgent_lane_cancel_and_confirm(service, browser, tmp_path):
    """The card's other faces and keys, on a live (silent) call whose decisions are published on
    the bus the way the recogniser's are: an unchanged decision does not rebuild the card, a
    tie offers its alternatives, fraud is urgent with the stop-payment reminder and the anti-fraud
    desk, an unsuggested target asks first, the urgent lane rings 120 and Esc cancels it, a
    degraded call says there is no live suggestion."""
    op, errors = open_console(browser, service["url"], "op1")
    scen = talking_caller(None)
    caller = threading.Thread(target=lambda: run_sipp(scen, service["settings"].sip.port, tmp_path, timeout=120))
    caller.start()
    router, bus = Router(), service["bus"]
    try:
        call_id = op.wait_for_selector("#calls li[data-call-id]", timeout=20000).get_attribute("data-call-id")

        def show(d: Decision, uid: int) -> None:
            bus.publish(CallEvent(call_id, "caller", "w0", replace(d, call_id=call_id, utterance_id=uid)))

        def said(uid: int, text: str) -> None:  # a later fact: once it is on screen, what came before is too
            bus.publish(CallEvent(call_id, "caller", "w0", FinalTranscript(call_id, uid, text, 0.0, 1.0)))
            op.wait_for_selector(f'#transcript .utt.final:has-text("{text}")', timeout=10000)

        noise = router.decide("楼上装修太吵了，天天半夜还在用电钻")
        assert noise.target == "12345"
        show(noise, 1)
        op.wait_for_selector('#card[data-target="12345"]', timeout=10000)
        shown = op.query_selector("#card-body > *")
        show(noise, 2)  # the same evidence again
        said(3, "第三句")
        assert shown.evaluate("n => n.isConnected")  # not rebuilt: no flicker

        keep = router.decide("你好")
        assert keep.target == "police" and not keep.vetoed_by
        show(replace(keep, alternatives=(Alternative("12345", "噪声扰民", "noise", "城管", ()),
                                         Alternative("12348", "劳资纠纷", "wage", "人社", ()))), 4)
        op.wait_for_selector('#card .alt-btn[data-target="12348"]', timeout=10000)
        assert op.locator('#card .alt-btn[data-target="12345"]').count() == 1
        assert not shown.evaluate("n => n.isConnected")  # the evidence changed: rebuilt

        fraud = router.decide("我被骗了，刚给对方转账五万块，对方说是公安局的")
        assert fraud.target == "police" and any(m.group == "fraud" for m in fraud.vetoed_by)
        show(fraud, 5)
        op.wait_for_selector('#card:has-text("停止转账")', timeout=10000)
        op.wait_for_selector('#card .link-btn[data-target="fraud"]', timeout=10000)

        # a target the router did not suggest: asked first; 取消 sends nothing
        op.select_option("#target-select", "12345")
        op.keyboard.press("F8")
        op.wait_for_selector("#confirm", state="visible", timeout=5000)
        assert "12345" in op.inner_text("#confirm-text")
        op.click("#confirm-cancel")
        op.wait_for_selector("#confirm", state="hidden", timeout=5000)

        # the urgent lane brings 120 in; while it rings, Esc cancels and the caller stays
        op.click('#urgent-buttons button[data-target="120"]')
        service["ambulance"].wait(lambda e: e["event"] == "incoming", 15)
        op.wait_for_selector("#btn-cancel", state="visible", timeout=10000)
        op.keyboard.press("Escape")
        op.wait_for_selector('#transfer-progress.cancelled:has-text("已取消转接")', timeout=10000)  # neutral, not red
        service["ambulance"].wait(lambda e: e["event"] == "ended", 10)
        assert not service["seat"].has("ended")  # the operator is still with the caller

        # a fixture's reference text (the demo without a Chinese model) is never passed off as heard
        bus.publish(CallEvent(call_id, "caller", "w0", FinalTranscript(call_id, 40, "参考文本一句", 0.0, 1.0,
                                                                        source="reference")))
        ref = op.wait_for_selector('#transcript .utt.final.reference:has-text("参考文本一句")', timeout=10000)
        assert "参考文本（非识别）" in ref.inner_text()
        assert op.locator("#transcript .utt:not(.reference) .ref-tag").count() == 0  # recognised lines carry no tag

        # a partial is replaced in place by its final
        bus.publish(CallEvent(call_id, "caller", "w0", PartialTranscript(call_id, 50, "我家楼下", 0.0, 0.5)))
        op.wait_for_selector('#transcript .utt.partial[data-utt-id="50"]:has-text("我家楼下")', timeout=10000)
        said(50, "我家楼下的烧烤店太吵")
        assert op.locator('#transcript .utt[data-utt-id="50"]').count() == 1
        assert op.locator('#transcript .utt.partial[data-utt-id="50"]').count() == 0

        # the transcript follows new lines, and stops following when the operator scrolls up
        for uid in range(60, 90):
            bus.publish(CallEvent(call_id, "caller", "w0", FinalTranscript(call_id, uid, f"第{uid}句话", 0.0, 1.0)))
        op.wait_for_selector('#transcript .utt.final:has-text("第89句话")', timeout=10000)
        box = op.query_selector("#transcript")
        assert box.evaluate("n => n.scrollTop + n.clientHeight >= n.scrollHeight - 30")  # at the bottom
        box.evaluate("n => { n.scrollTop = 0; n.dispatchEvent(new Event('scroll')); }")
        said(90, "往上翻时来的一句")
        assert box.evaluate("n => n.scrollTop") == 0  # it did not jump away from what the operator reads
        op.wait_for_selector("#jump-new", state="visible", timeout=5000)

        bus.publish(WorkerFact("w0", P.CallDegraded(call_id, "recognition fell behind")))
        op.wait_for_selector(f'#calls li[data-call-id="{call_id}"] .badge.degraded', timeout=10000)
        op.wait_for_selector('#card:has-text("无实时建议")', timeout=10000)
    finally:
        hang_up_all(service["sup"])
        caller.join(70)
    actions = [(a["user"], a["action"], a["detail"].get("target")) for a in service["store"].audit_log()]
    assert ("op1", "transfer", "120") in actions and ("op1", "cancel_transfer", None) in actions
    assert ("op1", "transfer", "12345") not in actions  # the confirmation was declined
    assert not errors, errors
