"""The console API's defences, on the real app (docs/api.md): bad bodies, bounded error
messages, foreign Origin / Host, unknown and ended calls, sessions and CSRF, roles, login
throttling, /metrics, the negative-list reload, seats, untrusted transcripts and the OpenAPI
description.

Calls appear the way they do in `fenliu serve`: typed facts published on the event bus, which
the store and the event feed subscribe to. For the keys (transfer, hang up, …) to reach a
worker, the supervisor must also hold the call live: ``live_call`` registers it the way the
worker's CallStarted does and puts a ``RecordingLink`` where the worker's link would be, so a
test can prove what was (or was not) sent to the SIP worker.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fenliu.bus import CallEvent, WorkerFact
from fenliu.console.api import ROUTES
from fenliu.events import FinalTranscript
from fenliu.service.supervisor import CallSession
from fenliu.sip import protocol as P
from tests.conftest import minimal_rules
from tests.console.api_env import PASSWORD, ApiEnv, login

SHIPPED_LIST = Path(__file__).resolve().parents[2] / "fenliu" / "router" / "negative_list.toml"
EVIL = "https://evil.example"


# -- the environment --------------------------------------------------------------------------
class RecordingLink:
    """Stands in for a SIP worker's link: records every command the API sends to the worker."""

    def __init__(self) -> None:
        self.sent: list[P.Command] = []

    def send(self, command: P.Command) -> None:
        self.sent.append(command)

    def request_stop(self) -> None:
        pass

    def stop(self) -> None:
        pass


async def settle() -> None:
    """Let the bus subscribers (store, feed) run."""
    await asyncio.sleep(0.05)


async def live_call(env: ApiEnv, call_id: str, slot: int = 0, remote: str = "<sip:13812345678@pbx>",
                    worker: str = "w0") -> RecordingLink:
    """A call the supervisor holds live (as after its worker's CallStarted), on the bus too."""
    link = env.sup.links.setdefault(worker, RecordingLink())  # type: ignore[arg-type]
    env.sup.sessions[(worker, slot)] = CallSession(call_id, worker, slot, remote, time.time())
    env.publish(WorkerFact(worker, P.CallStarted(call_id, slot, remote)))
    await settle()
    return link  # type: ignore[return-value]


async def end_live_call(env: ApiEnv, call_id: str, slot: int = 0, worker: str = "w0") -> None:
    """The worker reports the call ended (the supervisor's own path: session closed, fact published)."""
    env.sup._on_fact(worker, P.CallEnded(call_id, slot, 200, "BYE"))
    await settle()


def say(env: ApiEnv, call_id: str, text: str, utterance_id: int = 1) -> None:
    env.publish(CallEvent(call_id, "caller", "w0", FinalTranscript(call_id, utterance_id, text, 0.0, 1.0)))


async def logged_in(env: ApiEnv, name: str) -> dict[str, str]:
    """Log ``name`` in on env.client; returns the CSRF header for state-changing requests."""
    return {"X-CSRF-Token": await login(env.client, name)}


def origin_of(env: ApiEnv) -> str:
    return str(env.client.make_url("/").origin()).rstrip("/")


async def error_of(r: aiohttp.ClientResponse, status: int, code: str) -> str:
    """Checks a documented error answer; returns its message."""
    text = await r.text()
    assert r.status == status, f"{r.status} {text[:300]}"
    assert r.content_type == "application/json", text[:300]
    body = json.loads(text)
    assert body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"], body
    return str(body["error"])


async def receive_until(ws: aiohttp.ClientWebSocketResponse, pred: Any) -> list[dict[str, Any]]:
    """Every envelope up to and including the first that matches (within 5 s)."""
    got = []
    async with asyncio.timeout(5.0):
        while True:
            env = await ws.receive_json()
            got.append(env)
            if pred(env):
                return got


async def assert_silent(ws: aiohttp.ClientWebSocketResponse, wait: float = 0.3) -> None:
    """The stream stays open and sends nothing within ``wait`` seconds."""
    with pytest.raises(TimeoutError):
        msg = await ws.receive(timeout=wait)
        pytest.fail(f"expected nothing on the stream, got {msg.type} {str(msg.data)[:200]}")


def audit_actions(env: ApiEnv, action: str) -> list[dict[str, Any]]:
    return env.store.audit_log(1000, action)


# -- 1. bad bodies on a state-changing endpoint --------------------------------------------------
async def test_bad_json_bodies_are_400_with_the_documented_codes(env):
    csrf = await logged_in(env, "boss")
    url = "/api/calls/no-such-call/transfer"
    json_headers = {**csrf, "Content-Type": "application/json"}

    async def post(data: bytes | str, headers: dict[str, str] = json_headers) -> aiohttp.ClientResponse:
        return await env.client.post(url, data=data, headers=headers)

    # the control: a good body reaches the handler, which does not know the call
    await error_of(await post(json.dumps({"target": "12345"})), 404, "no_such_call")
    await error_of(await post('{"target": "12345"}', {**csrf, "Content-Type": "application/json; charset=utf-8"}),
                   404, "no_such_call")

    msg = await error_of(await post('{"target": "12345",'), 400, "bad_json")
    assert "JSON" in msg
    msg = await error_of(await post('["12345"]'), 400, "bad_json")
    assert "object" in msg
    await error_of(await post('"12345"'), 400, "bad_json")
    msg = await error_of(await post(b'{"target": "\xff\xfe12345"}'), 400, "bad_json")
    assert "UTF-8" in msg
    msg = await error_of(await post('{"target": "12345"}', {**csrf, "Content-Type": "text/plain"}), 415,
                         "bad_content_type")
    assert "application/json" in msg
    # what a cross-site HTML form would send
    await error_of(await post("target=12345", {**csrf, "Content-Type": "application/x-www-form-urlencoded"}), 415,
                   "bad_content_type")


