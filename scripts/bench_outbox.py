#!/usr/bin/env python3
"""Outbox benchmark: how fast diversions are queued, and how fast and how safely the outbox
delivers their work orders and SMS — healthy, after an outage, and against a naive baseline.

    .venv/bin/python scripts/bench_outbox.py                 # 2000 orders, SQLite
    .venv/bin/python scripts/bench_outbox.py --orders 500 --pg   # also on a throw-away PostgreSQL

Set-up. The platform and SMS gateway are ``tests/loop/platform_server.FakePlatform`` (a real
aiohttp server) run in a child process, so it does not share fenliu's GIL; on a machine with two
or more cores the child is pinned to the second core and this process (fenliu: store + outbox,
one thread, one event loop, as in ``fenliu serve``) to the first (``--no-pin``: no pinning).
The store is a fresh SQLite file in a temporary directory on disk, or a fresh database of a
throw-away cluster (``tests.pg.start_cluster``: fsync off, so PostgreSQL is flattered). Outbox
settings are the production defaults (poll 1 s, lease 60 s) unless said otherwise.

1. Enqueue. N diversions recorded with ``Store.record`` — the sequence of
   ``tests/loop/loop_env.divert``: CallStarted, FinalTranscript, Decision, TransferUpdate
   STARTED and BRIDGED (which opens the work order, its outbox item and the SMS in one
   transaction), CallEnded. The Decision comes from ``Router().decide(text)`` once and is reused
   (its call_id replaced), so the router is not measured. Each caller has its own mobile number
   (the per-number SMS limit never applies). Done twice per round: store A feeds 2a, store B 4.
   1+2a and 1+4 alternate for ``--rounds`` rounds (default 3); the fastest round of 2a and of 4
   is shown in detail (a shared machine's other work only ever slows a round down), the ratios
   best/best and median/median.
2a. Healthy backlog. Store A's N orders and N SMS are pending; ``Outbox.run`` runs on an event
   loop until the store counts them all delivered (asked once ``Outbox.delivered`` says so).
   Rates: items / (last ``delivered_at`` − start). For a backlog the delay is counted from the
   start of the run (platform receive time − start).
2b. Healthy live. ``--live-orders`` diversions recorded on the outbox's loop at ``--rate`` per
   second, each followed by ``outbox.wake()`` (what ``FollowThrough`` does on BRIDGED). Delay =
   platform receive time of the order − the order's ``created_at``.
3. Outage. The platform answers 503 to everything for ``--outage`` seconds (``FakePlatform.fail(n)``
   with n above any number of tries the outbox can make in that time — the run fails if they ran
   out; the port stays open and connections are kept: the platform is up but failing);
   ``--outage-orders`` diversions are recorded during the first 80 % of it; then failures are
   switched off (``fail(0)``; the number of 503s answered is read under the platform's lock, so
   the requests after it are exactly the ones processed). Retry settings: retry_base 0.2 s,
   retry_max 2 s, poll 1 s. Drain = last ``delivered_at`` − recovery. Duplicates at the platform:
   orders created minus distinct order numbers (``gdbh``), and Idempotency-Keys sent again after
   the platform had already processed them (both must be 0).
4. Baseline. Store B's backlog delivered the naive way: one item at a time, synchronously —
   ``store.claim(now, 1, lease)``, the same request ``Outbox`` would send (``Outbox._request``),
   ``urllib.request.urlopen`` (a fresh TCP connection per request), ``store.delivered``. The
   "x baseline" rows divide 2a by this.

"store time" rows: time spent inside ``Store.claim`` / ``payload`` / ``delivered`` /
``retry_later`` (wrapped with timers on the instance), as a share of the run's wall time. The
loop is single-threaded and these calls are synchronous, so it is time the loop could not send.
"CPU" rows: process CPU time ÷ wall time (100 % = one core busy); "other processes" = all cores'
busy time (/proc/stat) minus fenliu's and the platform's — PostgreSQL's server processes, and
whatever else runs on a shared machine. Before each measurement the script waits (at most 10 s)
for the machine to be nearly idle.

Everything (temporary directory, platform processes, PostgreSQL cluster) is removed at the end,
also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import cpu_model  # noqa: E402  (scripts/bench.py, this folder)

from fenliu.bus import CallEvent, WorkerFact  # noqa: E402
from fenliu.events import Decision, FinalTranscript  # noqa: E402
from fenliu.loop.outbox import BATCH, PARALLEL, Outbox  # noqa: E402
from fenliu.settings import Settings  # noqa: E402
from fenliu.sip import protocol as P  # noqa: E402
from fenliu.store.record import Store  # noqa: E402
from tests.loop.loop_env import HOTLINE_URI, NOISE, PLATFORM_SECRET_ENV, SMS_SECRET_ENV, loop_settings  # noqa: E402

ALL_CORES = sorted(os.sched_getaffinity(0))
OUTAGE_RETRY = {"retry_base": 0.2, "retry_max": 2.0}
PRODUCTION = {"poll_seconds": 1.0, "lease_seconds": 60.0}  # loop_settings' test values are faster
STORE_CALLS = ("claim", "payload", "delivered", "retry_later")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine_busy() -> float:
    """CPU seconds all cores have been busy since boot (/proc/stat; steal counts as busy)."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu "):
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in line.split()[1:9])
                return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        pass
    return float("nan")


