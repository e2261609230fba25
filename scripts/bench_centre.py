#!/usr/bin/env python3
"""Centre view benchmark: how long a routing decision takes to reach an operator's console —
on the instance that holds the call (no centre, the baseline), on the same instance through the
shared store, and on *another* instance (the centre view) — quiet and under the event load of a
busy centre.

    .venv/bin/python scripts/bench_centre.py                # 300 decisions per row, throw-away PostgreSQL
    .venv/bin/python scripts/bench_centre.py --url postgresql://fenliu@db/fenliu_bench --decisions 1000

Set-up. Two real instances' consoles (``fenliu.console.server.Console`` with its aiohttp site, its
event feed and its centre view), each in its own process with its own event bus, on one
PostgreSQL store (a throw-away cluster from ``tests.pg.start_cluster`` — fsync off — unless
``--url``). Instance B publishes ``--decisions`` routing decisions on its bus at ``--rate`` per
second (the way the recogniser does, for a live call B holds); a supervisor's WebSocket
(``/api/events``) on instance A — or on B for the "same instance" row — receives them. Latency =
time the envelope is received by the WebSocket client − the time the feed stamped it (``at``, set
when the bus handed it to the feed; one machine, one clock). The baseline row is one instance on
SQLite (``store.centre`` off): the bus → feed → WebSocket path every single-instance console has.
"Loaded" rows add ``--load`` partial transcripts per second on B beside the decisions (300/s: 60
live calls' partials at 5 a second each, every one of them written to and read from the store).

The goal (issue 20): cross-instance decision → card p95 ≤ 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import cpu_model  # noqa: E402  (scripts/bench.py, this folder)

from tests.conftest import free_port  # noqa: E402

PASSWORD = "bench centre 110"


async def _instance(url: str, name: str, port: int, ready: Any, go: Any, done: Any, decisions: int, rate: float,
                    load: float, publish: bool) -> None:
    """One instance: its console (and centre view); with ``publish``, B's decisions and load."""
    from argon2 import PasswordHasher

    from fenliu.bus import CallEvent, EventBus, WorkerFact
    from fenliu.console import auth
    from fenliu.console.server import Console
    from fenliu.events import Decision, PartialTranscript
    from fenliu.router import Router
    from fenliu.service.supervisor import Supervisor
    from fenliu.settings import Settings
    from fenliu.sip import protocol as P
    from fenliu.store.record import Store

    auth.PasswordHasher = partial(PasswordHasher, time_cost=1, memory_cost=1024, parallelism=1)  # type: ignore
    s = Settings()
    s = replace(s, store=replace(s.store, url=url, instance=name), console=replace(s.console, port=port))
    bus = EventBus(asyncio.get_running_loop())
    store = Store(s.store.url, settings=s)
    bus.subscribe(store.record)
    sup = Supervisor(s, Router(), None, bus)
    console = Console(s, sup, store)
    if store.user("boss") is None:
        console.accounts.add_user("boss", "supervisor", PASSWORD)
    await console.start()
    ready.set()
    try:
        if publish:
            await asyncio.to_thread(go.wait)
            bus.publish(WorkerFact("w0", P.CallStarted(f"bench-{name}", 0, "<sip:13800000000@pbx>")))
            await asyncio.sleep(0.5)
            async def paced(n: int, per_s: float, make: Any) -> None:
                t0 = time.perf_counter()
                for i in range(n):
                    delay = t0 + i / per_s - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    bus.publish(make(i))

            decide = paced(decisions, rate, lambda i: CallEvent(f"bench-{name}", "caller", "w0", Decision(
                f"bench-{name}", i + 1, "12345", "noise", "噪音扰民", 0.9, (), (), False, "bench")))
            jobs = [decide]
            if load:  # partials of 60 other calls, spread over the same time
                jobs.append(paced(int(load * decisions / rate), load, lambda i: CallEvent(
                    f"load-{i % 60}", "caller", "w0", PartialTranscript(f"load-{i % 60}", 1, "楼上装修太吵了", 0.0, 1.0))))
            await asyncio.gather(*jobs)
        await asyncio.to_thread(done.wait)  # until the measuring stream has what it waits for
    finally:
        await console.stop()
        sup.stop()
        store.close()


def instance_main(*args: Any) -> None:
    asyncio.run(_instance(*args))


