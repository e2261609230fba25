"""Centre-wide switches (fenliu.service.controls) through the API: a supervisor stops diversion
suggestions or the IVR's offers for every instance on the store; operators may read, not set;
each change is audited and reaches another instance's consoles within its re-read period."""

from __future__ import annotations

from fenliu.console.server import Console
from tests.console.test_api_security import error_of, logged_in, receive_until


async def test_a_supervisor_pauses_suggestions_for_every_instance(env, aiohttp_client):
    b_sup = type(env.sup)(env.settings, env.sup.router, None, env.bus)  # a second instance on the same store
    b = Console(env.settings, b_sup, env.store)
    client_b = await aiohttp_client(b.app)
    token = env.token("boss")
    ws_b = await client_b.ws_connect("/api/events", headers={"Authorization": f"Bearer {token}"})
    await receive_until(ws_b, lambda e: e["kind"] == "hello")
    assert (await (await client_b.get("/api/controls", headers={"Authorization": f"Bearer {token}"})).json())[
        "suggestions_paused"] is False

    csrf = await logged_in(env, "op1")
    r = await env.client.post("/api/controls", json={"suggestions_paused": True}, headers=csrf)
    await error_of(r, 403, "forbidden_role")  # operators read the switches, supervisors throw them
    env.client.session.cookie_jar.clear()
    csrf = await logged_in(env, "boss")
    for bad in ({}, {"suggestions_paused": "yes"}, {"pause_everything": True}):
        await error_of(await env.client.post("/api/controls", json=bad, headers=csrf), 400, "bad_field")
    r = await env.client.post("/api/controls", json={"suggestions_paused": True}, headers=csrf)
    assert r.status == 200 and (await r.json())["suggestions_paused"] is True and (await r.json())["by"] == "boss"
    assert env.sup.controls.suggestions_paused  # this instance at once

    # the other instance learns it from the store and tells its consoles
    got = await receive_until(ws_b, lambda e: e["kind"] == "centre_controls")
    assert got[-1]["data"]["suggestions_paused"] is True and got[-1]["data"]["by"] == "boss"
    assert b_sup.controls.suggestions_paused and not b_sup.controls.ivr_offers_paused
    audit = env.store.audit_log(action="centre_control")
    assert audit[0]["user"] == "boss" and audit[0]["detail"] == {"suggestions_paused": True}

    r = await env.client.post("/api/controls", json={"suggestions_paused": False, "ivr_offers_paused": True},
                              headers=csrf)
    answer = await r.json()
    assert (answer["suggestions_paused"], answer["ivr_offers_paused"]) == (False, True)
    got = await receive_until(ws_b, lambda e: e["kind"] == "centre_controls")
    assert got[-1]["data"]["ivr_offers_paused"] is True and got[-1]["data"]["suggestions_paused"] is False
    config = await (await env.client.get("/api/config")).json()
    assert config["controls"]["ivr_offers_paused"] is True
    await ws_b.close()
