"""The record: every call, its final transcripts, decisions and transfer steps; the accounts,
sessions, API tokens and the audit log of the console and API.

SQLite by default (one file, WAL, safe from several threads through one lock). The schema is
built by numbered migrations (``MIGRATIONS``); the version reached is kept in
``schema_version``, so an older database file is brought up to date at start and a newer one
is refused. PostgreSQL comes with the multi-node work.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fenliu.errors import ConfigError
from fenliu.events import Decision, FinalTranscript, event_to_dict
from fenliu.service.bus import CallEvent, WorkerFact
from fenliu.sip import protocol as P

# Each entry brings the schema from version i to i+1. Never edit a released entry: add one.
MIGRATIONS: tuple[str, ...] = (
    # 1: calls and their events (the first release created these without a version table)
    """
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
    """,
    # 2: what history search needs on the call row; accounts, sessions, tokens, audit
    """
    ALTER TABLE calls ADD COLUMN seat TEXT NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN target TEXT;
    ALTER TABLE calls ADD COLUMN category TEXT;
    ALTER TABLE calls ADD COLUMN transfer TEXT;
    ALTER TABLE calls ADD COLUMN text TEXT NOT NULL DEFAULT '';
    CREATE INDEX calls_started ON calls(started_at);
    CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('operator', 'supervisor', 'admin')),
        seat TEXT NOT NULL DEFAULT '',
        pw_hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_seen REAL NOT NULL
    );
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        last_used REAL,
        revoked INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        user TEXT NOT NULL,
        action TEXT NOT NULL,
        call_id TEXT,
        outcome TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_at ON audit(at);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

KEPT_FACTS = {"transfer_started", "transfer_consulted", "transfer_bridged", "transfer_completed", "transfer_failed",
              "media_timeout", "call_degraded", "call_rejected", "dtmf", "worker_lost", "worker_restarted",
              "restart_failed", "orphans_released", "front_event", "registration", "error"}
TRANSFER_OUTCOMES = ("bridged", "completed", "failed")


