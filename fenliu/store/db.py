"""One SQL connection for SQLite (embedded default, WAL) or PostgreSQL (psycopg 3, the store
several `fenliu serve` instances share), behind the same few calls.

The SQL written elsewhere in fenliu is the common subset of both dialects with ``?``
placeholders; the little that differs is translated here: placeholders (``%s`` for psycopg),
``INTEGER PRIMARY KEY AUTOINCREMENT`` (an identity column), ``REAL`` (double precision).
Migrations are numbered scripts; the version reached is kept in ``schema_version``.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fenliu.errors import ConfigError

_MIGRATION_LOCK = 4110  # PostgreSQL advisory lock id: one instance migrates at a time


class IntegrityError(Exception):
    """A unique or foreign-key constraint refused a row (either dialect)."""


class StoreUnavailable(Exception):
    """The database cannot be reached just now (PostgreSQL restarting, the network): worth waiting
    for — unlike a ConfigError, which is only raised while starting."""


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(//[^:/@]+):[^@]*@", r"\1:***@", url)


class Database:
    def __init__(self, url: str, wait: float = 30.0) -> None:
        """``wait``: how long a statement waits for a lock another process holds (SQLite) or for a
        lost server to take a connection again (PostgreSQL). A tool waits; the service (on its
        event loop) waits briefly and lets its records wait instead (``Store``)."""
        self.url = url
        self.wait = wait
        self._retry_at = 0.0  # PostgreSQL lost: no new connection attempt before this (monotonic)
        self._lock = threading.RLock()
        if url.startswith("sqlite:///"):
            self.dialect = "sqlite"
            self.path: Path | None = Path(url[len("sqlite:///"):])
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con: Any = self._open_sqlite(self.path, wait)
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            self.path = None
            self._con = self._open_pg(starting=True)
        else:
            raise ConfigError(f"store.url {redact(url)!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
        self._in_tx = 0

    # -- connections -----------------------------------------------------------------------------
    def set_wait(self, wait: float) -> None:
        """Wait this long for locks / a lost server from now on (see ``__init__``)."""
        with self._lock:
            self.wait = wait
            if self.dialect == "sqlite":
                self._con.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")

    @staticmethod
    def _open_sqlite(path: Path, wait: float = 30.0) -> sqlite3.Connection:
        con = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=wait)
        con.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a crash of fenliu; only a power cut can lose the last
        # transactions, and never corrupts the file. FULL would wait for the disk on every event.
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA foreign_keys=ON")
        return con

    def _open_pg(self, starting: bool = False) -> Any:
        try:
            import psycopg
        except ImportError as e:  # pragma: no cover - psycopg is a dependency
            raise ConfigError("PostgreSQL needs psycopg 3: pip install 'psycopg[binary]'") from e
        if not starting and time.monotonic() < self._retry_at:  # it just failed: do not wait for it again yet
            raise StoreUnavailable(f"数据库暂时不可用 / {redact(self.url)} unavailable (retrying shortly)")
        try:
            # at start a wrong URL must be said at once; later a restarting server is waited for briefly
            return psycopg.connect(self.url, autocommit=True,
                                   connect_timeout=10 if starting else max(1, min(int(self.wait), 10)))
        except psycopg.OperationalError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if not starting:  # a restart, a network cut: the callers' records wait for it (Store)
                self._retry_at = time.monotonic() + 1.0
                raise StoreUnavailable(f"数据库暂时不可用 / {redact(self.url)} unavailable: {first}") from e
            raise ConfigError(f"无法连接数据库 / cannot connect to {redact(self.url)}: {first}. Is PostgreSQL "
                              f"running and the database created (createdb)? Check store.url.") from e

    def _reconnect_if_lost(self) -> None:
        if self.dialect == "postgresql" and self._con.closed and not self._in_tx:
            self._con = self._open_pg()

    def unavailable(self, e: BaseException) -> bool:
        """The database cannot be reached or written just now (worth waiting for), as opposed
        to a statement it refuses (a bug or bad data)."""
        if isinstance(e, StoreUnavailable):
            return True
        if isinstance(e, sqlite3.OperationalError):
            return any(w in str(e) for w in ("locked", "busy", "disk I/O", "unable to open", "readonly", "full"))
        if self.dialect == "postgresql":
            import psycopg

            return isinstance(e, psycopg.OperationalError)
        return False

    def _lost(self, e: Exception) -> bool:
        """A PostgreSQL connection that broke (server restarted, backend killed, network)."""
        if self.dialect != "postgresql":
            return False
        import psycopg

        return isinstance(e, psycopg.OperationalError) and bool(self._con.closed or self._con.broken)

    @property
    def clock(self) -> str:
        """SQL for the store's own time (unix seconds): instances on several machines compare
        heartbeats by one clock, not each machine's."""
        if self.dialect == "postgresql":
            return "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
        return "((julianday('now') - 2440587.5) * 86400.0)"

    # -- statements ------------------------------------------------------------------------------
    def sql(self, text: str) -> str:
        if self.dialect == "sqlite":
            return text
        text = text.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
        text = re.sub(r"\bREAL\b", "DOUBLE PRECISION", text)
        return text.replace("%", "%%").replace("?", "%s")

    def execute(self, text: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement; returns the cursor (rowcount, fetchone, fetchall)."""
        with self._lock:
            self._reconnect_if_lost()
            try:
                try:
                    return self._con.execute(self.sql(text), tuple(args))
                except Exception as e:
                    if self._in_tx or not self._lost(e):
                        raise
                    self._con = self._open_pg()  # once: a statement outside a transaction is retried
                    return self._con.execute(self.sql(text), tuple(args))
            except sqlite3.IntegrityError as e:
                raise IntegrityError(str(e)) from e
            except Exception as e:
                if self.dialect == "postgresql":
                    import psycopg

                    if isinstance(e, psycopg.errors.IntegrityError):
                        raise IntegrityError(str(e)) from e
                raise

    def rows(self, text: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self.execute(text, tuple(args))
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def one(self, text: str, args: Iterable[Any] = ()) -> dict[str, Any] | None:
        r = self.rows(text, args)
        return r[0] if r else None

    def scalar(self, text: str, args: Iterable[Any] = ()) -> Any:
        with self._lock:
            row = self.execute(text, tuple(args)).fetchone()
            return row[0] if row else None

    def insert(self, text: str, args: Sequence[Any] = ()) -> int:
        """An INSERT … returning the new row's id (``RETURNING id`` works in both dialects)."""
        with self._lock:
            row = self.execute(text + " RETURNING id", args).fetchone()
            return int(row[0]) if row else 0

    @contextmanager
    def tx(self) -> Iterator[Database]:
        """One transaction (nested calls join the outer one). SQLite takes the write lock at
        BEGIN (IMMEDIATE) so two processes never interleave a read-then-write."""
        with self._lock:
            if self._in_tx:
                self._in_tx += 1
                try:
                    yield self
                finally:
                    self._in_tx -= 1
                return
            self._reconnect_if_lost()
            if self.dialect == "sqlite":
                self._con.execute("BEGIN IMMEDIATE")
                self._in_tx = 1
                try:
                    yield self
                except BaseException:
                    self._in_tx = 0
                    self._con.execute("ROLLBACK")
                    raise
                self._in_tx = 0
                self._con.execute("COMMIT")
            else:
                self._in_tx = 1
                try:
                    cm = self._begin_pg()
                    try:
                        yield self
                    except BaseException as e:
                        if not cm.__exit__(type(e), e, e.__traceback__):
                            raise
                    else:
                        cm.__exit__(None, None, None)
                finally:
                    self._in_tx = 0

    def _begin_pg(self) -> Any:
        """BEGIN; a connection found dead at BEGIN (nothing done yet) is reopened once."""
        cm = self._con.transaction()
        try:
            cm.__enter__()
        except Exception as e:
            if not self._lost(e):
                raise
            self._con = self._open_pg()
            cm = self._con.transaction()
            cm.__enter__()
        return cm

    # -- schema ----------------------------------------------------------------------------------
    def version(self) -> int:
        with self._lock:
            self.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            return int(self.scalar("SELECT MAX(version) FROM schema_version") or 0)

    def migrate(self, migrations: Sequence[str], *, upgrade: bool = True) -> tuple[int, int]:
        """Bring the schema to ``len(migrations)``; returns (version before, version after).
        A store written by a newer fenliu is refused; ``upgrade=False`` only checks."""
        target = len(migrations)
        with self._lock:
            if self.dialect == "postgresql":
                self.execute("SELECT pg_advisory_lock(?)", (_MIGRATION_LOCK,))
            try:
                before = self.version()
                if before > target:
                    raise ConfigError(f"数据库 {redact(self.url)} 的结构版本 {before} 比本程序 ({target}) 新 / the store "
                                      f"was written by a newer fenliu: upgrade fenliu, or point store.url elsewhere")
                if before < target and not upgrade:
                    raise ConfigError(f"数据库结构版本 {before} 低于 {target} / the store needs an upgrade: "
                                      f"run `fenliu db upgrade`")
                for i in range(before, target):
                    with self.tx():
                        for stmt in statements(migrations[i]):
                            self.execute(stmt)
                        self.execute("DELETE FROM schema_version")
                        self.execute("INSERT INTO schema_version(version) VALUES (?)", (i + 1,))
                return before, target
            finally:
                if self.dialect == "postgresql":
                    self.execute("SELECT pg_advisory_unlock(?)", (_MIGRATION_LOCK,))

    def close(self) -> None:
        with self._lock:
            self._con.close()


def statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