async def test_deeply_nested_json_is_400_too_deep_not_a_crash(env):
    csrf = await logged_in(env, "boss")
    url = "/api/calls/no-such-call/transfer"
    n = 100_000
    for doc in ("[" * n + "]" * n,  # 200 KB, under the 256 KB limit
                "[" * n,  # not even closed
                '{"target": "12345", "x": ' + "[" * n + "]" * n + "}"):
        msg = await error_of(await env.client.post(url, data=doc, headers={**csrf, "Content-Type": "application/json"}),
                             400, "too_deep")
        assert "32" in msg
    # the limit is 32 levels: 32 pass (and reach the handler), 33 do not
    ok = '{"target": "12345", "x": ' + "[" * 31 + "]" * 31 + "}"
    await error_of(await env.client.post(url, data=ok, headers={**csrf, "Content-Type": "application/json"}),
                   404, "no_such_call")
    deep = '{"target": "12345", "x": ' + "[" * 32 + "]" * 32 + "}"
    await error_of(await env.client.post(url, data=deep, headers={**csrf, "Content-Type": "application/json"}),
                   400, "too_deep")
    # brackets inside a string are text, not nesting
    in_string = json.dumps({"target": "12345", "note": '\\"' + "[" * 1000})
    await error_of(await env.client.post(url, data=in_string, headers={**csrf, "Content-Type": "application/json"}),
                   404, "no_such_call")
    # and the server is still fine
    assert (await env.client.get("/api/health")).status == 200


async def test_deep_object_nesting_beyond_the_body_limit_is_too_deep(open_env):
    env = await open_env(max_body_kb=4096)
    csrf = await logged_in(env, "boss")
    n = 100_000
    doc = '{"a": ' * n + "1" + "}" * n  # 700 KB of nested objects
    r = await env.client.post("/api/calls/no-such-call/hangup", data=doc, headers={**csrf, "Content-Type": "application/json"})
    await error_of(r, 400, "too_deep")


async def test_body_over_max_body_kb_is_413_too_large(env):
    csrf = await logged_in(env, "boss")
    link = await live_call(env, "c-big")
    body = json.dumps({"target": "12345", "pad": "x" * (300 * 1024)})  # over the default 256 KB
    msg = await error_of(await env.client.post("/api/calls/c-big/transfer", data=body,
                                               headers={**csrf, "Content-Type": "application/json"}), 413, "too_large")
    assert "256 KB" in msg
    assert link.sent == []
    # just under the limit is read (and acted on)
    body = json.dumps({"target": "12345", "pad": "x" * (250 * 1024)})
    r = await env.client.post("/api/calls/c-big/transfer", data=body, headers={**csrf, "Content-Type": "application/json"})
    assert r.status == 202, await r.text()
    assert [type(c) for c in link.sent] == [P.Transfer]


# -- 2. error messages never echo unbounded input ------------------------------------------------
def assert_short(text: str, run: str) -> None:
    assert len(text.encode()) < 1024, f"{len(text)} bytes: {text[:200]}…"
    assert run * 65 not in text, f"echoes more than 64 characters of the input: {text[:300]}"


@pytest.mark.parametrize(("path", "field", "auth"), [
    ("/api/calls/c1/transfer", "target", True),
    ("/api/calls/c1/transfer", "mode", True),
    ("/api/calls/c1/transfer", "wait", True),
    ("/api/login", "username", False),
    ("/api/login", "password", False),
])
async def test_a_megabyte_field_is_refused_with_a_short_message(open_env, path, field, auth):
    env = await open_env(max_body_kb=4096)
    headers = await logged_in(env, "boss") if auth else {}
    body = {"target": "12345", "username": "boss", "password": PASSWORD, field: "A" * (1024 * 1024)}
    r = await env.client.post(path, json=body, headers=headers)
    await error_of(r, 400, "bad_field")
    assert_short(await r.text(), "A")


async def test_unknown_target_message_echoes_at_most_64_characters(env):
    """A target of 65..300 characters passes the length check and is named in the error."""
    csrf = await logged_in(env, "boss")
    await live_call(env, "c1")
    for n in (65, 150, 300):
        r = await env.client.post("/api/calls/c1/transfer", json={"target": "T" * n}, headers=csrf)
        await error_of(r, 400, "bad_field")
        assert_short(await r.text(), "T")


async def test_long_query_path_host_and_origin_values_get_short_json_errors(env):
    """Values that still fit aiohttp's 8 KB line limit reach fenliu: JSON error, ≤ 64 chars echoed."""
    await logged_in(env, "boss")
    long = 7000
    checks = [
        (env.client.get("/api/events?since=" + "9" * long), 400, "bad_field", "9"),
        (env.client.get("/api/history?from=" + "F" * long), 400, "bad_field", "F"),
        (env.client.get("/api/history?q=" + "Q" * long), 400, "bad_field", "Q"),
        (env.client.get("/api/audit?limit=" + "7" * long), 400, "bad_field", "7"),
        (env.client.get("/api/calls/" + "C" * long), 404, "no_such_call", "C"),
        (env.client.get("/api/health", headers={"Host": "h" * long}), 403, "bad_host", "h"),
        (env.client.get("/api/health", headers={"Origin": "http://" + "o" * long}), 403, "bad_origin", "o"),
    ]
    for request, status, code, run in checks:
        r = await request
        await error_of(r, status, code)
        assert_short(await r.text(), run)
    csrf = await login(env.client, "boss")
    r = await env.client.post("/api/calls/" + "C" * long + "/hangup", json={}, headers={"X-CSRF-Token": csrf})
    await error_of(r, 404, "no_such_call")
    assert_short(await r.text(), "C")


