"""Closing the loop in the store, on SQLite and on PostgreSQL: a diversion opens its work order,
outbox item and SMS in the transfer result's transaction; the operator's final action; the
SMS rules; status from the platform; follow-ups; alerts; repeat callers; retention."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from fenliu.bus import CallEvent, WorkerFact
from fenliu.console.feed import EventFeed
from fenliu.loop.followthrough import FollowThrough
from fenliu.sip import protocol as P
from fenliu.store.record import Store, parse_score
from fenliu.store.retention import purge
from tests.loop.loop_env import HOTLINE_URI, NOISE, divert, loop_settings


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/loop.db"
    return request.getfixturevalue("pg_store_url")


@pytest.fixture
def store(store_url):  # type: ignore[no-untyped-def]
    s = Store(store_url, settings=loop_settings(store_url, platform="http://127.0.0.1:9", sms="http://127.0.0.1:9"))
    yield s
    s.close()


def test_a_diversion_writes_order_outbox_and_sms_together(store, router):
    divert(store, router, "c1")
    call = store.db.one("SELECT number, called, day, suggested, suggested_category, diverted_to, final_action "
                        "FROM calls WHERE call_id='c1'")
    assert call == {"number": "13812345678", "called": "110", "day": call["day"], "suggested": "12345",
                    "suggested_category": "noise", "diverted_to": "12345", "final_action": "accepted"}
    orders = store.orders()
    assert len(orders) == 1 and orders[0]["status"] == "queued" and orders[0]["platform"] == "12345"
    o = store.order(orders[0]["order_no"])
    assert o["body"]["caller"] == "13812345678" and o["body"]["category"] == "噪声扰民"
    assert "酒吧" in o["body"]["excerpt"] and o["body"]["matched"] and o["body"]["reason"]
    assert o["body"]["call_id"] == "c1" and o["body"]["deadline"]
    assert [t["status"] for t in o["trail"]] == ["queued"]
    items = store.db.rows("SELECT kind, idem_key, status FROM outbox ORDER BY id")
    assert [(i["kind"], i["status"]) for i in items] == [("order", "pending"), ("sms", "pending")]
    assert items[0]["idem_key"] == f"order:{o['order_no']}"
    sms = store.call_loop("c1")["sms"]
    assert len(sms) == 1 and sms[0]["status"] == "queued" and o["order_no"] in sms[0]["body"]
    assert "12345" in sms[0]["body"] and "1满意" in sms[0]["body"]


def test_a_transfer_to_an_address_nobody_configured_makes_no_work_order(store, router):
    """(Only a deployment's transfer.allow_uris lets a role dial one.) The call says where it
    went; no order goes to any platform, no SMS tells the caller a hotline has the matter."""
    divert(store, router, "c-raw", target="sip:ward7@10.20.0.15")
    call = store.db.one("SELECT diverted_to, transfer FROM calls WHERE call_id='c-raw'")
    assert call == {"diverted_to": None, "transfer": "bridged"}
    assert store.orders() == [] and store.db.rows("SELECT * FROM outbox") == []
    assert store.call_loop("c-raw")["sms"] == []


def test_order_and_transfer_result_share_one_transaction(store, router, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store.linkage, "order_body", broken)
    with pytest.raises(RuntimeError):
        divert(store, router, "c1", end=False)
    # the transfer result was rolled back with the order: a restart replays neither half
    assert store.db.one("SELECT transfer, diverted_to FROM calls WHERE call_id='c1'") == \
        {"transfer": None, "diverted_to": None}
    assert store.db.scalar("SELECT COUNT(*) FROM outbox") == 0


def test_final_actions(store, router):
    divert(store, router, "accepted")
    divert(store, router, "overrode", target="sip:12348@127.0.0.1:5092")
    divert(store, router, "kept", target="")
    divert(store, router, "unsuggested", text="喂，喂，听得到吗", target=HOTLINE_URI)
    divert(store, router, "police", text="有人拿刀砍人了", target="")
    divert(store, router, "urgent", text="有人拿刀砍人了", target="sip:120@127.0.0.1:5098")
    got = {r["call_id"]: (r["final_action"], r["diverted_to"]) for r in
           store.db.rows("SELECT call_id, final_action, diverted_to FROM calls")}
    assert got == {"accepted": ("accepted", "12345"), "overrode": ("overrode", "12348"), "kept": ("kept", None),
                   "unsuggested": ("unsuggested", "12345"), "police": ("police", None),
                   "urgent": ("police", None)}  # 120 joining is linkage, not a diversion: no work order
    assert {o["call_id"] for o in store.orders()} == {"accepted", "overrode", "unsuggested"}


def test_sms_never_twice_rate_limited_and_only_to_mobiles(store, router):
    divert(store, router, "c1", end=False)
    # a REFER completing after the bridge reports the diversion again: still one order, one SMS
    store.record(WorkerFact("w0", P.TransferUpdate("c1", P.TransferStep.COMPLETED, HOTLINE_URI, "three-way")))
    assert len(store.orders()) == 1 and len(store.call_loop("c1")["sms"]) == 1
    for i in range(2, 5):
        divert(store, router, f"c{i}")
    statuses = [store.call_loop(f"c{i}")["sms"][0]["status"] for i in range(1, 5)]
    assert statuses == ["queued", "queued", "queued", "skipped"]  # 3 per number per day
    assert "rate limit" in store.call_loop("c4")["sms"][0]["reason"]
    divert(store, router, "landline", number="02787654321")
    divert(store, router, "junk", number="anonymous")
    for c in ("landline", "junk"):
        m = store.call_loop(c)["sms"][0]
        assert m["status"] == "skipped" and "not a mobile number" in m["reason"]
    assert store.db.scalar("SELECT COUNT(*) FROM outbox WHERE kind='sms'") == 3


def test_no_platform_keeps_the_order_for_hand_over(store_url, router):
    s = Store(store_url, settings=loop_settings(store_url))
    divert(s, router, "c1")
    o = s.orders()[0]
    assert o["status"] == "local" and o["delivery"] is None
    assert "no platform configured" in s.order(o["order_no"])["trail"][0]["detail"]["why"]
    assert s.call_loop("c1")["sms"][0]["status"] == "local"
    assert s.requeue(o["order_no"], time.time()) is False  # nowhere to send it
    assert s.order_status(o["order_no"], "completed", time.time(), "test")["applied"]
    asked = [m for m in s.call_loop("c1")["sms"] if m["purpose"] == "followup"]
    assert asked and asked[0]["status"] == "local"  # the question never left: no gateway
    assert s.sms_reply("13812345678", "1", time.time()) is None  # so no reply can answer it
    s.close()


def test_platform_status_follow_up_sms_and_alerts(store, router):
    seen: list[dict] = []
    store.alert_listeners.append(seen.append)
    divert(store, router, "c1")
    no = store.orders()[0]["order_no"]
    now = time.time()
    assert store.order_status(no, "dispatched", now, "test")["status"] == "dispatched"
    store.order_status(no, "completed", now + 1, "test")
    row = store.db.one("SELECT status, dispatched_at, completed_at FROM work_orders WHERE order_no=?", (no,))
    assert row == {"status": "completed", "dispatched_at": now, "completed_at": now + 1}
    sms = store.call_loop("c1")["sms"]
    assert [m["purpose"] for m in sms] == ["guidance", "followup"] and "已办结" in sms[1]["body"]
    # the caller answers the latest question (the hotline's result): unsatisfied raises an alert
    placed = store.sms_reply("+86 138 1234 5678", "3 不满意，没人来处理", now + 2)
    assert placed is not None and placed["side"] == "hotline" and placed["score"] == 3
    assert [a["kind"] for a in seen] == ["unsatisfied"]
    assert store.sms_reply("13812345678", "谢谢", now + 3) is None  # not an answer
    assert store.sms_reply("13900000000", "1", now + 3) is None  # we never asked this number
    divert(store, router, "c2", number="13900000001")
    no2 = store.orders()[0]["order_no"]
    store.order_status(no2, "returned", now, "test", {"note": "不属于本部门"})
    assert seen[-1]["kind"] == "order_returned" and "不属于本部门" in seen[-1]["message"]
    store.order_status(no2, "returned", now + 5, "test")  # a repeat report does not alert twice
    assert [a["kind"] for a in store.alerts()] == ["order_returned", "unsatisfied"]
    assert store.order_status("GD-unknown", "completed", now, "test") is None
    with pytest.raises(ValueError):
        store.order_status(no2, "evil; DROP TABLE calls", now, "test")


def test_stuck_and_overdue_orders_alert_once(store, router):
    divert(store, router, "c1")
    no = store.orders()[0]["order_no"]
    later = time.time() + 73 * 3600
    kinds = sorted(a["kind"] for a in store.check_deadlines(later, stuck_after=900))
    assert kinds == ["order_overdue", "order_stuck", "sms_stuck"]
    assert store.check_deadlines(later + 60, stuck_after=900) == []
    store.order_status(no, "completed", time.time(), "test")
    assert [a["kind"] for a in store.alerts()].count("order_overdue") == 1


def test_claim_leases_items(store, router):
    divert(store, router, "c1")
    now = time.time()
    first = store.claim(now, 10, lease=60)
    assert {i["kind"] for i in first} == {"order", "sms"} and all(i["attempts"] == 1 for i in first)
    assert store.claim(now, 10, lease=60) == []  # leased: nobody else sends them
    again = store.claim(now + 61, 10, lease=60)  # the holder died: the lease ran out
    assert len(again) == 2 and all(i["attempts"] == 2 for i in again)
    store.retry_later(again[0], "HTTP 503", now + 100)
    assert store.claim(now + 99, 10, lease=1) == [] or all(i["id"] != again[0]["id"]
                                                          for i in store.claim(now + 99, 10, lease=1))


def test_repeat_caller_is_flagged_before_the_decision_and_same_matter_is_flow_back(store, router):
    feed = EventFeed(100)
    follow = FollowThrough(store, 7, feed.note)
    t0 = time.time() - 3 * 86400
    divert(store, router, "old", t=t0)
    divert(store, router, "older", number="13700000000", t=t0)  # another number: not this caller's
    started = WorkerFact("w0", P.CallStarted("new", 0, "<sip:13812345678@10.0.0.1>", "<sip:110@fenliu>"))
    store.record(started)
    follow(started)
    notes = [e for e in feed.ring if e["kind"] == "repeat_caller"]
    assert len(notes) == 1 and notes[0]["call_id"] == "new" and notes[0]["data"]["count"] == 1
    assert "第 2 次来电" in notes[0]["data"]["text"] and "12345" in notes[0]["data"]["text"]
    assert feed.live["new"].repeat["count"] == 1
    decision = CallEvent("new", "caller", "w0", router.decide(NOISE))
    store.record(decision)
    follow(decision)
    same = [e for e in feed.ring if e["kind"] == "repeat_same_matter"]
    assert len(same) == 1 and "回流" in same[0]["data"]["text"]
    assert store.db.one("SELECT repeat_of, flowback_of FROM calls WHERE call_id='new'") == \
        {"repeat_of": "old", "flowback_of": "old"}
    # outside the window: no flag
    divert(store, router, "ancient", number="13600000000", t=time.time() - 30 * 86400)
    fresh = WorkerFact("w0", P.CallStarted("n2", 0, "<sip:13600000000@10.0.0.1>", "<sip:110@fenliu>"))
    store.record(fresh)
    follow(fresh)
    assert not [e for e in feed.ring if e["kind"] == "repeat_caller" and e["call_id"] == "n2"]


def test_retention_blanks_old_transcripts_only(store_url, router, tmp_path):
    s0 = loop_settings(store_url)
    rec = tmp_path / "rec"
    rec.mkdir()
    (rec / "old.wav").write_bytes(b"RIFF")
    (rec / "new.wav").write_bytes(b"RIFF")
    import os

    os.utime(rec / "old.wav", (time.time() - 40 * 86400,) * 2)
    settings = replace(s0, store=replace(s0.store, transcript_days=30, recording_days=30, recordings_dir=str(rec)))
    store = Store(store_url, settings=settings)
    divert(store, router, "old", t=time.time() - 31 * 86400)
    divert(store, router, "new", number="13900000002")
    lines = purge(store, settings)
    assert "1 call(s)" in lines[0] and "1 recording(s)" in lines[1]
    assert store.call("old")["text"] == "" and NOISE in store.call("new")["text"]
    assert [e["kind"] for e in store.events("old")] == ["Decision", "transfer_started", "transfer_bridged"]
    assert store.call("old")["category"] == "噪声扰民"  # the figures keep what they need
    assert not (rec / "old.wav").exists() and (rec / "new.wav").exists()
    store.close()


def test_parse_score():
    assert [parse_score(x) for x in ("1", "２", "3 不满意", "基本满意", "满意", "12", "", "谢谢")] == \
        [1, 2, 3, 2, 1, None, None, None]


def test_schema_upgrade_from_version_2_keeps_calls(tmp_path):
    import sqlite3

    from fenliu.store.schema import MIGRATIONS

    path = tmp_path / "v2.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for m in MIGRATIONS[:2]:
        con.executescript(m)
    con.execute("INSERT INTO schema_version VALUES (2)")
    con.execute("INSERT INTO calls(call_id, worker, started_at) VALUES ('x', 'w0', 1.0)")
    con.commit()
    con.close()
    with pytest.raises(Exception, match="fenliu db upgrade"):
        Store(f"sqlite:///{path}", upgrade=False)
    s = Store(f"sqlite:///{path}")
    assert (s.upgraded_from, s.version) == (2, len(MIGRATIONS))
    assert s.call("x")["worker"] == "w0" and s.orders() == []
    s.close()
    assert json.loads("{}") == {}


def test_a_lost_postgresql_connection_is_reopened(pg_store_url, router):
    """The server drops fenliu's session (a restart, a failover): the next statement, or the
    next transaction's BEGIN, reconnects once instead of failing every later call. (A
    transaction cut after BEGIN raises and is rolled back whole by the server.)"""
    import psycopg

    store = Store(pg_store_url, settings=loop_settings(pg_store_url))
    divert(store, router, "before")

    def kill_session() -> None:
        pid = store.db.scalar("SELECT pg_backend_pid()")
        with psycopg.connect(pg_store_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    kill_session()
    assert store.db.scalar("SELECT COUNT(*) FROM calls") == 1  # reconnected, statement retried once
    kill_session()
    divert(store, router, "after")  # its first transaction starts on a fresh connection
    assert {o["call_id"] for o in store.orders()} == {"before", "after"}
    store.close()


def test_records_wait_in_order_while_the_database_is_locked_and_the_order_is_not_lost(tmp_path, router):
    """Another program holds SQLite's write lock while a call is diverted: the records wait in
    memory and are written, in order, once the lock is gone; the work order exists then."""
    import sqlite3

    url = f"sqlite:///{tmp_path}/locked.db"
    store = Store(url, settings=loop_settings(url))
    store.db.execute("PRAGMA busy_timeout=50")
    other = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    divert(store, router, "c1")
    assert store.flush() == 6  # all six records of the call are waiting
    other.execute("ROLLBACK")
    other.close()
    assert store.flush() == 0
    assert store.call("c1")["ended_at"] is not None and store.orders()[0]["call_id"] == "c1"
    assert [e["kind"] for e in store.events("c1")] == ["FinalTranscript", "Decision", "transfer_started",
                                                     "transfer_bridged"]
    store.close()


@pytest.mark.parametrize(("current", "new", "moves"), [
    ("queued", "accepted", True), ("accepted", "dispatched", True), ("dispatched", "completed", True),
    ("queued", "completed", True),  # a platform may skip steps
    ("accepted", "returned", True), ("dispatched", "returned", True), ("queued", "returned", True),
    ("dispatched", "accepted", False), ("completed", "accepted", False), ("completed", "returned", False),
    ("returned", "accepted", False), ("returned", "returned", False), ("accepted", "accepted", False),
])
def test_order_status_moves_only_forward(current, new, moves):
    from fenliu.store.record import moves_forward

    assert moves_forward(current, new) is moves
