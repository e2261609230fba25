"""The loop's HTTP side on the real console app: signed webhooks from the platform and the SMS
gateway (Standard Webhooks HMAC), orders, alerts and follow-ups for supervisors, masking."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from fenliu.bus import EventBus
from fenliu.console.server import Console
from fenliu.hotlines.signing import sign
from fenliu.loop.followthrough import FollowThrough
from fenliu.service.supervisor import Supervisor
from fenliu.store.record import Store
from tests.console.api_env import PASSWORD, login
from tests.loop.loop_env import PLATFORM_SECRET_ENV, SMS_SECRET_ENV, divert, loop_settings

SECRET = "platform-secret-110"


@pytest.fixture
async def env(tmp_path, router, aiohttp_client, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv(PLATFORM_SECRET_ENV, SECRET)
    monkeypatch.setenv(SMS_SECRET_ENV, "sms-secret")
    url = f"sqlite:///{tmp_path}/api.db"
    s = loop_settings(url, platform="http://127.0.0.1:9", sms="http://127.0.0.1:9")
    bus = EventBus(asyncio.get_running_loop())
    store = Store(url, settings=s)
    bus.subscribe(store.record)
    sup = Supervisor(s, router, None, bus)
    console = Console(s, sup, store)
    bus.subscribe(FollowThrough(store, 7, console.feed.note))
    console.accounts.add_user("boss", "supervisor", PASSWORD)
    console.accounts.add_user("op1", "operator", PASSWORD)
    client = await aiohttp_client(console.app)
    divert(store, router, "c1")
    yield {"client": client, "store": store, "console": console, "router": router}
    store.close()


def signed(payload: dict[str, Any], secret: str = SECRET, msg_id: str = "msg-1", ts: int | None = None) -> dict:
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = sign(secret.encode(), msg_id, int(time.time()) if ts is None else ts, body)
    return {"data": body, "headers": {**headers, "Content-Type": "application/json"}}


async def test_platform_reports_status_with_a_valid_signature_only(env):
    client, store = env["client"], env["store"]
    no = store.orders()[0]["order_no"]
    r = await client.post("/api/hooks/platform/12345", **signed({"order_no": no, "status": "派遣"}))
    assert r.status == 200, await r.text()
    assert (await r.json())["status"] == "dispatched" and store.orders()[0]["status"] == "dispatched"
    # the same delivery again (platforms retry): acknowledged, not applied twice
    r = await client.post("/api/hooks/platform/12345", **signed({"order_no": no, "status": "派遣"}))
    assert (await r.json())["duplicate"] is True
    assert len([t for t in store.order(no)["trail"] if t["status"] == "dispatched"]) == 1
    for bad, why in ((signed({"order_no": no, "status": "办结"}, secret="wrong", msg_id="m2"), "signature"),
                     (signed({"order_no": no, "status": "办结"}, msg_id="m3", ts=int(time.time()) - 600), "300"),
                     ({"data": b"{}", "headers": {"Content-Type": "application/json"}}, "missing")):
        r = await client.post("/api/hooks/platform/12345", **bad)
        assert r.status == 401 and why in (await r.json())["error"]
    assert store.orders()[0]["status"] == "dispatched"  # nothing unsigned got through
    r = await client.post("/api/hooks/platform/12345", **signed({"order_no": no, "status": "挂起"}, msg_id="m4"))
    assert r.status == 422 and "status_map" in (await r.json())["error"]
    r = await client.post("/api/hooks/platform/12345", **signed({"order_no": "GD0", "status": "办结"}, msg_id="m5"))
    assert r.status == 404
    r = await client.post("/api/hooks/platform/nowhere", **signed({"order_no": no, "status": "办结"}, msg_id="m6"))
    assert r.status == 404


async def test_completion_asks_the_caller_and_the_reply_becomes_a_follow_up(env):
    client, store = env["client"], env["store"]
    no = store.orders()[0]["order_no"]
    r = await client.post("/api/hooks/platform/12345", **signed({"order_no": no, "status": "办结",
                                                                 "note": "已责令整改"}, msg_id="a1"))
    assert r.status == 200
    assert [m["purpose"] for m in store.call_loop("c1")["sms"]] == ["guidance", "followup"]
    r = await client.post("/api/hooks/sms", **signed({"from": "13812345678", "text": "1"}, secret="sms-secret",
                                                     msg_id="r1"))
    assert (await r.json()) == {"ok": True, "placed": True, "followup": 1, "call_id": "c1", "side": "hotline",
                                "score": 1}
    r = await client.post("/api/hooks/sms", **signed({"from": "13812345678", "text": "谢谢你们"},
                                                     secret="sms-secret", msg_id="r2"))
    assert (await r.json())["placed"] is False
    assert [(f["side"], f["score"]) for f in store.call_loop("c1")["followups"]] == [("hotline", 1)]


async def test_a_returned_order_alerts_supervisors_live_and_is_acked(env):
    client, store, feed = env["client"], env["store"], env["console"].feed
    no = store.orders()[0]["order_no"]
    before = feed.last_id
    r = await client.post("/api/hooks/platform/12345", **signed({"order_no": no, "status": "退回",
                                                                 "note": "非本单位职责"}, msg_id="x1"))
    assert r.status == 200
    alerts = [e for e in feed.ring if e["id"] > before and e["kind"] == "alert"]
    assert len(alerts) == 1 and "非本单位职责" in alerts[0]["data"]["message"]
    await login(client, "op1")
    r = await client.get("/api/alerts")
    assert r.status == 403  # operators do not see the supervisors' alerts
    await client.post("/api/logout", headers={"X-CSRF-Token": ""})
    client.session.cookie_jar.clear()
    csrf = await login(client, "boss")
    got = (await (await client.get("/api/alerts")).json())["alerts"]
    assert [a["kind"] for a in got] == ["order_returned"]
    r = await client.post(f"/api/alerts/{got[0]['id']}/ack", headers={"X-CSRF-Token": csrf})
    assert r.status == 200
    acked = [e for e in feed.ring if e["kind"] == "alert_acked"]  # other supervisors' consoles follow
    assert len(acked) == 1 and acked[0]["data"] == {"id": got[0]["id"], "by": "boss"}
    assert (await (await client.get("/api/alerts")).json())["alerts"] == []
    assert store.audit_log(action="alert_ack")[0]["user"] == "boss"


async def test_orders_follow_ups_and_masking(env):
    client, store = env["client"], env["store"]
    await login(client, "op1")  # operators see a call's loop, with the number masked
    loop = await (await client.get("/api/calls/c1/loop")).json()
    assert loop["order"]["number"] == "138****5678" and loop["sms"][0]["number"] == "138****5678"
    assert [t["status"] for t in loop["order"]["trail"]] == ["queued"]
    assert (await client.get("/api/orders")).status == 403
    client.session.cookie_jar.clear()
    csrf = await login(client, "boss")  # supervisors see full numbers (as in the live view)
    orders = (await (await client.get("/api/orders")).json())["orders"]
    assert orders[0]["number"] == "13812345678" and orders[0]["status"] == "queued"
    detail = await (await client.get(f"/api/orders/{orders[0]['order_no']}")).json()
    assert detail["body"]["caller"] == "13812345678" and detail["trail"][0]["status"] == "queued"
    r = await client.post("/api/calls/c1/followups", json={"side": "110", "score": 3, "note": "等太久"},
                          headers={"X-CSRF-Token": csrf})
    assert r.status == 201
    loop = await (await client.get("/api/calls/c1/loop")).json()
    assert [(f["side"], f["score"], f["by_user"]) for f in loop["followups"]] == [("110", 3, "boss")]
    assert store.alerts()[0]["kind"] == "unsatisfied"
    for bad in ({"side": "x", "score": 1}, {"side": "110", "score": 4}, {"side": "110", "score": True}):
        r = await client.post("/api/calls/c1/followups", json=bad, headers={"X-CSRF-Token": csrf})
        assert r.status == 400
    r = await client.post("/api/orders/" + orders[0]["order_no"] + "/retry", headers={"X-CSRF-Token": csrf})
    assert r.status == 409  # queued, not failed: nothing to retry


async def test_webhook_without_a_configured_secret_is_refused(env, monkeypatch):
    monkeypatch.delenv(PLATFORM_SECRET_ENV)
    no = env["store"].orders()[0]["order_no"]
    r = await env["client"].post("/api/hooks/platform/12345", **signed({"order_no": no, "status": "办结"}))
    assert r.status == 503 and PLATFORM_SECRET_ENV in (await r.json())["error"]


@pytest.fixture
async def two_platforms(tmp_path, router, aiohttp_client, monkeypatch):  # type: ignore[no-untyped-def]
    """12345 and 12348, each with its own secret; one 12345 order (call c1)."""
    from dataclasses import replace

    from fenliu.settings import PlatformSettings

    monkeypatch.setenv(PLATFORM_SECRET_ENV, SECRET)
    monkeypatch.setenv("FENLIU_TEST_12348_SECRET", "legal-aid-secret")
    url = f"sqlite:///{tmp_path}/api.db"
    s = loop_settings(url, platform="http://127.0.0.1:9", sms="http://127.0.0.1:9")
    s = replace(s, platforms={**s.platforms, "12348": PlatformSettings(url="http://127.0.0.1:9/legal",
                                                                      secret_env="FENLIU_TEST_12348_SECRET")})
    bus = EventBus(asyncio.get_running_loop())
    store = Store(url, settings=s)
    bus.subscribe(store.record)
    console = Console(s, Supervisor(s, router, None, bus), store)
    console.accounts.add_user("boss", "supervisor", PASSWORD)
    client = await aiohttp_client(console.app)
    divert(store, router, "c1")
    yield {"client": client, "store": store}
    store.close()


async def test_a_platform_touches_only_its_own_orders(two_platforms):
    """12348's valid signature on a 12345 order: answered exactly like an unknown order, audited,
    nothing changes and nobody is alerted."""
    client, store = two_platforms["client"], two_platforms["store"]
    no = store.orders()[0]["order_no"]
    assert store.orders()[0]["platform"] == "12345"
    before = store.order(no)
    foreign = await client.post("/api/hooks/platform/12348", **signed({"order_no": no, "status": "退回"},
                                                                      secret="legal-aid-secret", msg_id="f1"))
    unknown = await client.post("/api/hooks/platform/12348", **signed({"order_no": "GD-none", "status": "退回"},
                                                                      secret="legal-aid-secret", msg_id="f2"))
    assert foreign.status == unknown.status == 404
    assert (await foreign.json())["code"] == (await unknown.json())["code"] == "no_such_order"
    after = store.order(no)
    assert after["status"] == before["status"] and after["trail"] == before["trail"]  # not even in its trail
    assert store.alerts() == []
    audit = store.audit_log(action="webhook_foreign_order")
    assert len(audit) == 1 and audit[0]["user"] == "platform:12348" and audit[0]["detail"]["owner"] == "12345"
    # its own platform still reaches it
    r = await client.post("/api/hooks/platform/12345", **signed({"order_no": no, "status": "受理"}, msg_id="o1"))
    assert r.status == 200 and (await r.json())["applied"] is True


async def test_order_status_only_moves_forward_and_late_reports_stay_in_the_trail(two_platforms):
    client, store = two_platforms["client"], two_platforms["store"]
    no = store.orders()[0]["order_no"]
    for i, word in enumerate(("受理", "派遣", "办结")):
        r = await client.post("/api/hooks/platform/12345", **signed({"order_no": no, "status": word}, msg_id=f"s{i}"))
        assert (await r.json())["applied"] is True
    for i, word in enumerate(("受理", "派遣", "退回")):  # late, out of order, after completion
        r = await client.post("/api/hooks/platform/12345", **signed({"order_no": no, "status": word}, msg_id=f"l{i}"))
        assert r.status == 200  # acknowledged: the platform need not retry
        assert await r.json() == {"ok": True, "order_no": no, "status": "completed", "applied": False}
    assert store.order(no)["status"] == "completed"
    late = [t for t in store.order(no)["trail"] if t["detail"].get("ignored")]
    assert [t["status"] for t in late] == ["accepted", "dispatched", "returned"]
    assert store.alerts() == []  # a late 退回 after 办结 raises no alert


async def test_a_returned_order_is_resent_corrected_by_a_supervisor_as_a_new_delivery(two_platforms):
    client, store = two_platforms["client"], two_platforms["store"]
    no = store.orders()[0]["order_no"]
    r = await client.post("/api/hooks/platform/12345", **signed({"order_no": no, "status": "退回",
                                                                 "note": "地址不详"}, msg_id="x1"))
    assert (await r.json())["applied"] is True and store.order(no)["status"] == "returned"
    csrf = {"X-CSRF-Token": await login(client, "boss")}
    r = await client.post(f"/api/orders/{no}/retry", json={}, headers=csrf)
    assert r.status == 400 and "更正说明" in (await r.json())["error"]  # not without saying what was corrected
    r = await client.post(f"/api/orders/{no}/retry", json={"note": "地址已核实：XX路12号"}, headers=csrf)
    assert r.status == 200, await r.text()
    order = store.order(no)
    assert order["status"] == "queued" and order["body"]["correction"] == "地址已核实：XX路12号"
    keys = [row["idem_key"] for row in store.db.rows("SELECT idem_key FROM outbox WHERE kind='order' ORDER BY id")]
    assert keys == [f"order:{no}", f"order:{no}:resend-1"]  # a new delivery, not a retry of the returned one
    assert order["trail"][-1]["source"] == "resend" and order["trail"][-1]["detail"]["by"] == "boss"
    # the platform takes it again: its reports apply to the resent order
    r = await client.post("/api/hooks/platform/12345", **signed({"order_no": no, "status": "受理"}, msg_id="x2"))
    assert (await r.json())["applied"] is True