async def test_100kb_query_path_host_and_origin_values_get_short_answers(env):
    """Beyond the HTTP parser's line limit the request never reaches fenliu: still a short 400."""
    await logged_in(env, "boss")
    big = 100_000
    for request in (env.client.get("/api/events?since=" + "9" * big),
                    env.client.get("/api/calls/" + "C" * big),
                    env.client.get("/api/health", headers={"Host": "h" * big}),
                    env.client.get("/api/health", headers={"Origin": "http://" + "o" * big})):
        r = await request
        text = await r.text()
        assert r.status == 400, f"{r.status} {text[:200]}"
        assert len(text.encode()) < 1024, text[:200]


async def test_a_bad_negative_list_is_refused_with_a_short_message(open_env, tmp_path):
    """The PUT text is what the client sent: its 422 names file and line, not a 5,000-character pattern."""
    rules = tmp_path / "rules.toml"
    rules.write_text(minimal_rules(), encoding="utf-8")
    env = await open_env(rules_path=str(rules))
    csrf = await logged_in(env, "boss")
    bad = minimal_rules() + 'patterns = ["' + "P" * 5000 + '"]\n'  # a pattern needs "A + B"
    r = await env.client.put("/api/negative-list", json={"text": bad}, headers=csrf)
    msg = await error_of(r, 422, "bad_rules")
    assert str(rules) in msg
    assert_short(await r.text(), "P")


# -- 3. foreign Origin / Host ---------------------------------------------------------------------
async def test_foreign_origin_is_refused_and_nothing_happens(env):
    csrf = await logged_in(env, "boss")
    link = await live_call(env, "c-live")
    ws = await env.client.ws_connect("/api/events")
    hello = await ws.receive_json()
    for path, body in (("/api/calls/c-live/hangup", {}), ("/api/calls/c-live/transfer", {"target": "12345"})):
        r = await env.client.post(path, json=body, headers={**csrf, "Origin": EVIL})
        msg = await error_of(r, 403, "bad_origin")
        assert "evil.example" in msg
    r = await env.client.post("/api/calls/c-live/hangup", json={}, headers={**csrf, "Sec-Fetch-Site": "cross-site"})
    await error_of(r, 403, "bad_origin")
    # a fact after the refused requests: everything before it on the stream has been seen
    say(env, "c-live", "之后的一句")
    got = await receive_until(ws, lambda e: e["kind"] == "final_transcript")
    assert [e["kind"] for e in got] == ["final_transcript"]
    assert not [e for e in env.console.feed.ring if e["kind"] == "operator_action"]
    assert audit_actions(env, "hangup") == [] and audit_actions(env, "transfer") == []
    assert link.sent == []
    assert [c["call_id"] for c in env.sup.calls()] == ["c-live"]

    # the control: the same key from this server's own page, or with no Origin (CLI), acts
    r = await env.client.post("/api/calls/c-live/hangup", json={}, headers={**csrf, "Origin": origin_of(env),
                                                                            "Sec-Fetch-Site": "same-origin"})
    assert r.status == 202, await r.text()
    got = await receive_until(ws, lambda e: e["kind"] == "operator_action")
    assert got[-1]["call_id"] == "c-live" and got[-1]["data"]["action"] == "hangup" and got[-1]["data"]["by"] == "boss"
    assert [type(c) for c in link.sent] == [P.Hangup]
    assert [a["outcome"] for a in audit_actions(env, "hangup")] == ["requested"]
    assert hello["kind"] == "hello"
    await ws.close()


async def test_cross_site_logins_are_refused_before_they_count(env):
    """Refused before anything is read: wrong passwords from a foreign page do not lock the account."""
    for _ in range(8):
        r = await env.client.post("/api/login", json={"username": "op1", "password": "wrong password"},
                                  headers={"Origin": EVIL})
        await error_of(r, 403, "bad_origin")
    assert audit_actions(env, "login") == []
    r = await env.client.post("/api/login", json={"username": "op1", "password": PASSWORD})
    assert r.status == 200, await r.text()


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8110", "127.0.0.1.attacker.example",
                                  "localhost.attacker.example:80"])
async def test_wrong_host_is_refused_even_for_health(env, host):
    """DNS rebinding: a page on another name that resolves here must not reach anything."""
    r = await env.client.get("/api/health", headers={"Host": host})
    msg = await error_of(r, 403, "bad_host")
    assert "public_host" in msg
    # with the attacker's own (consistent) Origin and a valid session and CSRF token
    csrf = await logged_in(env, "boss")
    link = await live_call(env, "c-rebind")
    r = await env.client.post("/api/calls/c-rebind/hangup", json={},
                              headers={**csrf, "Host": host, "Origin": f"http://{host}"})
    await error_of(r, 403, "bad_host")
    assert link.sent == [] and audit_actions(env, "hangup") == []
    # this server's names are accepted
    for good in ("localhost", "127.0.0.1:8110", "[::1]:8110"):
        assert (await env.client.get("/api/health", headers={"Host": good})).status == 200


async def test_public_host_setting_admits_that_name(open_env):
    env = await open_env(public_host="console.110.example")
    assert (await env.client.get("/api/health", headers={"Host": "console.110.example:8110"})).status == 200
    await error_of(await env.client.get("/api/health", headers={"Host": "other.example"}), 403, "bad_host")


