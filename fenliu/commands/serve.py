"""`fenliu serve`: the supervisor with its SIP workers and ASR processes, one event bus on this
process's asyncio loop, and its subscribers: the store (first), the log printer, the metrics,
the console's event feed; the console and HTTP API on the same loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from typing import IO

from fenliu.bus import CallEvent, EventBus, Item
from fenliu.commands.offline import format_event
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


def run_serve(settings: Settings, router: Router, engine, as_json: bool = False, ivr: LoadedFlow | None = None) -> int:
    return asyncio.run(_serve(settings, router, engine, as_json, ivr))


async def _serve(settings: Settings, router: Router, engine, as_json: bool, ivr: LoadedFlow | None = None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bus = EventBus(loop)
    store = Store(settings.store.url, seat=service_seat(settings), settings=settings)
    bus.subscribe(store.record)  # first: the record must not depend on the console keeping up
    bus.subscribe(printer(sys.stdout, as_json))
    sup = Supervisor(settings, router, engine, bus)
    metrics = Metrics(sup, store)
    bus.subscribe(metrics)
    console = Console(settings, sup, store, metrics)
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
        await stop.wait()
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
