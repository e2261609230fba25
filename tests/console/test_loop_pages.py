"""The console's closing-the-loop pages in a real browser (Debian's Chromium driven by
Playwright) on the real console app, a real SQLite store and the follow-through: the
supervisors' 统计 / 工单 / 告警 tabs, the repeat-caller banner on a live call, the history's 闭环
section. Calls are made through the store's real path (typed facts and chain events); live
facts are published on the event bus as `fenliu serve` does. Every check waits for something
that can only appear after the action it follows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from fenliu.bus import CallEvent, EventBus, WorkerFact
from fenliu.console.server import Console
from fenliu.loop.followthrough import FollowThrough
from fenliu.service.supervisor import Supervisor
from fenliu.sip import protocol as P
from fenliu.store.record import Store
from tests.conftest import free_port
from tests.console.conftest import open_console as login_page
from tests.loop.loop_env import NOISE, divert, loop_settings

pytestmark = pytest.mark.slow
PASSWORD = "loop-pages-pw"
DANGER = "有人拿刀砍人了"


@dataclass
class Env:
    url: str  # the console, ending in "/"
    bus: EventBus
    store: Store
    router: Any

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the bus loop, where the store's alert listeners feed the event stream."""
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.bus.loop).result(20)

    def divert(self, call_id: str, number: str, **kw: Any) -> None:
        self.on_loop(lambda: divert(self.store, self.router, call_id, number=number, **kw))

    def order_no(self, call_id: str) -> str:
        return str(self.store.db.scalar("SELECT order_no FROM work_orders WHERE call_id=?", (call_id,)))


@pytest.fixture
def env(tmp_path, router) -> Iterator[Env]:
    """The console as `fenliu serve` wires it (store first, the event feed, the follow-through),
    without SIP workers: the supervisor is not started."""
    db = f"sqlite:///{tmp_path}/fenliu.db"
    s = loop_settings(db)
    s = replace(s, console=replace(s.console, host="127.0.0.1", port=free_port()))
    bus = EventBus.on_thread()
    store = Store(db, settings=s)
    bus.subscribe(store.record)
    sup = Supervisor(s, router, None, bus)
    console = Console(s, sup, store)
    bus.subscribe(FollowThrough(store, 7, console.feed.note))
    url = asyncio.run_coroutine_threadsafe(console.start(), bus.loop).result(20)
    console.accounts.add_user("boss", "supervisor", PASSWORD)
    console.accounts.add_user("op1", "operator", PASSWORD)
    try:
        yield Env(url, bus, store, router)
    finally:
        asyncio.run_coroutine_threadsafe(console.stop(), bus.loop).result(20)
        bus.close()
        store.close()


def open_console(browser, url: str, user: str):
    return login_page(browser, url, user, PASSWORD, accept_downloads=True)


