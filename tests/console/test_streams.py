"""Event streams end with their session or token (``fenliu.console.streams``): logout, idle
expiry, a revoked token, a password or role change, a disabled account — on this instance or
another one on the same store — close every stream they opened, with close code 4401 and the
reason; streams per session are capped. Each test first proves the stream is live (a call
event arrives), then changes the credential and waits for the close."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import aiohttp
import pytest

from fenliu.console.server import Console
from fenliu.console.streams import STREAM_ENDED
from tests.console.test_api_security import error_of, logged_in, receive_until


async def live_stream(env: Any, ws: aiohttp.ClientWebSocketResponse, call_id: str) -> None:
    """The stream is open and delivering: a call started now reaches it."""
    await receive_until(ws, lambda e: e["kind"] == "hello")
    env.start_call(call_id)
    await receive_until(ws, lambda e: e["kind"] == "call_started" and e["call_id"] == call_id)


async def closed_with(ws: aiohttp.ClientWebSocketResponse, reason: str) -> None:
    """The server closes the stream for ``reason``; no call event comes before the close."""
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                assert '"call_started"' not in msg.data, f"an event after the credential ended: {msg.data[:200]}"
                continue
            break
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING), msg
    assert ws.close_code == STREAM_ENDED, (ws.close_code, msg)
    assert msg.extra == reason, msg


async def test_logout_closes_the_sessions_streams_and_no_other(env):
    csrf = await logged_in(env, "op1")
    mine = await env.client.ws_connect("/api/events")
    await live_stream(env, mine, "c1")
    token = env.token("boss")
    other = await env.client.ws_connect("/api/events", headers={"Authorization": f"Bearer {token}"})
    await receive_until(other, lambda e: e["kind"] == "hello")
    r = await env.client.post("/api/logout", json={}, headers=csrf)
    assert r.status == 200
    env.start_call("c2")
    await closed_with(mine, "logged_out")
    await receive_until(other, lambda e: e["kind"] == "call_started" and e["call_id"] == "c2")  # untouched
    await other.close()


async def test_a_revoked_token_closes_its_streams(env):
    token = env.token("boss")
    ws = await env.client.ws_connect("/api/events", headers={"Authorization": f"Bearer {token}"})
    await live_stream(env, ws, "c1")
    assert env.store.revoke_token("t-boss") == 1  # as `fenliu token revoke t-boss` does
    await closed_with(ws, "token_revoked")
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await env.client.ws_connect("/api/events", headers={"Authorization": f"Bearer {token}"})
    assert e.value.status == 401


async def test_a_password_change_closes_the_users_session_streams(env):
    await logged_in(env, "op1")
    ws = await env.client.ws_connect("/api/events")
    await live_stream(env, ws, "c1")
    env.console.accounts.set_password("op1", "another password 110")  # as `fenliu user passwd op1`
    await closed_with(ws, "session_ended")


async def test_a_role_change_and_a_disabled_account_close_token_streams(env):
    token = env.token("boss")
    ws = await env.client.ws_connect("/api/events", headers={"Authorization": f"Bearer {token}"})
    await live_stream(env, ws, "c1")
    assert env.store.set_user("boss", role="operator")  # `fenliu user role boss operator`
    await closed_with(ws, "account_changed")  # what it may see was decided for a supervisor
    ws = await env.client.ws_connect("/api/events", headers={"Authorization": f"Bearer {token}"})
    await live_stream(env, ws, "c2")  # as an operator now
    assert env.store.set_user("boss", disabled=True)  # `fenliu user disable boss`
    await closed_with(ws, "account_disabled")
    await error_of(await env.client.get("/api/calls", headers={"Authorization": f"Bearer {token}"}),
                   401, "bad_token")


async def test_an_idle_session_is_closed_without_any_request(env):
    await logged_in(env, "op1")
    ws = await env.client.ws_connect("/api/events")
    await live_stream(env, ws, "c1")
    with sqlite3.connect(env.store.path) as db:  # eight hours and a minute without a request
        db.execute("UPDATE sessions SET last_seen = last_seen - ?", (481 * 60,))
    await closed_with(ws, "session_expired")


async def test_a_logout_on_another_instance_closes_this_instances_stream(env, aiohttp_client):
    """Two instances on one store: the session logged out on B loses its stream on A."""
    b = Console(env.settings, env.sup, env.store)
    client_b = await aiohttp_client(b.app)
    r = await client_b.post("/api/login", json={"username": "op1", "password": "correct horse 110"})
    assert r.status == 200
    csrf = (await r.json())["csrf"]
    cookie = client_b.session.cookie_jar.filter_cookies(client_b.make_url("/"))
    env.client.session.cookie_jar.update_cookies({k: v.value for k, v in cookie.items()},
                                                 env.client.make_url("/"))
    ws = await env.client.ws_connect("/api/events")  # instance A, the same session
    await live_stream(env, ws, "c1")
    r = await client_b.post("/api/logout", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status == 200
    await closed_with(ws, "session_ended")


async def test_streams_per_session_are_capped(open_env):
    env = await open_env(max_streams_per_session=2)
    await logged_in(env, "op1")
    first = await env.client.ws_connect("/api/events")
    second = await env.client.ws_connect("/api/events")
    for ws in (first, second):
        await receive_until(ws, lambda e: e["kind"] == "hello")
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await env.client.ws_connect("/api/events")
    assert e.value.status == 429
    await first.close()
    async with asyncio.timeout(10):  # the server sees the close, and a stream may open again
        while True:
            try:
                third = await env.client.ws_connect("/api/events")
                break
            except aiohttp.WSServerHandshakeError as refused:
                assert refused.status == 429
                await asyncio.sleep(0.05)
    await live_stream(env, third, "c1")
    await third.close()
    await second.close()
