import sqlite3

import pytest

from fenliu.bus import CallEvent, WorkerFact
from fenliu.errors import ConfigError
from fenliu.events import Decision, FinalTranscript, PartialTranscript
from fenliu.sip import protocol as P
from fenliu.store.record import Store


def test_store_keeps_calls_finals_decisions_and_transfer_steps(tmp_path, router):
    store = Store(f"sqlite:///{tmp_path}/db/fenliu.db")
    store.record(WorkerFact("w0", P.CallStarted("c1", 0, "<sip:138@pbx>", t=1.0)))
    store.record(CallEvent("c1", "caller", "w0", PartialTranscript("c1", 1, "我们小区", 0.0, 1.0)))
    store.record(CallEvent("c1", "caller", "w0", FinalTranscript("c1", 1, "我们小区停水了", 0.0, 2.0)))
    d = router.decide("我们小区停水了")
    store.record(CallEvent("c1", "caller", "w0", d))
    store.record(WorkerFact("w0", P.TransferUpdate("c1", P.TransferStep.FAILED, "sip:12345@pbx", "three-way", 486,
                                                   "Busy", True)))
    store.record(WorkerFact("w0", P.CallEnded("c1", 0, 200, "OK", t=9.0)))
    rows = store.calls()
    assert rows == [{"call_id": "c1", "worker": "w0", "remote": "<sip:138@pbx>", "started_at": 1.0, "ended_at": 9.0,
                     "status": 200, "reason": "OK"}]
    ev = store.events("c1")
    assert [e["kind"] for e in ev] == ["FinalTranscript", "Decision", "transfer_failed"]  # partials are not kept
    assert ev[1]["target"] == "12345" and ev[1]["category"] == "供水 / 漏水"
    store.close()
    # it is a real SQLite file another tool can read
    con = sqlite3.connect(tmp_path / "db" / "fenliu.db")
    assert con.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 3
    con.close()


def test_unsupported_store_url_is_refused():
    with pytest.raises(ConfigError, match="sqlite"):
        Store("mysql://x@y/z")


def test_decision_type_round_trips(tmp_path, router):
    store = Store(f"sqlite:///{tmp_path}/f.db")
    d: Decision = router.decide("他拿刀砍人了")
    store.record(CallEvent("c2", "caller", "w0", d))
    e = store.events("c2")[0]
    assert e["target"] == "police" and e["urgent"] is True and e["vetoed_by"]
    store.close()