def settle(max_wait: float = 10.0, threshold: float = 0.25) -> None:
    """On a shared machine: wait (at most ``max_wait`` s) until the other processes leave the
    cores mostly idle (less than ``threshold`` of one core busy over half a second)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        a = machine_busy()
        time.sleep(0.5)
        if machine_busy() - a < threshold * 0.5:
            return
    log(f"  (the machine stayed busy for {max_wait:g} s: measuring anyway)")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]


# ---------------------------------------------------------------------------- the platform, in a child process
def _platform_main(conn: Connection, cpu: int | None) -> None:
    """Child process: run a FakePlatform and obey the parent's commands until 'stop'."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    from tests.loop.platform_server import FakePlatform

    p = FakePlatform().start()
    injected = 0
    conn.send((p.url, time.process_time()))
    try:
        while True:
            cmd, arg = conn.recv()
            if cmd == "fail":
                injected = arg
                p.fail(injected, 503)
                conn.send(None)
            elif cmd == "recover":
                with p._cond:  # the same lock _handle appends a request and pops a failure under
                    failed = len(p.requests)
                    p.fail(0)
                    conn.send((time.time(), failed, injected - failed))
            elif cmd == "stats":
                with p._cond:
                    reqs = [(r["path"], r["time"], r["headers"].get("Idempotency-Key", ""))
                            for r in p.requests]
                    orders = {k: (str((v["body"] or {}).get("gdbh", "")), v["created_at"]) for k, v in p.orders.items()}
                    messages = {k: v["created_at"] for k, v in p.messages.items()}
                conn.send({"requests": reqs, "orders": orders, "messages": messages, "cpu": time.process_time()})
            elif cmd == "stop":
                break
    except EOFError:  # the parent went away
        pass
    finally:
        p.stop()
        try:
            conn.send("stopped")
        except OSError:
            pass


class RemotePlatform:
    """A FakePlatform in a child process (its own GIL, optionally its own core)."""

    def __init__(self, cpu: int | None) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_platform_main, args=(child, cpu), name="fake-platform", daemon=True)
        self._proc.start()
        child.close()
        self._lock = threading.Lock()
        try:
            if not self._conn.poll(30):
                raise RuntimeError("the fake platform did not start within 30 s")
            self.url, self.cpu0 = self._conn.recv()
        except (EOFError, OSError, RuntimeError) as e:
            self.close()
            raise RuntimeError(f"the fake platform process failed to start (exit code {self._proc.exitcode})") from e

    def _call(self, cmd: str, arg: Any = None) -> Any:
        with self._lock:
            self._conn.send((cmd, arg))
            return self._conn.recv()

    def fail(self, n: int) -> None:
        """The next ``n`` requests answer 503."""
        self._call("fail", n)

    def recover(self) -> tuple[float, int, int]:
        """Stop failing; returns (when, how many requests were answered 503, how many 503s
        were left unused: 0 would mean the outage ended early)."""
        return tuple(self._call("recover"))  # type: ignore[return-value]

    def stats(self) -> dict[str, Any]:
        s = self._call("stats")
        s["cpu"] -= self.cpu0
        return s

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                with self._lock:
                    self._conn.send(("stop", None))
                    if self._conn.poll(15):
                        self._conn.recv()
            except (OSError, EOFError):
                pass
            self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()


