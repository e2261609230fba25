"""The record: every call, its final transcripts, decisions and transfer steps; the accounts,
sessions, API tokens and the audit log of the console and API.

SQLite by default (one file, WAL) or PostgreSQL (shared by several instances), through
``db.Database``. The schema is built by numbered migrations (``schema.MIGRATIONS``); the version
reached is kept in ``schema_version``: an older store is brought up to date (``fenliu db
upgrade``, or at start), a newer one is refused.

Closing the loop starts here: when a transfer to a hotline succeeds, the work order, its outbox
item and the caller's SMS are written in the same transaction as the transfer result, so an
order can never be lost between the two (``loop/outbox.py`` delivers them).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import deque
from pathlib import Path
from typing import Any

from fenliu.bus import CallEvent, WorkerFact
from fenliu.events import Decision, FinalTranscript, event_to_dict
from fenliu.hotlines.linkage import ORDER_STATUSES, Linkage, caller_number, mobile, uri_host, uri_user
from fenliu.hotlines.masking import mask_number
from fenliu.settings import Settings, instance_name
from fenliu.sip import protocol as P
from fenliu.store.db import Database
from fenliu.store.journal import Journal
from fenliu.store.schema import MIGRATIONS

log = logging.getLogger("fenliu.store")
MAX_WAITING = 200_000  # records kept in memory while the database is unavailable

KEPT_FACTS = {"transfer_started", "transfer_consulted", "transfer_bridged", "transfer_completed", "transfer_failed",
              "media_timeout", "media_probe", "leg_held", "reinvite_limited", "call_degraded", "call_rejected", "dtmf", "worker_lost", "worker_restarted",
              "restart_failed", "orphans_released", "front_event", "registration", "error", "ivr_step", "overflowed",
              "queue_dialing", "queue_answered", "queue_failed"}
TRANSFER_OUTCOMES = ("bridged", "completed", "failed")


def journal_path(url: str, instance: str) -> Path:
    """Where the records waiting for the database are journalled: beside an SQLite file; under
    var/ for PostgreSQL (one file per instance)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", instance)  # one per instance: several may share a store
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///"):])
        return db.with_name(f"{db.name}.{name}.journal")
    return Path("var") / f"store-journal-{name}.log"


def ended_by_fenliu(status: int, reason: str) -> bool:
    """Did fenliu itself end the call (a media timeout, a bound, a crash), rather than a party
    hanging up? Those callers go on the callback list."""
    return reason.startswith("fenliu") or "lost" in reason or (status == 0 and "crash" in reason)
# the operator's final action on a call: the denominators of the figures and a retrain's labels
FINAL_ACTIONS = {"accepted": "采纳建议分流", "overrode": "改派其他热线", "kept": "建议分流但留110处置",
                 "unsuggested": "无建议自行分流", "police": "110 处置"}
SATISFACTION = {1: "满意", 2: "基本满意", 3: "不满意"}


def final_action(suggested: str | None, diverted_to: str | None, linkage: Linkage) -> str:
    suggested_diversion = bool(suggested) and linkage.is_diversion(suggested or "")
    if diverted_to:
        if suggested_diversion:
            return "accepted" if suggested == diverted_to else "overrode"
        return "unsuggested"
    return "kept" if suggested_diversion else "police"



ORDER_RANK = {"queued": 0, "local": 0, "failed": 0, "accepted": 1, "dispatched": 2, "completed": 3}


def moves_forward(current: str, new: str) -> bool:
    """An order's status only moves forward: accepted → dispatched → completed, and returned from
    any open state. Completed and returned are final for the platform (a returned order goes
    out again only when a supervisor resends it)."""
    if current in ("completed", "returned"):
        return False
    if new == "returned":
        return True
    return ORDER_RANK.get(new, -1) > ORDER_RANK.get(current, 0)

