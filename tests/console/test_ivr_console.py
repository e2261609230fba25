"""The IVR front desk (语音前台) in the operator console, in a real browser (Debian's Chromium driven
by Playwright).

The first test runs the service as `fenliu serve` wires it with ``[ivr] when = "always"``: SIP
worker, the real Korean Vosk model and a small Korean negative list whose danger words are what
the model hears in the SIPp caller's speech, the shipped front-desk flow (its prompts made by
espeak-ng), the event feed, the store and the console, and a pjsua2 operators' queue. The caller
says the danger words; the operator sees the red 紧急 banner for that call, the call at the top of
the list, then "语音前台已转人工" once the queue answers; after a reload the banner is still there
(from GET /api/calls), still with why the call is urgent.

The second test covers the flow's other faces on a console without SIP workers: the steps are
published on the bus as the IVR desk publishes them (overflow, listen, what was heard, the key
offer, the caller's key, the transfer; a danger call whose queue fails once, then answers).
Every check waits for something that can only appear after the action it follows."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from fenliu.bus import EventBus, WorkerFact
from fenliu.console.server import Console
from fenliu.router import Router, parse_rules
from fenliu.service.ivr import attach_desk
from fenliu.service.supervisor import Supervisor
from fenliu.settings import load_settings
from fenliu.sip import protocol as P
from fenliu.store.record import Store
from tests.commands.test_serve import settings_for
from tests.conftest import free_port, heard_over_a_line, minimal_rules
from tests.console.conftest import open_console as login_page
from tests.service.test_ivr import SPEECH_DANGER, SPEECH_DIVERT
from tests.sip.peers import PeerProc
from tests.sip.sipp import alaw_file, caller_scenario, run_sipp

pytestmark = pytest.mark.slow
PASSWORD = "ivr-console-pw"


@pytest.fixture(scope="module")
def danger_words(ko_engine, tmp_path_factory) -> list[str]:
    """The words the Korean model hears only in the danger clip (after an A-law line)."""
    tmp = tmp_path_factory.mktemp("probe")
    divert = heard_over_a_line(ko_engine, SPEECH_DIVERT, tmp)
    danger = heard_over_a_line(ko_engine, SPEECH_DANGER, tmp)
    words = sorted(danger - divert)
    assert words and divert - danger, "the model must hear distinct words in the two clips"
    return words


@pytest.fixture
def service(ko_engine, danger_words, tmp_path) -> Iterator[dict[str, Any]]:
    """Supervisor, IVR desk, store, event feed and console on one bus, as `fenliu serve` wires
    them; the flow runs on every call and hands callers to a pjsua2 operators' queue."""
    queue = PeerProc("--answer", "200", user="acd")
    rules = parse_rules(minimal_rules(decisive="없는말하나둘", strong="없는말하나", weak="없는말", danger=danger_words,
                                      negator="안", name="테스트", version="ko-ivr-console"))
    s = settings_for(1)
    s = replace(s, transfer=replace(s.transfer, targets={"12345": "sip:12345@127.0.0.1:9"}),
                console=replace(s.console, host="127.0.0.1", port=free_port()),
                store=replace(s.store, url=f"sqlite:///{tmp_path}/fenliu.db"),
                ivr=replace(s.ivr, flow="front_desk", when="always", queue_uri=queue.uri,
                            cache_dir=str(tmp_path / "prompts")))
    bus = EventBus.on_thread()
    store = Store(s.store.url, settings=s)
    bus.subscribe(store.record)
    sup = Supervisor(s, Router(rules), ko_engine, bus)
    console = Console(s, sup, store)
    desk = attach_desk(s, sup, bus, store)
    assert desk is not None
    sup.start()
    url = asyncio.run_coroutine_threadsafe(console.start(), bus.loop).result(20)
    console.accounts.add_user("op1", "operator", PASSWORD)
    try:
        yield {"settings": s, "bus": bus, "url": url, "queue": queue}
    finally:
        asyncio.run_coroutine_threadsafe(console.stop(), bus.loop).result(20)
        desk.close()
        sup.stop()
        bus.close()
        store.close()
        queue.stop()