# ---------------------------------------------------------------------------- stores
class Backend:
    """Where fresh stores come from: SQLite files in a temporary directory, or databases of a
    throw-away PostgreSQL cluster."""

    def __init__(self, name: str, tmp: Path, cluster: Any = None) -> None:
        self.name, self.tmp, self.cluster = name, tmp, cluster
        self._n = 0

    def new_url(self) -> str:
        self._n += 1
        if self.cluster is None:
            return f"sqlite:///{self.tmp}/bench_{self._n}.db"
        return str(self.cluster.create_database(f"bench_outbox_{self._n}"))


def settings_for(url: str, platform: RemotePlatform, **outbox: float) -> Settings:
    return loop_settings(url, platform=platform.url, sms=platform.url, **{**PRODUCTION, **outbox})


def record_diversion(store: Store, decision: Decision, call_id: str, number: str,
                     timings: dict[str, float] | None = None) -> None:
    """One diverted call through Store.record, as loop_env.divert does it."""
    t = time.time()
    items: list[tuple[str, CallEvent | WorkerFact]] = [
        ("CallStarted", WorkerFact("w0", P.CallStarted(call_id, 0, f"<sip:{number}@10.0.0.1>", "<sip:110@fenliu>",
                                                       t=t))),
        ("FinalTranscript", CallEvent(call_id, "caller", "w0", FinalTranscript(call_id, 1, NOISE, 0.0, 2.0))),
        ("Decision", CallEvent(call_id, "caller", "w0", replace(decision, call_id=call_id))),
        ("Transfer STARTED", WorkerFact("w0", P.TransferUpdate(call_id, P.TransferStep.STARTED, HOTLINE_URI,
                                                               "three-way"))),
        ("Transfer BRIDGED", WorkerFact("w0", P.TransferUpdate(call_id, P.TransferStep.BRIDGED, HOTLINE_URI,
                                                               "three-way"))),
        ("CallEnded", WorkerFact("w0", P.CallEnded(call_id, 0, 200, "BYE", t=t + 60))),
    ]
    if timings is None:
        for _, item in items:
            store.record(item)
        return
    for name, item in items:
        t0 = time.perf_counter()
        store.record(item)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


@dataclass
class Enqueued:
    n: int
    seconds: float
    per_record: dict[str, float]  # seconds in total per record type

    @property
    def rate(self) -> float:
        return self.n / self.seconds


def enqueue(store: Store, decision: Decision, n: int, tag: str) -> Enqueued:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    for i in range(n):
        record_diversion(store, decision, f"{tag}-{i:06d}", f"139{i:08d}", timings)
    seconds = time.perf_counter() - t0
    counts = store.outbox_counts()
    if counts.get("order_pending") != n or counts.get("sms_pending") != n:
        raise RuntimeError(f"expected {n} pending orders and SMS after enqueueing, the store has {counts}")
    return Enqueued(n, seconds, timings)


class StoreTimer:
    """Times the outbox's calls into the store (instance attributes shadow the methods)."""

    def __init__(self, store: Store) -> None:
        self.seconds = dict.fromkeys(STORE_CALLS, 0.0)
        self.calls = dict.fromkeys(STORE_CALLS, 0)
        self.claimed = 0
        for name in STORE_CALLS:
            setattr(store, name, self._wrap(name, getattr(store, name)))

    def _wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                out = fn(*args, **kw)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1
            if name == "claim":
                self.claimed += len(out)
            return out

        return timed

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


# ---------------------------------------------------------------------------- one outbox run
@dataclass
class Run:
    t0: float
    wall: float  # start -> last delivered_at
    cpu: float  # this process's CPU seconds during the run
    items: list[dict[str, Any]]  # the outbox rows
    stats: dict[str, Any]  # the platform's record
    timer: StoreTimer
    recovered_at: float | None = None
    failed: int = 0  # requests answered 503
    extra: dict[str, Any] = field(default_factory=dict)

    def done_at(self, kind: str) -> float:
        return max(i["delivered_at"] for i in self.items if i["kind"] == kind)

    def accepted_times(self) -> dict[str, float]:
        """Idempotency-Key -> receive time of the first request the platform processed (not 503)."""
        out: dict[str, float] = {}
        for _path, t, key in self.stats["requests"][self.failed:]:
            out.setdefault(key, t)
        return out

    def delays(self, kind: str = "order", since: float | None = None) -> list[float]:
        acc = self.accepted_times()
        return [acc[i["idem_key"]] - (i["created_at"] if since is None else max(since, i["created_at"]))
                for i in self.items if i["kind"] == kind]