async def _measure(url: str, want: int, instance: str, within: float) -> list[float]:
    """A supervisor's event stream on ``url``: the latency of each decision of ``instance``."""
    import aiohttp

    out: list[float] = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        r = await http.post(url + "api/login", json={"username": "boss", "password": PASSWORD})
        assert r.status == 200, await r.text()
        ws = await http.ws_connect(url + "api/events")
        deadline = time.monotonic() + within
        while len(out) < want and time.monotonic() < deadline:
            try:
                env = await ws.receive_json(timeout=max(deadline - time.monotonic(), 0.1))
            except TimeoutError:
                break
            if env.get("kind") == "decision" and env.get("instance") == instance:
                out.append(time.time() - float(env["at"]))
        await ws.close()
    return out


def run_row(url: str, names: tuple[str, ...], watch: str, decisions: int, rate: float, load: float) -> list[float]:
    """Instances ``names`` on ``url``, each in its own process; B publishes, a supervisor's stream
    on ``watch`` measures."""
    ctx = mp.get_context("spawn")
    go, done = ctx.Event(), ctx.Event()
    procs, ports, readies = [], {}, {}
    for name in names:
        ports[name], readies[name] = free_port(), ctx.Event()
        p = ctx.Process(target=instance_main, args=(url, name, ports[name], readies[name], go, done, decisions, rate,
                                                    load, name == "B"), daemon=True)
        p.start()
        procs.append(p)
    try:
        for name in names:
            assert readies[name].wait(60), f"instance {name} did not start"

        async def measure() -> list[float]:
            task = asyncio.ensure_future(_measure(f"http://127.0.0.1:{ports[watch]}/", decisions, "B",
                                                  decisions / rate + 30))
            await asyncio.sleep(1.0)  # the stream is open before B starts
            go.set()
            return await task

        return asyncio.run(measure())
    finally:
        go.set()
        done.set()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()


def pct(v: list[float], q: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))] if v else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a PostgreSQL database to use (default: a throw-away cluster)")
    ap.add_argument("--decisions", type=int, default=300)
    ap.add_argument("--rate", type=float, default=20.0, help="decisions per second")
    ap.add_argument("--load", type=float, default=300.0, help="partial transcripts per second in the loaded rows")
    args = ap.parse_args()
    cluster = None
    url = args.url
    if not url:
        from tests.pg import start_cluster

        print("starting a throw-away PostgreSQL cluster …", file=sys.stderr)
        cluster = start_cluster()
    try:
        rows: list[tuple[str, list[float]]] = []
        # (label, where B's decisions are watched: "" = one instance on SQLite, no centre; partials/s)
        plan = [("one instance, no centre (baseline)", "", 0.0),
                ("same instance, through the store", "B", 0.0),
                ("another instance (centre view)", "A", 0.0),
                (f"one instance, no centre, +{args.load:.0f} partials/s", "", args.load),
                (f"another instance, +{args.load:.0f} partials/s", "A", args.load)]
        with tempfile.TemporaryDirectory(prefix="fenliu-bench-centre-") as tmp:
            for i, (label, watch, load) in enumerate(plan):
                if cluster is not None:
                    url = cluster.create_database(f"bench_centre_{i}")
                print(f"… {label}", file=sys.stderr)
                got = run_row(f"sqlite:///{tmp}/f{i}.db", ("B",), "B", args.decisions, args.rate, load) if not watch \
                    else run_row(url, ("A", "B"), watch, args.decisions, args.rate, load)
                rows.append((label, got))
        base = {0.0: pct(rows[0][1], 0.95), args.load: pct(rows[3][1], 0.95)}
        print(f"\nfenliu centre view: decision → a supervisor's event stream ({args.decisions} decisions at "
              f"{args.rate:.0f}/s per row)")
        print(f"machine: {cpu_model() or 'CPU'}, {os.cpu_count()} cores; PostgreSQL "
              f"{'throw-away cluster (fsync off)' if cluster else 'at --url'}\n")
        print("| path | received | p50 ms | p95 ms | max ms | p95 × baseline |")
        print("|---|---|---|---|---|---|")
        for (label, v), (_, _, load) in zip(rows, plan, strict=True):
            print(f"| {label} | {len(v)}/{args.decisions} | {statistics.median(v) * 1000:.1f} | "
                  f"{pct(v, 0.95) * 1000:.1f} | {max(v) * 1000:.1f} | {pct(v, 0.95) / base[load]:.1f} |")
        cross = pct(rows[2][1], 0.95) * 1000
        print(f"\ngoal: cross-instance p95 ≤ 100 ms — {'met' if cross <= 100 else 'NOT met'} ({cross:.1f} ms)")
        return 0 if all(len(v) == args.decisions for _, v in rows) else 1
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