async def test_event_stream_with_a_foreign_origin_is_refused(env):
    await logged_in(env, "boss")
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await env.client.ws_connect("/api/events", origin=EVIL)
    assert e.value.status == 403
    assert env.console.feed.clients == set()
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await env.client.ws_connect("/api/events", headers={"Host": "attacker.example"})
    assert e.value.status == 403
    # the control: this server's own page may connect
    ws = await env.client.ws_connect("/api/events", origin=origin_of(env))
    assert (await ws.receive_json())["kind"] == "hello"
    await ws.close()


# -- 4. unknown and ended calls -------------------------------------------------------------------
async def test_unknown_call_ids_are_404(env):
    csrf = await logged_in(env, "boss")
    await error_of(await env.client.get("/api/calls/no-such-call"), 404, "no_such_call")
    for key, body in (("transfer", {"target": "12345"}), ("cancel-transfer", {}), ("release-operator", {}),
                      ("hangup", {})):
        r = await env.client.post(f"/api/calls/no-such-call/{key}", json=body, headers=csrf)
        msg = await error_of(r, 404, "no_such_call")
        assert "no-such-call" in msg
    rows = env.store.audit_log(100)
    assert sorted(a["action"] for a in rows if a["action"] != "login") == \
        ["cancel_transfer", "hangup", "release", "transfer"]
    assert {a["outcome"] for a in rows if a["action"] != "login"} == {"no_such_call"}


async def test_a_call_that_has_ended_is_409(env):
    csrf = await logged_in(env, "boss")
    env.start_call("c-bus")  # known from the bus only, then ended
    env.end_call("c-bus")
    await settle()
    link = await live_call(env, "c-live")  # live in the supervisor, then ended by its worker
    await end_live_call(env, "c-live")
    for call_id in ("c-bus", "c-live"):
        for key, body in (("transfer", {"target": "12345"}), ("hangup", {})):
            r = await env.client.post(f"/api/calls/{call_id}/{key}", json=body, headers=csrf)
            msg = await error_of(r, 409, "call_ended")
            assert "ended" in msg
    assert link.sent == []
    assert {a["outcome"] for a in audit_actions(env, "transfer")} == {"call_ended"}
    d = await (await env.client.get("/api/calls/c-live")).json()  # its record is still there
    assert d["live"] is False and d["call"]["ended_at"] is not None


async def test_unknown_target_on_a_live_call_is_400_and_nothing_is_sent(env):
    csrf = await logged_in(env, "boss")
    link = await live_call(env, "c-live")
    msg = await error_of(await env.client.post("/api/calls/c-live/transfer", json={"target": "99999"}, headers=csrf),
                         400, "bad_field")
    assert "99999" in msg
    msg = await error_of(await env.client.post("/api/calls/c-live/transfer", json={"target": "12345", "mode": "teleport"},
                                               headers=csrf), 400, "bad_field")
    assert "teleport" in msg
    assert link.sent == []


async def test_a_raw_sip_address_is_refused_403_audited_and_nothing_is_dialled(env):
    """An operator (or anyone) cannot send a live 110 caller to an address nobody configured."""
    for who in ("op1", "boss", "root"):
        csrf = await logged_in(env, who)
        link = await live_call(env, f"c-{who}")
        msg = await error_of(await env.client.post(f"/api/calls/c-{who}/transfer",
                                                   json={"target": "sip:attacker@203.0.113.9"}, headers=csrf),
                             403, "target_not_allowed")
        assert "not a configured target" in msg
        assert link.sent == []  # (one link for every call here: nothing was ever sent)
    refused = [a for a in audit_actions(env, "transfer") if a["outcome"] == "target_not_allowed"]
    assert {a["user"] for a in refused} == {"op1", "boss", "root"}
    assert all(a["detail"]["target"] == "sip:attacker@203.0.113.9" for a in refused)


async def test_a_configured_targets_address_and_an_allowed_pattern_for_its_role_are_dialled(open_env):
    env = await open_env(transfer={"allow_uris": "sip:*@10.20.0.*", "allow_uris_role": "supervisor"})
    csrf = await logged_in(env, "boss")
    link = await live_call(env, "c-boss")
    configured = env.settings.transfer.targets["12345"]
    for target in (configured, "sip:ward7@10.20.0.15"):
        r = await env.client.post("/api/calls/c-boss/transfer", json={"target": target}, headers=csrf)
        assert r.status == 202, await r.text()
    assert [c.target for c in link.sent] == [configured, "sip:ward7@10.20.0.15"]
    r = await env.client.post("/api/calls/c-boss/transfer", json={"target": "sip:x@10.30.0.1"}, headers=csrf)
    await error_of(r, 403, "target_not_allowed")  # outside the pattern
    csrf = await logged_in(env, "op1")
    link = await live_call(env, "c-op1")
    before = len(link.sent)
    r = await env.client.post("/api/calls/c-op1/transfer", json={"target": "sip:ward7@10.20.0.15"}, headers=csrf)
    await error_of(r, 403, "target_not_allowed")  # the pattern is for supervisors
    assert len(link.sent) == before


async def test_unknown_target_on_a_call_that_is_not_live_is_still_404_or_409(env):
    """The call is what is wrong: an unknown call is 404 and an ended call 409, whatever the target."""
    csrf = await logged_in(env, "boss")
    env.start_call("c-ended")
    env.end_call("c-ended")
    await settle()
    r = await env.client.post("/api/calls/no-such-call/transfer", json={"target": "99999"}, headers=csrf)
    await error_of(r, 404, "no_such_call")
    r = await env.client.post("/api/calls/c-ended/transfer", json={"target": "99999"}, headers=csrf)
    await error_of(r, 409, "call_ended")


