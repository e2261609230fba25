#!/usr/bin/env python3
"""How fast an ended session loses its event streams, measured on the real console.

`python scripts/bench_security.py --runs 20`: a real console (`Console.start`, SQLite store) with
an operator whose event stream is open; for each way a session or token ends — logout on this
instance, logout on a second instance sharing the store, ``fenliu token revoke``, a password
change, an idle session — the time from the change to the server's close of the stream (code
4401). Baseline in the same run: the time for the next plain API request after a logout to be
answered 401 (what "ended" meant for requests already). Also: how long a half-sent request
holds a connection (console.header_timeout, default 10 s). Printed as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from argon2 import PasswordHasher  # noqa: E402

import fenliu.console.auth as auth  # noqa: E402
from fenliu.bus import EventBus  # noqa: E402
from fenliu.console.server import Console  # noqa: E402
from fenliu.router import Router  # noqa: E402
from fenliu.service.supervisor import Supervisor  # noqa: E402
from fenliu.settings import Settings  # noqa: E402
from fenliu.store.record import Store  # noqa: E402
from tests.conftest import free_port  # noqa: E402

PASSWORD = "bench password 110"


async def opened(url: str, http: aiohttp.ClientSession, headers: dict[str, str] | None = None) -> Any:
    ws = await http.ws_connect(url.replace("http", "ws") + "api/events", headers=headers or {})
    assert (await ws.receive_json(timeout=30))["kind"] == "hello"
    return ws


async def closed_after(ws: Any, change: Any) -> float:
    """Seconds from ``change()`` to the server's close (4401) of ``ws``."""
    t0 = time.perf_counter()
    await change()
    msg = await ws.receive(timeout=30)
    took = time.perf_counter() - t0
    if msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) or ws.close_code != 4401:
        raise RuntimeError(f"stream not closed with 4401: {msg.type} {ws.close_code}")
    return took


async def bench(runs: int) -> list[list[str]]:
    auth.PasswordHasher = partial(PasswordHasher, time_cost=1, memory_cost=1024, parallelism=1)  # type: ignore
    with tempfile.TemporaryDirectory(prefix="fenliu-bench-sec-") as tmp:
        s = Settings()
        s = replace(s, store=replace(s.store, url=f"sqlite:///{tmp}/f.db"),
                    console=replace(s.console, port=free_port()))
        bus = EventBus(asyncio.get_running_loop())
        store = Store(s.store.url)
        sup = Supervisor(s, Router(), None, bus)
        a, b = Console(s, sup, store), Console(replace(s, console=replace(s.console, port=free_port())), sup, store)
        url_a, url_b = await a.start(), await b.start()
        a.accounts.add_user("op1", "operator", PASSWORD)
        times: dict[str, list[float]] = {k: [] for k in ("baseline", "logout", "logout_b", "revoke", "passwd",
                                                         "idle")}
        jar = partial(aiohttp.CookieJar, unsafe=True)
        try:
            for i in range(runs):
                async with aiohttp.ClientSession(cookie_jar=jar()) as http:
                    r = await http.post(url_a + "api/login", json={"username": "op1", "password": PASSWORD})
                    csrf = {"X-CSRF-Token": (await r.json())["csrf"]}
                    ws = await opened(url_a, http)

                    async def logout(h: aiohttp.ClientSession = http, c: dict[str, str] = csrf) -> None:
                        await h.post(url_a + "api/logout", json={}, headers=c)

                    times["logout"].append(await closed_after(ws, logout))
                    t0 = time.perf_counter()
                    assert (await http.get(url_a + "api/calls")).status == 401
                    times["baseline"].append(time.perf_counter() - t0)
                async with aiohttp.ClientSession(cookie_jar=jar()) as http:  # log in on A, out on B
                    r = await http.post(url_b + "api/login", json={"username": "op1", "password": PASSWORD})
                    csrf = {"X-CSRF-Token": (await r.json())["csrf"]}
                    ws = await opened(url_a, http)

                    async def logout_b(h: aiohttp.ClientSession = http, c: dict[str, str] = csrf) -> None:
                        await h.post(url_b + "api/logout", json={}, headers=c)

                    times["logout_b"].append(await closed_after(ws, logout_b))
                token = a.accounts.create_token(f"bench-{i}", "op1")
                async with aiohttp.ClientSession() as http:
                    ws = await opened(url_a, http, {"Authorization": f"Bearer {token}"})

                    async def revoke(n: str = f"bench-{i}") -> None:
                        store.revoke_token(n)

                    times["revoke"].append(await closed_after(ws, revoke))
                async with aiohttp.ClientSession(cookie_jar=jar()) as http:
                    await http.post(url_a + "api/login", json={"username": "op1", "password": PASSWORD})
                    ws = await opened(url_a, http)

                    async def passwd() -> None:
                        a.accounts.set_password("op1", PASSWORD)

                    times["passwd"].append(await closed_after(ws, passwd))
                async with aiohttp.ClientSession(cookie_jar=jar()) as http:
                    await http.post(url_a + "api/login", json={"username": "op1", "password": PASSWORD})
                    ws = await opened(url_a, http)

                    async def idle() -> None:
                        store.db.execute("UPDATE sessions SET last_seen = last_seen - ?", (481 * 60,))

                    times["idle"].append(await closed_after(ws, idle))
            t0 = time.perf_counter()
            reader, writer = await asyncio.open_connection("127.0.0.1", s.console.port)
            writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            await reader.read()
            half_open = time.perf_counter() - t0
            writer.close()
        finally:
            await a.stop()
            await b.stop()
            store.close()
    base = statistics.median(times["baseline"])
    labels = {"baseline": "baseline: next API request after logout → 401", "logout": "logout (same instance)",
              "logout_b": "logout on another instance (shared store)", "revoke": "token revoked (CLI/store)",
              "passwd": "password changed (CLI/store)", "idle": "session idle past its limit"}
    rows = []
    for k, label in labels.items():
        v = sorted(times[k])
        rows.append([label, f"{statistics.median(v) * 1000:.0f}", f"{v[-1] * 1000:.0f}",
                     f"{statistics.median(v) / base:.1f}", f"{sum(x <= 1.0 for x in v)}/{len(v)}"])
    rows.append(["half-sent request held (header_timeout 10 s)", f"{half_open * 1000:.0f}", "", "", ""])
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()
    rows = asyncio.run(bench(args.runs))
    header = ["what ends the session", "p50 ms", "max ms", "× baseline", "≤ 1 s"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"Event streams closed after a session ends: {args.runs} runs each")
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