async def run_outbox(store: Store, settings: Settings, platform: RemotePlatform, orders: int, *,
                     producer: Callable[[Outbox], Awaitable[None]] | None = None, outage: float = 0.0,
                     within: float = 300.0) -> Run:
    """Outbox.run until ``orders`` orders and as many SMS are delivered (the store says so)."""
    outbox = Outbox(store, settings)
    timer = StoreTimer(store)
    stop = asyncio.Event()
    if outage:
        # fail(n) keeps a list of n statuses and pops its head per request: n must stay modest.
        # Bound: an item is tried at most every retry_base/2 s (the shortest jittered back-off).
        platform.fail(2 * orders * (int(outage / (settings.outbox.retry_base / 2)) + 2) + 1000)
    busy0, cpu0, t0 = machine_busy(), time.process_time(), time.time()
    task = asyncio.create_task(outbox.run(stop))
    prod = asyncio.create_task(producer(outbox)) if producer else None
    recovered_at, failed, unused = None, 0, 1
    try:
        while True:
            if outage and recovered_at is None and time.time() - t0 >= outage:
                recovered_at, failed, unused = platform.recover()  # a pipe round trip, well under 1 ms
            # the store's GROUP BY costs milliseconds per call on a few thousand rows (it would
            # steal loop time from the outbox every 50 ms): ask it once the counter says done
            if outbox.delivered >= 2 * orders and (prod is None or prod.done()):
                c = store.outbox_counts()
                if c.get("order_delivered", 0) >= orders and c.get("sms_delivered", 0) >= orders:
                    break
            if task.done():
                task.result()
                raise RuntimeError("Outbox.run ended by itself")
            if time.time() - t0 > within:
                raise TimeoutError(f"not delivered within {within:g} s: {store.outbox_counts()}")
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(task, *([prod] if prod else []), return_exceptions=True)
    cpu, busy = time.process_time() - cpu0, machine_busy() - busy0
    if prod is not None:
        prod.result()
    items = store.db.rows("SELECT kind, idem_key, status, attempts, created_at, delivered_at FROM outbox")
    wall = max(i["delivered_at"] for i in items) - t0
    if not unused:
        raise RuntimeError("the injected 503s ran out before the outage was over: raise the bound")
    stats = platform.stats()
    others = busy - cpu - stats["cpu"]  # the watcher's last 50 ms are in all three: close enough
    return Run(t0, wall, cpu, items, stats, timer, recovered_at, failed,
               {"outbox_counters": (outbox.delivered, outbox.retried, outbox.refused),
                "others": max(0.0, others) / (time.time() - t0)})


def paced_producer(store: Store, decision: Decision, n: int, rate: float, tag: str) -> Callable[[Outbox], Awaitable[None]]:
    """Record ``n`` diversions on the loop at ``rate``/s, waking the outbox after each."""

    async def produce(outbox: Outbox) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(n):
            # always yield, also when behind schedule: the outbox shares this loop
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            record_diversion(store, decision, f"{tag}-{i:06d}", f"139{i:08d}")
            outbox.wake()

    return produce


# ---------------------------------------------------------------------------- the naive baseline
def naive_deliver(store: Store, settings: Settings, n_items: int, timeout: float) -> tuple[float, float, float]:
    """One item at a time, a new connection per request; returns (seconds, CPU seconds, machine
    busy seconds)."""
    helper = Outbox(store, settings)  # only for _request: the very bytes and headers the outbox sends
    busy0, cpu0, t0 = machine_busy(), time.process_time(), time.perf_counter()
    done = 0
    while done < n_items:
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"naive baseline: {done}/{n_items} delivered within {timeout:g} s")
        items = store.claim(time.time(), 1, settings.outbox.lease_seconds)
        if not items:
            raise RuntimeError(f"naive baseline: nothing left to claim after {done}/{n_items}")
        item = items[0]
        url, body, headers, tmo, platform = helper._request(item)
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=tmo) as r:
            answer = json.loads(r.read() or b"{}")
        field_name = platform.ref_field if platform else "message_id"
        ref = answer.get(field_name)
        store.delivered(item, answer, str(ref) if ref is not None else None, time.time())
        done += 1
    return time.perf_counter() - t0, time.process_time() - cpu0, machine_busy() - busy0


