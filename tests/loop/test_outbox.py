"""The outbox against a real local platform and SMS gateway (aiohttp servers that record
requests and fail on demand): delivery, retries with the same idempotency key, permanent
refusals, timeouts, an outage, client TLS, and a deliverer killed between send and answer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from fenliu.errors import ConfigError
from fenliu.loop.outbox import Outbox
from fenliu.store.record import Store
from tests.loop.loop_env import PLATFORM_SECRET_ENV, divert, loop_settings
from tests.loop.platform_server import FakePlatform, make_test_pki

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def platform():  # type: ignore[no-untyped-def]
    with FakePlatform() as p:
        yield p


async def deliver_until(outbox: Outbox, done, within: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Run delivery rounds (as `run` does) until ``done()`` holds."""
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, "outbox did not finish in time"
        if not await outbox.deliver_due():
            await asyncio.sleep(0.02)


def pending(store: Store) -> int:
    return int(store.db.scalar("SELECT COUNT(*) FROM outbox WHERE status='pending'"))


async def test_order_and_sms_are_delivered_mapped_signed_and_acknowledged(tmp_path, router, platform, monkeypatch):
    monkeypatch.setenv(PLATFORM_SECRET_ENV, "s3cret-12345")
    url = f"sqlite:///{tmp_path}/o.db"
    s = loop_settings(url, platform=platform.url, sms=platform.url)
    store = Store(url, settings=s)
    divert(store, router, "c1")
    outbox = Outbox(store, s)
    await deliver_until(outbox, lambda: pending(store) == 0)
    await outbox.close()
    order_req = next(r for r in platform.requests if r["path"] == "/orders")
    no = store.orders()[0]["order_no"]
    # the platform's own field names, from [platforms.12345.fields]
    assert order_req["json"]["gdbh"] == no and order_req["json"]["ldhm"] == "13812345678"
    assert order_req["json"]["nr"].startswith("噪声扰民：") and order_req["json"]["ly"] == "110分流"
    h = order_req["headers"]
    assert h["Idempotency-Key"] == f"order:{no}"
    mac = hmac.new(b"s3cret-12345", f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + order_req["body"],
                   hashlib.sha256).digest()
    assert h["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    o = store.order(no)
    assert o["status"] == "accepted" and o["platform_ref"] == platform.orders[f"order:{no}"]["order_no"]
    assert [t["status"] for t in o["trail"]] == ["queued", "accepted"]
    sms_req = next(r for r in platform.requests if r["path"] == "/sms")
    assert sms_req["json"]["to"] == "13812345678" and no in sms_req["json"]["text"]
    assert store.call_loop("c1")["sms"][0]["status"] == "sent"
    store.close()


async def test_failures_are_retried_with_the_same_key_until_delivered(tmp_path, router, platform):
    url = f"sqlite:///{tmp_path}/o.db"
    s = loop_settings(url, platform=platform.url)
    store = Store(url, settings=s)
    divert(store, router, "c1")
    platform.fail(3, status=503)
    outbox = Outbox(store, s)
    await deliver_until(outbox, lambda: pending(store) == 0)
    await outbox.close()
    reqs = [r for r in platform.requests if r["path"] == "/orders"]
    assert len(reqs) == 4 and len({r["headers"]["Idempotency-Key"] for r in reqs}) == 1
    assert [r["headers"]["X-Fenliu-Attempt"] for r in reqs] == ["1", "2", "3", "4"]
    gaps = [b["monotonic"] - a["monotonic"] for a, b in zip(reqs, reqs[1:], strict=False)]
    assert all(g >= 0.025 for g in gaps)  # backed off (retry_base 0.05 s × jitter ≥ 0.5), never hammered
    assert len(platform.orders) == 1 and store.orders()[0]["status"] == "accepted"
    assert outbox.retried == 3


async def test_a_permanent_refusal_stops_and_alerts(tmp_path, router, platform):
    url = f"sqlite:///{tmp_path}/o.db"
    s = loop_settings(url, platform=platform.url)
    store = Store(url, settings=s)
    divert(store, router, "c1")
    platform.fail(1, status=400)
    outbox = Outbox(store, s)
    await deliver_until(outbox, lambda: pending(store) == 0)
    o = store.orders()[0]
    assert o["status"] == "failed" and "HTTP 400" in o["last_error"]
    alert = store.alerts()[0]
    assert alert["kind"] == "order_refused" and alert["order_no"] == o["order_no"]
    # fixed on the platform's side: the supervisor sends it again, with the same key
    assert store.requeue(o["order_no"], time.time())
    await deliver_until(outbox, lambda: pending(store) == 0)
    await outbox.close()
    assert store.orders()[0]["status"] == "accepted" and len(platform.orders) == 1


async def test_a_timeout_is_retried_and_the_platform_keeps_one_order(tmp_path, router, platform):
    url = f"sqlite:///{tmp_path}/o.db"
    s0 = loop_settings(url, platform=platform.url)
    s = replace(s0, platforms={"12345": replace(s0.platforms["12345"], timeout=0.5)})
    store = Store(url, settings=s)
    divert(store, router, "c1")
    platform.timeout(1)  # the platform creates the order but the answer never comes
    outbox = Outbox(store, s)
    await deliver_until(outbox, lambda: store.db.scalar("SELECT attempts FROM outbox WHERE kind='order'") == 1
                        and pending(store) == 1 and len(platform.requests) == 1)
    assert "timeout after 0.5 s" in store.db.scalar("SELECT last_error FROM outbox WHERE kind='order'")
    await deliver_until(outbox, lambda: pending(store) == 0)
    await outbox.close()
    reqs = [r for r in platform.requests if r["path"] == "/orders"]
    assert len(reqs) == 2 and reqs[0]["headers"]["Idempotency-Key"] == reqs[1]["headers"]["Idempotency-Key"]
    assert len(platform.orders) == 1  # the repeat found the order the lost answer was about
    assert store.orders()[0]["status"] == "accepted"


async def test_an_outage_loses_nothing(tmp_path, router):
    """The platform is down (connection refused) while orders pile up; when it comes back on
    its address every order arrives once."""
    url = f"sqlite:///{tmp_path}/o.db"
    probe = FakePlatform().start()
    address = probe.url
    probe.stop()  # nothing listens there now
    s = loop_settings(url, platform=address)
    store = Store(url, settings=s)
    for i in range(5):
        divert(store, router, f"c{i}", number=f"1380000000{i}")
    outbox = Outbox(store, s)
    for _ in range(3):
        await asyncio.sleep(0.35)
        await outbox.deliver_due()
    assert pending(store) >= 5
    assert "ClientConnectorError" in store.db.scalar("SELECT last_error FROM outbox WHERE kind='order' LIMIT 1")
    port = int(address.rsplit(":", 1)[1])
    with FakePlatform(port=port) as platform:  # back on its address
        await deliver_until(outbox, lambda: store.db.scalar(
            "SELECT COUNT(*) FROM work_orders WHERE status='accepted'") == 5)
        await outbox.close()
        assert len(platform.orders) == 5
        keys = [r["headers"]["Idempotency-Key"] for r in platform.requests if r["path"] == "/orders"]
        assert len(keys) == len(set(keys)) == 5


async def test_client_certificate_for_a_security_gateway(tmp_path, router):
    pki = make_test_pki(tmp_path / "pki")
    url = f"sqlite:///{tmp_path}/o.db"
    with FakePlatform(pki.server_context(require_client_cert=True)) as platform:
        s0 = loop_settings(url, platform=platform.url)
        p = s0.platforms["12345"]
        s = replace(s0, platforms={"12345": replace(p, ca=str(pki.ca_cert), client_cert=str(pki.client_cert),
                                                   client_key=str(pki.client_key))})
        store = Store(url, settings=s)
        divert(store, router, "c1")
        outbox = Outbox(store, s)
        await deliver_until(outbox, lambda: pending(store) == 0)
        await outbox.close()
        assert platform.requests[0]["client_cert"]["commonName"] == "fenliu-client"
        assert store.orders()[0]["status"] == "accepted"
        bad = replace(s, platforms={"12345": replace(p, client_cert=str(tmp_path / "missing.pem"),
                                                     client_key=str(tmp_path / "missing.key"))})
        with pytest.raises(ConfigError, match="platforms.12345"):
            Outbox(store, bad)
        store.close()


def _config(tmp_path: Path, url: str, platform_url: str) -> Path:
    cfg = tmp_path / "fenliu.toml"
    cfg.write_text(f"""
[store]
url = "{url}"
[outbox]
retry_base = 0.1
retry_max = 0.5
poll_seconds = 0.1
lease_seconds = 2.0
[platforms.12345]
url = "{platform_url}/orders"
""", encoding="utf-8")
    return cfg


def test_killed_between_send_and_answer_the_order_is_sent_again_and_created_once(tmp_path, router, platform):
    """`fenliu outbox run` sends the order; the platform creates it but holds the answer; the
    process is killed (SIGKILL) before it hears back. A new deliverer takes the item over when
    the lease runs out and sends it again with the same key: one order at the platform, and the
    store records the platform's order number."""
    url = f"sqlite:///{tmp_path}/o.db"
    cfg = _config(tmp_path, url, platform.url)
    store = Store(url, settings=loop_settings(url, platform=platform.url))
    divert(store, router, "c1", number="02788888888")  # a landline: no SMS, only the order
    no = store.orders()[0]["order_no"]
    store.close()
    platform.hold()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "fenliu", "--config", str(cfg), "outbox", "run"]
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        platform.wait_for_requests(1, timeout=30, path="/orders")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    assert len(platform.orders) == 1  # created, but fenliu never heard the answer
    platform.release()
    store = Store(url, settings=loop_settings(url, platform=platform.url))
    assert store.orders()[0]["status"] == "queued"  # not lost, not marked delivered
    second = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        reqs = platform.wait_for_requests(2, timeout=30, path="/orders")
        deadline = time.monotonic() + 20
        while store.orders()[0]["status"] != "accepted":
            assert time.monotonic() < deadline, "the second deliverer did not record the answer"
            time.sleep(0.05)
    finally:
        second.send_signal(signal.SIGTERM)
        out, err = second.communicate(timeout=20)
    assert second.returncode == 0, err.decode()
    assert reqs[0]["headers"]["Idempotency-Key"] == reqs[1]["headers"]["Idempotency-Key"] == f"order:{no}"
    assert json.loads(reqs[0]["body"]) == json.loads(reqs[1]["body"])
    assert len(platform.orders) == 1
    o = store.order(no)
    assert o["platform_ref"] == platform.orders[f"order:{no}"]["order_no"]
    assert store.db.scalar("SELECT attempts FROM outbox WHERE kind='order'") == 2
    store.close()