def test_an_urgent_caller_handed_to_the_queue_is_red_on_top_and_stays_after_a_reload(service, browser, danger_words,
                                                                                        tmp_path):
    from playwright.sync_api import expect

    op, errors = login_page(browser, service["url"], "op1", PASSWORD)
    expect(op.locator("#calls li[data-call-id]")).to_have_count(0)  # the call comes after
    expect(op.locator("#ivr-banner")).to_be_hidden()

    audio = alaw_file(SPEECH_DANGER, tmp_path)
    # the caller says the danger words over and over, and stays on the line until it is hung up
    scen = caller_scenario(audio, 0, callee_hangs_up=True).replace(f"{audio},1,8", f"{audio},-1,8")
    box: dict[str, Any] = {}
    caller = threading.Thread(target=lambda: box.update(r=run_sipp(scen, service["settings"].sip.port, tmp_path,
                                                                   timeout=120)))
    caller.start()
    try:
        item = op.wait_for_selector("#calls li[data-call-id]", timeout=20000)
        call_id = item.get_attribute("data-call-id")
        row = op.locator(f'#calls li[data-call-id="{call_id}"]')
        banner = op.locator("#ivr-banner")
        expect(banner).to_contain_text("语音前台", timeout=20000)  # the flow answered the caller
        # a newer call, not urgent: newest first would put it above the caller in danger
        service["bus"].publish(WorkerFact("w9", P.CallStarted("zz-newer", 0, "<sip:13900000009@10.0.0.9>",
                                                              "<sip:110@fenliu>")))
        expect(op.locator('#calls li[data-call-id="zz-newer"]')).to_be_visible()

        # the danger words: red, 紧急, the reason with the words heard, the call on top
        expect(banner).to_have_attribute("data-urgent", "1", timeout=40000)
        expect(banner.locator(".ivr-title")).to_contain_text("紧急")
        why = banner.locator('.ivr-lines li[data-kind="why"]')
        expect(why).to_contain_text("危险信号")
        assert any(w in why.inner_text() for w in danger_words), why.inner_text()
        expect(row.locator(".badge.ivr-urgent")).to_have_text("紧急")
        expect(row).to_have_class(re.compile(r"\bivr-urgent\b"))
        expect(op.locator("#calls li").first).to_have_attribute("data-call-id", call_id)
        assert op.locator("#calls li").nth(1).get_attribute("data-call-id") == "zz-newer"
        assert op.eval_on_selector("#ivr-banner", "n => getComputedStyle(n).backgroundColor") == "rgb(198, 40, 40)"

        # the queue's operator takes the call: the banner says so and keeps why it is urgent
        service["queue"].wait(lambda e: e["event"] == "media", 40)
        expect(banner.locator(".ivr-title")).to_contain_text("语音前台已转人工", timeout=20000)
        expect(banner).to_have_attribute("data-queue", "answered")
        expect(banner).to_have_attribute("data-urgent", "1")
        assert any(w in why.inner_text() for w in danger_words), why.inner_text()
        expect(row.locator(".ivr-line")).to_contain_text("已转人工")
        live = op.request.get(f"{service['url']}api/calls").json()["calls"]
        ivr = next(c for c in live if c["call_id"] == call_id)["ivr"]
        assert ivr["outcome"] == "queued" and ivr["urgent"], ivr

        # a reload: the page starts from GET /api/calls (the stream does not replay the past)
        op.reload()
        op.wait_for_selector('#conn:has-text("已连接")')
        expect(row).to_be_visible()
        expect(banner).to_have_attribute("data-urgent", "1")
        expect(banner.locator(".ivr-title")).to_contain_text("语音前台已转人工（紧急）")
        expect(why).to_contain_text("危险信号")
        assert any(w in why.inner_text() for w in danger_words), why.inner_text()
        expect(row.locator(".badge.ivr-urgent")).to_have_text("紧急")
        expect(row.locator(".ivr-line")).to_contain_text("已转人工")

        # the operator ends the call from the console: the caller gets its BYE
        op.click("#btn-hangup")
        op.click("#confirm-ok")
        expect(row).to_have_class(re.compile(r"\bended\b"), timeout=20000)
    finally:
        caller.join(130)
    assert box["r"].returncode == 0, box["r"].stdout[-1500:]
    assert not errors, errors


