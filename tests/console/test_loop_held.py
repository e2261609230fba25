"""A key is executed promptly or refused, never run late (issue 21): when the service's loop was
held up (a lock, a slow disk) while an operator's key waited, the key is refused with 503
``too_late`` and audited, and nothing reaches the call; the next key runs."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request

from fenliu.console.api import LOOP_TICK, loop_held
from fenliu.sip import protocol as P
from tests.console.api_env import login
from tests.console.test_api_security import live_call


async def test_a_key_that_waited_for_a_held_up_loop_is_refused_not_run_late(open_env):
    env = await open_env(transfer={"max_command_age": 0.5})
    link = await live_call(env, "c-held")
    csrf = await login(env.client, "op1")
    cookie = "; ".join(f"{c.key}={c.value}" for c in env.client.session.cookie_jar)
    url = str(env.client.make_url("/api/calls/c-held/hangup"))
    blocked, answer = threading.Event(), {}

    def press() -> None:  # the operator presses while the service is held up
        blocked.wait(10)
        req = urllib.request.Request(url, data=b"{}", method="POST", headers={
            "Content-Type": "application/json", "Cookie": cookie, "X-CSRF-Token": csrf})
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                answer["status"], answer["body"] = r.status, r.read()
        except urllib.error.HTTPError as e:
            answer["status"], answer["body"] = e.code, e.read()

    def hold_up() -> None:
        blocked.set()
        time.sleep(1.5)  # the loop is stuck (what a 45 s SQLite lock did before)

    t = threading.Thread(target=press)
    t.start()
    asyncio.get_running_loop().call_soon(hold_up)
    await asyncio.to_thread(t.join, 30)
    assert answer["status"] == 503 and b"too_late" in answer["body"], answer
    assert not [m for m in link.sent if isinstance(m, P.Hangup)]  # nothing reached the call
    assert [(a["action"], a["outcome"]) for a in env.store.audit_log(action="hangup")] == [("hangup", "too_late")]
    tick = env.console.app[LOOP_TICK]
    for _ in range(200):  # the loop ticks again (a key read right after a stall could have waited through it)
        if loop_held(tick, time.monotonic()) <= 0.5:
            break
        await asyncio.sleep(0.05)
    r = await env.client.post("/api/calls/c-held/hangup", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status == 202, await r.text()  # the loop is back: the next key runs
    assert [m for m in link.sent if isinstance(m, P.Hangup)]