def test_stats_tiles_chart_and_csv_export(env, browser):
    from playwright.sync_api import expect

    # five calls today, counted by hand:
    env.divert("d1", "13700000001")  # diverted to 12345 (non-police)
    env.divert("d2", "13700000002")  # diverted
    env.divert("d3", "13700000003")  # diverted
    env.divert("k1", "13700000004", target="")  # 12345 suggested, the operator kept it: non-police, not diverted
    env.divert("p1", "13700000005", text=DANGER, target="")  # a police matter: not counted as non-police
    now = time.time()
    env.on_loop(lambda: env.store.order_status(env.order_no("d1"), "dispatched", now, "platform:12345"))
    env.on_loop(lambda: env.store.order_status(env.order_no("d2"), "completed", now, "platform:12345"))
    env.on_loop(lambda: env.store.add_followup("d2", "hotline", 1, "sms"))
    # calls 5, non-police 4, diverted 3 → 分流率 3/4; orders 3: dispatched 2 (d1, and d2 completed),
    # completed 1; no flow-back; the hotline's one follow-up satisfied; none about 110

    page, errors = open_console(browser, env.url, "boss")
    page.click("#tab-stats")
    tile = lambda key: page.locator(f'#stats-tiles .tile[data-key="{key}"] .tile-value')  # noqa: E731
    expect(tile("diversion_rate")).to_have_text("75.0%")
    expect(tile("calls")).to_have_text("5")
    expect(tile("non_police")).to_have_text("4")
    expect(tile("diverted")).to_have_text("3")
    expect(tile("per_day_diverted")).to_have_text("0.1")  # 3 over the default 30 days
    expect(tile("dispatch_rate")).to_have_text("66.7%")
    expect(tile("completion_rate")).to_have_text("33.3%")
    expect(tile("flowback_rate")).to_have_text("0.0%")
    expect(tile("sat_hotline")).to_have_text("100.0%")
    expect(tile("sat_110")).to_have_text("—")  # no follow-up: no rate, not 0%
    expect(page.locator('#stats-tiles .tile[data-key="diversion_rate"] .tile-sub')).to_have_text("3 / 4")

    # the trend: one point per day of the range, today's being the five calls
    chart = page.locator("#stats-chart svg.line-chart")
    expect(chart).to_be_visible()
    expect(page.locator("#stats-chart .series-calls circle.point")).to_have_count(30)
    expect(page.locator("#stats-chart .series-calls path.line")).to_have_attribute("d", _polyline(30))
    assert page.locator("#stats-chart .series-calls circle.point title").last.text_content().endswith("接警：5")
    assert page.locator("#stats-chart .series-diverted circle.point title").last.text_content().endswith("已分流：3")
    # bars and the actions table
    expect(page.locator("#stats-by-category .bar-row")).not_to_have_count(0)
    expect(page.locator('#stats-actions tr[data-action="accepted"] td').nth(1)).to_have_text("3")
    expect(page.locator('#stats-actions tr[data-action="kept"] td').nth(1)).to_have_text("1")
    expect(page.locator('#stats-actions tr[data-action="police"] td').nth(1)).to_have_text("1")

    # the range the page shows is the one the export links carry
    day_from = page.input_value("#stats-range input[name=from]")
    day_to = page.input_value("#stats-range input[name=to]")
    assert day_from and day_to
    assert f"from={day_from}" in (page.get_attribute("#export-csv", "href") or "")
    with page.expect_download() as info:
        page.click("#export-csv")
    download = info.value
    assert download.suggested_filename == f"fenliu-{day_from}-{day_to}.csv"
    text = Path(download.path()).read_text(encoding="utf-8-sig")
    assert "分流率" in text and "75.0%" in text
    with page.expect_download() as info:
        page.click("#export-xlsx")
    assert Path(info.value.path()).read_bytes()[:2] == b"PK"  # a zip: an .xlsx workbook
    assert not errors, errors


def _polyline(points: int):
    """The `d` of a path through ``points`` points: one move, then a line to each other point."""
    import re

    num = r"-?\d+(?:\.\d+)?"
    return re.compile(rf"^M{num} {num}(?: L{num} {num}){{{points - 1}}}$")


def test_a_returned_order_raises_a_live_alert_that_is_acknowledged(env, browser):
    from playwright.sync_api import expect

    env.divert("d1", "13700000011")
    env.divert("d0", "13700000010")
    env.on_loop(lambda: env.store.add_followup("d0", "110", 3, "sms", note="接警员态度不好"))  # an open alert already
    page, errors = open_console(browser, env.url, "boss")
    expect(page.locator("#alert-count")).to_have_text("1")
    page.click("#tab-alerts")
    expect(page.locator('#alerts-list li[data-kind="unsatisfied"]')).to_have_count(1)

    # the hotline returns the order while the page is open: the alert comes over the stream
    no = env.order_no("d1")
    env.on_loop(lambda: env.store.order_status(no, "returned", time.time(), "platform:12345",
                                               {"note": "不属于本热线受理范围"}))
    item = page.locator('#alerts-list li[data-kind="order_returned"]')
    expect(item).to_contain_text("工单被退回")
    expect(item).to_contain_text(no)
    expect(page.locator("#alert-count")).to_have_text("2")

    item.locator(".ack-btn").click()
    expect(item).to_have_count(0)
    expect(page.locator("#alert-count")).to_have_text("1")
    answer = page.request.get(f"{env.url}api/alerts?all=1").json()["alerts"]
    returned = next(a for a in answer if a["kind"] == "order_returned")
    assert returned["order_no"] == no and returned["acked_by"] == "boss" and returned["acked_at"]
    assert next(a for a in answer if a["kind"] == "unsatisfied")["acked_at"] is None
    assert ("boss", "alert_ack") in [(a["user"], a["action"]) for a in env.store.audit_log()]
    assert not errors, errors


