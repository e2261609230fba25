"""`fenliu serve`: the supervisor with its SIP workers and ASR processes, one event bus on this
process's asyncio loop, and its subscribers: the store (first), the log printer, the metrics,
the console's event feed; the console and HTTP API on the same loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from typing import IO

from fenliu.bus import CallEvent, EventBus, Item
from fenliu.commands.offline import format_event
from fenliu.console.api import DRAIN
from fenliu.console.server import Console, announce_lost, cli_token_path, issue_cli_token, security_warnings
from fenliu.events import event_to_dict
from fenliu.loop.followthrough import FollowThrough
from fenliu.loop.outbox import Outbox
from fenliu.router import Router
from fenliu.service.ivr import LoadedFlow, attach_desk
from fenliu.service.lost import release_instance
from fenliu.service.metrics import Metrics
from fenliu.service.supervisor import Supervisor
from fenliu.settings import Settings, instance_name, service_seat
from fenliu.store.record import Store
from fenliu.store.retention import purge


def printer(out: IO[str], as_json: bool) -> Callable[[Item], None]:
    """A bus subscriber writing one line per item (runs on the bus loop: no lock needed)."""

    def emit(item: Item) -> None:
        if as_json:
            if isinstance(item, CallEvent):
                d = {"call_id": item.call_id, "leg": item.leg, "worker": item.worker, **event_to_dict(item.event)}
            else:
                d = {"worker": item.worker, **item.fact.to_dict()}
            out.write(json.dumps(d, ensure_ascii=False) + "\n")
        elif isinstance(item, CallEvent):
            out.write(f"{item.call_id[:12]} {item.leg:7} {format_event(item.event)}\n")
        else:
            data = {k: v for k, v in item.fact.to_dict().items() if k not in ("event", "t")}
            out.write(f"[{item.worker}] {item.kind} {json.dumps(data, ensure_ascii=False)}\n")
        out.flush()

    return emit


def attach_loop(settings: Settings, store: Store, bus: EventBus, console: Console) -> Outbox:
    """Closing the loop beside the console: the follow-through (repeat callers, alerts on the
    event stream) after the store on the bus, and the outbox it wakes. Run ``outbox.run``."""
    from fenliu.console.api import WAKE

    outbox = Outbox(store, settings)
    bus.subscribe(FollowThrough(store, settings.followup.window_days, console.feed.note, outbox))
    console.app[WAKE] = outbox.wake
    return outbox


async def _retention(store: Store, settings: Settings, stop: asyncio.Event) -> None:
    """Apply the retention settings at start and then every six hours."""
    if not (settings.store.transcript_days or settings.store.recording_days):
        return
    while not stop.is_set():
        for line in await asyncio.to_thread(purge, store, settings):
            print(f"retention: {line}", file=sys.stderr, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 6 * 3600)


async def _first(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def _drain(sup: Supervisor, bound: float, stop: asyncio.Event) -> None:
    """Out of rotation: every worker refuses new calls (503, so the front sends them to another
    instance); wait until the live calls have ended by themselves — or, with sip.drain_timeout,
    end those left (their callers go on the callback list). ``stop`` cuts the wait short."""
    live = sup.drain("draining")
    print(f"fenliu serve: 正在排空：不再接新来电，等待 {live} 通电话自然结束 / draining: new calls refused (503), "
          f"waiting for {live} live call(s) to end by themselves"
          f"{f' (at most {bound:g} s, sip.drain_timeout)' if bound else ''}; SIGTERM again or Ctrl-C stops now",
          file=sys.stderr, flush=True)
    deadline = time.monotonic() + bound if bound else None
    while sup.live_calls() and not stop.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            left = [c["call_id"] for c in sup.calls()]
            print(f"fenliu serve: drain bound reached: ending {len(left)} call(s); their callers go on the "
                  f"callback list", file=sys.stderr, flush=True)
            for cid in left:
                with contextlib.suppress(LookupError):
                    sup.hangup(cid, f"fenliu: drain bound reached (sip.drain_timeout = {bound:g} s)")
            end = time.monotonic() + 10
            while sup.live_calls() and time.monotonic() < end and not stop.is_set():
                await _first_or(stop, 0.2)
            return
        await _first_or(stop, 0.2)
    print("fenliu serve: drained: no live call left", file=sys.stderr, flush=True)


async def _first_or(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


def run_serve(settings: Settings, router: Router, engine, as_json: bool = False, ivr: LoadedFlow | None = None) -> int:
    return asyncio.run(_serve(settings, router, engine, as_json, ivr))


async def _serve(settings: Settings, router: Router, engine, as_json: bool, ivr: LoadedFlow | None = None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()  # stop now (Ctrl-C, a second SIGTERM, a fence, the end of a drain)
    drain = asyncio.Event()  # SIGTERM / `fenliu drain`: no new calls, stop when the live ones have ended

    def on_sigterm() -> None:
        if drain.is_set():
            stop.set()  # a second SIGTERM: the service manager will not wait any longer
        drain.set()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    bus = EventBus(loop)
    store = Store(settings.store.url, seat=service_seat(settings), settings=settings, journal=True)
    bus.subscribe(store.record)  # first: the record must not depend on the console keeping up
    bus.subscribe(printer(sys.stdout, as_json))
    sup = Supervisor(settings, router, engine, bus)
    metrics = Metrics(sup, store)
    bus.subscribe(metrics)
    console = Console(settings, sup, store, metrics)
    console.app[DRAIN] = drain.set  # POST /api/drain (`fenliu drain`)
    outbox = attach_loop(settings, store, bus, console)
    desk = attach_desk(settings, sup, bus, store, ivr)
    for w in security_warnings(settings):
        print(w, file=sys.stderr, flush=True)
    stop_loop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    exit_code = 0

    def fenced(by: str) -> None:  # declared dead by another instance: its callers were released
        nonlocal exit_code
        print(f"fenliu serve: 本实例已被 {by} 判定失联，其通话已由对方结束并列入回拨名单；停止接听 / declared dead by "
              f"instance {by} (this process stalled or lost the store); its calls were released and are on the "
              f"callback list: stopping (exit 75: restart it)", file=sys.stderr, flush=True)
        exit_code = 75
        stop.set()

    if console.centre is not None:
        console.centre.on_fenced = fenced
    try:
        issue_cli_token(console.accounts, store, cli_token_path(settings), settings.console.port)
        # what an earlier life of this instance left open (killed, crashed machine): closed, callers
        # on the callback list, legs still up sent a BYE — before this life takes calls
        me = instance_name(settings)
        left = await loop.run_in_executor(None, release_instance, store, me,
                                          f"instance {me} restarted: the call was cut by its end", settings.sip.address)
        if left.calls or left.legs:
            print(f"fenliu serve: leftovers of this instance's last run: {left.summary()}", file=sys.stderr, flush=True)
            announce_lost(store, console.feed, left)
        await loop.run_in_executor(None, sup.start)
        tasks = [asyncio.create_task(outbox.run(stop_loop)), asyncio.create_task(_retention(store, settings, stop_loop))]
        url = await console.start()
        s = settings.sip
        print(f"fenliu serve: {s.workers} SIP worker(s) on {s.address}:{s.port}..{s.port + s.workers - 1}, "
              f"recognition in {sup.mode}; 接警台 console {url} (API /api/…, metrics /metrics); "
              f"Ctrl-C / SIGTERM to stop", file=sys.stderr, flush=True)
        if store.count_users() <= 1:  # only the built-in cli account
            print("还没有登录账户 / no console account yet: create the first one with\n"
                  "    fenliu user add admin --role admin", file=sys.stderr, flush=True)
        await _first(stop, drain)
        if drain.is_set() and not stop.is_set():
            await _drain(sup, settings.sip.drain_timeout, stop)
    finally:
        stop_loop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await console.stop()
        if desk is not None:
            desk.close()
        await loop.run_in_executor(None, sup.stop)
        await asyncio.sleep(0)  # deliver what the stop published
        store.close()
    print("fenliu serve: stopped", file=sys.stderr, flush=True)
    return exit_code
