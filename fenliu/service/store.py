"""The record: every call, and every final transcript, decision and transfer step in it.

SQLite by default (one file, WAL, safe from several threads through one lock); the events a
console, the statistics and a later review read. PostgreSQL comes with the multi-node work.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from fenliu.errors import ConfigError
from fenliu.events import Decision, FinalTranscript, event_to_dict
from fenliu.service.bus import CallEvent, WorkerFact
from fenliu.sip import protocol as P

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    worker TEXT NOT NULL,
    remote TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    ended_at REAL,
    status INTEGER,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT,
    leg TEXT,
    kind TEXT NOT NULL,
    at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_call ON events(call_id);
"""

KEPT_FACTS = {"transfer_started", "transfer_consulted", "transfer_bridged", "transfer_completed", "transfer_failed",
              "media_timeout", "call_degraded", "call_rejected", "dtmf", "worker_lost", "worker_restarted",
              "restart_failed", "orphans_released", "front_event", "registration", "error"}


class Store:
    def __init__(self, url: str) -> None:
        if not url.startswith("sqlite:///"):
            raise ConfigError(f"store.url {url!r}: only sqlite:///PATH is supported in this version")
        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def record(self, item: CallEvent | WorkerFact) -> None:
        """A bus subscriber: keep what matters of every call."""
        now = time.time()
        with self._lock:
            if isinstance(item, CallEvent):
                if isinstance(item.event, FinalTranscript | Decision):
                    self._db.execute("INSERT INTO events(call_id, leg, kind, at, data) VALUES (?,?,?,?,?)",
                                     (item.call_id, item.leg, type(item.event).__name__, now,
                                      json.dumps(event_to_dict(item.event), ensure_ascii=False)))
                return
            f = item.fact
            if isinstance(f, P.CallStarted):
                self._db.execute("INSERT OR IGNORE INTO calls(call_id, worker, remote, started_at) VALUES (?,?,?,?)",
                                 (f.call_id, item.worker, f.remote, f.t))
            elif isinstance(f, P.CallEnded):
                self._db.execute("UPDATE calls SET ended_at=?, status=?, reason=? WHERE call_id=? AND ended_at IS NULL",
                                 (f.t, f.status, f.reason, f.call_id))
            elif isinstance(f, P.CallRejected):
                # a refused caller is a call too: 110 must be able to see who could not get through
                call_id = f.call_id or f"rejected-{f.t:.6f}"
                self._db.execute("INSERT OR IGNORE INTO calls(call_id, worker, remote, started_at, ended_at, status, "
                                 "reason) VALUES (?,?,?,?,?,?,?)",
                                 (call_id, item.worker, f.remote, f.t, f.t, f.status, f.reason))
            if item.kind in KEPT_FACTS:
                d = f.to_dict()
                self._db.execute("INSERT INTO events(call_id, leg, kind, at, data) VALUES (?,?,?,?,?)",
                                 (getattr(f, "call_id", None) or None, getattr(f, "leg", None), item.kind,
                                  getattr(f, "t", now), json.dumps({"worker": item.worker, **d}, ensure_ascii=False)))

    def calls(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute("SELECT call_id, worker, remote, started_at, ended_at, status, reason FROM calls "
                                   "ORDER BY started_at")
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def events(self, call_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT kind, leg, data FROM events WHERE call_id=? ORDER BY id", (call_id,))
            return [{"kind": k, "leg": leg, **json.loads(data)} for k, leg, data in rows.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()
