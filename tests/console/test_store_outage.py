"""A PostgreSQL restart under calls (issue 21): nothing is lost and the console keeps working.

A dedicated throw-away cluster (the session's is shared by other tests) is halted while an
instance holds a call: the call's records keep coming (they wait in memory and in the journal),
a logged-in supervisor still lists live calls and presses the one key (its audit row waits too),
`/api/ready` says the store is down, `/metrics` still answers with `fenliu_store_up 0`, a new
login is a 503 saying why. The server comes back: every record is written, in order, and the
journal is empty."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import aiohttp
import pytest

from fenliu.bus import CallEvent, EventBus, WorkerFact
from fenliu.console.server import Console
from fenliu.events import FinalTranscript
from fenliu.service.supervisor import Supervisor
from fenliu.settings import Settings, StoreSettings
from fenliu.sip import protocol as P
from fenliu.store.record import Store
from tests.console.api_env import PASSWORD, ApiEnv
from tests.console.test_api_security import live_call
from tests.pg import PgUnavailable, start_cluster

pytestmark = pytest.mark.usefixtures("cheap_hashes")


@pytest.fixture
def own_cluster():  # type: ignore[no-untyped-def]
    try:
        cluster = start_cluster()
    except PgUnavailable as e:
        pytest.fail(f"could not start a throw-away PostgreSQL: {e}", pytrace=False)
    yield cluster
    cluster.stop()


async def test_a_postgresql_restart_loses_no_record_and_the_console_goes_on(own_cluster, router, aiohttp_client,
                                                                             tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the journal of a PostgreSQL store goes under ./var
    url = own_cluster.url()
    s = Settings()
    s = replace(s, store=StoreSettings(url=url, instance="A"), console=replace(s.console, port=0))
    bus = EventBus(asyncio.get_running_loop())
    store = Store(url, settings=s, journal=True)
    bus.subscribe(store.record)
    sup = Supervisor(s, router, None, bus)
    env = ApiEnv(s, bus, store, sup, Console(s, sup, store))
    env.add_user("boss", "supervisor", PASSWORD)
    env.console.centre.start(asyncio.get_running_loop())
    client = await aiohttp_client(env.console.app)
    http = aiohttp.ClientSession(base_url=str(client.make_url("/")), cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        r = await http.post("/api/login", json={"username": "boss", "password": PASSWORD})
        http.headers["X-CSRF-Token"] = (await r.json())["csrf"]
        link = await live_call(env, "c-before")
        assert (await http.get("/api/ready")).status in (200, 503)

        await asyncio.to_thread(own_cluster.halt)  # PostgreSQL goes down (a restart's first half)
        env.publish(CallEvent("c-before", "caller", "w0", FinalTranscript("c-before", 1, "楼上装修太吵了", 0.0, 1.0)))
        await live_call(env, "c-during", slot=1)  # a call that starts during the outage
        await asyncio.sleep(0)
        deadline = time.monotonic() + 10
        while store.waiting < 2:
            assert time.monotonic() < deadline, "the records did not wait"
            await asyncio.sleep(0.05)
        assert not store.up and store.journal is not None and store.journal.path.exists()
        calls = await http.get("/api/calls")  # the session the store confirmed still opens the console
        assert calls.status == 200 and {c["call_id"] for c in (await calls.json())["calls"]} == {"c-before",
                                                                                                 "c-during"}
        r = await http.post("/api/calls/c-during/hangup", json={})  # the one key, audited later
        assert r.status == 202, await r.text()
        assert any(isinstance(m, P.Hangup) for m in link.sent)
        ready = await http.get("/api/ready")
        assert ready.status == 503 and "store" in (await ready.json())["why"]
        metrics = await http.get("/metrics")
        assert metrics.status == 200 and "fenliu_store_up 0.0" in await metrics.text()
        history = await http.get("/api/history")  # what needs the store says so (not a 500)
        assert history.status == 503 and (await history.json())["code"] == "store_unavailable"
        async with aiohttp.ClientSession(base_url=str(client.make_url("/"))) as fresh:
            r = await fresh.post("/api/login", json={"username": "boss", "password": PASSWORD})
            assert r.status == 503 and (await r.json())["code"] == "store_unavailable"

        await asyncio.to_thread(own_cluster.restart)  # back
        env.publish(WorkerFact("w0", P.CallEnded("c-during", 1, 200, "BYE")))  # the next record flushes all
        deadline = time.monotonic() + 20
        while store.waiting:
            assert time.monotonic() < deadline, f"{store.waiting} records still waiting"
            await asyncio.sleep(0.1)
            store.flush()
        ids = {c["call_id"]: c for c in store.calls()}
        assert set(ids) == {"c-before", "c-during"} and ids["c-during"]["ended_at"] is not None
        assert "楼上装修太吵了" in (store.call("c-before")["text"] or "")
        assert [a["action"] for a in store.audit_log(action="hangup")] == ["hangup"]
        assert store.up and not store.journal.path.exists()
        ready = await http.get("/api/ready")
        assert (await ready.json())["why"] != "store unavailable: records wait in memory and the journal"
    finally:
        await http.close()
        await asyncio.to_thread(env.console.centre.stop)
        sup.stop()
        store.close()