# -- 5. sessions and CSRF -----------------------------------------------------------------------
async def test_idle_session_expires(open_env):
    env = await open_env(session_idle_minutes=0.001)  # 60 ms
    await logged_in(env, "op1")
    assert (await env.client.get("/api/calls")).status == 200
    await asyncio.sleep(0.15)
    msg = await error_of(await env.client.get("/api/calls"), 401, "session_expired")
    assert "会话已过期" in msg
    # the session is gone: it does not come back
    await error_of(await env.client.get("/api/calls"), 401, "unauthenticated")


async def test_a_session_idle_beyond_the_setting_expires_everywhere(env):
    csrf = await logged_in(env, "boss")
    link = await live_call(env, "c-live")
    with sqlite3.connect(env.store.path) as db:  # eight hours and a minute without a request
        db.execute("UPDATE sessions SET last_seen = last_seen - ?", (481 * 60,))
    r = await env.client.post("/api/calls/c-live/hangup", json={}, headers=csrf)
    msg = await error_of(r, 401, "session_expired")
    assert "会话已过期" in msg
    assert link.sent == [] and audit_actions(env, "hangup") == []
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await env.client.ws_connect("/api/events")
    assert e.value.status == 401
    # just inside the limit the session lives on, and its idle clock restarts
    csrf = await logged_in(env, "boss")
    with sqlite3.connect(env.store.path) as db:
        db.execute("UPDATE sessions SET last_seen = last_seen - ?", (479 * 60,))
    assert (await env.client.get("/api/calls")).status == 200
    with sqlite3.connect(env.store.path) as db:
        (last_seen,) = db.execute("SELECT MAX(last_seen) FROM sessions").fetchone()
    assert time.time() - last_seen < 60
    r = await env.client.post("/api/calls/c-live/hangup", json={}, headers=csrf)
    assert r.status == 202, await r.text()