# ---------------------------------------------------------------------------- checks
def duplicates(run: Run) -> dict[str, int]:
    st = run.stats
    order_numbers = {no for no, _ in st["orders"].values()}
    processed = [key for _path, _t, key in st["requests"][run.failed:]]
    return {
        "orders_created": len(st["orders"]),
        "sms_created": len(st["messages"]),
        "duplicate_orders": len(st["orders"]) - len(order_numbers),
        "resent_after_processed": len(processed) - len(set(processed)),
        "requests": len(st["requests"]),
        "distinct_keys": len({key for _p, _t, key in st["requests"]}),
    }


def check_complete(run: Run, orders: int, label: str) -> list[str]:
    d = duplicates(run)
    problems = []
    if d["orders_created"] != orders or d["sms_created"] != orders:
        problems.append(f"{label}: platform has {d['orders_created']} orders / {d['sms_created']} SMS, expected {orders}")
    if d["duplicate_orders"] or d["resent_after_processed"]:
        problems.append(f"{label}: duplicates {d}")
    if any(i["status"] != "delivered" for i in run.items):
        problems.append(f"{label}: undelivered items in the store")
    return problems


# ---------------------------------------------------------------------------- one backend
@dataclass
class Naive:
    seconds: float
    cpu: float  # this process
    busy: float  # all cores
    platform_cpu: float


@dataclass
class Results:
    enq: list[Enqueued] = field(default_factory=list)
    backlogs: list[Run] = field(default_factory=list)
    live: Run | None = None
    outage: Run | None = None
    naives: list[Naive] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def backlog(self) -> Run:
        """The fastest round of 2a."""
        return min(self.backlogs, key=lambda r: r.wall)

    @property
    def naive(self) -> Naive:
        """The fastest round of 4."""
        return min(self.naives, key=lambda r: r.seconds)


def bench_backend(backend: Backend, decision: Decision, args: argparse.Namespace, core: int | None) -> Results:
    res = Results()
    stores: list[Store] = []

    def new_store(settings_platform: RemotePlatform, **outbox: float) -> tuple[Store, Settings]:
        url = backend.new_url()
        s = settings_for(url, settings_platform, **outbox)
        st = Store(url, settings=s)
        stores.append(st)
        return st, s

    n = args.orders
    try:
        for k in range(1, args.rounds + 1):
            # 1 + 2a: store A, enqueued, then delivered by the outbox
            plat = RemotePlatform(core)
            try:
                a, sa = new_store(plat)
                log(f"[{backend.name}] round {k}: 1. enqueue {n} diversions (store A) …")
                settle()
                res.enq.append(enqueue(a, decision, n, f"a{k}"))
                log(f"[{backend.name}] round {k}: 2a. Outbox.run delivers the backlog …")
                settle()
                run = asyncio.run(run_outbox(a, sa, plat, n, within=args.timeout))
                res.backlogs.append(run)
                res.problems += check_complete(run, n, f"{backend.name} 2a round {k}")
            finally:
                plat.close()
                while stores:
                    stores.pop().close()
            # 1 again: store B, for the naive baseline (4)
            plat = RemotePlatform(core)
            try:
                b, sb = new_store(plat)
                log(f"[{backend.name}] round {k}: 1. enqueue {n} diversions (store B) …")
                settle()
                res.enq.append(enqueue(b, decision, n, f"b{k}"))
                log(f"[{backend.name}] round {k}: 4. naive baseline delivers the backlog …")
                settle()
                seconds, cpu, busy = naive_deliver(b, sb, 2 * n, args.timeout)
                st = plat.stats()
                res.naives.append(Naive(seconds, cpu, busy, st["cpu"]))
                if len(st["orders"]) != n or len(st["messages"]) != n:
                    res.problems.append(f"{backend.name} 4 round {k}: platform has {len(st['orders'])} orders, "
                                        f"expected {n}")
            finally:
                plat.close()
                while stores:
                    stores.pop().close()
        # 2b: live, paced
        plat = RemotePlatform(core)
        try:
            c, sc = new_store(plat)
            m = args.live_orders
            log(f"[{backend.name}] 2b. {m} diversions live at {args.rate:g}/s …")
            settle()
            res.live = asyncio.run(run_outbox(c, sc, plat, m, within=args.timeout,
                                              producer=paced_producer(c, decision, m, args.rate, "c")))
            res.problems += check_complete(res.live, m, f"{backend.name} 2b")
        finally:
            plat.close()
        # 3: outage
        plat = RemotePlatform(core)
        try:
            d, sd = new_store(plat, **OUTAGE_RETRY)
            m = args.outage_orders
            log(f"[{backend.name}] 3. outage of {args.outage:g} s, {m} diversions during it …")
            rate = m / (0.8 * args.outage)
            settle()
            res.outage = asyncio.run(run_outbox(d, sd, plat, m, within=args.timeout, outage=args.outage,
                                                producer=paced_producer(d, decision, m, rate, "d")))
            res.problems += check_complete(res.outage, m, f"{backend.name} 3")
            if res.outage.recovered_at is None:
                res.problems.append(f"{backend.name} 3: delivered before the outage ended?")
        finally:
            plat.close()
    finally:
        for st in stores:
            st.close()
    return res


