"""One live view over every instance of a centre: the instances that share a PostgreSQL store
share their console events, heartbeats and the operators' keys through it.

- **Events.** Each instance's event feed hands its envelopes to ``Centre.publish`` instead of
  numbering them itself. One thread per instance writes them to ``centre_events`` in batches
  (an advisory lock makes the commit order the id order, so a reader that follows the ids misses
  none) and sends ``NOTIFY fenliu_events``; every instance — the writer too — reads the new rows
  in id order and hands them to its feed (``EventFeed.accept``). The ids are the centre's, so a
  console reconnecting with ``?since=`` to any instance, or to a restarted one (which loads the
  latest rows at start), resumes without a gap.
- **When the store cannot be written** for more than a second, the instance numbers its own
  events (its operators keep their cards) and keeps them for the store; once the store takes them
  again the ids start a new run and every open stream is told to reconnect (close code 1012) and
  reloads its view. Other instances see the events late, never not at all.
- **Heartbeats** (``instances``, by the store's clock): a key for a call whose instance has not
  been seen for ``dead_after`` seconds is refused at once (503) rather than left waiting.
- **Keys for another instance's call** (``centre_commands``): the instance the operator uses
  writes the command and ``NOTIFY fenliu_commands``; the call's instance claims it (once: the
  claim is one UPDATE), runs it exactly as its own API would, writes the answer and
  ``NOTIFY fenliu_answers``; the API answers the operator with that outcome. A command nobody
  claimed by its deadline is withdrawn (nothing was done: 503); a claimed one without an answer
  in time is 504, as a local key without an outcome is.

PostgreSQL's LISTEN/NOTIFY wakes the readers; each also looks every ``poll`` seconds, so a
notification lost while a connection was re-opened delays nothing by more than that.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fenliu.console.feed import EventFeed
from fenliu.service.lost import Released, release_instance
from fenliu.store.db import Database
from fenliu.store.record import Store

ORDER_LOCK = 4111  # PostgreSQL advisory lock id: one writer commits centre events at a time
CHANNELS = ("fenliu_events", "fenliu_commands", "fenliu_answers")

Executor = Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]


class CentreUnavailable(Exception):
    """A key for another instance's call could not be carried there (the reason is the message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class Centre:
    def __init__(self, url: str, instance: str, feed: EventFeed, *, console_url: str = "",
                 keep_hours: float = 24.0, heartbeat: float = 1.0, dead_after: float = 3.0,
                 poll: float = 0.5, local_after: float = 1.0, store: Store | None = None,
                 lost_after: float = 4.0, sip_address: str = "127.0.0.1") -> None:
        self.url, self.instance, self.feed = url, instance, feed
        # losing an instance: a peer silent for lost_after s (store clock) is declared dead by one
        # survivor whose own heartbeat was just written; it releases the peer's calls (service.lost)
        self.store, self.lost_after, self.sip_address = store, lost_after, sip_address
        self.on_lost: Callable[[Released], None] | None = None  # (loop) after a peer's calls were released
        self.on_fenced: Callable[[str], None] | None = None  # (loop) this instance was declared dead: stop
        self.fenced_by = ""
        self.started_at = 0.0
        self.console_url = console_url
        self.keep_hours, self.heartbeat, self.dead_after = keep_hours, heartbeat, dead_after
        self.poll, self.local_after = poll, local_after
        self.db = Database(url)  # this thread's own connection (the store's stays with the store)
        self.epoch = ""
        self.peers: dict[str, float] = {}  # instance -> seconds since its last heartbeat (store clock)
        self.executor: Executor | None = None  # runs a claimed command (the API sets it)
        self.local_mode = False  # the store cannot be written: this instance numbers its own events
        self.failing_since = 0.0
        self.last_error = ""
        self.stats = {"written": 0, "read": 0, "commands_sent": 0, "commands_run": 0, "instances_lost": 0}
        self._lock = threading.Lock()
        self._pending: list[list[Any]] = []  # [envelope, delivered here already]
        self._skip: set[int] = set()  # ids of own rows this instance delivered while it numbered them
        self._cursor = 0  # the last centre_events id read
        self._answers: dict[int, asyncio.Future[tuple[int, dict[str, Any]]]] = {}
        self._answers_out: list[tuple[int, int, dict[str, Any]]] = []
        self._wake = threading.Event()
        self._commands_due = threading.Event()  # a command or an answer may be waiting in the store
        self._last_commands = 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_beat = 0.0
        self._last_prune = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- start / stop ----------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        db = self.db
        with db.tx():
            db.execute("SELECT pg_advisory_xact_lock(?)", (ORDER_LOCK,))
            self.epoch = str(db.scalar("SELECT epoch FROM centre_epoch") or "")
            if not self.epoch:
                self.epoch = "centre-" + secrets.token_hex(6)
                db.execute("INSERT INTO centre_epoch(epoch) VALUES (?)", (self.epoch,))
        size = self.feed.ring.maxlen or 10_000
        rows = db.rows("SELECT id, body FROM centre_events ORDER BY id DESC LIMIT ?", (size,))
        rows.reverse()
        self.feed.load([{"id": r["id"], **json.loads(r["body"])} for r in rows], self.epoch)
        self._cursor = int(db.scalar("SELECT MAX(id) FROM centre_events") or 0)
        # a new life: whatever an earlier one of this instance was declared, this one is alive
        db.execute(f"INSERT INTO instances(name, started, seen, console) VALUES (?, {db.clock}, {db.clock}, ?) "
                   f"ON CONFLICT (name) DO UPDATE SET started = excluded.started, seen = excluded.seen, "
                   f"dead_at = NULL, dead_by = ''", (self.instance, self.console_url))
        self._beat()
        self.feed.outbound = self.publish
        for target, name in ((self._listen, "centre-listen"), (self._run, "centre")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self.feed.outbound = None
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(5)
        try:
            self._flush()  # what is still pending goes to the store
            self.db.execute("DELETE FROM instances WHERE name = ?", (self.instance,))
        except Exception:  # noqa: BLE001 - the store is gone: nothing more to do
            pass
        self.db.close()

    # -- the loop's side -------------------------------------------------------------------------
    def publish(self, env: dict[str, Any]) -> None:
        """An envelope of this instance (on the loop): to the store, or straight to this feed
        while the store cannot be written."""
        with self._lock:
            local = self.local_mode
            self._pending.append([env, local])
        if local:
            self.feed.deliver(env)
        self._wake.set()

    def _go_local(self) -> None:
        """(loop) The store has not taken events for local_after s: number them here."""
        with self._lock:
            if self.local_mode:
                return
            self.local_mode = True
            late = [item for item in self._pending if not item[1]]
            for item in late:
                item[1] = True
        for item in late:
            self.feed.deliver(item[0])

    async def send_command(self, instance: str, call_id: str, action: str, args: dict[str, Any], by: str,
                           wait: float) -> tuple[int, dict[str, Any]]:
        """Carry an operator's key to the instance that holds the call; its outcome comes back."""
        age = await asyncio.to_thread(self.peer_age, instance)
        if age is None or age > self.dead_after:
            seen = "never seen" if age is None else f"last seen {age:.0f} s ago"
            raise CentreUnavailable(503, "instance_unavailable",
                                    f"这通电话所在的实例 {instance} 无响应 / the call is on instance {instance}, "
                                    f"which is not answering ({seen}): nothing was done")
        timeout = max(wait, 0.0) + 3.0
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, dict[str, Any]]] = loop.create_future()
        cid = await asyncio.to_thread(self._insert_command, instance, call_id, action, args, by, timeout)
        self._answers[cid] = fut
        self.stats["commands_sent"] += 1
        self._commands_due.set()  # look for an answer already given
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            withdrawn = await asyncio.to_thread(self._withdraw, cid)
            if withdrawn:
                raise CentreUnavailable(503, "instance_unavailable",
                                        f"实例 {instance} 未在 {timeout:.0f} 秒内接收指令 / instance {instance} did not "
                                        f"take the command within {timeout:.0f} s: nothing was done") from None
            raise CentreUnavailable(504, "timeout", f"实例 {instance} 已接收指令，{timeout:.0f} 秒内没有结果 / instance "
                                                    f"{instance} took the command; no outcome within {timeout:.0f} s") \
                from None
        finally:
            self._answers.pop(cid, None)

    def peer_age(self, instance: str) -> float | None:
        """Seconds since the instance's last heartbeat, by the store's clock (None: never seen)."""
        age = self.db.scalar(f"SELECT {self.db.clock} - seen FROM instances WHERE name = ?", (instance,))
        return None if age is None else float(age)

    def _insert_command(self, instance: str, call_id: str, action: str, args: dict[str, Any], by: str,
                        timeout: float) -> int:
        db = self.db
        with db.tx():
            cid = db.insert(f"INSERT INTO centre_commands(instance, call_id, action, args, by_user, via, at, expires) "
                            f"VALUES (?, ?, ?, ?, ?, ?, {db.clock}, {db.clock} + ?)",
                            (instance, call_id, action, json.dumps(args, ensure_ascii=False), by, self.instance,
                             timeout))
            db.execute("SELECT pg_notify('fenliu_commands', ?)", (instance,))
        return cid

    def _withdraw(self, cid: int) -> bool:
        cur = self.db.execute("UPDATE centre_commands SET state = 'expired' WHERE id = ? AND state = 'queued'", (cid,))
        return bool(cur.rowcount)

    # -- the threads -----------------------------------------------------------------------------
    def _listen(self) -> None:
        """A connection that only LISTENs and wakes the worker thread (re-opened when lost)."""
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as con:
                    for ch in CHANNELS:
                        con.execute(f"LISTEN {ch}")
                    self._commands_due.set()  # anything sent while this connection was down
                    self._wake.set()
                    while not self._stop.is_set():
                        for n in con.notifies(timeout=self.poll, stop_after=1):
                            if n.channel != "fenliu_events":  # a command, or an answer, for somebody
                                self._commands_due.set()
                            self._wake.set()
            except Exception as e:  # noqa: BLE001 - the worker notices the store itself; retry
                self.last_error = f"listen: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
                self._stop.wait(0.5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll)
            self._wake.clear()
            now = time.monotonic()
            if now - self._last_commands >= self.poll:  # the poll: whatever a lost notification would have said
                self._commands_due.set()
            if now - self._last_beat >= self.heartbeat:
                try:  # first and on its own: a failing event write must not make this instance look dead
                    self._beat()
                except Exception as e:  # noqa: BLE001 - the store is down: the peers cannot see us either
                    self.last_error = f"heartbeat: {str(e).strip().splitlines()[0] if str(e).strip() else e!r}"
            try:
                self._flush()
                self._read()
                if self._commands_due.is_set() or self._answers_out:  # not on every batch of events
                    self._commands_due.clear()
                    self._last_commands = now
                    self._commands()
                if now - self._last_prune >= 600:
                    self._prune()
                self.failing_since = 0.0
            except Exception as e:  # noqa: BLE001 - the store is down or refuses: keep events, retry
                self._commands_due.set()
                self.last_error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                now = time.monotonic()
                self.failing_since = self.failing_since or now
                if now - self.failing_since >= self.local_after and not self.local_mode and self.loop is not None:
                    self.loop.call_soon_threadsafe(self._go_local)
                self._stop.wait(0.2)

    def _flush(self) -> None:
        with self._lock:
            batch = list(self._pending)
        if not batch:
            return
        db = self.db
        ids: list[tuple[int, bool]] = []
        with db.tx():
            db.execute("SELECT pg_advisory_xact_lock(?)", (ORDER_LOCK,))
            for env, delivered in batch:
                body = json.dumps({k: v for k, v in env.items() if k != "id"}, ensure_ascii=False)
                ids.append((db.insert("INSERT INTO centre_events(instance, at, body) VALUES (?, ?, ?)",
                                      (self.instance, env["at"], body)), delivered))
            db.execute("NOTIFY fenliu_events")
        with self._lock:
            del self._pending[:len(batch)]
            self._skip.update(i for i, delivered in ids if delivered)
            rejoin = self.local_mode and not any(item[1] for item in self._pending)
            if rejoin:
                self.local_mode = False
        self.stats["written"] += len(batch)
        if rejoin and self.loop is not None:  # before any row read from now on reaches the feed
            self.loop.call_soon_threadsafe(self.feed.rejoin, f"{self.epoch}-{secrets.token_hex(3)}")

    def _read(self) -> None:
        if self.local_mode:
            return  # the rows follow once this instance's own events are in the store again
        rows = self.db.rows("SELECT id, body FROM centre_events WHERE id > ? ORDER BY id LIMIT 2000", (self._cursor,))
        if not rows:
            return
        self._cursor = int(rows[-1]["id"])
        envs = []
        for r in rows:
            if r["id"] in self._skip:
                self._skip.discard(r["id"])
                continue
            envs.append({"id": int(r["id"]), **json.loads(r["body"])})
        self.stats["read"] += len(envs)
        if envs and self.loop is not None:
            self.loop.call_soon_threadsafe(self._accept_all, envs)
        if len(rows) == 2000:
            self._wake.set()

    def _accept_all(self, envs: list[dict[str, Any]]) -> None:
        for env in envs:
            self.feed.accept(env)

    def _beat(self) -> None:
        db = self.db
        db.execute(f"INSERT INTO instances(name, started, seen, console) VALUES (?, {db.clock}, {db.clock}, ?) "
                   f"ON CONFLICT (name) DO UPDATE SET seen = excluded.seen, console = excluded.console",
                   (self.instance, self.console_url))
        rows = db.rows(f"SELECT name, {db.clock} - seen AS age, dead_at, dead_by FROM instances")
        self.peers = {r["name"]: float(r["age"]) for r in rows if r["dead_at"] is None}
        self._last_beat = time.monotonic()
        me = next((r for r in rows if r["name"] == self.instance), None)
        if me is not None and me["dead_at"] is not None and not self.fenced_by:
            # declared dead by a survivor (this process stalled, or lost the store, for too long): its
            # callers were released; it must not go on talking to them, nor take new calls
            self.fenced_by = str(me["dead_by"] or "another instance")
            if self.loop is not None and self.on_fenced is not None:
                self.loop.call_soon_threadsafe(self.on_fenced, self.fenced_by)
            return
        if self.store is not None and not self.fenced_by:
            for r in rows:  # only now: this instance's own write just succeeded
                if r["dead_at"] is None and r["name"] != self.instance and float(r["age"]) > self.lost_after:
                    self._declare_dead(str(r["name"]), float(r["age"]))

    def _declare_dead(self, name: str, age: float) -> None:
        """One survivor wins the claim (one UPDATE); it releases the dead instance's calls."""
        db = self.db
        won = db.execute(f"UPDATE instances SET dead_at = {db.clock}, dead_by = ? WHERE name = ? AND dead_at IS NULL "
                         f"AND seen < {db.clock} - ?", (self.instance, name, self.lost_after)).rowcount
        if not won or self.store is None:
            return
        self.stats["instances_lost"] += 1
        # the BYEs take up to 4 s to be answered: not on this thread, which carries every console's events
        threading.Thread(target=self._release, args=(name, age), name=f"release-{name}", daemon=True).start()

    def _release(self, name: str, age: float) -> None:
        assert self.store is not None
        released = release_instance(self.store, name, f"instance {name} lost (no heartbeat for {age:.0f} s)",
                                    self.sip_address)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._lost, released)

    def _lost(self, released: Released) -> None:
        """(loop) Every console drops the dead instance's calls; supervisors hear of it."""
        now = round(time.time(), 3)
        for c in released.calls:
            self.publish({"instance": released.instance, "at": now, "kind": "call_ended", "call_id": c["call_id"],
                          "leg": "", "worker": "", "data": {"status": 0, "reason": released.reason}})
        if self.on_lost is not None:
            self.on_lost(released)

    def _prune(self) -> None:
        db = self.db
        db.execute(f"DELETE FROM centre_events WHERE at < {db.clock} - ?", (self.keep_hours * 3600,))
        db.execute(f"DELETE FROM centre_commands WHERE at < {db.clock} - 86400")
        self._last_prune = time.monotonic()

    def _commands(self) -> None:
        db = self.db
        with self._lock:
            answers, self._answers_out = self._answers_out, []
        for cid, status, body in answers:  # outcomes of commands this instance ran
            with db.tx():
                db.execute("UPDATE centre_commands SET state = 'done', status = ?, answer = ? WHERE id = ?",
                           (status, json.dumps(body, ensure_ascii=False), cid))
                db.execute("SELECT pg_notify('fenliu_answers', ?)", (str(cid),))
        claimed = db.rows(f"UPDATE centre_commands SET state = 'taken' WHERE instance = ? AND state = 'queued' "
                          f"AND expires > {db.clock} RETURNING id, call_id, action, args, by_user, via, "
                          f"expires - {db.clock} AS left_s", (self.instance,))
        for cmd in claimed:
            self.stats["commands_run"] += 1
            if self.loop is not None:
                self.loop.call_soon_threadsafe(self._execute, cmd)
        waiting = list(self._answers)
        if waiting:
            marks = ",".join("?" * len(waiting))
            for r in db.rows(f"SELECT id, status, answer FROM centre_commands WHERE state = 'done' AND id IN ({marks})",
                             waiting):
                if self.loop is not None:
                    self.loop.call_soon_threadsafe(self._answered, int(r["id"]), int(r["status"]),
                                                   json.loads(r["answer"]))

    def _answered(self, cid: int, status: int, body: dict[str, Any]) -> None:
        fut = self._answers.get(cid)
        if fut is not None and not fut.done():
            fut.set_result((status, body))

    def _execute(self, cmd: dict[str, Any]) -> None:
        """(loop) Run a claimed command; its answer goes back through the store."""
        async def run() -> None:
            try:
                if self.executor is None:
                    raise RuntimeError("this instance's console cannot run commands")
                status, body = await self.executor({**cmd, "args": json.loads(cmd["args"])})
            except Exception as e:  # noqa: BLE001 - the answer says what went wrong
                status, body = 500, {"code": "internal", "error": f"{type(e).__name__}: {e}"[:300]}
            with self._lock:
                self._answers_out.append((int(cmd["id"]), status, {**body, "instance": self.instance}))
            self._wake.set()

        asyncio.ensure_future(run())
