"""The console's API on the real app: accounts, roles, calls, the event stream."""

import asyncio

import pytest

from fenliu.bus import CallEvent
from fenliu.events import FinalTranscript
from tests.console.api_env import PASSWORD, login, make_env


@pytest.fixture
async def env(tmp_path, router, aiohttp_client):
    e = make_env(tmp_path, router)
    e.add_user("op1", "operator")
    e.add_user("boss", "supervisor")
    e.client = await aiohttp_client(e.console.app)
    yield e
    e.store.close()


async def test_login_session_and_csrf(env):
    c = env.client
    assert (await c.get("/api/calls")).status == 401
    r = await c.post("/api/login", json={"username": "op1", "password": "wrong password"})
    assert r.status == 401 and (await r.json())["code"] == "bad_login"
    csrf = await login(c, "op1")
    cookie = r.cookies  # noqa: F841
    me = await (await c.get("/api/me")).json()
    assert me["user"]["role"] == "operator" and me["csrf"] == csrf
    env.start_call("c1")
    await asyncio.sleep(0)
    no_csrf = await c.post("/api/calls/c1/hangup", json={})
    assert no_csrf.status == 403 and (await no_csrf.json())["code"] == "csrf"
    audit = env.store.audit_log()
    assert [a["action"] for a in audit][:2] == ["login", "login"] and audit[1]["outcome"] == "bad_login"


async def test_operator_sees_masked_numbers_supervisor_full(env):
    env.start_call("c1", "<sip:13812345678@10.0.0.1:5060>")
    env.publish(CallEvent("c1", "caller", "w0", FinalTranscript("c1", 1, "<img src=x onerror=alert(1)>", 0, 1)))
    await asyncio.sleep(0.05)
    await login(env.client, "op1")
    d = await (await env.client.get("/api/calls/c1")).json()
    assert d["call"]["remote"] == "<sip:138****5678@10.0.0.1:5060>"
    assert d["utterances"][0]["text"] == "<img src=x onerror=alert(1)>"  # data, never markup: JSON only
    await env.client.post("/api/logout", headers={"X-CSRF-Token": (await (await env.client.get("/api/me")).json())["csrf"]})
    await login(env.client, "boss")
    d = await (await env.client.get("/api/calls/c1")).json()
    assert d["call"]["remote"] == "<sip:13812345678@10.0.0.1:5060>"


async def test_event_stream_resumes_without_gaps_or_duplicates(env):
    await login(env.client, "op1")
    ws = await env.client.ws_connect("/api/events")
    hello = await ws.receive_json()
    assert hello["kind"] == "hello" and hello["data"]["user"] == "op1"
    env.start_call("c9")
    got = await ws.receive_json(timeout=5)
    assert got["kind"] == "call_started" and got["call_id"] == "c9" and "****" in got["data"]["remote"]
    last = got["id"]
    await ws.close()
    for i in range(3):  # while the console is away
        env.publish(CallEvent("c9", "caller", "w0", FinalTranscript("c9", i, f"第{i}句", 0, 1)))
    await asyncio.sleep(0.05)
    ws = await env.client.ws_connect(f"/api/events?since={last}&server={hello['data']['server']}")
    hello2 = await ws.receive_json()
    assert hello2["data"]["resumed"] is True
    missed = [await ws.receive_json(timeout=5) for _ in range(3)]
    assert [m["data"]["text"] for m in missed] == ["第0句", "第1句", "第2句"]
    assert [m["id"] for m in missed] == [last + 1, last + 2, last + 3]
    env.end_call("c9")
    assert (await ws.receive_json(timeout=5))["id"] == last + 4
    await ws.close()
    ws = await env.client.ws_connect(f"/api/events?since={last}&server=another-run")
    assert (await ws.receive_json())["data"]["resumed"] is False
    await ws.close()


async def test_token_for_machine_clients(env):
    token = env.token("boss")
    r = await env.client.get("/api/calls", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200
    r = await env.client.get("/api/calls", headers={"Authorization": "Bearer flt_nope"})
    assert r.status == 401 and (await r.json())["code"] == "bad_token"
    assert PASSWORD  # the fixture's password is what login() uses


async def test_live_view_folds_the_conversation_state_from_the_events(env):
    from fenliu.bus import WorkerFact
    from fenliu.service.supervisor import CallSession
    from fenliu.sip import protocol as P

    # the supervisor's live session, as its worker link would have opened it
    env.sup.sessions[("w0", 0)] = CallSession("c5", "w0", 0, "<sip:13900001111@pbx>", 0.0)
    env.start_call("c5")
    env.publish(WorkerFact("w0", P.CallAnswered("c5")))
    await login(env.client, "boss")
    await asyncio.sleep(0.05)
    (c,) = (await (await env.client.get("/api/calls")).json())["calls"]
    assert c["state"] == "talking" and c["transfer"] is None
    env.publish(WorkerFact("w0", P.TransferUpdate("c5", P.TransferStep.BRIDGED, "sip:12345@127.0.0.1:5091",
                                                  "three-way")))
    await asyncio.sleep(0.05)
    (c,) = (await (await env.client.get("/api/calls")).json())["calls"]
    assert c["state"] == "three-way" and c["transfer"]["target"] == "12345" and c["transfer"]["step"] == "bridged"


async def test_late_transcripts_of_an_ended_call_do_not_bring_it_back_to_the_live_view(env):
    env.start_call("c7")
    env.end_call("c7")
    env.publish(CallEvent("c7", "caller", "w0", FinalTranscript("c7", 3, "挂断后才识别完的一句", 0, 1)))
    await asyncio.sleep(0.05)
    feed = env.console.feed
    assert feed.ring[-1]["kind"] == "final_transcript"  # still on the stream and in the record
    assert "c7" not in feed.live