async def test_state_changing_requests_need_the_sessions_csrf_token(env):
    await logged_in(env, "op1")
    _user, _sid, boss_csrf = env.console.accounts.login("boss", PASSWORD, "127.0.0.1")  # another console's token
    link = await live_call(env, "c-live")
    for headers in ({}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": boss_csrf}):
        r = await env.client.post("/api/calls/c-live/hangup", json={}, headers=headers)
        msg = await error_of(r, 403, "csrf")
        assert "X-CSRF-Token" in msg
    # CSRF is checked before the body is read
    r = await env.client.post("/api/calls/c-live/hangup", data="{not json", headers={"Content-Type": "application/json"})
    await error_of(r, 403, "csrf")
    r = await env.client.post("/api/logout", json={})
    await error_of(r, 403, "csrf")
    assert link.sent == [] and audit_actions(env, "hangup") == []
    # a GET needs none
    r = await env.client.get("/api/calls")
    assert r.status == 200 and [c["call_id"] for c in (await r.json())["calls"]] == ["c-live"]
    # the right token acts
    me = await (await env.client.get("/api/me")).json()
    r = await env.client.post("/api/calls/c-live/hangup", json={}, headers={"X-CSRF-Token": me["csrf"]})
    assert r.status == 202, await r.text()
    assert [type(c) for c in link.sent] == [P.Hangup]


async def test_api_tokens_need_no_csrf(env):
    token = env.token("boss")
    link = await live_call(env, "c-live")
    r = await env.client.post("/api/calls/c-live/hangup", json={}, headers={"Authorization": f"Bearer {token}"})
    assert r.status == 202, await r.text()
    assert [type(c) for c in link.sent] == [P.Hangup]
    await error_of(await env.client.get("/api/calls", headers={"Authorization": f"Basic {token}"}), 401, "bad_token")


# -- 6. roles -------------------------------------------------------------------------------------
async def test_operator_is_refused_supervisor_and_admin_routes(env):
    csrf = await logged_in(env, "op1")
    version = env.sup.router.rules.version
    for method, path, kwargs in (("POST", "/api/negative-list/reload", {"json": {}}),
                                 ("PUT", "/api/negative-list", {"json": {"text": minimal_rules()}}),
                                 ("GET", "/api/audit", {}), ("GET", "/api/users", {}),
                                 ("POST", "/api/users", {"json": {"name": "x1", "role": "admin",
                                                                  "password": "long enough pw"}})):
        r = await env.client.request(method, path, headers=csrf, **kwargs)
        msg = await error_of(r, 403, "forbidden_role")
        assert "operator" in msg
    assert env.sup.router.rules.version == version
    assert env.store.user("x1") is None
    assert [a["action"] for a in env.store.audit_log(100)] == ["login"]


async def test_supervisor_is_refused_admin_routes_and_admin_may(env):
    csrf = await logged_in(env, "boss")
    assert (await env.client.get("/api/audit")).status == 200
    msg = await error_of(await env.client.get("/api/users"), 403, "forbidden_role")
    assert "admin" in msg
    r = await env.client.post("/api/users", json={"name": "x1", "role": "admin", "password": "long enough pw"},
                              headers=csrf)
    await error_of(r, 403, "forbidden_role")
    assert env.store.user("x1") is None

    csrf = await logged_in(env, "root")
    r = await env.client.get("/api/users")
    assert r.status == 200 and {u["name"] for u in (await r.json())["users"]} == {"op1", "boss", "root"}
    r = await env.client.post("/api/users", json={"name": "x1", "role": "operator", "password": "long enough pw"},
                              headers=csrf)
    assert r.status == 201, await r.text()
    assert env.store.user("x1")["role"] == "operator"


# -- 7. login throttling -----------------------------------------------------------------------
def at(address: str) -> dict[str, str]:
    """A request from ``address`` (the console is behind a proxy that reports it)."""
    return {"X-Forwarded-For": address}


async def test_wrong_passwords_make_one_account_wait_at_one_address_and_nobody_else(open_env):
    """OWASP: throttle, never lock out. Three wrong passwords for op1 from 10.0.0.9 make op1 wait
    there (429 with Retry-After, the password not even checked); op1 with the right password
    from another address, and every other account from 10.0.0.9, log in at once."""
    env = await open_env(behind_proxy=True)
    for _ in range(3):
        r = await env.client.post("/api/login", json={"username": "op1", "password": "wrong password"},
                                  headers=at("10.0.0.9"))
        await error_of(r, 401, "bad_login")
    r = await env.client.post("/api/login", json={"username": "op1", "password": PASSWORD}, headers=at("10.0.0.9"))
    msg = await error_of(r, 429, "too_many_attempts")
    retry = int(r.headers["Retry-After"])
    assert re.search(r"\d+ s", msg) and retry >= 1
    assert "fenliu_session" not in r.cookies
    rows = audit_actions(env, "login")
    assert [a["outcome"] for a in reversed(rows)] == ["bad_login"] * 3 + ["too_many_attempts"]
    assert {a["user"] for a in rows} == {"op1"} and {a["detail"]["address"] for a in rows} == {"10.0.0.9"}
    # the real op1 at another seat, and a colleague behind the same NAT: never refused
    r = await env.client.post("/api/login", json={"username": "op1", "password": PASSWORD}, headers=at("10.0.0.7"))
    assert r.status == 200, await r.text()
    r = await env.client.post("/api/login", json={"username": "boss", "password": PASSWORD}, headers=at("10.0.0.9"))
    assert r.status == 200, await r.text()
    # a supervisor reads the trail through the API
    r = await env.client.get("/api/audit?action=login", headers={"Authorization": f"Bearer {env.token('boss')}"})
    audit = (await r.json())["audit"]
    assert [a["outcome"] for a in audit if a["user"] == "op1"].count("bad_login") == 3
    # once the wait is over op1 may try again from 10.0.0.9 (the wait grows: 1 s, 2 s, 4 s, …)
    await asyncio.sleep(retry)
    r = await env.client.post("/api/login", json={"username": "op1", "password": PASSWORD}, headers=at("10.0.0.9"))
    assert r.status == 200, await r.text()


async def test_a_password_burst_alerts_supervisors_and_is_never_a_lockout(open_env):
    from fenliu.console.auth import LoginThrottle

    env = await open_env(behind_proxy=True)
    env.console.accounts.throttle = LoginThrottle(max_tarpit=0.01)  # the tarpit's pace is a unit test's matter
    for i in range(10):  # ten addresses, three tries or fewer each: spread out guessing
        r = await env.client.post("/api/login", json={"username": "op1", "password": f"guess {i}"},
                                  headers=at(f"10.9.0.{i}"))
        await error_of(r, 401, "bad_login")
    alerts = (await (await env.client.get("/api/alerts", headers={"Authorization": f"Bearer {env.token('boss')}"}))
              .json())["alerts"]
    burst = [a for a in alerts if a["kind"] == "login_burst"]
    assert len(burst) == 1 and "op1" in burst[0]["message"], alerts
    r = await env.client.post("/api/login", json={"username": "op1", "password": PASSWORD}, headers=at("10.0.0.7"))
    assert r.status == 200, await r.text()


def test_the_tarpit_grows_to_a_ceiling_and_a_right_password_resets_only_its_pair():
    from fenliu.console.auth import LoginThrottle

    t = LoginThrottle()
    delays = [t.failed("op1", f"10.0.0.{i % 3}")[0] for i in range(12)]
    assert delays[:5] == [0.0] * 5  # a few typos cost nothing
    assert delays[5:] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]  # then growing, to the ceiling
    assert t.wait("op1", "10.0.0.0") > 0 and t.wait("op1", "10.0.0.5") == 0 and t.wait("boss", "10.0.0.0") == 0
    t.succeeded("op1", "10.0.0.0")
    assert t.wait("op1", "10.0.0.0") == 0 and t.wait("op1", "10.0.0.1") > 0
    assert t.failed("op1", "10.0.0.0")[0] == 5.0  # the account's count stays: no reset by one success


# -- 8. /metrics and health ---------------------------------------------------------------------
async def test_metrics_on_loopback_and_health_without_login(env):
    r = await env.client.get("/metrics")
    assert r.status == 200 and r.content_type == "text/plain"
    assert "fenliu_" in await r.text()
    r = await env.client.get("/api/health")
    assert r.status == 200 and await r.json() == {"ok": True, "status": "up"}  # nothing more without login
    assert (await env.client.get("/api/ready")).status == 200
    await error_of(await env.client.get("/api/calls"), 401, "unauthenticated")


async def test_health_detail_is_for_supervisors_and_tokens_only(env):
    await logged_in(env, "op1")
    assert await (await env.client.get("/api/health")).json() == {"ok": True, "status": "up"}
    r = await env.client.get("/api/health", headers={"Authorization": "Bearer flt_not-a-token"})
    assert r.status == 200 and set(await r.json()) == {"ok", "status"}  # a bad token: the public answer
    r = await env.client.get("/api/health", headers={"Authorization": f"Bearer {env.token('boss')}"})
    detail = await r.json()
    assert detail["ok"] is True and "workers" in detail and "mode" in detail