# ---------------------------------------------------------------------------- the table
def f0(x: float) -> str:
    return f"{x:,.0f}"


def f2(x: float) -> str:
    return f"{x:.2f}"


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def trio(values: list[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(pct(values, 0.5))} / {fmt(pct(values, 0.95))} / {fmt(max(values))}"


def store_rows(run: Run) -> list[tuple[str, str]]:
    t = run.timer
    rows = [("  store time, % of wall (all 4 calls)", f"{100 * t.total / run.wall:.0f} %")]
    for name in STORE_CALLS:
        if t.calls[name]:
            per = t.seconds[name] / (t.claimed if name == "claim" else t.calls[name])
            extra = f"; {t.calls[name]} calls, {t.claimed / t.calls[name]:.1f} items/call" if name == "claim" else ""
            rows.append((f"    {name}: ms per item, % of wall",
                         f"{per * 1000:.3f} ms, {100 * t.seconds[name] / run.wall:.0f} %{extra}"))
    return rows


def report(results: dict[str, Results], args: argparse.Namespace, header: list[str]) -> None:
    names = list(results)
    rows: list[tuple[str, list[str]]] = []

    def section(title: str) -> None:
        rows.append((title, []))

    def row(label: str, fn: Callable[[Results], str]) -> None:
        rows.append((label, [fn(results[n]) for n in names]))

    def multi(fn: Callable[[Results], list[tuple[str, str]]]) -> None:
        per = {n: fn(results[n]) for n in names}
        for i, (label, _) in enumerate(per[names[0]]):
            rows.append((label, [per[n][i][1] if i < len(per[n]) else "" for n in names]))

    n = args.orders
    k = args.rounds
    section(f"1. enqueue: {n} diversions through Store.record (6 records each), {2 * k} stores")
    row("  diversions/s best / median", lambda r: f"{f0(max(e.rate for e in r.enq))} / "
                                                  f"{f0(statistics.median(e.rate for e in r.enq))}")
    row("  ms per diversion (all stores)", lambda r: ms(sum(e.seconds for e in r.enq) / sum(e.n for e in r.enq)))
    for kind in ("CallStarted", "FinalTranscript", "Decision", "Transfer STARTED", "Transfer BRIDGED", "CallEnded"):
        row(f"    {kind} (ms)", lambda r, k=kind: f"{1000 * sum(e.per_record[k] for e in r.enq) / sum(e.n for e in r.enq):.3f}")

    section(f"2a. healthy, backlog of {n} orders + {n} SMS, Outbox.run (batch {BATCH}, {PARALLEL} in flight); "
            f"fastest of {k} rounds")
    row("  items/s, each round", lambda r: " / ".join(f0(2 * n / x.wall) for x in r.backlogs))
    row("  orders/s (until last order)", lambda r: f0(n / (r.backlog.done_at("order") - r.backlog.t0)))
    row("  SMS/s (until last SMS)", lambda r: f0(n / (r.backlog.done_at("sms") - r.backlog.t0)))
    row("  items/s (orders + SMS)", lambda r: f0(2 * n / r.backlog.wall))
    row("  drain time (s)", lambda r: f2(r.backlog.wall))
    row("  order received after run start p50/p95/max (s)", lambda r: trio(r.backlog.delays(since=r.backlog.t0), f2))
    row("  CPU fenliu / platform (% of a core)",
        lambda r: f"{100 * r.backlog.cpu / r.backlog.wall:.0f} % / {100 * r.backlog.stats['cpu'] / r.backlog.wall:.0f} %")
    row("  other processes' CPU (% of a core)", lambda r: f"{100 * r.backlog.extra['others']:.0f} %")
    row("  outbox counters delivered / retried / refused",
        lambda r: " / ".join(str(x) for x in r.backlog.extra["outbox_counters"]))
    multi(lambda r: store_rows(r.backlog))

    section(f"2b. healthy, live: {args.live_orders} diversions at {args.rate:g}/s, wake() after each")
    row("  order delay p50/p95/max (ms)", lambda r: trio(r.live.delays(), ms))
    row("  SMS delay p50/p95/max (ms)", lambda r: trio(r.live.delays("sms"), ms))
    row("  CPU fenliu incl. recording (% of a core)", lambda r: f"{100 * r.live.cpu / r.live.wall:.0f} %")
    row("  other processes' CPU (% of a core)", lambda r: f"{100 * r.live.extra['others']:.0f} %")

    section(f"3. outage: 503 for {args.outage:g} s, {args.outage_orders} diversions during it "
            f"(retry_base 0.2 s, retry_max 2 s, poll 1 s)")
    row("  requests answered 503", lambda r: f0(r.outage.failed))
    row("  outbox counters delivered / retried / refused",
        lambda r: " / ".join(str(x) for x in r.outage.extra["outbox_counters"]))
    row("  503s per order-or-SMS item", lambda r: f2(r.outage.failed / (2 * args.outage_orders)))
    row("  drain after recovery (s)", lambda r: f2(r.outage.wall - (r.outage.recovered_at - r.outage.t0)))
    row("  order delay p50/p95/max (s)", lambda r: trio(r.outage.delays(), f2))
    row("  wait after recovery p50/p95/max (s)", lambda r: trio(r.outage.delays(since=r.outage.recovered_at), f2))
    row("  attempts per order mean / max",
        lambda r: (lambda a: f"{sum(a) / len(a):.1f} / {max(a)}")([i["attempts"] for i in r.outage.items if i["kind"] == "order"]))
    row("  platform: orders created / distinct order no",
        lambda r: (lambda d: f"{d['orders_created']} / {d['orders_created'] - d['duplicate_orders']}")(duplicates(r.outage)))
    row("  duplicate orders at the platform", lambda r: str(duplicates(r.outage)["duplicate_orders"]))
    row("  keys re-sent after processed (all runs)",
        lambda r: str(sum(duplicates(x)["resent_after_processed"] for x in (*r.backlogs, r.live, r.outage) if x)))
    row("  requests / distinct keys", lambda r: (lambda d: f"{d['requests']} / {d['distinct_keys']}")(duplicates(r.outage)))
    multi(lambda r: store_rows(r.outage))

    section(f"4. baseline: the {n} + {n} backlog one at a time, urllib, new connection each; fastest of {k}")
    row("  items/s, each round", lambda r: " / ".join(f0(2 * n / x.seconds) for x in r.naives))
    row("  drain time (s)", lambda r: f2(r.naive.seconds))
    row("  CPU fenliu / platform (% of a core)",
        lambda r: f"{100 * r.naive.cpu / r.naive.seconds:.0f} % / {100 * r.naive.platform_cpu / r.naive.seconds:.0f} %")
    row("  other processes' CPU (% of a core)",
        lambda r: f"{100 * max(0.0, r.naive.busy - r.naive.cpu - r.naive.platform_cpu) / r.naive.seconds:.0f} %")
    row("  2a items/s x baseline, best / median",
        lambda r: f"{r.naive.seconds / r.backlog.wall:.1f} x / "
                  f"{statistics.median(x.seconds for x in r.naives) / statistics.median(x.wall for x in r.backlogs):.1f} x")
    row("  2a drain time x baseline, best / median",
        lambda r: f"{r.backlog.wall / r.naive.seconds:.2f} x / "
                  f"{statistics.median(x.wall for x in r.backlogs) / statistics.median(x.seconds for x in r.naives):.2f} x")

    header_cells = ["", *names]
    cells = [header_cells] + [[label, *vals] for label, vals in rows if vals]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header_cells))]
    print()
    for line in header:
        print(line)
    print("  " + " | ".join(x.ljust(w) for x, w in zip(header_cells, widths, strict=True)).rstrip())
    for label, vals in rows:
        if not vals:
            print("  " + "-+-".join("-" * w for w in widths))
            print("  " + label)
            continue
        print("  " + " | ".join(x.ljust(w) for x, w in zip([label, *vals], widths, strict=True)).rstrip())
    problems = [p for r in results.values() for p in r.problems]
    print()
    print("checks: " + ("all orders and SMS delivered exactly once at the platform; 0 duplicates"
                        if not problems else "FAILED\n  " + "\n  ".join(problems)))