class Store:
    def __init__(self, url: str, seat: str = "") -> None:
        if not url.startswith("sqlite:///"):
            raise ConfigError(f"store.url {url!r}: only sqlite:///PATH is supported in this version")
        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.seat = seat  # the operator seat every call of this service rings (B2BUA mode), "" when answering
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a crash of fenliu; only a power cut can lose the last
        # transactions, and never corrupts the file. FULL would wait for the disk on every event.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._lock = threading.Lock()
        self.version = self._migrate()

    # -- schema ---------------------------------------------------------------------------------
    def _migrate(self) -> int:
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = self._db.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise ConfigError(f"数据库 {self.path} 的结构版本 {version} 比本程序 ({SCHEMA_VERSION}) 新 / the store "
                                  f"was written by a newer fenliu: upgrade fenliu, or point store.url at another file")
            for i in range(version, SCHEMA_VERSION):
                self._db.execute("BEGIN")
                try:
                    for stmt in _statements(MIGRATIONS[i]):
                        self._db.execute(stmt)
                    self._db.execute("DELETE FROM schema_version")
                    self._db.execute("INSERT INTO schema_version(version) VALUES (?)", (i + 1,))
                    self._db.execute("COMMIT")
                except Exception:
                    self._db.execute("ROLLBACK")
                    raise
            return SCHEMA_VERSION

    # -- the call record (a bus subscriber) -----------------------------------------------------
    def record(self, item: CallEvent | WorkerFact) -> None:
        """Keep what matters of every call."""
        now = time.time()
        with self._lock:
            if isinstance(item, CallEvent):
                ev = item.event
                if isinstance(ev, FinalTranscript | Decision):
                    self._db.execute("INSERT INTO events(call_id, leg, kind, at, data) VALUES (?,?,?,?,?)",
                                     (item.call_id, item.leg, type(ev).__name__, now,
                                      json.dumps(event_to_dict(ev), ensure_ascii=False)))
                if isinstance(ev, FinalTranscript) and ev.text:
                    self._db.execute("UPDATE calls SET text = text || ? WHERE call_id=?",
                                     (f"{item.leg}: {ev.text}\n", item.call_id))
                elif isinstance(ev, Decision):
                    self._db.execute("UPDATE calls SET target=?, category=? WHERE call_id=?",
                                     (ev.target, ev.category, item.call_id))
                return
            f = item.fact
            if isinstance(f, P.CallStarted):
                self._db.execute("INSERT OR IGNORE INTO calls(call_id, worker, remote, started_at, seat) "
                                 "VALUES (?,?,?,?,?)", (f.call_id, item.worker, f.remote, f.t, self.seat))
            elif isinstance(f, P.CallEnded):
                self._db.execute("UPDATE calls SET ended_at=?, status=?, reason=? WHERE call_id=? AND ended_at IS NULL",
                                 (f.t, f.status, f.reason, f.call_id))
            elif isinstance(f, P.CallRejected):
                # a refused caller is a call too: 110 must be able to see who could not get through
                call_id = f.call_id or f"rejected-{f.t:.6f}"
                self._db.execute("INSERT OR IGNORE INTO calls(call_id, worker, remote, started_at, ended_at, status, "
                                 "reason, seat) VALUES (?,?,?,?,?,?,?,?)",
                                 (call_id, item.worker, f.remote, f.t, f.t, f.status, f.reason, self.seat))
            elif isinstance(f, P.TransferUpdate) and f.step.value in TRANSFER_OUTCOMES:
                self._db.execute("UPDATE calls SET transfer=? WHERE call_id=?", (f.step.value, f.call_id))
            if item.kind in KEPT_FACTS:
                d = f.to_dict()
                self._db.execute("INSERT INTO events(call_id, leg, kind, at, data) VALUES (?,?,?,?,?)",
                                 (getattr(f, "call_id", None) or None, getattr(f, "leg", None), item.kind,
                                  getattr(f, "t", now), json.dumps({"worker": item.worker, **d}, ensure_ascii=False)))

    def calls(self) -> list[dict[str, Any]]:
        with self._lock:
            return self._rows("SELECT call_id, worker, remote, started_at, ended_at, status, reason FROM calls "
                              "ORDER BY started_at", ())

    def call(self, call_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = self._rows(f"SELECT {HISTORY_COLUMNS} FROM calls WHERE call_id=?", (call_id,))
        return rows[0] if rows else None

    def events(self, call_id: str) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT kind, leg, at, data FROM events WHERE call_id=? ORDER BY id", (call_id,))
            return [{"kind": k, "leg": leg, "at": at, **json.loads(data)} for k, leg, at, data in rows.fetchall()]

    def history(self, *, q: str = "", number: str = "", since: float | None = None, until: float | None = None,
                category: str = "", target: str = "", seat: str | None = None, limit: int = 50,
                offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Past and live calls, newest first. ``seat``: only the calls an operator of that seat
        may see (calls of that seat and calls rung to no seat); None = every call."""
        where: list[str] = ["1=1"]
        args: list[Any] = []
        for column, value in (("text", q), ("remote", number), ("category", category)):
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
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM calls WHERE {cond}", args).fetchone()[0]
            rows = self._rows(f"SELECT {HISTORY_COLUMNS} FROM calls WHERE {cond} "
                              "ORDER BY started_at DESC LIMIT ? OFFSET ?", (*args, limit, offset))
        return rows, total

    # -- accounts ---------------------------------------------------------------------------------
    def add_user(self, name: str, role: str, pw_hash: str, seat: str = "") -> int:
        with self._lock:
            try:
                cur = self._db.execute("INSERT INTO users(name, role, seat, pw_hash, created_at) VALUES (?,?,?,?,?)",
                                       (name, role, seat, pw_hash, time.time()))
            except sqlite3.IntegrityError as e:
                raise ValueError(f"账户 {name!r} 已存在 / user {name!r} exists") from e
            return int(cur.lastrowid or 0)

    def set_password(self, name: str, pw_hash: str) -> bool:
        with self._lock:
            cur = self._db.execute("UPDATE users SET pw_hash=? WHERE name=?", (pw_hash, name))
            self._db.execute("DELETE FROM sessions WHERE user_id=(SELECT id FROM users WHERE name=?)", (name,))
            return cur.rowcount > 0

    def user(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            rows = self._rows("SELECT id, name, role, seat, pw_hash, disabled FROM users WHERE name=?", (name,))
        return rows[0] if rows else None

    def users(self) -> list[dict[str, Any]]:
        with self._lock:
            return self._rows("SELECT id, name, role, seat, created_at, disabled FROM users ORDER BY id", ())

    def count_users(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def add_session(self, token_hash: str, user_id: int, csrf: str) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("INSERT INTO sessions(token_hash, user_id, csrf, created_at, last_seen) VALUES (?,?,?,?,?)",
                             (token_hash, user_id, csrf, now, now))

    def session(self, token_hash: str) -> dict[str, Any] | None:
        with self._lock:
            rows = self._rows("SELECT s.csrf, s.created_at, s.last_seen, u.id AS user_id, u.name, u.role, u.seat, "
                              "u.disabled FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash=?",
                              (token_hash,))
        return rows[0] if rows else None

    def touch_session(self, token_hash: str, now: float) -> None:
        with self._lock:
            self._db.execute("UPDATE sessions SET last_seen=? WHERE token_hash=?", (now, token_hash))

    def drop_session(self, token_hash: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE token_hash=?", (token_hash,))

    def drop_sessions_before(self, last_seen: float) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM sessions WHERE last_seen < ?", (last_seen,)).rowcount

    def add_token(self, name: str, user_id: int, token_hash: str) -> int:
        with self._lock:
            cur = self._db.execute("INSERT INTO api_tokens(name, user_id, token_hash, created_at) VALUES (?,?,?,?)",
                                   (name, user_id, token_hash, time.time()))
            return int(cur.lastrowid or 0)

    def token(self, token_hash: str) -> dict[str, Any] | None:
        with self._lock:
            rows = self._rows("SELECT t.id AS token_id, t.name AS token_name, u.id AS user_id, u.name, u.role, u.seat, "
                              "u.disabled FROM api_tokens t JOIN users u ON u.id = t.user_id "
                              "WHERE t.token_hash=? AND t.revoked=0", (token_hash,))
            if rows:
                self._db.execute("UPDATE api_tokens SET last_used=? WHERE id=?", (time.time(), rows[0]["token_id"]))
        return rows[0] if rows else None

    def revoke_token(self, name: str) -> int:
        with self._lock:
            return self._db.execute("UPDATE api_tokens SET revoked=1 WHERE name=? AND revoked=0", (name,)).rowcount

    # -- audit ---------------------------------------------------------------------------------
    def audit(self, user: str, action: str, call_id: str | None = None, outcome: str = "",
              detail: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._db.execute("INSERT INTO audit(at, user, action, call_id, outcome, detail) VALUES (?,?,?,?,?,?)",
                             (time.time(), user, action, call_id, outcome,
                              json.dumps(detail or {}, ensure_ascii=False)))

    def audit_log(self, limit: int = 100, action: str = "") -> list[dict[str, Any]]:
        with self._lock:
            rows = self._rows("SELECT id, at, user, action, call_id, outcome, detail FROM audit "
                              + ("WHERE action=? " if action else "") + "ORDER BY id DESC LIMIT ?",
                              (action, limit) if action else (limit,))
        for r in rows:
            r["detail"] = json.loads(r["detail"])
        return rows

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, args: Iterable[Any]) -> list[dict[str, Any]]:
        cur = self._db.execute(sql, tuple(args))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


HISTORY_COLUMNS = "call_id, worker, remote, seat, started_at, ended_at, status, reason, target, category, transfer, text"


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
