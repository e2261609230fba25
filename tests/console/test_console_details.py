"""Console details operators tripped on, in a real browser (Debian's Chromium, Playwright) on the
real console app and store (no SIP workers: calls and their facts are published on the bus as
`fenliu serve` does): targets by name from [transfer.names] (社会联动, never the internal id),
a cancelled transfer shown as cancelled, the suggestion or danger card first with the repeat
note compact under it, every time in store.timezone, and the work-order list following the
detail."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from fenliu.bus import CallEvent, EventBus, WorkerFact
from fenliu.console.server import Console
from fenliu.loop.followthrough import FollowThrough
from fenliu.router import Router
from fenliu.service.supervisor import CallSession, Supervisor
from fenliu.sip import protocol as P
from fenliu.store.record import Store
from tests.conftest import free_port
from tests.console.conftest import open_console as login_page
from tests.loop.loop_env import NOISE, divert, loop_settings

pytestmark = pytest.mark.slow
PASSWORD = "details-pw-110"
ZONE = "Asia/Shanghai"


class Env:
    def __init__(self, url: str, bus: EventBus, store: Store, sup: Supervisor, router: Any, console: Console) -> None:
        self.url, self.bus, self.store, self.sup, self.router, self.console = url, bus, store, sup, router, console

    def on_loop(self, fn: Any) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.bus.loop).result(20)

    def live_call(self, call_id: str, number: str = "13812345678", slot: int = 0) -> None:
        """A call the supervisor holds live (its keys reach a worker's link) and the console shows."""
        remote = f"<sip:{number}@10.0.0.1>"
        self.sup.sessions[("w0", slot)] = CallSession(call_id, "w0", slot, remote, time.time())
        self.bus.publish(WorkerFact("w0", P.CallStarted(call_id, slot, remote, "<sip:110@fenliu>")))
        self.bus.publish(WorkerFact("w0", P.CallAnswered(call_id)))

    def decide(self, call_id: str, text: str) -> Any:
        d = replace(self.router.decide(text), call_id=call_id)
        self.bus.publish(CallEvent(call_id, "caller", "w0", d))
        return d


class NoWorker:
    """Where the worker's link would be: the test publishes the worker's facts itself."""

    def send(self, command: Any) -> None:
        pass


@pytest.fixture
def env(tmp_path) -> Iterator[Env]:
    db = f"sqlite:///{tmp_path}/fenliu.db"
    s = loop_settings(db)
    s = replace(s, console=replace(s.console, port=free_port()), store=replace(s.store, url=db, timezone=ZONE))
    bus = EventBus.on_thread()
    store = Store(db, settings=s)
    bus.subscribe(store.record)
    router = Router()  # the shipped Chinese list
    sup = Supervisor(s, router, None, bus)
    sup.links["w0"] = NoWorker()  # type: ignore[assignment]
    console = Console(s, sup, store)
    bus.subscribe(FollowThrough(store, 7, console.feed.note))
    url = asyncio.run_coroutine_threadsafe(console.start(), bus.loop).result(20)
    console.accounts.add_user("op1", "operator", PASSWORD)
    console.accounts.add_user("boss", "supervisor", PASSWORD)
    try:
        yield Env(url, bus, store, sup, router, console)
    finally:
        asyncio.run_coroutine_threadsafe(console.stop(), bus.loop).result(20)
        bus.close()
        store.close()


def open_console(browser: Any, url: str, user: str, **context: Any) -> Any:
    return login_page(browser, url, user, PASSWORD, **context)


def test_social_services_are_shown_by_name_never_by_id(env, browser):
    from playwright.sync_api import expect

    page, errors = open_console(browser, env.url, "op1")
    env.live_call("c-lock")
    expect(page.locator('#calls li[data-call-id="c-lock"]')).to_be_visible()
    page.locator('#calls li[data-call-id="c-lock"]').click()
    d = env.decide("c-lock", "我家门锁坏了，钥匙也丢了，进不去家门，麻烦帮我找个开锁的师傅")
    assert d.target == "social", d
    card = page.locator('#card[data-target="social"]')
    expect(card).to_be_visible()
    expect(card.locator(".target-number")).to_have_text("社会联动服务")
    expect(page.locator("#btn-transfer")).to_contain_text("一键转接 社会联动服务")
    assert "social" not in page.inner_text("#card") and "social" not in page.inner_text("#btn-transfer")
    assert not errors, errors


def test_a_cancelled_transfer_is_shown_as_cancelled_not_as_a_failure(env, browser):
    from playwright.sync_api import expect

    page, errors = open_console(browser, env.url, "op1")
    env.live_call("c-noise")
    page.locator('#calls li[data-call-id="c-noise"]').click()
    env.decide("c-noise", NOISE)
    expect(page.locator('#card[data-target="12345"]')).to_be_visible()
    uri = env.sup.settings.transfer.targets["12345"]
    env.bus.publish(WorkerFact("w0", P.TransferUpdate("c-noise", P.TransferStep.STARTED, uri, "three-way")))
    expect(page.locator('#transfer-progress[data-step="started"]')).to_be_visible()
    env.bus.publish(WorkerFact("w0", P.TransferUpdate("c-noise", P.TransferStep.FAILED, uri, "three-way", 487,
                                                      "cancelled by the operator")))
    progress = page.locator('#transfer-progress[data-step="failed"]')
    expect(progress).to_contain_text("已取消转接")
    expect(progress).to_have_class("progress cancelled")
    assert "cancelled" not in progress.inner_text() and "失败" not in progress.inner_text()
    # a hotline that is busy is a failure, said in Chinese
    env.bus.publish(WorkerFact("w0", P.TransferUpdate("c-noise", P.TransferStep.STARTED, uri, "three-way")))
    expect(page.locator('#transfer-progress[data-step="started"]')).to_be_visible()
    env.bus.publish(WorkerFact("w0", P.TransferUpdate("c-noise", P.TransferStep.FAILED, uri, "three-way", 486,
                                                      "Busy Here")))
    expect(page.locator('#transfer-progress[data-step="failed"]')).to_contain_text("热线忙（486）")
    expect(page.locator("#transfer-progress")).to_have_class("progress failed")
    assert not errors, errors


def test_the_danger_card_comes_first_and_the_repeat_note_is_compact_below(env, browser):
    from playwright.sync_api import expect

    env.on_loop(lambda: divert(env.store, env.router, "earlier", number="13912345678"))
    env.on_loop(lambda: divert(env.store, env.router, "earlier2", number="13912345678"))
    page, errors = open_console(browser, env.url, "op1")
    env.live_call("c-knife", number="13912345678")
    page.locator('#calls li[data-call-id="c-knife"]').click()
    banner = page.locator("#repeat-banner")
    expect(banner).to_contain_text("重复来电")
    d = env.decide("c-knife", "邻居又吵起来了，他拿着刀在门口说要砍人")
    assert d.target == "police" and d.vetoed_by
    expect(page.locator("#card .veto")).to_be_visible()
    card_box, banner_box = page.locator("#card").bounding_box(), banner.bounding_box()
    assert card_box["y"] + card_box["height"] <= banner_box["y"] + 1, (card_box, banner_box)  # card first
    assert banner_box["height"] <= 80, banner_box  # a note, not a wall: the earlier calls fold away
    expect(banner.locator("details.repeat-more")).not_to_have_attribute("open", "")
    urgent = page.locator("#urgent")
    expect(urgent).to_be_visible()
    assert urgent.bounding_box()["y"] + 30 <= 768, "the urgent lane (119/120/122) is within the first screen"
    assert not errors, errors


def test_every_page_shows_the_centres_time_zone_whatever_the_browsers(env, browser):
    from playwright.sync_api import expect

    at = time.time() - 3600
    env.on_loop(lambda: divert(env.store, env.router, "d-zone", number="13700000001", t=at))
    shanghai = time.strftime("%Y-%m-%d %H:%M", time.gmtime(at + 8 * 3600))  # UTC+8, no summer time
    page, errors = open_console(browser, env.url, "boss", timezone_id="America/New_York")
    page.click("#tab-history")
    row = page.locator('#history-results tr[data-call-id="d-zone"]')
    expect(row).to_contain_text(shanghai)
    created = float(env.store.db.scalar("SELECT created_at FROM work_orders WHERE call_id='d-zone'"))
    page.click("#tab-orders")
    order_row = page.locator("#orders-table tbody tr").first
    expect(order_row).to_contain_text(time.strftime("%Y-%m-%d %H:%M", time.gmtime(created + 8 * 3600)))
    assert not errors, errors


def test_the_order_list_row_follows_the_order(env, browser):
    from playwright.sync_api import expect

    env.on_loop(lambda: divert(env.store, env.router, "d-live", number="13700000002"))
    no = str(env.store.db.scalar("SELECT order_no FROM work_orders WHERE call_id='d-live'"))
    page, errors = open_console(browser, env.url, "boss")
    page.click("#tab-orders")
    row = page.locator(f'#orders-table tr[data-order-no="{no}"]')
    expect(row.locator(".status-badge")).to_have_text("待人工转交")
    row.click()
    expect(page.locator("#order-detail h3")).to_contain_text(no)
    # the platform reports (a returned order raises a live alert): list row and detail follow
    env.on_loop(lambda: env.store.order_status(no, "returned", time.time(), "platform:12345", {"note": "地址不详"}))
    expect(row.locator(".status-badge")).to_have_text("已退回")
    expect(page.locator("#order-detail h3 .status-badge")).to_have_text("已退回")
    assert not errors, errors


def test_a_supervisor_pauses_suggestions_and_every_console_follows(env, browser):
    """The duty supervisor's switch: the operator's diversion card says 暂停分流 (no target
    suggested), a danger card still shows; the one key still transfers to a target the operator
    picks; resuming brings the suggestion back."""
    from playwright.sync_api import expect

    boss, boss_errors = open_console(browser, env.url, "boss")
    op, errors = open_console(browser, env.url, "op1")
    env.live_call("c-pause")
    op.locator('#calls li[data-call-id="c-pause"]').click()
    env.decide("c-pause", NOISE)
    expect(op.locator('#card[data-target="12345"] .divert')).to_be_visible()

    boss.click("#btn-pause-suggestions")
    boss.click("#confirm-ok")
    expect(boss.locator("#btn-pause-suggestions")).to_have_attribute("aria-pressed", "true")
    expect(op.locator("#centre-banner")).to_contain_text("中心已暂停分流建议（boss")
    expect(op.locator("#card.paused")).to_contain_text("暂停分流")
    assert op.locator("#target-select").input_value() == ""  # nothing suggested
    assert env.store.audit_log(action="centre_control")[0]["user"] == "boss"

    # the operator decides: picks 12345 and presses the key (an unsuggested target asks first)
    op.select_option("#target-select", "12345")
    op.click("#btn-transfer")
    op.click("#confirm-ok")
    expect(op.locator('#transfer-progress[data-step="requested"]')).to_be_visible()

    boss.click("#btn-pause-suggestions")
    boss.click("#confirm-ok")
    expect(op.locator("#centre-banner")).to_be_hidden()
    expect(op.locator('#card[data-target="12345"] .divert')).to_be_visible()
    assert not errors and not boss_errors, (errors, boss_errors)


def test_behind_an_acd_each_operator_sees_the_call_their_seat_answered(env, browser):
    """The service dials the ACD's queue; the worker reports which agent's seat answered: each
    operator's console (one Chromium, two contexts) shows its own call, never the other's."""
    from playwright.sync_api import expect

    env.console.feed.seat = env.store.seat = "queue"  # as with sip.seat_uri = "sip:queue@acd"
    for seat in ("1001", "1002"):
        env.console.accounts.add_user(f"op{seat}", "operator", PASSWORD, seat=seat)
    pages = {seat: open_console(browser, env.url, f"op{seat}") for seat in ("1001", "1002")}
    for slot, seat in enumerate(("1001", "1002")):
        env.live_call(f"c-{seat}", number=f"1380000{seat}", slot=slot)
    for seat in ("1001", "1002"):
        env.bus.publish(WorkerFact("w0", P.SeatAnswered(f"c-{seat}", seat, "p-asserted-identity")))
    for seat, (page, errors) in pages.items():
        other = "1002" if seat == "1001" else "1001"
        expect(page.locator(f'#calls li[data-call-id="c-{seat}"]')).to_be_visible()
        expect(page.locator(f'#calls li[data-call-id="c-{other}"]')).to_have_count(0)
        assert not errors, errors