class Store:
    def __init__(self, url: str, seat: str = "", linkage: Linkage | None = None, *, upgrade: bool = True,
                 settings: Settings | None = None, journal: bool = False) -> None:
        self.db = Database(url)
        self.url = url
        self.path = self.db.path
        self.seat = seat  # the operator seat every call of this service rings (B2BUA mode), "" when answering
        self.settings = settings or (linkage.settings if linkage else Settings())
        self.linkage = linkage or Linkage(self.settings)
        self.instance = instance_name(self.settings)  # written on the calls and orders this instance handles
        self.alert_listeners: list[Any] = []  # called with each new alert, after its transaction
        # records the database could not take yet (bus items, and audit rows as ("audit", args)), in order
        self._waiting: deque[Any] = deque()
        self.up = True  # the last write reached the database
        # the running service's records also wait on disk (journal=True: `fenliu serve` only — a CLI
        # command opening the same store must not take over the service's journal)
        self.journal: Journal | None = Journal(journal_path(url, self.instance)) if journal else None
        try:
            self.upgraded_from, self.version = self.db.migrate(MIGRATIONS, upgrade=upgrade)
        except BaseException:
            self.db.close()
            raise
        if journal:
            # the service runs on an event loop: once started, a lock held elsewhere is waited for 0.25 s,
            # then the records wait (memory + journal) and the loop goes on; a tool waits as long as it takes
            self.db.set_wait(0.25)
        left = self.journal.load() if self.journal is not None else []
        if left and self.journal is not None:  # a run that crashed while the database was down: its records first
            log.warning("store: %d record(s) from the journal %s of an earlier run", len(left), self.journal.path)
            self.journal.clear()
            for item in left:
                self._wait(item)
            self.flush()

    # -- the call record (a bus subscriber) -----------------------------------------------------
    def record(self, item: CallEvent | WorkerFact) -> None:
        """Keep what matters of every call; a successful diversion opens its work order. While
        the database cannot be written (PostgreSQL restarting, SQLite locked by another tool) the
        items wait in memory, in order, and are written when it answers again: a diversion's
        work order is late then, not lost."""
        if self._waiting:
            self.flush()
            if self._waiting:
                self._wait(item)
                return
        try:
            self._record(item)
            self.up = True
        except Exception as e:
            if not self.db.unavailable(e):
                raise
            if self.up:
                log.warning("store unavailable (%s): keeping the call records (in memory%s) until it answers", e,
                            f" and in {self.journal.path}" if self.journal is not None else "")
            self.up = False
            self._wait(item)

    def _wait(self, item: Any) -> None:
        if len(self._waiting) >= MAX_WAITING:
            log.error("store unavailable too long: %d items waiting; dropping the oldest", len(self._waiting))
            self._waiting.popleft()
        self._waiting.append(item)
        if self.journal is not None:
            try:
                self.journal.append(item)
            except OSError as e:  # a full disk: the memory copy still waits
                log.error("store journal %s not written: %s", self.journal.path, e)

    def flush(self) -> int:
        """Write what waited for the database (called on each record and by the outbox's round);
        returns how many are still waiting."""
        while self._waiting:
            try:
                head = self._waiting[0]
                if isinstance(head, tuple) and head and head[0] == "audit":
                    self._audit(*head[1:])
                else:
                    self._record(head)
            except Exception as e:
                if not self.db.unavailable(e):
                    log.exception("dropping a call record the store refuses: %s", self._waiting[0])
                    self._waiting.popleft()
                    continue
                self.up = False
                break
            self._waiting.popleft()
        if not self._waiting:
            self.up = True
            if self.journal is not None and (self.journal.count or self.journal.path.exists()):
                self.journal.clear()  # all in the database now
        return len(self._waiting)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _record(self, item: CallEvent | WorkerFact) -> None:
        now = time.time()
        db = self.db
        raised: list[dict[str, Any]] = []
        if isinstance(item, CallEvent):
            ev = item.event
            if not isinstance(ev, FinalTranscript | Decision):
                return
            with db.tx():
                db.execute("INSERT INTO events(call_id, leg, kind, at, data) VALUES (?,?,?,?,?)",
                           (item.call_id, item.leg, type(ev).__name__, now,
                            json.dumps(event_to_dict(ev), ensure_ascii=False)))
                if isinstance(ev, FinalTranscript) and ev.text:
                    db.execute("UPDATE calls SET text = text || ? WHERE call_id=?",
                               (f"{item.leg}: {ev.text}\n", item.call_id))
                elif isinstance(ev, Decision):
                    # what the operator was offered, until a diversion happened
                    db.execute("UPDATE calls SET target=?, category=?, suggested=?, suggested_category=? "
                               "WHERE call_id=? AND diverted_to IS NULL",
                               (ev.target, ev.category, ev.target, ev.category_id or ev.category, item.call_id))
            return
        f = item.fact
        with db.tx():
            if isinstance(f, P.CallStarted):
                called, trunk = uri_user(f.local), uri_host(f.remote)
                db.execute("INSERT INTO calls(call_id, worker, remote, started_at, seat, number, called, site, day, "
                           "sip_call_id, instance) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                           (f.call_id, item.worker, f.remote, f.t, self.seat, caller_number(f.remote), called,
                            self.linkage.site_for(called, trunk), self.linkage.day(f.t), f.sip_call_id,
                            self.instance))
            elif isinstance(f, P.SeatAnswered):
                # the agent's seat that took the call (behind an ACD): history and operators follow it
                db.execute("UPDATE calls SET seat=? WHERE call_id=?", (f.seat, f.call_id))
                if db.one("SELECT 1 FROM users WHERE seat=? AND disabled=0", (f.seat,)) is None:
                    self._alert(raised, "seat_unknown", f"{f.call_id}:{f.seat}",
                                f"坐席 {f.seat} 接听了来电，但没有接警台账户登记此坐席：该通话只有班长可见 / seat "
                                f"{f.seat} answered (from {f.source or 'the answer'}) and no console user has that "
                                f"seat (fenliu user add NAME --role operator --seat {f.seat})", call_id=f.call_id)
            elif isinstance(f, P.LegDialog):  # another instance (or this one restarted) can end the leg
                db.execute("INSERT INTO leg_dialogs(call_id, leg, instance, worker, sip_call_id, local_party, "
                           "remote_party, target, routes, at) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (call_id, leg) "
                           "DO UPDATE SET sip_call_id=excluded.sip_call_id, local_party=excluded.local_party, "
                           "remote_party=excluded.remote_party, target=excluded.target, routes=excluded.routes",
                           (f.call_id, f.leg, self.instance, item.worker, f.sip_call_id, f.local, f.remote, f.target,
                            json.dumps(list(f.routes)), now))
            elif isinstance(f, P.LegEnded):
                db.execute("DELETE FROM leg_dialogs WHERE call_id=? AND leg=?", (f.call_id, f.leg))
            elif isinstance(f, P.CallEnded):
                row = db.one("SELECT suggested, diverted_to FROM calls WHERE call_id=?", (f.call_id,))
                action = final_action(row["suggested"], row["diverted_to"], self.linkage) if row else None
                closed = db.execute("UPDATE calls SET ended_at=?, status=?, reason=?, final_action=? "
                                    "WHERE call_id=? AND ended_at IS NULL",
                                    (f.t, f.status, f.reason, action, f.call_id)).rowcount
                db.execute("DELETE FROM leg_dialogs WHERE call_id=?", (f.call_id,))
                if closed and ended_by_fenliu(f.status, f.reason):  # a person calls the caller back
                    self._callback(f.call_id, f.reason, f.t)
            elif isinstance(f, P.CallRejected):
                # a refused caller is a call too: 110 must be able to see who could not get through
                call_id = f.call_id or f"rejected-{f.t:.6f}"
                db.execute("INSERT INTO calls(call_id, worker, remote, started_at, ended_at, status, reason, seat, "
                           "number, day, sip_call_id, instance) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                           (call_id, item.worker, f.remote, f.t, f.t, f.status, f.reason, self.seat,
                            caller_number(f.remote), self.linkage.day(f.t), f.sip_call_id, self.instance))
            elif isinstance(f, P.TransferUpdate) and f.step.value in TRANSFER_OUTCOMES:
                db.execute("UPDATE calls SET transfer=? WHERE call_id=?", (f.step.value, f.call_id))
                if f.step in (P.TransferStep.BRIDGED, P.TransferStep.COMPLETED):
                    self._diverted(f.call_id, self.linkage.target_id(f.target), now, raised)
            if item.kind in KEPT_FACTS:
                d = f.to_dict()
                db.execute("INSERT INTO events(call_id, leg, kind, at, data) VALUES (?,?,?,?,?)",
                           (getattr(f, "call_id", None) or None, getattr(f, "leg", None), item.kind,
                            getattr(f, "t", now), json.dumps({"worker": item.worker, **d}, ensure_ascii=False)))
        self._announce(raised)

    def _diverted(self, call_id: str, target: str, now: float, raised: list[dict[str, Any]]) -> None:
        """The hotline has the caller: record the diversion, open the work order, queue it and
        the caller's SMS — all in the caller's transaction."""
        if not self.linkage.is_diversion(target):
            return  # an urgent service joined (119/120/122/anti-fraud): 110 keeps the call
        call = self.db.one("SELECT call_id, number, called, site, started_at, text, diverted_to FROM calls "
                           "WHERE call_id=?", (call_id,))
        if call is None or call["diverted_to"]:
            return
        self.db.execute("UPDATE calls SET diverted_to=? WHERE call_id=?", (target, call_id))
        self.open_order(call, target, now, raised)

    def open_order(self, call: dict[str, Any], target: str, now: float,
                   raised: list[dict[str, Any]] | None = None) -> str:
        """Write the work order (and queue it for its platform when one is configured) and the
        caller's guidance SMS. Returns the order number."""
        db, lk = self.db, self.linkage
        decisions = [json.loads(r["data"]) for r in
                     db.rows("SELECT data FROM events WHERE call_id=? AND kind='Decision' ORDER BY id DESC",
                             (call["call_id"],))]
        decision = next((d for d in decisions if d.get("target") == target), decisions[0] if decisions else None)
        site = call.get("site") or ""
        pid, platform = lk.platform_for(site, target)
        deadline = now + platform.deadline_hours * 3600 if platform else None
        order_no = Linkage.order_no(call["call_id"], now, lk.zone)
        body = lk.order_body(call, decision, order_no, target, site, now, deadline)
        status = "queued" if platform is not None and platform.url else "local"
        d = body
        inserted = db.insert(
            "INSERT INTO work_orders(order_no, call_id, site, platform, target, category, category_id, dept, number, "
            "status, created_at, updated_at, deadline, day, body, instance) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT DO NOTHING", (order_no, call["call_id"], site, pid, target, d.get("category", ""),
                                       d.get("category_id", ""), d.get("dept", ""), call.get("number", ""), status,
                                       now, now, deadline, lk.day(now), json.dumps(body, ensure_ascii=False),
                                       self.instance))
        if not inserted:
            return order_no
        why = "" if status == "queued" else (f"no URL for platform {pid!r}" if pid else
                                             f"no platform configured for {target}: hand the order over by hand")
        db.execute("INSERT INTO order_status(order_no, status, at, source, detail) VALUES (?,?,?,?,?)",
                   (order_no, status, now, "fenliu", json.dumps({"why": why} if why else {}, ensure_ascii=False)))
        if status == "queued":
            self._enqueue("order", order_no, pid, f"order:{order_no}", now)
        order = {**body, "created_at": now}
        self.queue_sms(call["call_id"], call.get("number", ""), order, "guidance", "110", now, raised)
        return order_no

    def _enqueue(self, kind: str, ref: str, destination: str, idem_key: str, now: float) -> None:
        self.db.execute("INSERT INTO outbox(kind, ref, destination, idem_key, next_at, created_at) VALUES (?,?,?,?,?,?) "
                        "ON CONFLICT DO NOTHING", (kind, ref, destination, idem_key, now, now))

    def ivr_sms(self, call_id: str, purpose: str, text: str, now: float | None = None) -> dict[str, Any] | None:
        """An IVR flow's ``sms`` state: the flow's own text to the caller, under the usual rules."""
        now = time.time() if now is None else now
        with self.db.tx():
            row = self.db.one("SELECT number FROM calls WHERE call_id=?", (call_id,))
            return self.queue_sms(call_id, row["number"] if row else "", {}, purpose, "", now, text=text)

    def queue_sms(self, call_id: str, number: str, order: dict[str, Any], purpose: str, asks: str, now: float,
                  raised: list[dict[str, Any]] | None = None, text: str | None = None) -> dict[str, Any] | None:
        """One SMS per call and purpose, ever; to mobile numbers only; at most
        ``sms.per_number_per_day`` to one number in 24 h. Refusals are recorded with the reason."""
        s = self.settings.sms
        to = mobile(number)
        status, reason = "queued", ""
        if not s.enabled:
            status, reason = "skipped", "短信已关闭 / SMS disabled (sms.enabled = false)"
        elif to is None:
            status, reason = "skipped", f"非手机号码 / not a mobile number: {mask_number(number)}"
        elif (self.db.scalar("SELECT COUNT(*) FROM sms WHERE number=? AND created_at>? AND status IN ('queued','sent')",
                             (to, now - 86400)) or 0) >= s.per_number_per_day:
            status, reason = "skipped", f"频次限制 / rate limit: {s.per_number_per_day} messages to this number in 24 h"
        elif not s.url:
            status, reason = "local", "未配置短信网关 / no SMS gateway configured (sms.url)"
        text = self.linkage.sms_text(purpose, order) if text is None else text
        sid = self.db.insert("INSERT INTO sms(call_id, purpose, number, asks, body, status, reason, created_at) "
                             "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                             (call_id, purpose, to or number, asks, text, status, reason, now))
        if not sid:
            return None  # never twice for the same call
        if status == "queued":
            self._enqueue("sms", str(sid), "sms", f"sms:{sid}", now)
        return {"id": sid, "status": status, "reason": reason, "text": text}

    # -- the outbox ------------------------------------------------------------------------------
    def claim(self, now: float, limit: int, lease: float) -> list[dict[str, Any]]:
        """Due items, leased to this instance for ``lease`` seconds (another instance takes over
        an item whose lease ran out: its holder died mid-delivery)."""
        lock = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""
        with self.db.tx():
            return self.db.rows(
                "UPDATE outbox SET lease_until=?, attempts=attempts+1 WHERE id IN (SELECT id FROM outbox "
                f"WHERE status='pending' AND next_at<=? AND lease_until<? ORDER BY next_at LIMIT ?{lock}) "
                "RETURNING id, kind, ref, destination, idem_key, attempts, created_at",
                (now + lease, now, now, limit))

    def payload(self, item: dict[str, Any]) -> dict[str, Any] | None:
        """What an outbox item sends: the order's body, or the SMS row."""
        if item["kind"] == "order":
            row = self.db.one("SELECT body FROM work_orders WHERE order_no=?", (item["ref"],))
            return json.loads(row["body"]) if row else None
        row = self.db.one("SELECT s.id, s.call_id, s.number, s.body, s.purpose, s.asks FROM sms s WHERE s.id=?",
                          (int(item["ref"]),))
        return row

    def delivered(self, item: dict[str, Any], answer: dict[str, Any], ref: str | None, now: float) -> None:
        with self.db.tx():
            self.db.execute("UPDATE outbox SET status='delivered', delivered_at=?, answer=?, last_error='' WHERE id=?",
                            (now, json.dumps(answer, ensure_ascii=False)[:4000], item["id"]))
            if item["kind"] == "order":
                self.db.execute("UPDATE work_orders SET status=CASE WHEN status IN ('queued','failed') THEN 'accepted' "
                                "ELSE status END, platform_ref=COALESCE(?, platform_ref), delivered_at=?, "
                                "accepted_at=COALESCE(accepted_at, ?), updated_at=? WHERE order_no=?",
                                (ref, now, now, now, item["ref"]))
                self.db.execute("INSERT INTO order_status(order_no, status, at, source, detail) VALUES (?,?,?,?,?)",
                                (item["ref"], "accepted", now, "delivery",
                                 json.dumps({"platform_ref": ref, "attempts": item["attempts"]}, ensure_ascii=False)))
            else:
                self.db.execute("UPDATE sms SET status='sent', sent_at=?, reason='' WHERE id=?", (now, int(item["ref"])))

    def retry_later(self, item: dict[str, Any], error: str, next_at: float) -> None:
        self.db.execute("UPDATE outbox SET lease_until=0, next_at=?, last_error=? WHERE id=?",
                        (next_at, error[:500], item["id"]))

    def hurry(self, destination: str, now: float) -> int:
        """The destination answered again after failures: its waiting items are due now (they
        would otherwise sit out their back-off, up to ``outbox.retry_max`` after a recovery)."""
        return int(self.db.execute("UPDATE outbox SET next_at=? WHERE status='pending' AND destination=? "
                                   "AND next_at>? AND lease_until<?", (now, destination, now, now)).rowcount)

    def give_up(self, item: dict[str, Any], error: str, now: float) -> None:
        """A permanent refusal (a 4xx other than timeouts/limits): stop retrying and alert."""
        raised: list[dict[str, Any]] = []
        with self.db.tx():
            self.db.execute("UPDATE outbox SET status='failed', lease_until=0, last_error=? WHERE id=?",
                            (error[:500], item["id"]))
            if item["kind"] == "order":
                self.db.execute("UPDATE work_orders SET status='failed', updated_at=? WHERE order_no=?",
                                (now, item["ref"]))
                self.db.execute("INSERT INTO order_status(order_no, status, at, source, detail) VALUES (?,?,?,?,?)",
                                (item["ref"], "failed", now, "delivery", json.dumps({"error": error[:500]},
                                                                                   ensure_ascii=False)))
                self._alert(raised, "order_refused", item["ref"], f"工单 {item['ref']} 被平台拒收 / refused by the "
                            f"platform: {error[:200]} — fix the mapping, then retry it on the console",
                            order_no=item["ref"])
            else:
                self.db.execute("UPDATE sms SET status='failed', reason=? WHERE id=?", (error[:500], int(item["ref"])))
                self._alert(raised, "sms_failed", item["ref"], f"短信发送失败 / SMS {item['ref']} failed: {error[:200]}")
        self._announce(raised)

    def requeue(self, order_no: str, now: float, note: str = "", by: str = "") -> bool:
        """Send a failed or local order (again) — after the mapping or the platform was fixed; or
        a returned order, corrected by a supervisor (``note`` goes into the order as 更正说明), as
        a new delivery of the same order (a new idempotency key: the platform must not take it
        for a retry of the delivery it returned)."""
        with self.db.tx():
            row = self.db.one("SELECT status, platform, body FROM work_orders WHERE order_no=?", (order_no,))
            if row is None or row["status"] not in ("failed", "local", "returned"):
                return False
            pid = row["platform"]
            if not (pid in self.settings.platforms and self.settings.platforms[pid].url):
                return False
            key = f"order:{order_no}"
            if row["status"] == "returned" and not note.strip():
                raise ValueError("退回的工单须附更正说明才能重发 / a returned order is sent again only with a correction "
                                 "note (what was corrected)")
            if row["status"] == "returned":
                resends = int(self.db.scalar("SELECT COUNT(*) FROM order_status WHERE order_no=? AND source='resend'",
                                             (order_no,)) or 0)
                key = f"order:{order_no}:resend-{resends + 1}"
                body = json.loads(row["body"] or "{}")
                if note:
                    body["correction"] = note[:500]
                self.db.execute("UPDATE work_orders SET body=?, returned_at=NULL WHERE order_no=?",
                                (json.dumps(body, ensure_ascii=False), order_no))
            self.db.execute("UPDATE work_orders SET status='queued', updated_at=? WHERE order_no=?", (now, order_no))
            self.db.execute("UPDATE outbox SET status='pending', next_at=?, lease_until=0 WHERE idem_key=?",
                            (now, key))
            self._enqueue("order", order_no, pid, key, now)
            source = "resend" if key != f"order:{order_no}" else "requeue"
            self.db.execute("INSERT INTO order_status(order_no, status, at, source, detail) VALUES (?,?,?,?,?)",
                            (order_no, "queued", now, source,
                             json.dumps({"note": note[:500], "by": by} if source == "resend" else {}, ensure_ascii=False)))
            return True

    def check_deadlines(self, now: float, stuck_after: float) -> list[dict[str, Any]]:
        """Alerts for orders still undelivered after ``stuck_after`` seconds and for orders past
        their deadline without 办结 (each raised once)."""
        raised: list[dict[str, Any]] = []
        with self.db.tx():
            for r in self.db.rows("SELECT o.idem_key, o.kind, o.ref, o.attempts, o.last_error FROM outbox o "
                                  "WHERE o.status='pending' AND o.created_at<?", (now - stuck_after,)):
                what = "工单" if r["kind"] == "order" else "短信"
                self._alert(raised, f"{r['kind']}_stuck", r["idem_key"],
                            f"{what} {r['ref']} 未送达 / not delivered after {r['attempts']} tries: "
                            f"{r['last_error'] or 'waiting'} — still retrying; check the platform link",
                            order_no=r["ref"] if r["kind"] == "order" else None)
            for r in self.db.rows("SELECT order_no, call_id, target FROM work_orders WHERE status IN "
                                  "('queued','accepted','dispatched') AND deadline<?", (now,)):
                self._alert(raised, "order_overdue", r["order_no"],
                            f"工单 {r['order_no']}（{r['target']}）超期未办结 / past its deadline without 办结 (防回流)",
                            call_id=r["call_id"], order_no=r["order_no"])
        self._announce(raised)
        return raised

    # -- status back from the platform, follow-ups -------------------------------------------------
    def order_status(self, ref: str, status: str, at: float, source: str,
                     detail: dict[str, Any] | None = None, platform: str | None = None) -> dict[str, Any] | None:
        """A platform's report on an order (by our number or the platform's). ``platform``: only
        that platform's orders are found (a webhook touches its own orders only). None if unknown.

        Status only moves forward (``moves_forward``): a late or repeated report is kept in the
        order's trail (detail ``ignored``) but changes nothing; the returned row says ``applied``."""
        if status not in ORDER_STATUSES:
            raise ValueError(f"unknown order status {status!r}")
        raised: list[dict[str, Any]] = []
        with self.db.tx():
            scope, args = ("AND platform=?", (ref, ref, platform)) if platform is not None else ("", (ref, ref))
            row = self.db.one("SELECT order_no, call_id, number, target, category, category_id, dept, platform_ref, "
                              f"created_at, status FROM work_orders WHERE (order_no=? OR platform_ref=?) {scope}", args)
            if row is None:
                return None
            no = row["order_no"]
            if not moves_forward(row["status"], status):
                ignored = f"{status} after {row['status']}: kept in the trail, status unchanged"
                self.db.execute("INSERT INTO order_status(order_no, status, at, source, detail) VALUES (?,?,?,?,?)",
                                (no, status, at, source, json.dumps({**(detail or {}), "ignored": ignored},
                                                                    ensure_ascii=False)))
                return {**row, "applied": False}
            col = f"{status}_at"
            self.db.execute(f"UPDATE work_orders SET status=?, updated_at=?, {col}=COALESCE({col}, ?) WHERE order_no=?",
                            (status, at, at, no))
            self.db.execute("INSERT INTO order_status(order_no, status, at, source, detail) VALUES (?,?,?,?,?)",
                            (no, status, at, source, json.dumps(detail or {}, ensure_ascii=False)))
            if status == "returned":
                why = str((detail or {}).get("note", ""))[:200]
                self._alert(raised, "order_returned", no, f"工单 {no} 被退回 / returned by {row['target']}"
                            + (f": {why}" if why else "") + " — 110 must take it back (防回流)",
                            call_id=row["call_id"], order_no=no)
            if status == "completed" and self.settings.sms.followup:
                self.queue_sms(row["call_id"], row["number"], row, "followup", "hotline", at, raised)
            row["status"] = status
            row["applied"] = True
        self._announce(raised)
        return row

    def order_platform(self, ref: str) -> str | None:
        """Which platform an order (by our number or the platform's) belongs to; None: no such order."""
        row = self.db.one("SELECT platform FROM work_orders WHERE order_no=? OR platform_ref=?", (ref, ref))
        return None if row is None else str(row["platform"])

    def add_followup(self, call_id: str, side: str, score: int, source: str, by: str = "", note: str = "",
                     at: float | None = None) -> int:
        raised: list[dict[str, Any]] = []
        at = time.time() if at is None else at
        with self.db.tx():
            fid = self.db.insert("INSERT INTO followups(call_id, side, score, source, by_user, at, note) "
                                 "VALUES (?,?,?,?,?,?,?)", (call_id, side, score, source, by, at, note[:500]))
            if score == 3:
                who = "110 接警" if side == "110" else "热线办理结果"
                self._alert(raised, "unsatisfied", f"{call_id}:{side}", f"群众对{who}不满意 / caller unsatisfied "
                            f"with {'110' if side == '110' else 'the hotline result'} (call {call_id[:12]})"
                            + (f": {note[:100]}" if note else ""), call_id=call_id)
        self._announce(raised)
        return fid

    def sms_reply(self, number: str, text: str, at: float) -> dict[str, Any] | None:
        """A caller's answer to our question ("1 满意 / 2 基本满意 / 3 不满意"): a follow-up for the
        side the latest question to this number asked about. None: not an answer we can place."""
        to = mobile(number)
        score = parse_score(text)
        if to is None or score is None:
            return None
        # only a question that went (or is going) out through the gateway can be answered through it:
        # one never sent (no gateway, skipped, failed) cannot have reached this number
        asked = self.db.one("SELECT call_id, asks FROM sms WHERE number=? AND asks<>'' AND created_at>? "
                            "AND status IN ('queued','sent') ORDER BY created_at DESC, id DESC LIMIT 1",
                            (to, at - 30 * 86400))
        if asked is None:
            return None
        fid = self.add_followup(asked["call_id"], asked["asks"], score, "sms", note=text[:100], at=at)
        return {"followup": fid, "call_id": asked["call_id"], "side": asked["asks"], "score": score}

    def webhook_seen(self, delivery_id: str) -> bool:
        """True if this delivery id was processed before (platforms retry)."""
        return self.db.scalar("SELECT 1 FROM webhook_seen WHERE id=?", (delivery_id[:200],)) is not None

    def webhook_done(self, delivery_id: str, at: float) -> None:
        """Remember a processed delivery (only after it was applied: a refused one may come again)."""
        self.db.execute("INSERT INTO webhook_seen(id, at) VALUES (?,?) ON CONFLICT DO NOTHING", (delivery_id[:200], at))

    # -- alerts -----------------------------------------------------------------------------------
    def _alert(self, raised: list[dict[str, Any]], kind: str, ref: str, message: str, *, call_id: str | None = None,
               order_no: str | None = None) -> None:
        now = time.time()
        aid = self.db.insert("INSERT INTO alerts(at, kind, ref, call_id, order_no, message) VALUES (?,?,?,?,?,?) "
                             "ON CONFLICT DO NOTHING", (now, kind, ref, call_id, order_no, message))
        if aid:
            raised.append({"id": aid, "at": now, "kind": kind, "ref": ref, "call_id": call_id, "order_no": order_no,
                           "message": message})

    # -- the callback list, and the calls of an instance that is gone ----------------------------
    def _callback(self, call_id: str, reason: str, at: float) -> None:
        """(in a transaction) Put a call fenliu ended or lost on the callback list: the caller's
        number, when, why, and what was heard."""
        call = self.db.one("SELECT number, text, instance FROM calls WHERE call_id=?", (call_id,))
        if call is None:
            return
        self.db.execute("INSERT INTO callbacks(call_id, number, at, reason, heard, instance) VALUES (?,?,?,?,?,?) "
                        "ON CONFLICT DO NOTHING", (call_id, call["number"] or "", at, reason[:300],
                                                   (call["text"] or "")[-500:], call["instance"] or ""))

    def callbacks(self, open_only: bool = True, limit: int = 200) -> list[dict[str, Any]]:
        return self.db.rows("SELECT id, call_id, number, at, reason, heard, instance, done_by, done_at, note "
                            "FROM callbacks " + ("WHERE done_at IS NULL " if open_only else "")
                            + "ORDER BY id DESC LIMIT ?", (limit,))

    def callback_done(self, callback_id: int, user: str, note: str = "") -> bool:
        return self.db.execute("UPDATE callbacks SET done_by=?, done_at=?, note=? WHERE id=? AND done_at IS NULL",
                               (user, time.time(), note[:300], callback_id)).rowcount > 0

    def close_lost(self, instance: str, reason: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The calls an instance still had open when it died (or before it restarted): closed with
        ``reason``, each caller on the callback list, in one transaction. Returns (the calls, the
        SIP dialogs of their legs still up — to be sent a BYE)."""
        db, now = self.db, time.time()
        with db.tx():
            calls = db.rows("SELECT call_id, number, remote, started_at FROM calls "
                            "WHERE instance=? AND ended_at IS NULL", (instance,))
            dialogs = db.rows("SELECT call_id, leg, worker, sip_call_id, local_party, remote_party, target, routes "
                              "FROM leg_dialogs WHERE instance=?", (instance,))
            for c in calls:
                db.execute("UPDATE calls SET ended_at=?, status=0, reason=? WHERE call_id=? AND ended_at IS NULL",
                           (now, reason, c["call_id"]))
                self._callback(c["call_id"], reason, now)
            db.execute("DELETE FROM leg_dialogs WHERE instance=?", (instance,))
        for d in dialogs:
            d["routes"] = tuple(json.loads(d["routes"] or "[]"))
        return calls, dialogs

    def raise_alert(self, kind: str, ref: str, message: str) -> bool:
        """An alert from outside the loop (e.g. a login burst): stored once per (kind, ref) and
        announced to supervisors; False if it was already raised."""
        raised: list[dict[str, Any]] = []
        self._alert(raised, kind, ref, message)
        self._announce(raised)
        return bool(raised)

    def _announce(self, raised: list[dict[str, Any]]) -> None:
        for a in raised:
            for listener in self.alert_listeners:
                listener(a)

    def alerts(self, open_only: bool = True, limit: int = 200) -> list[dict[str, Any]]:
        return self.db.rows("SELECT id, at, kind, ref, call_id, order_no, message, acked_by, acked_at FROM alerts "
                            + ("WHERE acked_at IS NULL " if open_only else "") + "ORDER BY id DESC LIMIT ?", (limit,))

    def ack_alert(self, alert_id: int, user: str) -> bool:
        return self.db.execute("UPDATE alerts SET acked_by=?, acked_at=? WHERE id=? AND acked_at IS NULL",
                               (user, time.time(), alert_id)).rowcount > 0

    # -- orders, SMS, follow-ups for the console --------------------------------------------------
    def orders(self, *, status: str = "", since: float | None = None, until: float | None = None,
               limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        where: list[str] = ["1=1"]
        args: list[Any] = []
        if status:
            where.append("w.status=?")
            args.append(status)
        if since is not None:
            where.append("w.created_at>=?")
            args.append(since)
        if until is not None:
            where.append("w.created_at<?")
            args.append(until)
        return self.orders_where(f"{' AND '.join(where)} ORDER BY w.id DESC LIMIT ? OFFSET ?", (*args, limit, offset))

    def order(self, order_no: str) -> dict[str, Any] | None:
        rows = self.orders_where("w.order_no=?", (order_no,))
        if not rows:
            return None
        o = rows[0]
        body = self.db.scalar("SELECT body FROM work_orders WHERE order_no=?", (order_no,))
        o["body"] = json.loads(body or "{}")
        o["trail"] = self.db.rows("SELECT status, at, source, detail FROM order_status WHERE order_no=? ORDER BY id",
                                  (order_no,))
        for t in o["trail"]:
            t["detail"] = json.loads(t["detail"])
        return o

    def orders_where(self, cond: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        """Orders with their delivery state; ``cond`` is the WHERE clause (and any ORDER/LIMIT)."""
        return self.db.rows(
            "SELECT w.order_no, w.call_id, w.instance, w.site, w.platform, w.target, w.category, w.dept, w.number, "
            "w.status, w.platform_ref, w.created_at, w.updated_at, w.deadline, o.attempts, o.last_error, o.status AS delivery "
            f"FROM work_orders w LEFT JOIN outbox o ON o.idem_key = 'order:' || w.order_no WHERE {cond}", args)

    def call_loop(self, call_id: str) -> dict[str, Any]:
        """A call's work order, messages and follow-ups (the history view's "闭环" part)."""
        orders = self.orders_where("w.call_id=?", (call_id,))
        if orders:
            orders[0]["trail"] = self.db.rows("SELECT status, at, source FROM order_status WHERE order_no=? "
                                              "ORDER BY id", (orders[0]["order_no"],))
        return {"order": orders[0] if orders else None,
                "sms": self.db.rows("SELECT id, purpose, number, body, status, reason, created_at, sent_at FROM sms "
                                    "WHERE call_id=? ORDER BY id", (call_id,)),
                "followups": self.db.rows("SELECT id, side, score, source, by_user, at, note FROM followups "
                                          "WHERE call_id=? ORDER BY id", (call_id,))}

    def outbox_counts(self) -> dict[str, int]:
        return {f"{r['kind']}_{r['status']}": int(r["n"]) for r in
                self.db.rows("SELECT kind, status, COUNT(*) AS n FROM outbox GROUP BY kind, status")}

    # -- repeat callers ---------------------------------------------------------------------------
    def prior_calls(self, call_id: str, number: str, since: float) -> list[dict[str, Any]]:
        """Earlier calls of this number since ``since`` that were (or were suggested to be)
        diverted: the flow-back window's evidence, newest first."""
        if not number or len(number) < 5:
            return []
        return self.db.rows(
            "SELECT c.call_id, c.started_at, c.category, c.suggested, c.suggested_category, c.diverted_to, "
            "w.order_no, w.status AS order_status FROM calls c LEFT JOIN work_orders w ON w.call_id = c.call_id "
            "WHERE c.number=? AND c.started_at>=? AND c.call_id<>? AND (c.diverted_to IS NOT NULL OR "
            "(c.suggested IS NOT NULL AND c.suggested<>'police')) ORDER BY c.started_at DESC LIMIT 20",
            (number, since, call_id))

    def mark_repeat(self, call_id: str, prior: str, same_matter: bool) -> None:
        col = "flowback_of" if same_matter else "repeat_of"
        self.db.execute(f"UPDATE calls SET {col}=? WHERE call_id=?", (prior, call_id))

    # -- retention --------------------------------------------------------------------------------
    def purge_transcripts(self, before: float) -> int:
        """Blank the transcripts of calls started before ``before`` (numbers, decisions, orders stay)."""
        old_calls = "SELECT call_id FROM calls WHERE started_at<?"
        with self.db.tx():
            n = self.db.execute("UPDATE calls SET text='' WHERE started_at<? AND text<>''", (before,)).rowcount
            self.db.execute(f"DELETE FROM events WHERE kind='FinalTranscript' AND call_id IN ({old_calls})", (before,))
            for r in self.db.rows(f"SELECT id, data FROM events WHERE kind='Decision' AND call_id IN ({old_calls})",
                                  (before,)):
                d = json.loads(r["data"])
                if d.get("text"):  # the decision keeps its words and reason, not what the caller said
                    d["text"] = ""
                    self.db.execute("UPDATE events SET data=? WHERE id=?", (json.dumps(d, ensure_ascii=False), r["id"]))
            self.db.execute("UPDATE work_orders SET body='{}' WHERE created_at<? AND body<>'{}' AND status IN "
                            "('completed','returned','failed','local')", (before,))
        return int(n)

    # -- reading the record -----------------------------------------------------------------------
    def calls(self) -> list[dict[str, Any]]:
        return self.db.rows("SELECT call_id, worker, remote, started_at, ended_at, status, reason FROM calls "
                            "ORDER BY started_at")

    def call(self, call_id: str) -> dict[str, Any] | None:
        return self.db.one(f"SELECT {HISTORY_COLUMNS} FROM calls WHERE call_id=?", (call_id,))

    def events(self, call_id: str) -> list[dict[str, Any]]:
        rows = self.db.rows("SELECT kind, leg, at, data FROM events WHERE call_id=? ORDER BY id", (call_id,))
        return [{"kind": r["kind"], "leg": r["leg"], "at": r["at"], **json.loads(r["data"])} for r in rows]

    def history(self, *, q: str = "", number: str = "", since: float | None = None, until: float | None = None,
                category: str = "", target: str = "", seat: str | None = None, limit: int = 50,
                offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Past and live calls, newest first. ``seat``: only the calls an operator of that seat
        may see (calls of that seat and calls rung to no seat); None = every call."""
        where: list[str] = ["1=1"]
        args: list[Any] = []
        if q:  # words of the transcript, or a call's id or SIP Call-ID (as a PBX's log shows it)
            where.append("(text LIKE ? ESCAPE '\\' OR sip_call_id = ? OR call_id = ?)")
            args += [f"%{_like(q)}%", q, q]
        for column, value in (("remote", number), ("category", category)):
            if value:
                where.append(f"{column} LIKE ? ESCAPE '\\'")
                args.append(f"%{_like(value)}%")
        if target:
            where.append("target = ?")
            args.append(target)
        if since is not None:
            where.append("started_at >= ?")
            args.append(since)
        if until is not None:
            where.append("started_at < ?")
            args.append(until)
        if seat:
            where.append("(seat = '' OR seat = ?)")
            args.append(seat)
        cond = " AND ".join(where)
        with self.db.tx():
            total = int(self.db.scalar(f"SELECT COUNT(*) FROM calls WHERE {cond}", args) or 0)
            rows = self.db.rows(f"SELECT {HISTORY_COLUMNS} FROM calls WHERE {cond} "
                                "ORDER BY started_at DESC LIMIT ? OFFSET ?", (*args, limit, offset))
        return rows, total

    # -- accounts ---------------------------------------------------------------------------------
    def add_user(self, name: str, role: str, pw_hash: str, seat: str = "") -> int:
        uid = self.db.insert("INSERT INTO users(name, role, seat, pw_hash, created_at) VALUES (?,?,?,?,?) "
                             "ON CONFLICT DO NOTHING", (name, role, seat, pw_hash, time.time()))
        if not uid:
            raise ValueError(f"账户 {name!r} 已存在 / user {name!r} exists")
        return uid

    def set_password(self, name: str, pw_hash: str) -> bool:
        with self.db.tx():
            n = self.db.execute("UPDATE users SET pw_hash=? WHERE name=?", (pw_hash, name)).rowcount
            self.db.execute("DELETE FROM sessions WHERE user_id=(SELECT id FROM users WHERE name=?)", (name,))
        return n > 0

    def user(self, name: str) -> dict[str, Any] | None:
        return self.db.one("SELECT id, name, role, seat, pw_hash, disabled FROM users WHERE name=?", (name,))

    def users(self) -> list[dict[str, Any]]:
        return self.db.rows("SELECT id, name, role, seat, created_at, disabled FROM users ORDER BY id")

    def count_users(self) -> int:
        return int(self.db.scalar("SELECT COUNT(*) FROM users") or 0)

    def add_session(self, token_hash: str, user_id: int, csrf: str) -> None:
        now = time.time()
        self.db.execute("INSERT INTO sessions(token_hash, user_id, csrf, created_at, last_seen) VALUES (?,?,?,?,?)",
                        (token_hash, user_id, csrf, now, now))

    def session(self, token_hash: str) -> dict[str, Any] | None:
        return self.db.one("SELECT s.csrf, s.created_at, s.last_seen, u.id AS user_id, u.name, u.role, u.seat, "
                           "u.disabled FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash=?",
                           (token_hash,))

    def touch_session(self, token_hash: str, now: float) -> None:
        self.db.execute("UPDATE sessions SET last_seen=? WHERE token_hash=?", (now, token_hash))

    def drop_session(self, token_hash: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE token_hash=?", (token_hash,))

    def drop_sessions_before(self, last_seen: float) -> int:
        return int(self.db.execute("DELETE FROM sessions WHERE last_seen < ?", (last_seen,)).rowcount)

    def add_token(self, name: str, user_id: int, token_hash: str) -> int:
        return self.db.insert("INSERT INTO api_tokens(name, user_id, token_hash, created_at) VALUES (?,?,?,?)",
                              (name, user_id, token_hash, time.time()))

    def token(self, token_hash: str, touch: bool = True) -> dict[str, Any] | None:
        row = self.db.one("SELECT t.id AS token_id, t.name AS token_name, u.id AS user_id, u.name, u.role, u.seat, "
                          "u.disabled FROM api_tokens t JOIN users u ON u.id = t.user_id "
                          "WHERE t.token_hash=? AND t.revoked=0", (token_hash,))
        if row and touch:
            self.db.execute("UPDATE api_tokens SET last_used=? WHERE id=?", (time.time(), row["token_id"]))
        return row

    def set_user(self, name: str, role: str | None = None, disabled: bool | None = None) -> bool:
        """Change an account's role or switch it off (its sessions and tokens then stop working,
        its open event streams are closed by the console within a second)."""
        sets: list[str] = []
        args: list[object] = []
        if role is not None:
            sets.append("role=?")
            args.append(role)
        if disabled is not None:
            sets.append("disabled=?")
            args.append(1 if disabled else 0)
        if not sets:
            return self.user(name) is not None
        with self.db.tx():
            n = self.db.execute(f"UPDATE users SET {', '.join(sets)} WHERE name=?", (*args, name)).rowcount
            self.db.execute("DELETE FROM sessions WHERE user_id=(SELECT id FROM users WHERE name=?)", (name,))
        return n > 0

    def revoke_token(self, name: str) -> int:
        return int(self.db.execute("UPDATE api_tokens SET revoked=1 WHERE name=? AND revoked=0", (name,)).rowcount)

    # -- centre-wide controls --------------------------------------------------------------------
    def controls(self) -> dict[str, dict[str, Any]]:
        """name -> {value, by_user, at} of every switch set so far (every instance reads the same)."""
        return {r["name"]: r for r in self.db.rows("SELECT name, value, by_user, at FROM controls")}

    def set_control(self, name: str, value: str, by: str) -> None:
        self.db.execute("INSERT INTO controls(name, value, by_user, at) VALUES (?,?,?,?) ON CONFLICT(name) DO UPDATE "
                        "SET value=excluded.value, by_user=excluded.by_user, at=excluded.at",
                        (name, value, by, time.time()))

    # -- audit ---------------------------------------------------------------------------------
    def audit(self, user: str, action: str, call_id: str | None = None, outcome: str = "",
              detail: dict[str, Any] | None = None) -> None:
        """Who did what; while the database is down the row waits with the call records (in order,
        journalled): an operator's key is never refused because the audit cannot be written yet."""
        args = (time.time(), user, action, call_id, outcome, json.dumps(detail or {}, ensure_ascii=False))
        if self._waiting:
            self.flush()
        if not self._waiting:
            try:
                self._audit(*args)
                return
            except Exception as e:
                if not self.db.unavailable(e):
                    raise
                self.up = False
        self._wait(("audit", *args))

    def _audit(self, at: float, user: str, action: str, call_id: str | None, outcome: str, detail: str) -> None:
        self.db.execute('INSERT INTO audit(at, "user", action, call_id, outcome, detail) VALUES (?,?,?,?,?,?)',
                        (at, user, action, call_id, outcome, detail))

    def audit_log(self, limit: int = 100, action: str = "") -> list[dict[str, Any]]:
        rows = self.db.rows('SELECT id, at, "user", action, call_id, outcome, detail FROM audit '
                            + ("WHERE action=? " if action else "") + "ORDER BY id DESC LIMIT ?",
                            (action, limit) if action else (limit,))
        for r in rows:
            r["detail"] = json.loads(r["detail"])
        return rows

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
        self.db.close()


def parse_score(text: str) -> int | None:
    """"1" / "1满意" / "基本满意" / "3 不满意" → 1..3; anything else → None."""
    t = (text or "").strip().translate(str.maketrans("１２３", "123"))
    if t[:1] in ("1", "2", "3") and (len(t) == 1 or not t[1].isdigit()):
        return int(t[0])
    for word, score in (("不满意", 3), ("基本满意", 2), ("满意", 1)):
        if word in t:
            return score
    return None


HISTORY_COLUMNS = ("call_id, instance, worker, remote, seat, started_at, ended_at, status, reason, target, category, "
                   "transfer, text, sip_call_id")


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