@pytest.fixture
def console_only(tmp_path, router) -> Iterator[dict[str, Any]]:
    """The console on a bus, without SIP workers (the supervisor is not started)."""
    s = load_settings(env={})
    s = replace(s, console=replace(s.console, host="127.0.0.1", port=free_port()),
                store=replace(s.store, url=f"sqlite:///{tmp_path}/fenliu.db"),
                transfer=replace(s.transfer, targets={"12345": "sip:12345@127.0.0.1:9"}))
    bus = EventBus.on_thread()
    store = Store(s.store.url, settings=s)
    bus.subscribe(store.record)
    console = Console(s, Supervisor(s, router, None, bus), store)
    url = asyncio.run_coroutine_threadsafe(console.start(), bus.loop).result(20)
    console.accounts.add_user("op1", "operator", PASSWORD)
    try:
        yield {"bus": bus, "url": url}
    finally:
        asyncio.run_coroutine_threadsafe(console.stop(), bus.loop).result(20)
        bus.close()
        store.close()


def test_the_banner_follows_the_flow_step_by_step(console_only, browser):
    from playwright.sync_api import expect

    bus = console_only["bus"]
    op, errors = login_page(browser, console_only["url"], "op1", PASSWORD)

    def fact(f: P.Fact) -> None:
        bus.publish(WorkerFact("w0", f))

    def step(call_id: str, state: str, kind: str, detail: str = "", urgent: bool = False, outcome: str = "") -> None:
        fact(P.IvrStep(call_id, "front_desk", state, kind, detail, urgent, outcome))

    def started(call_id: str, number: str) -> None:
        fact(P.CallStarted(call_id, 0, f"<sip:{number}@10.0.0.1>", "<sip:110@fenliu>"))
        expect(op.locator(f'#calls li[data-call-id="{call_id}"]')).to_be_visible()

    banner, title = op.locator("#ivr-banner"), op.locator("#ivr-banner .ivr-text")
    lines = op.locator("#ivr-banner .ivr-lines")

    # the seat was busy: the front desk answered, listened, heard a diversion, offered 12345 by key
    started("calm", "13700000001")
    expect(banner).to_be_hidden()  # no front desk on this call yet
    fact(P.Overflowed("calm", 486, "Busy Here"))
    expect(title).to_have_text("坐席忙，已由语音前台接听")
    step("calm", "listen", "listen")
    expect(title).to_have_text("语音前台：正在听取来电内容")
    expect(lines).to_contain_text("坐席忙，已由语音前台接听（坐席 486 Busy Here）")
    step("calm", "listen", "heard", '楼上装修太吵了<img src=x onerror="alert(1)">')
    expect(lines.locator('li[data-kind="heard"]')).to_have_text('来电人说：楼上装修太吵了<img src=x onerror="alert(1)">')
    assert op.locator("#ivr-banner img, #calls img").count() == 0  # text, never markup
    step("calm", "decide", "decide", "divert: 命中“噪声扰民”：装修；无危险信号")
    expect(title).to_have_text("语音前台：可由热线受理")
    step("calm", "offer", "offer", "1=12345")
    expect(title).to_have_text("语音前台：已提示转接 12345（按1）")
    expect(op.locator('#calls li[data-call-id="calm"] .ivr-line')).to_have_text("语音前台：已提示转接 12345（按1）")
    step("calm", "offer", "key", "1 → 12345")
    expect(title).to_have_text("语音前台：来电人按1，转接 12345")
    step("calm", "transfer", "transfer")
    expect(title).to_have_text("语音前台：正在转接 12345")
    step("calm", "transfer", "transferred", "12345", outcome="transferred")
    expect(title).to_have_text("语音前台：已转接 12345")
    expect(banner).to_have_attribute("data-urgent", "0")
    expect(lines.locator('li[data-kind="heard"]')).to_contain_text("楼上装修太吵了")  # kept all along
    expect(op.locator("#ivr-banner .ivr-title")).to_have_count(1)  # one banner, updated in place
    expect(banner.locator(".ivr-title .badge")).to_have_count(0)
    expect(op.locator('#calls li[data-call-id="calm"] .badge.ivr-urgent')).to_have_count(0)

    # two more calls; the older one turns urgent and goes above the newer one
    started("danger", "13700000002")
    started("newest", "13700000003")
    order = op.locator("#calls li")
    expect(order.first).to_have_attribute("data-call-id", "newest")  # newest first while nothing is urgent
    reason = "危险信号（持械/凶器）：刀——警情，不分流"
    step("danger", "listen", "danger", reason, urgent=True)
    expect(order.first).to_have_attribute("data-call-id", "danger")
    expect(order.nth(1)).to_have_attribute("data-call-id", "newest")
    expect(order.nth(2)).to_have_attribute("data-call-id", "calm")
    danger_row = op.locator('#calls li[data-call-id="danger"]')
    expect(danger_row.locator(".badge.ivr-urgent")).to_have_text("紧急")
    expect(danger_row.locator(".ivr-line")).to_have_text("语音前台：听到危险信号（紧急：危险信号（持械/凶器）：刀）")
    expect(title).to_have_text("语音前台：已转接 12345")  # the operator's selection did not move

    danger_row.click()
    expect(banner).to_have_attribute("data-urgent", "1")
    step("danger", "decide", "decide", f"danger: {reason}", urgent=True)
    step("danger", "urgent_queue", "queue", f"IVR：危险信号，紧急转人工（{reason}）", urgent=True)
    expect(title).to_have_text("语音前台 → 接警员队列（紧急：危险信号（持械/凶器）：刀）")
    expect(banner.locator(".ivr-title .badge.ivr-urgent")).to_have_text("紧急")
    fact(P.QueueUpdate("danger", P.QueueStep.DIALING, "sip:acd@127.0.0.1:9"))
    expect(lines.locator('li[data-kind="queue"]')).to_have_text("正在呼叫接警员…")
    fact(P.QueueUpdate("danger", P.QueueStep.FAILED, "sip:acd@127.0.0.1:9", 486, "Busy Here"))
    expect(lines.locator('li[data-kind="queue"]')).to_have_text("接警员未接听，继续等待并重拨（Busy Here (486)）")
    fact(P.QueueUpdate("danger", P.QueueStep.ANSWERED, "sip:acd@127.0.0.1:9"))
    expect(title).to_have_text("语音前台已转人工（紧急）")
    step("danger", "urgent_queue", "queued", "an operator took the call", urgent=True, outcome="queued")
    expect(banner).to_have_attribute("data-outcome", "queued")
    expect(title).to_have_text("语音前台已转人工（紧急）")
    expect(lines.locator('li[data-kind="why"]')).to_have_text(f"紧急原因：{reason}")  # kept for the operator
    expect(lines.locator('li[data-kind="queue"]')).to_have_count(0)

    # back to the first call: its own banner, not the urgent one
    op.locator('#calls li[data-call-id="calm"]').click()
    expect(title).to_have_text("语音前台：已转接 12345")
    expect(banner).to_have_attribute("data-urgent", "0")
    assert not errors, errors