async def test_two_instances_sharing_postgresql_deliver_each_item_once(pg_store_url, router):
    """Two deliverers (as two `fenliu serve` machines would run) on one PostgreSQL store: every
    order reaches the platform exactly once, and both did part of the work."""
    with FakePlatform() as platform:
        s = loop_settings(pg_store_url, platform=platform.url)
        platform.slow(0.05)  # deliveries overlap in time, so the two really compete
        writer = Store(pg_store_url, settings=s)
        for i in range(40):
            divert(writer, router, f"c{i}", number=f"0278000{i:04d}")  # landlines: orders only
        a, b = Store(pg_store_url, settings=s), Store(pg_store_url, settings=s)
        oa, ob = Outbox(a, s), Outbox(b, s)

        async def drain(o: Outbox) -> None:
            while writer.db.scalar("SELECT COUNT(*) FROM outbox WHERE status='pending'"):
                if not await o.deliver_due():
                    await asyncio.sleep(0.02)

        await asyncio.wait_for(asyncio.gather(drain(oa), drain(ob)), 60)
        await oa.close()
        await ob.close()
        keys = [r["headers"]["Idempotency-Key"] for r in platform.requests]
        assert len(keys) == len(set(keys)) == 40 and len(platform.orders) == 40
        assert oa.delivered + ob.delivered == 40 and oa.delivered > 0 and ob.delivered > 0
        for st in (writer, a, b):
            st.close()


