"""Seats behind an ACD (issue 20): the service dials the ACD's queue (sip.seat_uri), the worker
reports which agent's seat answered each call (SeatAnswered), and from then on each operator's
console and API show that operator the call their seat took — and nobody else's; supervisors see
all; a seat no console user has raises a warning for supervisors. The worker's part (the seat
read from a real 200) is tested in tests/sip/test_pbx_behaviour.py."""

from __future__ import annotations

import aiohttp

from fenliu.bus import WorkerFact
from fenliu.sip import protocol as P
from tests.console.api_env import PASSWORD
from tests.console.test_api_security import end_live_call, error_of, live_call, receive_until


async def session_of(env, user: str) -> aiohttp.ClientSession:
    s = aiohttp.ClientSession(base_url=str(env.client.make_url("/")), cookie_jar=aiohttp.CookieJar(unsafe=True))
    r = await s.post("/api/login", json={"username": user, "password": PASSWORD})
    assert r.status == 200, await r.text()
    return s


async def test_three_seats_three_calls_each_operator_sees_their_own(open_env):
    env = await open_env(seat_uri="sip:queue@acd.example:5060",
                         users=(("op1001", "operator", "1001"), ("op1002", "operator", "1002"),
                                ("op1003", "operator", "1003"), ("boss", "supervisor", "")))
    sessions = {seat: await session_of(env, f"op{seat}") for seat in ("1001", "1002", "1003")}
    boss = await session_of(env, "boss")
    try:
        streams = {seat: await s.ws_connect("/api/events") for seat, s in sessions.items()}
        for ws in streams.values():
            await receive_until(ws, lambda e: e["kind"] == "hello")
        for slot, seat in enumerate(("1001", "1002", "1003")):
            await live_call(env, f"c-{seat}", slot=slot)  # ringing the queue: nobody's yet
        for seat in ("1001", "1002", "1003"):
            env.publish(WorkerFact("w0", P.SeatAnswered(f"c-{seat}", seat, "p-asserted-identity")))
        for seat, ws in streams.items():  # each operator learns of their own call, only
            got = await receive_until(ws, lambda e: e["kind"] == "seat_answered")
            assert [e["call_id"] for e in got if e["kind"] == "seat_answered"] == [f"c-{seat}"]
            calls = (await (await sessions[seat].get("/api/calls")).json())["calls"]
            assert [(c["call_id"], c["seat"]) for c in calls] == [(f"c-{seat}", seat)]
            other = "1002" if seat != "1002" else "1003"
            await error_of(await sessions[seat].get(f"/api/calls/c-{other}"), 404, "no_such_call")
        all_calls = (await (await boss.get("/api/calls")).json())["calls"]
        assert sorted(c["call_id"] for c in all_calls) == ["c-1001", "c-1002", "c-1003"]
        # history follows the answering seat too
        assert [r["call_id"] for r in (await (await sessions["1002"].get("/api/history")).json())["calls"]] \
            == ["c-1002"]
        assert env.store.alerts() == []  # every answering seat has its operator
        for slot, seat in enumerate(("1001", "1002", "1003")):  # the calls end: each stays its operator's
            await end_live_call(env, f"c-{seat}", slot=slot)
        assert (await sessions["1002"].get("/api/calls/c-1002")).status == 200
        await error_of(await sessions["1002"].get("/api/calls/c-1001"), 404, "no_such_call")
        env.console.feed._ended.clear()  # as after a restart: the record's seat decides
        assert (await sessions["1002"].get("/api/calls/c-1002")).status == 200
        await error_of(await sessions["1002"].get("/api/calls/c-1003"), 404, "no_such_call")
        for ws in streams.values():
            await ws.close()
    finally:
        for s in (*sessions.values(), boss):
            await s.close()


async def test_a_seat_no_user_has_is_a_warning_for_supervisors(open_env):
    env = await open_env(seat_uri="sip:queue@acd.example:5060",
                         users=(("op1001", "operator", "1001"), ("boss", "supervisor", "")))
    op = await session_of(env, "op1001")
    try:
        await live_call(env, "c-stranger")
        env.publish(WorkerFact("w0", P.SeatAnswered("c-stranger", "4040", "contact")))
        boss = await session_of(env, "boss")
        try:
            alerts = (await (await boss.get("/api/alerts")).json())["alerts"]
            assert [a["kind"] for a in alerts] == ["seat_unknown"] and "4040" in alerts[0]["message"]
            assert [c["call_id"] for c in (await (await boss.get("/api/calls")).json())["calls"]] == ["c-stranger"]
        finally:
            await boss.close()
        assert (await (await op.get("/api/calls")).json())["calls"] == []  # not op1001's
    finally:
        await op.close()


async def test_a_call_the_acd_moves_follows_to_the_new_seat(open_env):
    env = await open_env(seat_uri="sip:queue@acd.example:5060",
                         users=(("op1001", "operator", "1001"), ("op1002", "operator", "1002")))
    s1, s2 = await session_of(env, "op1001"), await session_of(env, "op1002")
    try:
        await live_call(env, "c-moved")
        env.publish(WorkerFact("w0", P.SeatAnswered("c-moved", "1001", "p-asserted-identity")))
        ws2 = await s2.ws_connect("/api/events")
        await receive_until(ws2, lambda e: e["kind"] == "hello")
        assert [c["call_id"] for c in (await (await s1.get("/api/calls")).json())["calls"]] == ["c-moved"]
        env.publish(WorkerFact("w0", P.SeatAnswered("c-moved", "1002", "p-asserted-identity (re-INVITE)")))
        got = await receive_until(ws2, lambda e: e["kind"] == "seat_answered")  # the new operator learns of it
        assert got[-1]["data"]["seat"] == "1002"
        assert [c["call_id"] for c in (await (await s2.get("/api/calls")).json())["calls"]] == ["c-moved"]
        assert (await (await s1.get("/api/calls")).json())["calls"] == []  # the first one no longer has it
        await error_of(await s1.get("/api/calls/c-moved"), 404, "no_such_call")
        assert env.store.call("c-moved")["seat"] == "1002"  # history follows too
        await ws2.close()
    finally:
        await s1.close()
        await s2.close()