def test_a_repeat_caller_is_flagged_before_the_operator_decides(env, browser):
    from playwright.sync_api import expect

    env.divert("earlier", "13912345678")  # diverted to 12345 a moment ago, about noise
    page, errors = open_console(browser, env.url, "op1")
    env.bus.publish(WorkerFact("w0", P.CallStarted("again", 0, "<sip:13912345678@10.0.0.1>", "<sip:110@fenliu>")))
    expect(page.locator('#calls li[data-call-id="again"]')).to_be_visible()
    banner = page.locator("#repeat-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("重复来电")
    expect(banner).to_contain_text("第 2 次来电")
    expect(banner).not_to_have_attribute("data-same-matter", "1")
    expect(page.locator('#calls li[data-call-id="again"] .badge.repeat')).to_be_visible()
    assert page.get_attribute("#card", "data-target") == ""  # no decision yet: the operator has not been told where

    # the router names the same matter: the banner says the matter came back
    d = env.router.decide(NOISE)
    assert d.target == "12345"
    env.bus.publish(CallEvent("again", "caller", "w0", replace(d, call_id="again")))
    expect(page.locator('#repeat-banner[data-same-matter="1"]')).to_contain_text("同一事项回流")
    expect(banner).to_contain_text("重复来电")  # the repeat line stays
    expect(page.locator('#card[data-target="12345"]')).to_be_visible()
    expect(page.locator('#calls li[data-call-id="again"] .badge.flowback')).to_be_visible()
    assert not errors, errors


def test_orders_tab_and_the_history_loop_with_a_follow_up(env, browser):
    from playwright.sync_api import expect

    env.divert("d1", "13700000021")
    no = env.order_no("d1")
    page, errors = open_console(browser, env.url, "boss")

    # 工单: the order with its status; its detail with the trail; 重发 refused (no platform URL)
    page.click("#tab-orders")
    row = page.locator(f'#orders-table tr[data-order-no="{no}"]')
    expect(row.locator(".status-badge")).to_have_text("待人工转交")
    row.click()
    expect(page.locator('#order-trail li[data-status="local"]')).to_be_visible()
    page.click("#order-retry")
    expect(page.locator("#order-detail .error-text")).to_contain_text("不能重发")
    page.select_option("#orders-filter select[name=status]", "completed")
    expect(page.locator("#orders-status")).to_have_text("没有符合条件的工单")
    expect(row).to_have_count(0)

    # 历史 → the call → 闭环: the order, the guidance SMS (not sent: no gateway), no follow-up yet
    page.click("#tab-history")
    page.locator('#history-results tr[data-call-id="d1"]').click()
    loop = page.locator("#history-detail #loop")
    expect(loop.locator(".loop-order")).to_contain_text(no)
    expect(loop.locator(".loop-order .trail li")).to_have_count(1)
    sms = loop.locator('.loop-sms li[data-purpose="guidance"]')
    expect(sms).to_contain_text("办理指引")
    expect(sms).to_contain_text("未配置短信网关")
    expect(loop.locator(".loop-no-followups")).to_be_visible()

    # a supervisor records a follow-up: it is listed, and the API has it
    form = loop.locator("#followup-form")
    form.locator("select[name=side]").select_option("hotline")
    form.locator("select[name=score]").select_option("2")
    form.locator("input[name=note]").fill("已电话回访，问题已解决")
    form.locator("button[type=submit]").click()
    item = loop.locator('.loop-followups li[data-side="hotline"]')
    expect(item).to_contain_text("基本满意")
    expect(item).to_contain_text("boss")
    got = page.request.get(f"{env.url}api/calls/d1/loop").json()["followups"]
    assert [(f["side"], f["score"], f["by_user"], f["note"]) for f in got] == \
        [("hotline", 2, "boss", "已电话回访，问题已解决")]
    assert not errors, errors


def test_an_operator_does_not_see_the_supervisor_tabs(env, browser):
    from playwright.sync_api import expect

    env.divert("d1", "13700000031")
    page, errors = open_console(browser, env.url, "op1")
    expect(page.locator("#tab-history")).to_be_visible()
    for tab in ("stats", "orders", "alerts", "leads"):
        expect(page.locator(f"#tab-{tab}")).to_be_hidden()
    page.keyboard.press("Alt+3")  # the supervisors' shortcut does nothing here …
    page.keyboard.press("Alt+2")  # … and the next one still works
    expect(page.locator("#history")).to_be_visible()
    expect(page.locator("#page-stats")).to_be_hidden()
    # the operator's history detail shows the 闭环 section without the supervisors' form
    page.locator('#history-results tr[data-call-id="d1"]').click()
    expect(page.locator("#history-detail #loop .loop-sms li")).to_have_count(1)
    expect(page.locator("#followup-form")).to_have_count(0)
    assert page.request.get(f"{env.url}api/stats").status == 403  # and the server refuses anyway
    assert not errors, errors