async def test_a_slow_platform_within_the_timeout_is_waited_for_not_retried(tmp_path, router, platform):
    url = f"sqlite:///{tmp_path}/o.db"
    s = loop_settings(url, platform=platform.url)  # platform timeout 10 s
    store = Store(url, settings=s)
    divert(store, router, "c1", number="02788880000")
    platform.slow(1.0)
    outbox = Outbox(store, s)
    await deliver_until(outbox, lambda: pending(store) == 0)
    await outbox.close()
    assert len(platform.requests) == 1 and outbox.retried == 0
    assert store.orders()[0]["status"] == "accepted"


async def test_when_the_platform_answers_again_waiting_orders_stop_sitting_out_their_back_off(tmp_path, router,
                                                                                           platform):
    url = f"sqlite:///{tmp_path}/o.db"
    s = loop_settings(url, platform=platform.url, retry_base=1.0, retry_max=600.0)
    store = Store(url, settings=s)
    for i in range(3):
        divert(store, router, f"c{i}", number=f"0278888000{i}")
    platform.fail(3)
    outbox = Outbox(store, s)
    assert await outbox.deliver_due() == 3 and outbox.retried == 3
    # one order's back-off ends first; the others would wait ten more minutes
    ids = [r["id"] for r in store.db.rows("SELECT id FROM outbox ORDER BY id")]
    store.db.execute("UPDATE outbox SET next_at=? WHERE id=?", (time.time(), ids[0]))
    store.db.execute("UPDATE outbox SET next_at=? WHERE id<>?", (time.time() + 600, ids[0]))
    assert await outbox.deliver_due() == 1  # it gets through: the platform is back
    assert await outbox.deliver_due() == 2  # so the other two are due at once
    await outbox.close()
    assert pending(store) == 0 and len(platform.orders) == 3


async def test_an_sms_the_gateway_refuses_is_marked_failed_and_alerts(tmp_path, router, platform):
    url = f"sqlite:///{tmp_path}/o.db"
    s = loop_settings(url, sms=platform.url)  # no platform: the order stays local, only the SMS goes out
    store = Store(url, settings=s)
    divert(store, router, "c1")
    platform.fail(1, status=422)
    outbox = Outbox(store, s)
    await deliver_until(outbox, lambda: pending(store) == 0)
    await outbox.close()
    sms = store.call_loop("c1")["sms"][0]
    assert sms["status"] == "failed" and "HTTP 422" in sms["reason"]
    assert [a["kind"] for a in store.alerts()] == ["sms_failed"]
    assert len(platform.messages) == 0