async def test_metrics_token(open_env):
    env = await open_env(metrics_token="s3cret-token")
    msg = await error_of(await env.client.get("/metrics"), 401, "bad_token")
    assert "s3cret" not in msg
    await error_of(await env.client.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401, "bad_token")
    await error_of(await env.client.get("/metrics", headers={"Authorization": "s3cret-token"}), 401, "bad_token")
    await logged_in(env, "root")  # a console session is not the metrics token
    await error_of(await env.client.get("/metrics"), 401, "bad_token")
    r = await env.client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert r.status == 200 and "fenliu_" in await r.text()


# -- 9. the negative list ---------------------------------------------------------------------
def line_containing(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if needle in line)


async def test_negative_list_reload_keeps_the_old_list_on_errors(open_env, tmp_path):
    rules = tmp_path / "negative_list.toml"
    shutil.copy(SHIPPED_LIST, rules)
    env = await open_env(rules_path=str(rules), users=(("op1", "operator", ""), ("boss", "supervisor", "")))
    original = rules.read_text(encoding="utf-8")
    old = re.search(r'^version = "([^"]+)"', original, re.M).group(1)

    await logged_in(env, "op1")
    op_ws = await env.client.ws_connect("/api/events")
    await op_ws.receive_json()
    as_operator = await (await env.client.get("/api/negative-list")).json()
    assert as_operator["version"] == old and str(rules.parent) not in json.dumps(as_operator)  # no server paths
    csrf = await logged_in(env, "boss")  # the cookie is now boss's; op1's stream stays open as op1
    ws = await env.client.ws_connect("/api/events")
    await ws.receive_json()

    async def current() -> dict[str, Any]:
        r = await env.client.get("/api/negative-list")
        assert r.status == 200
        return await r.json()

    listed = await current()
    assert listed["version"] == old and listed["path"] == str(rules) and listed["text"] == original

    # an edited version: reloaded
    rules.write_text(original.replace(f'version = "{old}"', 'version = "t-2"'), encoding="utf-8")
    r = await env.client.post("/api/negative-list/reload", json={}, headers=csrf)
    assert r.status == 200, await r.text()
    assert await r.json() == {"version": "t-2", "previous": old}
    got = await receive_until(ws, lambda e: e["kind"] == "negative_list_reloaded")
    assert got[-1]["data"] == {"version": "t-2", "previous": old, "by": "boss"}
    assert (await current())["version"] == "t-2"

    # a TOML syntax error: 422 naming the file and the line, and t-2 stays
    broken = rules.read_text(encoding="utf-8").replace('version = "t-2"', 'version = "t-3')
    rules.write_text(broken, encoding="utf-8")
    line = line_containing(rules, 'version = "t-3')
    msg = await error_of(await env.client.post("/api/negative-list/reload", json={}, headers=csrf), 422, "bad_rules")
    assert str(rules) in msg and (f":{line}:" in msg or f"line {line}" in msg), msg
    assert (await current())["version"] == "t-2"

    # a valid TOML naming a target that does not exist, on a known line
    wrong = original.replace(f'version = "{old}"', 'version = "t-4"').replace('target = "12345"', 'target = "nowhere"', 1)
    rules.write_text(wrong, encoding="utf-8")
    line = line_containing(rules, 'target = "nowhere"')
    msg = await error_of(await env.client.post("/api/negative-list/reload", json={}, headers=csrf), 422, "bad_rules")
    assert f"{rules}:{line}:" in msg and "nowhere" in msg, msg
    assert (await current())["version"] == "t-2"
    assert env.sup.router.rules.version == "t-2"

    # PUT a bad text: 422 and the file on disk is untouched
    on_disk = rules.read_bytes()
    r = await env.client.put("/api/negative-list", json={"text": wrong}, headers=csrf)
    await error_of(r, 422, "bad_rules")
    r = await env.client.put("/api/negative-list", json={"text": "[meta\nversion = 1"}, headers=csrf)
    await error_of(r, 422, "bad_rules")
    assert rules.read_bytes() == on_disk
    assert (await current())["version"] == "t-2"

    # PUT a good text: written and active
    good = original.replace(f'version = "{old}"', 'version = "t-5"')
    r = await env.client.put("/api/negative-list", json={"text": good}, headers=csrf)
    assert r.status == 200, await r.text()
    assert await r.json() == {"version": "t-5", "previous": "t-2"}
    assert rules.read_text(encoding="utf-8") == good
    assert (await current())["version"] == "t-5"
    got = await receive_until(ws, lambda e: e["kind"] == "negative_list_reloaded")
    assert got[-1]["data"]["version"] == "t-5" and got[-1]["data"]["previous"] == "t-2"

    outcomes = [(a["action"], a["outcome"]) for a in reversed(env.store.audit_log(100)) if a["action"] != "login"]
    assert outcomes == [("list_reload", "ok"), ("list_reload", "bad_rules"), ("list_reload", "bad_rules"),
                        ("list_edit", "bad_rules"), ("list_edit", "bad_rules"), ("list_edit", "ok")]
    # the operator's stream carries no list reloads (supervisors only)
    await assert_silent(op_ws)
    await op_ws.close()
    await ws.close()


