"""The centre view (issue 20): two instances' consoles on one real PostgreSQL store share one live
view. A lists B's call and presses its key, which B runs and answers; the event stream and its
resume span instances and a restart; a key for a call whose instance is gone is 503 at once.

Each instance is the real console app on its own bus with a real (not started) supervisor, as in
the other API tests; the carrying between them is the real thing: PostgreSQL rows, NOTIFY, the
instances' heartbeats. The same with two real `fenliu serve` processes and SIP calls is in
tests/sip/test_centre_instances.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from fenliu.bus import CallEvent, WorkerFact
from fenliu.events import Decision
from fenliu.sip import protocol as P
from tests.console.api_env import PASSWORD, ApiEnv
from tests.console.conftest import close
from tests.console.test_api_security import error_of, live_call

pytestmark = pytest.mark.usefixtures("cheap_hashes")  # (tests/console/conftest.py)


async def session(e: ApiEnv, user: str) -> aiohttp.ClientSession:
    s = aiohttp.ClientSession(base_url=str(e.client.make_url("/")),  # type: ignore[attr-defined]
                              cookie_jar=aiohttp.CookieJar(unsafe=True))
    r = await s.post("/api/login", json={"username": user, "password": PASSWORD})
    assert r.status == 200, await r.text()
    s.headers["X-CSRF-Token"] = (await r.json())["csrf"]
    return s


async def until(pred: Any, what: str, within: float = 10.0) -> Any:
    """Waits for ``pred()`` (sync or async) to be true-ish; returns its value."""
    deadline = time.monotonic() + within
    while True:
        got = pred()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {within} s: {what}"
        await asyncio.sleep(0.02)


async def next_event(ws: aiohttp.ClientWebSocketResponse, pred: Any) -> dict[str, Any]:
    async with asyncio.timeout(10.0):
        while True:
            env = await ws.receive_json()
            if pred(env):
                return env


USERS = (("op1", "operator", ""), ("boss", "supervisor", ""))


async def calls_of(s: aiohttp.ClientSession) -> list[dict[str, Any]]:
    r = await s.get("/api/calls")
    assert r.status == 200, await r.text()
    return list((await r.json())["calls"])


async def test_a_lists_bs_call_and_its_key_runs_on_b(centre):
    a, b = await centre("A", USERS), await centre("B")
    boss = await session(a, "boss")
    try:
        link = await live_call(b, "call-on-b")
        listed = await until(lambda: calls_of(boss), "B's call listed on A")
        assert [(c["call_id"], c["instance"], c["instance_up"]) for c in listed] == [("call-on-b", "B", True)]
        health = await (await boss.get("/api/health")).json()  # a supervisor sees the centre's instances
        assert health["centre"]["instance"] == "A" and "A" in health["centre"]["peers"]
        assert listed[0]["remote"] == "<sip:13812345678@pbx>"  # a supervisor sees the number in full …
        op = await session(a, "op1")
        try:  # … an operator masked, as for a call of their own instance
            assert [c["remote"] for c in await calls_of(op)] == ["<sip:138****5678@pbx>"]
        finally:
            await op.close()

        # the key on A, for B's call: B's supervisor gets the transfer, and the outcome comes back to A
        press = asyncio.ensure_future(boss.post("/api/calls/call-on-b/transfer", json={"target": "12345", "wait": 10}))
        sent = await until(lambda: [m for m in link.sent if isinstance(m, P.Transfer)], "the transfer reached B")
        assert sent[0].target == b.settings.transfer.targets["12345"]
        b.publish(WorkerFact("w0", P.TransferUpdate("call-on-b", P.TransferStep.BRIDGED, sent[0].target, "three-way")))
        r = await press
        body = await r.json()
        assert r.status == 200, body
        assert (body["status"], body["instance"], body["call_id"]) == ("transfer_bridged", "B", "call-on-b")
        # B audited it, with the instance it came from
        rows = [x for x in b.store.audit_log(50) if x["action"] == "transfer"]
        assert rows and rows[0]["user"] == "boss" and rows[0]["outcome"] == "transfer_bridged"
        assert '"via": "A"' in str(rows[0]["detail"]) or "'via': 'A'" in str(rows[0]["detail"])

        # a refusal on B comes back as B's answer (a raw address nobody allowed)
        r = await boss.post("/api/calls/call-on-b/transfer", json={"target": "sip:x@evil.example"})
        await error_of(r, 403, "target_not_allowed")
    finally:
        await boss.close()


async def test_the_stream_spans_instances_and_resumes_after_a_restart(centre):
    a, b = await centre("A", USERS), await centre("B")
    boss = await session(a, "boss")
    try:
        ws = await boss.ws_connect("/api/events")
        hello = await next_event(ws, lambda e: e["kind"] == "hello")
        await live_call(b, "c-span")
        started = await next_event(ws, lambda e: e["kind"] == "call_started")
        assert (started["call_id"], started["instance"]) == ("c-span", "B")
        b.publish(CallEvent("c-span", "caller", "w0", Decision("c-span", 1, "12345", "noise", "噪音扰民", 0.9,
                                                               (), (), False, "test")))
        decision = await next_event(ws, lambda e: e["kind"] == "decision")
        assert decision["id"] > started["id"] > hello["id"]
        await ws.close()

        # A restarts (a new process: a new feed, the store's rows loaded); a client resumes from
        # the call_started it saw and gets exactly what followed, B's decision first
        await close(a)
        a2 = await centre("A")
        boss2 = await session(a2, "boss")
        try:
            ws = await boss2.ws_connect(f"/api/events?since={started['id']}&server={hello['data']['server']}")
            again = await next_event(ws, lambda e: e["kind"] == "hello")
            assert again["data"]["resumed"] is True
            first = await next_event(ws, lambda e: True)
            assert (first["id"], first["kind"]) == (decision["id"], "decision")
            assert [c["call_id"] for c in await calls_of(boss2)] == ["c-span"]  # the live view survived
            await ws.close()
        finally:
            await boss2.close()
    finally:
        await boss.close()


async def test_a_key_for_a_gone_instance_is_503_at_once(centre):
    a, b = await centre("A", USERS), await centre("B")
    boss = await session(a, "boss")
    try:
        await live_call(b, "c-orphan")
        await until(lambda: calls_of(boss), "B's call listed on A")
        a.console.centre.store = None  # (A does not release B's calls here: tests/console/test_lost_instance.py)
        b.console.centre._beat = lambda: None  # B's heartbeats stop, as when it dies: its last one ages
        a.store.db.execute("UPDATE instances SET seen = seen - 60 WHERE name = 'B'")
        await until(lambda: a.console.centre.peers.get("B", 0) > 3, "A sees B's heartbeat stop")
        listed = await calls_of(boss)
        assert [(c["call_id"], c["instance_up"]) for c in listed] == [("c-orphan", False)]
        t0 = time.monotonic()
        r = await boss.post("/api/calls/c-orphan/hangup", json={"wait": 10})
        message = await error_of(r, 503, "instance_unavailable")
        assert "B" in message and time.monotonic() - t0 < 5  # said at once, not after the wait
    finally:
        await boss.close()


async def test_a_command_nobody_takes_is_withdrawn_and_never_runs_late(centre):
    a, b = await centre("A", USERS), await centre("B")
    boss = await session(a, "boss")
    try:
        link = await live_call(b, "c-stuck")
        await until(lambda: calls_of(boss), "B's call listed on A")
        b_centre = b.console.centre
        b_centre._commands = lambda: None  # B is alive (it beats) but stuck: it claims no command
        r = await boss.post("/api/calls/c-stuck/hangup", json={"wait": 0})
        await error_of(r, 503, "instance_unavailable")
        assert a.store.db.scalar("SELECT state FROM centre_commands WHERE call_id = 'c-stuck'") == "expired"
        del b_centre._commands  # B recovers: the next key runs, the withdrawn one never does
        r = await boss.post("/api/calls/c-stuck/hangup", json={"wait": 0})
        assert r.status == 202, await r.text()
        assert len([m for m in link.sent if isinstance(m, P.Hangup)]) == 1
    finally:
        await boss.close()


async def test_seats_see_only_their_calls_across_instances(centre):
    users = (("op1001", "operator", "1001"), ("op1002", "operator", "1002"), ("boss", "supervisor", ""))
    acd = "sip:queue@acd.example:5060"  # both instances dial the ACD's queue; it says which seat answered
    a, b = await centre("A", users, acd), await centre("B", (), acd)
    s1, s2 = await session(a, "op1001"), await session(a, "op1002")
    try:
        await live_call(b, "c-1001", slot=0)
        await live_call(b, "c-1002", slot=1)
        b.publish(WorkerFact("w0", P.SeatAnswered("c-1001", "1001", "p-asserted-identity")))
        b.publish(WorkerFact("w0", P.SeatAnswered("c-1002", "1002", "p-asserted-identity")))
        got1 = await until(lambda: calls_of(s1), "op1001's call on A")
        got2 = await until(lambda: calls_of(s2), "op1002's call on A")
        assert [c["call_id"] for c in got1] == ["c-1001"] and [c["call_id"] for c in got2] == ["c-1002"]
        await error_of(await s1.post("/api/calls/c-1002/hangup", json={}), 404, "no_such_call")
    finally:
        await s1.close()
        await s2.close()


async def test_when_the_store_cannot_take_events_the_instance_numbers_its_own_then_rejoins(centre):
    """Operators keep their cards while the store refuses writes: after a second the instance
    delivers its own events itself; once the store takes them again the other instances get them
    (late, not never) and this instance's streams are told to reconnect (1012) to the store's ids."""
    a, b = await centre("A", USERS), await centre("B")
    boss_a, boss_b = await session(a, "boss"), await session(b, "boss")
    try:
        ws_a, ws_b = await boss_a.ws_connect("/api/events"), await boss_b.ws_connect("/api/events")
        for ws in (ws_a, ws_b):
            await next_event(ws, lambda e: e["kind"] == "hello")
        ca = a.console.centre
        real_flush = ca._flush

        def refused() -> None:
            raise OSError("the store refuses writes (test)")

        ca._flush = refused  # type: ignore[method-assign]
        await live_call(a, "c-outage")
        got = await next_event(ws_a, lambda e: e["kind"] == "call_started")  # A's operator sees it anyway
        assert got["call_id"] == "c-outage" and ca.local_mode
        ca._flush = real_flush  # type: ignore[method-assign]
        closed = await ws_a.receive()  # A's stream: reconnect to the store's numbering
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws_a.close_code == 1012
        late = await next_event(ws_b, lambda e: e["kind"] == "call_started")  # B gets it once stored
        assert (late["call_id"], late["instance"]) == ("c-outage", "A")
        ws_a = await boss_a.ws_connect(f"/api/events?since={got['id']}&server=old")
        hello = await next_event(ws_a, lambda e: e["kind"] == "hello")
        assert hello["data"]["resumed"] is False  # the console reloads its view (GET /api/calls)
        assert [c["call_id"] for c in await calls_of(boss_a)] == ["c-outage"]
        a.publish(WorkerFact("w0", P.CallAnswered("c-outage")))
        answered = await next_event(ws_a, lambda e: e["kind"] == "call_answered")
        assert answered["id"] > hello["id"]
        assert (await next_event(ws_b, lambda e: e["kind"] == "call_answered"))["id"] == answered["id"]
    finally:
        await boss_a.close()
        await boss_b.close()