def test_a_refused_caller_and_a_crash_are_on_the_record(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/f.db")
    store.record(WorkerFact("w0", P.CallRejected(486, "worker w0 full: 2 conversation(s)", "abc@pbx", "<sip:139@pbx>",
                                                 "110", "10.0.0.9", t=5.0)))
    store.record(WorkerFact("w1", P.CallStarted("c3", 1, "<sip:137@pbx>", t=6.0)))
    store.record(WorkerFact("w1", P.CallEnded("c3", 1, 0, "worker w1 lost (crashed); call ended", t=7.0)))
    rows = {r["call_id"]: r for r in store.calls()}
    assert rows["abc@pbx"]["status"] == 486 and rows["abc@pbx"]["ended_at"] == 5.0
    assert "full" in rows["abc@pbx"]["reason"] and rows["abc@pbx"]["remote"] == "<sip:139@pbx>"
    assert rows["c3"]["ended_at"] == 7.0 and "crashed" in rows["c3"]["reason"]
    assert [e["kind"] for e in store.events("abc@pbx")] == ["call_rejected"]
    store.close()


def test_calls_have_our_own_id_and_the_sip_call_id_is_searchable(tmp_path):
    """A PBX that reuses a SIP Call-ID must not merge two callers into one record."""
    store = Store(f"sqlite:///{tmp_path}/fenliu.db")
    for cid, number in (("7f1c0d0e-0000-4000-8000-000000000001", "13800000001"),
                        ("7f1c0d0e-0000-4000-8000-000000000002", "13900000002")):
        store.record(WorkerFact("w0", P.CallStarted(cid, 0, f"<sip:{number}@pbx>", sip_call_id="recycled@pbx")))
        store.record(WorkerFact("w0", P.CallEnded(cid, 0, 200, "Normal call clearing")))
    rows, total = store.history(q="recycled@pbx")
    assert total == 2 and {r["remote"] for r in rows} == {"<sip:13800000001@pbx>", "<sip:13900000002@pbx>"}
    assert all(r["sip_call_id"] == "recycled@pbx" for r in rows)
    assert store.history(q="7f1c0d0e-0000-4000-8000-000000000002")[1] == 1  # and by our own id
    store.close()


def test_each_instance_writes_its_name_on_its_calls_and_orders(tmp_path, router):
    """Two instances on one store: every call and order row says which one handled it."""
    from dataclasses import replace as change

    from fenliu.settings import Settings, instance_name
    from tests.loop.loop_env import divert

    s = Settings()
    a = Store(f"sqlite:///{tmp_path}/f.db", settings=change(s, store=change(s.store, instance="fenliu-a")))
    b = Store(f"sqlite:///{tmp_path}/f.db", settings=change(s, console=change(s.console, port=8111)))
    try:
        divert(a, router, "on-a")
        divert(b, router, "on-b", number="13900000002")
        rows = {r["call_id"]: r["instance"] for r in a.history()[0]}
        assert rows == {"on-a": "fenliu-a", "on-b": instance_name(b.settings)}
        assert instance_name(b.settings).endswith(":8111")
        assert {o["call_id"]: o["instance"] for o in a.orders()} == rows
    finally:
        a.close()
        b.close()


def test_leg_dialogs_are_kept_while_the_leg_is_up_and_fenliu_ended_calls_go_on_the_callback_list(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/f.db")
    for cid in ("c-bye", "c-timeout", "c-crash"):
        s.record(WorkerFact("w0", P.CallStarted(cid, 0, "<sip:13800001111@pbx>", "<sip:110@fenliu>")))
        s.record(WorkerFact("w0", P.LegDialog(cid, "caller", f"sip-{cid}", "<sip:110@x>;tag=a", "<sip:c@y>;tag=b",
                                              "sip:c@127.0.0.1:5999")))
    s.record(WorkerFact("w0", P.LegDialog("c-bye", "hotline", "sip-h", "<sip:110@x>;tag=c", "<sip:h@y>;tag=d",
                                          "sip:h@127.0.0.1:5998", ("sip:proxy;lr",))))
    assert s.db.scalar("SELECT COUNT(*) FROM leg_dialogs") == 4
    s.record(WorkerFact("w0", P.LegEnded("c-bye", "hotline", 200, "BYE")))
    assert s.db.scalar("SELECT COUNT(*) FROM leg_dialogs WHERE call_id = 'c-bye'") == 1
    s.record(WorkerFact("w0", P.CallEnded("c-bye", 0, 200, "Normal call clearing")))  # the caller hung up
    s.record(WorkerFact("w0", P.CallEnded("c-timeout", 0, 200, "fenliu: no RTP for 15 s and no answer to OPTIONS")))
    s.record(WorkerFact("w0", P.CallEnded("c-crash", 0, 0, "worker w0 lost (crashed); call ended")))
    assert s.db.scalar("SELECT COUNT(*) FROM leg_dialogs") == 0
    assert sorted(c["call_id"] for c in s.callbacks()) == ["c-crash", "c-timeout"]  # not the caller who hung up
    first = s.callbacks()[0]
    assert first["number"] == "13800001111" and s.callback_done(first["id"], "op1", "called back")
    assert not s.callback_done(first["id"], "op2")  # once
    assert len(s.callbacks()) == 1 and len(s.callbacks(open_only=False)) == 2
    s.close()


def test_records_wait_for_a_locked_database_in_order_on_disk_too_and_survive_a_crash(tmp_path):
    """SQLite write-locked by another process: the service's records (and an operator's audit row)
    wait in memory and in the journal; a service that crashed meanwhile (its Store never closed)
    leaves them to the next run, which writes them first, in order — nothing lost, nothing twice."""
    url = f"sqlite:///{tmp_path}/f.db"
    s = Store(url, journal=True)
    s.db._con.execute("PRAGMA busy_timeout = 50")  # (a lock is waited for 30 s in production)
    locker = sqlite3.connect(tmp_path / "f.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another tool holds the write lock
    s.record(WorkerFact("w0", P.CallStarted("c-wait", 0, "<sip:13800002222@pbx>", "<sip:110@fenliu>")))
    s.audit("op1", "transfer", "c-wait", "requested", {"target": "12345"})
    s.record(WorkerFact("w0", P.CallEnded("c-wait", 0, 200, "BYE")))
    assert s.waiting == 3 and not s.up
    assert s.journal is not None and s.journal.path.exists()
    # the service crashes here (never closed, nothing flushed); the lock goes away
    locker.execute("ROLLBACK")
    locker.close()
    again = Store(url, journal=True)  # the next run
    [call] = again.calls()
    assert call["call_id"] == "c-wait" and call["ended_at"] is not None
    assert [(a["user"], a["action"]) for a in again.audit_log()] == [("op1", "transfer")]
    assert again.waiting == 0 and again.up and not again.journal.path.exists()
    again.close()