# -- 10. seats ----------------------------------------------------------------------------------
async def test_operator_of_another_seat_does_not_see_the_call(open_env):
    env = await open_env(seat_uri="sip:seat01@pbx.example:5060",
                         users=(("op01", "operator", "seat01"), ("op02", "operator", "seat02"),
                                ("op1", "operator", ""), ("boss", "supervisor", "")))
    assert env.store.seat == "seat01" and env.console.feed.seat == "seat01"
    # op02's stream, then op01's (each with its own cookie jar)
    op02 = env.client
    csrf02 = await logged_in(env, "op02")
    ws02 = await op02.ws_connect("/api/events")
    assert (await ws02.receive_json())["data"]["user"] == "op02"
    session = aiohttp.ClientSession(base_url=str(env.client.make_url("/")), cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        r = await session.post("/api/login", json={"username": "op01", "password": PASSWORD})
        assert r.status == 200
        ws01 = await session.ws_connect("/api/events")
        assert (await ws01.receive_json())["data"]["user"] == "op01"

        link = await live_call(env, "c-seat")
        say(env, "c-seat", "楼上太吵了")
        got = await receive_until(ws01, lambda e: e["kind"] == "final_transcript")
        assert [e["kind"] for e in got] == ["call_started", "final_transcript"]
        assert got[0]["data"]["seat"] == "seat01" and "****" in got[0]["data"]["remote"]
        await assert_silent(ws02)  # delivered to op01 already: nothing for op02

        calls01 = (await (await session.get("/api/calls")).json())["calls"]
        assert [(c["call_id"], c["seat"]) for c in calls01] == [("c-seat", "seat01")]
        assert (await session.get("/api/calls/c-seat")).status == 200

        assert (await (await op02.get("/api/calls")).json())["calls"] == []
        hidden = await error_of(await op02.get("/api/calls/c-seat"), 404, "no_such_call")
        absent = await error_of(await op02.get("/api/calls/c-nothing"), 404, "no_such_call")
        assert hidden.replace("c-seat", "ID") == absent.replace("c-nothing", "ID")  # no hint that it exists
        r = await op02.post("/api/calls/c-seat/hangup", json={}, headers=csrf02)
        await error_of(r, 404, "no_such_call")
        r = await op02.post("/api/calls/c-seat/transfer", json={"target": "12345"}, headers=csrf02)
        await error_of(r, 404, "no_such_call")
        assert link.sent == []
        assert (await (await op02.get("/api/history")).json())["total"] == 0
        assert (await (await session.get("/api/history")).json())["total"] == 1
        await assert_silent(ws02)
    finally:
        await session.close()
    # an operator without a seat (a one-seat centre) sees every call
    await logged_in(env, "op1")
    assert [c["call_id"] for c in (await (await env.client.get("/api/calls")).json())["calls"]] == ["c-seat"]
    await ws02.close()


# -- 11. transcripts are data -------------------------------------------------------------------
async def test_transcripts_are_returned_as_exact_json_strings(env):
    evil = "<script>alert(1)</script>"
    await logged_in(env, "boss")
    ws = await env.client.ws_connect("/api/events")
    await ws.receive_json()
    await live_call(env, "c-xss")
    say(env, "c-xss", evil)
    got = await receive_until(ws, lambda e: e["kind"] == "final_transcript")
    assert got[-1]["data"]["text"] == evil
    await settle()
    r = await env.client.get("/api/calls/c-xss")
    assert r.status == 200 and r.content_type == "application/json"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert [u["text"] for u in (await r.json())["utterances"]] == [evil]
    r = await env.client.get("/api/history?q=script")
    assert evil in (await r.json())["calls"][0]["text"]
    await ws.close()


async def test_console_page_forbids_inline_script(env):
    r = await env.client.get("/")
    assert r.status == 200 and r.content_type == "text/html"
    csp = r.headers["Content-Security-Policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["script-src"] == ["'self'"], csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert directives.get("frame-ancestors") == ["'none'"]
    html = await r.text()
    for tag in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S | re.I):
        assert tag.strip() == "", "inline script in the console page"
    assert not re.search(r"\son[a-z]+\s*=", html, re.I), "inline event handler in the console page"


# -- 12. OpenAPI --------------------------------------------------------------------------------
async def test_openapi_lists_every_route_and_needs_login(env):
    await error_of(await env.client.get("/api/openapi.json"), 401, "unauthenticated")
    await logged_in(env, "op1")
    r = await env.client.get("/api/openapi.json")
    assert r.status == 200
    paths = (await r.json())["paths"]
    missing = [(m, p) for m, p, _h, _a in ROUTES if m.lower() not in paths.get(p, {})]
    assert missing == []
    assert len({(m, p) for m, p, _h, _a in ROUTES}) == sum(len(ops) for ops in paths.values())


async def test_tel_and_display_name_numbers_are_masked_for_operators_everywhere(env):
    """A caller from a tel: URI and a number in the display name: masked in live calls, the
    event stream and history for an operator; a supervisor sees them whole."""
    await logged_in(env, "op1")
    ws = await env.client.ws_connect("/api/events")
    await receive_until(ws, lambda e: e["kind"] == "hello")
    remote = '"王 139-8765-4321" <tel:+86-138-1234-5678>'
    await live_call(env, "c-tel", remote=remote)
    started = (await receive_until(ws, lambda e: e["kind"] == "call_started"))[-1]
    await end_live_call(env, "c-tel")
    live = started["data"]["remote"]
    history = (await (await env.client.get("/api/history")).json())["calls"][0]["remote"]
    detail = (await (await env.client.get("/api/calls/c-tel")).json())["call"]["remote"]
    for shown in (live, history, detail):
        assert shown == '"王 139-****-4321" <tel:+86-138-****-5678>', shown
    await ws.close()
    env.client.session.cookie_jar.clear()
    await logged_in(env, "boss")
    assert (await (await env.client.get("/api/history")).json())["calls"][0]["remote"] == remote
