#!/usr/bin/env python3
"""Console benchmark: the event stream's WebSocket fan-out, and decision → operator's browser.

    .venv/bin/python scripts/bench_console.py            # N = 1 5 20 50 100; 1 and 20 browsers
    .venv/bin/python scripts/bench_console.py --quick    # smoke run: fewer clients and events

1. WebSocket fan-out on one core. The real console app (``Console``: the accounts, the event
   feed subscribed to the bus, the aiohttp app served by AppRunner/TCPSite on 127.0.0.1) on a
   real SQLite store, the bus on the running loop, the store subscribed first, the supervisor
   not started — as ``tests/console/api_env.make_env`` builds it — in this process, pinned to one
   core. N WebSocket clients (aiohttp, each logged in with ``POST /api/login`` as a supervisor,
   offering permessage-deflate as Chromium does) run in a second process pinned to the other
   core, so the server's core measures the server only. M events of realistic calls (partials
   every 200 ms of audio, finals with word times, speech start/stop, decisions of the real
   router with their matched words, call start/answer/end) are published on the bus as fast as
   the feed takes them (the publisher yields while a client queue holds more than
   ``--high-water`` envelopes). Measured: deliveries (messages received by all clients) per
   second of wall time until the last client has the last event; server CPU per 1,000
   deliveries. N = 0 (no client) is the publish cost alone (store + feed); N = 1 is the baseline.
   Each N is measured in ``--rounds`` rounds on the same connections; the fastest is shown.
2. Decision → operator's browser, 20 consoles. The same app (not pinned: Chromium needs the
   cores) and headless Chromium through Playwright, one context per console, each logged in as
   its own operator. A live call is published, then K decisions (targets alternating so that the
   card changes each time), one every 300 ms; ``time.time()`` at publish against the page's clock
   (``performance.timeOrigin + performance.now()``, the same machine clock) when the WebSocket
   message of kind ``decision`` reaches page JavaScript (a wrapper around ``window.WebSocket``
   installed before navigation: the primary measure, independent of the UI), when ``#card``'s
   ``data-target`` changes (a MutationObserver: the card is in the DOM), and the next animation
   frame after that (the frame that paints it); and, on the server, when the bus has run the
   store and the feed (the decision is in every console's queue). Baseline: 1 console, in the
   same run. Without ``fenliu/console/static/index.html`` (or with ``--ws-only``) the pages only
   log in and open the event stream themselves, and only the WebSocket arrival is measured.

On a shared machine other work competes for the cores: before each round / browser level the
script waits (``--settle``, at most 15 s) for a quiet core, and it shows how busy the cores were
while measuring. A watchdog ends the run (and its client process and browser) after
``--timeout`` seconds whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import gc
import json
import math
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import cpu_model, table  # noqa: E402  (scripts/bench.py, this folder)

from fenliu.bus import CallEvent, EventBus, WorkerFact  # noqa: E402
from fenliu.console.feed import EventFeed  # noqa: E402
from fenliu.console.server import Console  # noqa: E402
from fenliu.events import (  # noqa: E402
    Decision,
    FinalTranscript,
    PartialTranscript,
    SpeechStarted,
    SpeechStopped,
    Word,
)
from fenliu.router import Context, Router  # noqa: E402
from fenliu.service.supervisor import Supervisor  # noqa: E402
from fenliu.settings import Settings, StoreSettings  # noqa: E402
from fenliu.sip import protocol as P  # noqa: E402
from fenliu.store.record import Store  # noqa: E402
from tests.conftest import free_port  # noqa: E402

PASSWORD = "bench console 110"
CHROMIUM = "/usr/bin/chromium"
STATIC_INDEX = ROOT / "fenliu" / "console" / "static" / "index.html"
ALL_CORES = sorted(os.sched_getaffinity(0))
SERVER_CORE = ALL_CORES[0]
CLIENT_CORE = ALL_CORES[1] if len(ALL_CORES) > 1 else None


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, math.ceil(p * len(v)) - 1))]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def core_times(core: int | None) -> tuple[float, float]:
    """(busy, total) seconds of one CPU core (None: all cores) since boot, from /proc/stat (steal
    counts as busy: the core was not ours)."""
    prefix = "cpu " if core is None else f"cpu{core} "
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(prefix):
            v = [int(x) for x in line.split()[1:9]]
            user, nice, system, idle, iowait, irq, softirq, steal = v
            busy = user + nice + system + irq + softirq + steal
            tick = os.sysconf("SC_CLK_TCK")
            return busy / tick, (busy + idle + iowait) / tick
    return float("nan"), float("nan")


async def settle(core: int | None, max_wait: float, threshold: float = 0.15, sleep: Any = None) -> float:
    """On a shared machine: wait (at most ``max_wait`` s) until the core (None: the whole machine)
    has been less than ``threshold`` busy for half a second. Returns the seconds waited, or -1
    when it never was."""
    t0 = time.monotonic()
    while True:
        a = core_times(core)
        if sleep is None:
            await asyncio.sleep(0.5)
        else:
            sleep(0.5)
        b = core_times(core)
        if (b[0] - a[0]) / max(b[1] - a[1], 1e-9) < threshold:
            return time.monotonic() - t0
        if time.monotonic() - t0 >= max_wait:
            return -1.0


def settle_sync(core: int | None, max_wait: float, threshold: float) -> float:
    """``settle`` without an event loop (beside Playwright's sync API)."""
    coro = settle(core, max_wait, threshold, sleep=time.sleep)
    try:
        coro.send(None)
    except StopIteration as done:
        return float(done.value)
    raise RuntimeError("settle_sync awaited")


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


# ---------------------------------------------------------------------------------------------
# Realistic calls: what a live call puts on the bus
# ---------------------------------------------------------------------------------------------
OPERATOR_LINES = ["您好，110报警服务台，请讲", "请问具体地址在哪里", "好的，我这边给您转接相关热线，请不要挂机"]
CALLER_LINES = [  # (complaint, follow-up): the router decides on what the caller has said so far
    ("楼上装修太吵了，天天从早上七点就开始砸墙", "在幸福小区三号楼二单元"),
    ("朋友借钱不还想问问律师怎么办", "他人在外地，电话也不接"),
    ("我们小区停电了，一整栋楼都没电", "在滨江路八十八号"),
    ("出租车司机绕路还多收了我五十块钱", "车牌号我记下来了"),
    ("我老公要跟我离婚，抚养费怎么算", "孩子现在跟着我"),
    ("家里水管爆了一直往外冒水找人修", "在城南花园五栋"),
    ("公司拖欠工资三个月了老板不给", "我们一共十几个人"),
    ("楼下有人在打架，好像还动了刀", "就在人民路菜市场门口"),
]
CHARS_PER_S = 4.5  # Mandarin speech rate of the transcript
PARTIAL_EVERY = 0.2  # asr.partial_every_ms


class CallMaker:
    """Builds the bus items of whole calls; the router decides each distinct text once."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.decisions: dict[str, Decision] = {}

    def decide(self, text: str) -> Decision:
        d = self.decisions.get(text)
        if d is None:
            d = self.decisions[text] = self.router.decide(text, Context())
        return d

    def utterance(self, call_id: str, leg: str, worker: str, uid: int, text: str, t0: float,
                  decide_on: str | None) -> tuple[list[CallEvent], float]:
        sid = f"{call_id}:{leg}"
        dur = max(0.6, len(text) / CHARS_PER_S)
        out: list[CallEvent] = [CallEvent(call_id, leg, worker, SpeechStarted(sid, round(t0, 2)))]
        k = 1
        while k * PARTIAL_EVERY < dur:
            t1 = t0 + k * PARTIAL_EVERY
            shown = text[: max(1, math.ceil(k * PARTIAL_EVERY * CHARS_PER_S))]
            out.append(CallEvent(call_id, leg, worker, PartialTranscript(sid, uid, shown, round(t0, 2), round(t1, 2))))
            k += 1
        t1 = t0 + dur
        step = dur / max(1, math.ceil(len(text) / 2))
        words = tuple(Word(text[i:i + 2], round(t0 + j * step, 2), round(t0 + (j + 1) * step, 2), 0.93)
                      for j, i in enumerate(range(0, len(text), 2)))
        out.append(CallEvent(call_id, leg, worker, SpeechStopped(sid, round(t1 + 0.3, 2))))
        out.append(CallEvent(call_id, leg, worker, FinalTranscript(sid, uid, text, round(t0, 2), round(t1, 2), words)))
        if decide_on is not None:
            d = replace(self.decide(decide_on), call_id=call_id, utterance_id=uid, t=round(t1, 2))
            out.append(CallEvent(call_id, leg, worker, d))
        return out, t1 + 0.6

    def call(self, call_id: str, index: int, worker: str = "w0") -> list[CallEvent | WorkerFact]:
        complaint, follow = CALLER_LINES[index % len(CALLER_LINES)]
        items: list[CallEvent | WorkerFact] = [
            WorkerFact(worker, P.CallStarted(call_id, index % 8, f"<sip:1381234{index % 10000:04d}@pbx>")),
            WorkerFact(worker, P.CallAnswered(call_id)),
        ]
        t, uid = 0.5, 0
        script = [("operator", OPERATOR_LINES[0], None), ("caller", complaint, complaint),
                  ("operator", OPERATOR_LINES[1], None), ("caller", follow, f"{complaint}，{follow}"),
                  ("operator", OPERATOR_LINES[2], None)]
        for leg, text, decide_on in script:
            uid += 1
            evs, t = self.utterance(call_id, leg, worker, uid, text, t, decide_on)
            items += evs
        items.append(WorkerFact(worker, P.CallEnded(call_id, index % 8, 200, "BYE")))
        return items

    def calls(self, prefix: str, at_least: int) -> list[CallEvent | WorkerFact]:
        """Whole calls, until there are at least ``at_least`` items."""
        items: list[CallEvent | WorkerFact] = []
        i = 0
        while len(items) < at_least:
            items += self.call(f"{prefix}-{i:05d}", i)
            i += 1
        return items


def message_sizes(items: list[CallEvent | WorkerFact]) -> tuple[float, float]:
    """Mean size of the JSON messages these items become on the stream, and of a decision's."""
    feed = EventFeed(len(items))
    for it in items:
        feed(it)
    sizes = [(e["kind"], len(json.dumps(e, ensure_ascii=False).encode())) for e in feed.ring]
    dec = [n for k, n in sizes if k == "decision"]
    return sum(n for _, n in sizes) / len(sizes), sum(dec) / max(1, len(dec))


def mix(items: list[CallEvent | WorkerFact]) -> str:
    kinds: dict[str, int] = {}
    for it in items:
        k = it.kind if isinstance(it, WorkerFact) else type(it.event).__name__
        kinds[k] = kinds.get(k, 0) + 1
    short = {"PartialTranscript": "partial", "FinalTranscript": "final", "Decision": "decision",
             "SpeechStarted": "speech start", "SpeechStopped": "speech stop"}
    return ", ".join(f"{100 * v / len(items):.0f}% {short.get(k, k)}" for k, v in
                     sorted(kinds.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------------------------------------
# The real console app (as tests/console/api_env.make_env builds it)
# ---------------------------------------------------------------------------------------------
@dataclass
class Server:
    settings: Settings
    bus: EventBus
    store: Store
    sup: Supervisor
    console: Console

    @property
    def feed(self) -> EventFeed:
        return self.console.feed


def build_server(work: Path, router: Router, bus: EventBus) -> Server:
    s = Settings()
    s = replace(s, store=StoreSettings(url=f"sqlite:///{work}/fenliu.db"),
                console=replace(s.console, host="127.0.0.1", port=free_port()))
    store = Store(s.store.url)
    bus.subscribe(store.record)  # first, as in `fenliu serve`
    sup = Supervisor(s, router, None, bus)  # not started: the items are published on the bus directly
    return Server(s, bus, store, sup, Console(s, sup, store))


# ---------------------------------------------------------------------------------------------
# Table 1: the WebSocket clients (a separate process, pinned to the other core)
# ---------------------------------------------------------------------------------------------
async def recv_msg(conn: Any, within: float | None) -> Any:
    """A multiprocessing Connection's next message, without blocking the loop."""
    if conn.poll():
        return conn.recv()
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def readable() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(conn.fileno(), readable)
    try:
        await asyncio.wait_for(fut, within)
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


@dataclass
class Reader:
    """One client's stream: marks the time of the last message of every round (M messages each)."""

    per_round: int
    rounds: int
    count: int = 0
    firsts: list[float] = field(default_factory=list)  # first message of each round
    marks: list[float] = field(default_factory=list)  # last message of each round
    mark_ids: list[int] = field(default_factory=list)
    close_code: int | None = None
    events: list[asyncio.Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events = [asyncio.Event() for _ in range(self.rounds)]

    def closed(self, code: int | None) -> None:
        self.close_code = code
        for e in self.events:  # cut off (fell behind) or closed: what it got is what it got
            e.set()


def client_process(conn: Any, core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    try:
        asyncio.run(client_loop(conn))
    finally:
        conn.close()


async def orphan_guard() -> None:
    """The client process ends when the benchmark does, however it ends."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 (nothing to wait on)
        await asyncio.sleep(1.0)
    os._exit(0)


async def client_loop(conn: Any) -> None:
    import aiohttp

    guard = asyncio.create_task(orphan_guard())  # noqa: F841, RUF006 (a reference: tasks are weakly held)
    while True:
        cmd = await recv_msg(conn, None)
        if cmd[0] == "quit":
            return
        _, url, n, per_round, rounds, user, deflate, timeout = cmd
        sessions: list[aiohttp.ClientSession] = []
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        readers: list[Reader] = []
        tasks: list[asyncio.Task[None]] = []
        error = ""
        login_ms: list[float] = []
        try:
            for _ in range(n):
                s = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True),  # cookies for 127.0.0.1
                                          timeout=aiohttp.ClientTimeout(total=60))
                sessions.append(s)
                t_login = time.perf_counter()
                async with s.post(url + "api/login", json={"username": user, "password": PASSWORD}) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"login: {resp.status} {await resp.text()}")
                login_ms.append(1000 * (time.perf_counter() - t_login))
                ws = await s.ws_connect(url + "api/events", compress=15 if deflate else 0, heartbeat=None,
                                        autoping=True, max_msg_size=0)
                hello = json.loads((await ws.receive(timeout=30)).data)
                if hello.get("kind") != "hello":
                    raise RuntimeError(f"first message is not hello: {hello}")
                sockets.append(ws)
                rd = Reader(per_round, rounds)
                readers.append(rd)
                tasks.append(asyncio.create_task(read_ws(ws, rd)))
        except Exception as e:  # report, do not hang
            error = f"{type(e).__name__}: {e}"
        conn.send(("ready", error, login_ms, [ws.compress for ws in sockets]))
        if not error:
            for rnd in range(rounds):
                cpu0 = time.process_time()
                try:
                    await asyncio.wait_for(asyncio.gather(*(rd.events[rnd].wait() for rd in readers)), timeout)
                    error = ""
                except TimeoutError:
                    error = f"timeout after {timeout:.0f} s"
                conn.send(("round", error, time.process_time() - cpu0,
                           [(max(0, min(rd.count - rnd * per_round, per_round)),
                             rd.firsts[rnd] if len(rd.firsts) > rnd else 0.0,
                             rd.marks[rnd] if len(rd.marks) > rnd else 0.0,
                             rd.mark_ids[rnd] if len(rd.mark_ids) > rnd else 0,
                             rd.close_code) for rd in readers]))
        await recv_msg(conn, None)  # "close"
        for task in tasks:
            task.cancel()
        for ws in sockets:
            await ws.close()
        for s in sessions:
            await s.close()
        conn.send(("closed",))


async def read_ws(ws: Any, rd: Reader) -> None:
    import aiohttp

    try:
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                rd.count += 1
                if rd.count % rd.per_round == 1 or rd.per_round == 1:
                    rd.firsts.append(time.monotonic())
                if rd.count % rd.per_round == 0:
                    rd.marks.append(time.monotonic())
                    rd.mark_ids.append(int(json.loads(msg.data)["id"]))
                    r = rd.count // rd.per_round - 1
                    if r < rd.rounds:
                        rd.events[r].set()
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.ERROR):
                rd.closed(ws.close_code)
                return
    except asyncio.CancelledError:
        pass


# ---------------------------------------------------------------------------------------------
# Table 1: the server side (this process, one core)
# ---------------------------------------------------------------------------------------------
async def publish_all(srv: Server, items: list[CallEvent | WorkerFact], high: int) -> None:
    """Publish on the loop as fast as the feed takes them: yield while a client queue is long."""
    feed, publish = srv.feed, srv.bus.publish
    for i, item in enumerate(items):
        if i % 25 == 0:
            await asyncio.sleep(0)
            while feed.clients and max(c.queue.qsize() for c in feed.clients) > high:  # noqa: ASYNC110 (the feed has no event to wait on)
                await asyncio.sleep(0.0005)
        publish(item)


async def one_round(srv: Server, items: list[CallEvent | WorkerFact], n: int, args: argparse.Namespace,
                    parent: Any) -> dict[str, Any]:
    """Publish one round of events; measure until every client has the last one."""
    m = len(items)
    gc.collect()
    waited = await settle(SERVER_CORE, args.settle) if args.settle else 0.0
    sent0 = srv.feed.sent
    core0 = core_times(SERVER_CORE)
    cpu0, t0 = time.process_time(), time.monotonic()
    await publish_all(srv, items, args.high_water)
    t_published = time.monotonic()
    deadline = t0 + args.level_timeout
    while (srv.feed.sent < sent0 + n * m and time.monotonic() < deadline  # noqa: ASYNC110 (no event to wait on)
           and any(not c.overflowed or c.queue.qsize() for c in srv.feed.clients)):
        await asyncio.sleep(0.002)
    cpu, t_sent = time.process_time() - cpu0, time.monotonic()
    core1 = core_times(SERVER_CORE)
    r: dict[str, Any] = {"n": n, "m": m, "cpu": cpu, "sent": srv.feed.sent - sent0,
                         "core_busy": (core1[0] - core0[0]) / max(core1[1] - core0[1], 1e-9),
                         "ours": cpu / max(t_sent - t0, 1e-9), "error": "", "deliveries": 0, "waited": waited,
                         "wall": t_published - t0}
    if n:
        _, error, client_cpu, per = await recv_msg(parent, args.level_timeout + 10)
        lasts = [p[2] for p in per if p[2]]
        firsts = [p[1] for p in per if p[1]]
        r.update(deliveries=sum(p[0] for p in per),
                 wall=(max(lasts) if len(lasts) == n else t_sent) - t0,
                 client_cpu=client_cpu, client_wall=(max(lasts) if lasts else t_sent) - min(firsts or [t0]),
                 ids_ok=all(p[3] == srv.feed.last_id for p in per), cut=sum(1 for p in per if p[4] is not None),
                 error=error)
    r["rate"] = r["deliveries"] / r["wall"] if r["wall"] > 0 else float("nan")
    return r


async def fanout(args: argparse.Namespace, work: Path, maker: CallMaker) -> list[dict[str, Any]]:
    srv = build_server(work, maker.router, EventBus(asyncio.get_running_loop()))
    srv.console.accounts.add_user("bench-sup", "supervisor", PASSWORD)
    url = await srv.console.start()
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=client_process, args=(child, CLIENT_CORE), daemon=True, name="bench-ws-clients")
    proc.start()
    CHILDREN.append(proc)
    results: list[dict[str, Any]] = []
    finished = False
    try:
        for n in [0, *args.clients]:
            rounds = [maker.calls(f"t1-n{n}-r{i}", args.events) for i in range(args.rounds)]
            m = len(rounds[0])
            assert all(len(items) == m for items in rounds)
            login_ms: list[float] = []
            compress: list[Any] = []
            if n:
                parent.send(("connect", url, n, m, args.rounds, "bench-sup", not args.no_deflate, args.level_timeout))
                _, error, login_ms, compress = await recv_msg(parent, args.level_timeout)
                if error:
                    raise RuntimeError(f"N={n}: clients could not connect: {error}")
                while len(srv.feed.clients) < n:  # noqa: ASYNC110 (the feed has no event to wait on)
                    await asyncio.sleep(0.01)
            runs = []
            for items in rounds:
                runs.append(await one_round(srv, items, n, args, parent))
                if n and runs[-1].get("cut"):
                    break  # cut-off clients get nothing more: the next round would wait for nothing
            if n:
                parent.send(("close",))
                await recv_msg(parent, 60)
                deadline = time.monotonic() + 10
                while srv.feed.clients and time.monotonic() < deadline:  # noqa: ASYNC110 (the feed has no event to wait on)
                    await asyncio.sleep(0.01)
            complete = [x for x in runs if x["deliveries"] == n * m] or runs
            best = max(complete, key=lambda x: x["rate"] if n else x["m"] / x["wall"])
            best.update(login_ms=login_ms, compress=compress, runs=runs)
            results.append(best)
            log(f"  N={n}: {m} events × {len(runs)} round(s): "
                + ", ".join(f"{x['deliveries']} deliveries in {x['wall']:.2f} s (server CPU {x['cpu']:.2f} s, "
                            f"core {100 * x['core_busy']:.0f}% busy)" for x in runs)
                + (f"; login p50 {pct(login_ms, 0.5):.0f} ms, permessage-deflate {set(compress)}" if n else "")
                + "".join(f"; round {i + 1} started on a busy core (waited {args.settle:.0f} s)"
                          for i, x in enumerate(runs) if x["waited"] < 0)
                + "".join(f" — {x['error']}" for x in runs if x["error"]))
        finished = True
    finally:
        try:
            parent.send(("quit",))
        except OSError:
            pass
        proc.join(10 if finished else 0.5)
        if proc.is_alive():
            proc.kill()
        await srv.console.stop()
        srv.store.close()
    return results


def core(r: dict[str, Any]) -> str:
    return f"{100 * r['core_busy']:.0f}% ({100 * r['ours']:.0f}%)"


def report_fanout(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    base = next((r for r in results if r["n"] == 1), None)
    zero = next((r for r in results if r["n"] == 0), None)
    per_event0 = zero["cpu"] / zero["m"] if zero else 0.0
    rows = []
    for r in results:
        spread = [x["rate"] if r["n"] else x["m"] / x["wall"] for x in r["runs"]]
        rng = f"{min(spread):,.0f}–{max(spread):,.0f}" if len(spread) > 1 else "-"
        if r["n"] == 0:
            rows.append(["0 (publish only)", r["m"], 0, f"({r['m'] / r['wall']:,.0f} events/s)",
                         f"({1e6 * per_event0:.0f} µs per event)", "-", "-", core(r), "-", f"({rng})", ""])
            continue
        d = r["deliveries"]
        cpu_1k = 1000 * r["cpu"] / (d / 1000) if d else float("nan")
        fan_1k = 1000 * (r["cpu"] - per_event0 * r["m"]) / (d / 1000) if d else float("nan")
        ratio = r["rate"] / base["rate"] if base and base["deliveries"] else float("nan")
        notes = []
        if d != r["n"] * r["m"]:
            notes.append(f"{r['n'] * r['m'] - d} missing")
        if r.get("cut"):
            notes.append(f"{r['cut']} client(s) cut off")
        if not r.get("ids_ok", True):
            notes.append("last id differs")
        if r["error"]:
            notes.append(r["error"])
        rows.append([r["n"], r["m"], d, f"{r['rate']:,.0f}", f"{cpu_1k:.0f}", f"{fan_1k:.0f}", f"{ratio:.2f}×", core(r),
                     f"{100 * r['client_cpu'] / max(r['client_wall'], 1e-9):.0f}%", rng, "; ".join(notes) or "ok"])
    table(f"WebSocket fan-out on one core (server pinned to core {SERVER_CORE}, clients in another process "
          f"{'pinned to core ' + str(CLIENT_CORE) if CLIENT_CORE is not None else 'on the same core (one core only!)'}; "
          f"every client a supervisor logged in with POST /api/login"
          f"{'' if args.no_deflate else ', offering permessage-deflate like Chromium'}; best of {args.rounds} "
          f"round(s) per N; baseline N = 1)",
          ["clients", "events published", "deliveries", "deliveries/s", "server CPU ms per 1k deliveries",
           "of which fan-out (above N=0)", "deliveries/s vs N=1", "server core busy (this server)",
           "client core busy", "deliveries/s range over rounds", "check"], rows)
    print("  deliveries: messages received by all clients; deliveries/s: over the wall time from the first publish"
          " until the last\n  client has the last event (the round with the highest rate is shown, its range beside)."
          " Server core busy: the\n  whole core from /proc/stat while publishing and sending, this server's own"
          " CPU in brackets; the difference is other\n  work on that core (other processes, interrupts, hypervisor"
          " steal). Fan-out: server CPU above the N = 0 cost of\n  publishing the same events (store + feed).")


# ---------------------------------------------------------------------------------------------
# Table 2: decision -> operator's browser
# ---------------------------------------------------------------------------------------------
WS_WRAPPER = """
(() => {
  const Native = window.WebSocket;
  const now = () => performance.timeOrigin + performance.now();
  window.__arrivals = [];
  window.__hellos = 0;
  class TimedWebSocket extends Native {
    constructor(...args) {
      super(...args);
      // registered before the console sets onmessage: runs first, when the message reaches page JS
      this.addEventListener('message', (e) => {
        const t = now();
        if (typeof e.data !== 'string') return;
        let m;
        try { m = JSON.parse(e.data); } catch (err) { return; }
        if (!m) return;
        if (m.kind === 'hello') window.__hellos += 1;
        if (m.kind === 'decision') {
          window.__arrivals.push({id: m.id, u: m.data && m.data.utterance_id, target: m.data && m.data.target, t});
        }
      });
    }
  }
  window.WebSocket = TimedWebSocket;
})();
"""

CARD_OBSERVER = """
() => {
  const card = document.querySelector('#card');
  if (!card) return false;
  const now = () => performance.timeOrigin + performance.now();
  window.__cards = [];
  new MutationObserver((records) => {
    const t = now();
    const value = card.getAttribute('data-target');
    for (const r of records) {
      if (r.oldValue === value) continue;
      const rec = {target: value, t, frame: 0};
      window.__cards.push(rec);
      requestAnimationFrame(() => { rec.frame = now(); });
      break;
    }
  }).observe(card, {attributes: true, attributeFilter: ['data-target'], attributeOldValue: true});
  return true;
}
"""

WS_ONLY_LOGIN = """
async ([user, password]) => {
  const r = await fetch('/api/login', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                       body: JSON.stringify({username: user, password})});
  if (!r.ok) throw new Error('login ' + r.status + ' ' + await r.text());
  await new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${location.host}/api/events`);
    window.__ws = ws;
    ws.onmessage = (e) => { if (JSON.parse(e.data).kind === 'hello') resolve(); };
    ws.onerror = () => reject(new Error('WebSocket failed'));
  });
  return true;
}
"""

# texts whose decisions alternate the card's target (each differs from the one before)
DECISION_TEXTS = ["楼上装修太吵了", "朋友借钱不还想问律师", "小区停电了", "出租车司机绕路",
                  "老公要离婚抚养费怎么算", "水管爆了找人修", "有人在打架", "公司拖欠工资三个月了"]


def decision_sequence(maker: CallMaker, k: int) -> list[Decision]:
    pool = [maker.decide(t) for t in DECISION_TEXTS]
    out: list[Decision] = []
    i = 0
    while len(out) < k:
        d = pool[i % len(pool)]
        i += 1
        if out and out[-1].target == d.target:
            continue
        out.append(d)
    return out


def browser_latency(args: argparse.Namespace, work: Path, maker: CallMaker, ui: bool) -> list[list[Any]]:
    from playwright.sync_api import sync_playwright

    os.sched_setaffinity(0, set(ALL_CORES))  # Chromium and its renderers need the cores
    bus = EventBus.on_thread("bench-console-bus")
    srv = build_server(work, maker.router, bus)
    url = asyncio.run_coroutine_threadsafe(srv.console.start(), bus.loop).result(20)
    levels = [1, args.consoles]
    for i in range(max(levels)):
        srv.console.accounts.add_user(f"op{i + 1:02d}", "operator", PASSWORD)
    decisions = decision_sequence(maker, args.decisions)
    results: dict[int, dict[str, Any]] = {}
    dispatched: dict[tuple[str, int], float] = {}

    def probe(item: CallEvent | WorkerFact) -> None:
        """After the store and the feed (subscribed before): the decision is stored and queued for every console."""
        if isinstance(item, CallEvent) and isinstance(item.event, Decision):
            dispatched[(item.call_id, item.event.utterance_id)] = time.time()

    bus.subscribe(probe)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            log(f"  Chromium {browser.version}, console {url} ({'UI' if ui else 'WebSocket only'})")
            try:
                for level, n in enumerate(levels):
                    results[n] = one_browser_level(srv, browser, url, n, decisions, ui, f"t2-{level}-{n}", args,
                                                   dispatched)
            finally:
                browser.close()
    finally:
        asyncio.run_coroutine_threadsafe(srv.console.stop(), bus.loop).result(20)
        bus.close()
        srv.store.close()
    rows = []
    measures = [("server", "on the server: stored, queued for every console"), ("ws", "WebSocket message in page")]
    if ui:
        measures += [("card", "card in DOM (#card data-target)"), ("frame", "card painted (next animation frame)")]
    for key, label in measures:
        b95 = pct(results[1][key], 0.95)
        for n in levels:
            v = results[n][key]
            expected = (1 if key == "server" else n) * len(decisions)
            rows.append([n, label, f"{len(v)}/{expected}", f"{pct(v, 0.5):.1f}", f"{pct(v, 0.95):.1f}",
                         f"{max(v) if v else float('nan'):.1f}",
                         f"{pct(v, 0.95) / b95:.2f}×" if n != 1 and b95 > 0 else "1.00× (baseline)",
                         f"{100 * results[n]['busy']:.0f}%"])
    return rows


def one_browser_level(srv: Server, browser: Any, url: str, n: int, decisions: list[Decision], ui: bool,
                      call_id: str, args: argparse.Namespace, dispatched: dict[tuple[str, int], float]) -> dict[str, Any]:
    contexts, pages = [], []
    if args.settle and settle_sync(None, args.settle, 0.2) < 0:
        log(f"  {n} console(s): the machine stayed busy for {args.settle:.0f} s; measuring anyway")
    try:
        for i in range(n):
            c = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
            c.set_default_timeout(30000)
            c.add_init_script(WS_WRAPPER)
            contexts.append(c)
            page = c.new_page()
            page.on("pageerror", lambda e, i=i: log(f"  page op{i + 1:02d} error: {e}"))
            user = f"op{i + 1:02d}"
            if ui:
                page.goto(url)
                page.fill("#login-form input[name=username]", user)
                page.fill("#login-form input[name=password]", PASSWORD)
                page.press("#login-form input[name=password]", "Enter")
                page.wait_for_selector("#logout", state="visible")
                page.wait_for_function("window.fenliu && window.fenliu.connected === true && window.__hellos > 0")
            else:
                page.goto(url + "api/health")
                page.evaluate(WS_ONLY_LOGIN, [user, PASSWORD])
            pages.append(page)
        srv.bus.publish(WorkerFact("w0", P.CallStarted(call_id, 0, "<sip:13812345678@pbx>")))
        srv.bus.publish(WorkerFact("w0", P.CallAnswered(call_id)))
        if ui:
            for page in pages:  # the console selects the new call by itself; let it load the call's detail
                page.wait_for_selector(f'#calls li.selected[data-call-id="{call_id}"]')
                page.wait_for_selector("#card.waiting")
            time.sleep(1.0)
            for page in pages:
                if not page.evaluate(CARD_OBSERVER):
                    raise RuntimeError("no #card in the console page")
        else:
            time.sleep(0.5)
        published: dict[int, float] = {}
        machine0 = core_times(None)
        for k, d in enumerate(decisions, start=1):
            ev = CallEvent(call_id, "caller", "w0", replace(d, call_id=call_id, utterance_id=k, t=0.3 * k))
            published[k] = time.time()
            srv.bus.publish(ev)
            time.sleep(args.interval)
        machine1 = core_times(None)
        k_all = len(decisions)
        for page in pages:
            page.wait_for_function(f"window.__arrivals.length >= {k_all}", timeout=15000)
            if ui:
                page.wait_for_function(f"window.__cards.length >= {k_all} && window.__cards.every(c => c.frame > 0)",
                                       timeout=15000)
        out: dict[str, Any] = {"ws": [], "card": [], "frame": [],
                               "busy": (machine1[0] - machine0[0]) / max(machine1[1] - machine0[1], 1e-9),
                               "server": [1000 * (dispatched[(call_id, k)] - published[k])
                                          for k in published if (call_id, k) in dispatched]}
        for page in pages:
            arrivals = page.evaluate("window.__arrivals")
            for a in arrivals:
                if a["u"] in published:
                    out["ws"].append(a["t"] - 1000 * published[a["u"]])
            if ui:
                cards = page.evaluate("window.__cards")
                cursor = 0
                for k, d in enumerate(decisions, start=1):  # the first change to this decision's target
                    while cursor < len(cards) and cards[cursor]["target"] != d.target:
                        cursor += 1
                    if cursor == len(cards):
                        break
                    out["card"].append(cards[cursor]["t"] - 1000 * published[k])
                    if cards[cursor]["frame"]:
                        out["frame"].append(cards[cursor]["frame"] - 1000 * published[k])
                    cursor += 1
        srv.bus.publish(WorkerFact("w0", P.CallEnded(call_id, 0, 200, "BYE")))
        before = time.time()
        page_hi, page_ms = pages[0].evaluate("[performance.timeOrigin + performance.now(), Date.now()]")
        after = time.time()
        log(f"  {n} console(s): WebSocket p50 {pct(out['ws'], 0.5):.1f} ms"
            + (f", card p50 {pct(out['card'], 0.5):.1f} ms" if ui else "")
            + f"; clock check: page − python {page_hi - 500 * (before + after):+.1f} ms "
              f"(± {500 * (after - before):.1f}), page hi-res − Date.now() {page_hi - page_ms:+.1f} ms")
        return out
    finally:
        for c in contexts:
            try:
                c.close()
            except Exception:
                pass


# ---------------------------------------------------------------------------------------------
def machine() -> str:
    model = cpu_model()
    try:
        chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        chromium = "not found"
    from importlib.metadata import version

    import aiohttp

    return (f"machine: {os.cpu_count()} cores ({model or platform.machine()}), affinity {ALL_CORES}; "
            f"{platform.system()} {platform.release()}; python {platform.python_version()}; "
            f"aiohttp {aiohttp.__version__}; playwright {version('playwright')}; {chromium or 'chromium ?'}")


CHILDREN: list[Any] = []


def watchdog(seconds: float) -> threading.Timer:
    def fire() -> None:
        log(f"\nbench_console: no result after {seconds:.0f} s — stopping (stacks follow)")
        faulthandler.dump_traceback(file=sys.stderr)
        for p in CHILDREN:
            if p.is_alive():
                p.kill()
        os._exit(3)  # Playwright's driver exits with us and closes Chromium

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: N = 1 5 20, 800 events, 1 and 5 consoles")
    ap.add_argument("--clients", type=int, nargs="+", help="WebSocket clients per level (default 1 5 20 50 100)")
    ap.add_argument("--events", type=int, help="events published per level (default 4000; whole calls)")
    ap.add_argument("--rounds", type=int, help="rounds per N, the best one shown (default 3; quick 1)")
    ap.add_argument("--settle", type=float, help="before each round, wait up to this many seconds for the core "
                    "to be quiet (a shared machine; default 15; quick 2; 0: do not wait)")
    ap.add_argument("--high-water", type=int, default=1000,
                    help="the publisher waits while a client queue holds more than this (the feed cuts at 5000)")
    ap.add_argument("--no-deflate", action="store_true", help="clients do not offer permessage-deflate")
    ap.add_argument("--consoles", type=int, help="browser consoles in table 2 (default 20)")
    ap.add_argument("--decisions", type=int, help="decisions per browser level (default 30)")
    ap.add_argument("--interval", type=float, default=0.3, help="seconds between decisions (default 0.3)")
    ap.add_argument("--ws-only", action="store_true", help="table 2 without the console UI (WebSocket arrival only)")
    ap.add_argument("--only", choices=["fanout", "browser"], help="run one table")
    ap.add_argument("--level-timeout", type=float, default=120.0, help="seconds one fan-out level may take")
    ap.add_argument("--timeout", type=float, help="hard limit for the whole run, seconds (default 1500; quick 300)")
    a = ap.parse_args()
    a.clients = a.clients or ([1, 5, 20] if a.quick else [1, 5, 20, 50, 100])
    a.events = a.events or (800 if a.quick else 4000)
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.settle = (2.0 if a.quick else 15.0) if a.settle is None else a.settle
    a.consoles = a.consoles or (5 if a.quick else 20)
    a.decisions = a.decisions or (10 if a.quick else 30)
    dog = watchdog(a.timeout or (300 if a.quick else 1500))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SystemExit: the finally blocks clean up

    print(machine())
    print(f"load average at start: {loadavg()} (other work on this machine shares the cores: see 'server core busy')")
    log("loading the router …")
    maker = CallMaker(Router())
    sample = maker.calls("sample", 1)
    rules = next(i.event.rule_version for i in sample if isinstance(i, CallEvent) and isinstance(i.event, Decision))
    mean, dec = message_sizes(sample)
    print(f"events: whole calls of {len(sample)} items ({mix(sample)}); messages {mean:.0f} bytes on average, "
          f"decisions {dec:.0f} bytes; decisions by the real router (negative list {rules}, learned layer "
          f"{maker.router.model_version or 'none'})")
    ui = STATIC_INDEX.is_file() and not a.ws_only
    try:
        return run(a, maker, ui)
    except KeyboardInterrupt:
        log("bench_console: interrupted")
        return 130
    finally:
        dog.cancel()
        for p in CHILDREN:
            if p.is_alive():
                p.kill()


def run(a: argparse.Namespace, maker: CallMaker, ui: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="fenliu-bench-console-") as tmp:
        if a.only in (None, "fanout"):
            log("table 1: WebSocket fan-out …")
            os.sched_setaffinity(0, {SERVER_CORE})
            results = asyncio.run(fanout(a, Path(tmp) / "t1", maker))
            os.sched_setaffinity(0, set(ALL_CORES))
            report_fanout(results, a)
        if a.only in (None, "browser"):
            log("table 2: decision → browser …")
            load2 = loadavg()
            (Path(tmp) / "t2").mkdir()
            rows = browser_latency(a, Path(tmp) / "t2", maker, ui)
            how = ("the console UI (fenliu/console/static), each page logged in through its login form"
                   if ui else "WebSocket arrival only: " + ("--ws-only" if a.ws_only else
                                                            "fenliu/console/static/index.html does not exist yet"))
            table(f"Decision → operator's browser, {a.decisions} decisions one every {1000 * a.interval:.0f} ms, "
                  f"headless Chromium, one context per operator console, server and browser not pinned "
                  f"({len(ALL_CORES)} cores shared; load average {load2} before, {loadavg()} after); {how}; "
                  f"latency = page clock − time.time() at publish (ms)",
                  ["consoles", "measure", "samples", "p50 ms", "p95 ms", "max ms", "p95 vs 1 console",
                   "machine busy"], rows)
            print("  machine busy: all cores, from /proc/stat, while the decisions were published (this run's"
                  " server and Chromium,\n  and whatever else runs on the machine). On the server: publish →"
                  " the bus has run the store and the feed\n  (the decision is in every console's queue).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