# ---------------------------------------------------------------------------- main
def machine() -> str:
    model = cpu_model()
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    return f"{os.cpu_count()} cores ({model or 'unknown CPU'}), load average {load} at start"


def _interrupted(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--orders", type=int, default=2000, help="diversions for 1, 2a and 4 (default 2000)")
    ap.add_argument("--pg", action="store_true", help="also on a throw-away PostgreSQL cluster")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of 1+2a and 1+4, fastest shown (default 3)")
    ap.add_argument("--live-orders", type=int, default=None, help="diversions for 2b (default orders/4)")
    ap.add_argument("--rate", type=float, default=100.0, help="diversions per second in 2b (default 100)")
    ap.add_argument("--outage", type=float, default=5.0, help="seconds the platform answers 503 (default 5)")
    ap.add_argument("--outage-orders", type=int, default=None, help="diversions during the outage (default orders/4)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin fenliu and the platform to separate cores")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up a scenario after this many seconds")
    args = ap.parse_args()
    if args.orders < 1 or args.rounds < 1:
        ap.error("--orders and --rounds must be 1 or more")
    args.live_orders = args.live_orders or max(1, args.orders // 4)
    args.outage_orders = args.outage_orders or max(1, args.orders // 4)

    signal.signal(signal.SIGTERM, _interrupted)  # clean up (cluster, platforms, files) as on Ctrl-C
    logging.getLogger("fenliu.outbox").setLevel(logging.ERROR)  # thousands of "retry in …" warnings in 3
    os.environ.setdefault(PLATFORM_SECRET_ENV, "bench-platform-secret")  # requests are signed, as in production
    os.environ.setdefault(SMS_SECRET_ENV, "bench-sms-secret")
    pin = not args.no_pin and len(ALL_CORES) > 1
    platform_core = ALL_CORES[1] if pin else None

    import aiohttp

    header = [f"fenliu outbox benchmark: {machine()}; Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}, "
              f"SQLite {sqlite3.sqlite_version}",
              f"fenliu (store + Outbox, one loop) {'on cpu ' + str(ALL_CORES[0]) if pin else 'unpinned'}, "
              f"FakePlatform in a child process {'on cpu ' + str(platform_core) if pin else 'unpinned'}; "
              f"outbox poll 1 s, lease 60 s; requests HMAC-signed"]

    log("loading the router (once, for one Decision) …")
    from fenliu.router import Router

    decision = Router().decide(NOISE)
    if decision.target == "police":
        raise SystemExit(f"the router kept the benchmark text for 110: {decision}")

    tmp = Path(tempfile.mkdtemp(prefix="fenliu-bench-outbox-"))
    cluster = None
    results: dict[str, Results] = {}
    try:
        if args.pg:  # before pinning: the server's processes inherit no pinning
            from tests.pg import start_cluster

            log("starting a throw-away PostgreSQL cluster …")
            cluster = start_cluster()
            header.append(f"PostgreSQL {cluster.bindir.parent.name} (throw-away cluster, fsync off, "
                          f"synchronous_commit off), unpinned; its server processes count as 'other processes'")
        if pin:
            os.sched_setaffinity(0, {ALL_CORES[0]})
        results["SQLite"] = bench_backend(Backend("SQLite", tmp), decision, args, platform_core)
        if cluster is not None:
            results["PostgreSQL"] = bench_backend(Backend("PostgreSQL", tmp, cluster), decision, args, platform_core)
    finally:
        if pin:
            os.sched_setaffinity(0, set(ALL_CORES))
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, args, header)
    return 0 if not any(r.problems for r in results.values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted (temporary files, platform processes and the cluster were cleaned up)")
        sys.exit(130)
