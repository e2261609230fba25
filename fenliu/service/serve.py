"""`fenliu serve`: the supervisor with its SIP workers and ASR processes, one event bus on this
process's asyncio loop, and its subscribers: the store (first), the log printer, the metrics,
the HTTP API."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from typing import IO

from fenliu.events import event_to_dict
from fenliu.router import Router
from fenliu.service.bus import CallEvent, EventBus, Item
from fenliu.service.offline import format_event
from fenliu.service.settings import Settings
from fenliu.service.supervisor import Supervisor


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


def run_serve(settings: Settings, router: Router, engine, as_json: bool = False) -> int:
    return asyncio.run(_serve(settings, router, engine, as_json))


async def _serve(settings: Settings, router: Router, engine, as_json: bool) -> int:
    from aiohttp import web

    from fenliu.service.api import create_app
    from fenliu.service.metrics import Metrics
    from fenliu.service.store import Store

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bus = EventBus(loop)
    store = Store(settings.store.url)
    bus.subscribe(store.record)  # first: the record must not depend on the console keeping up
    bus.subscribe(printer(sys.stdout, as_json))
    sup = Supervisor(settings, router, engine, bus)
    metrics = Metrics(sup)
    bus.subscribe(metrics)
    runner = web.AppRunner(create_app(sup, metrics))
    try:
        await loop.run_in_executor(None, sup.start)
        await runner.setup()
        c = settings.console
        await web.TCPSite(runner, c.host, c.port).start()
        s = settings.sip
        print(f"fenliu serve: {s.workers} SIP worker(s) on {s.address}:{s.port}..{s.port + s.workers - 1}, "
              f"recognition in {sup.mode}, API on http://{c.host}:{c.port}/api/calls, metrics on /metrics; "
              f"Ctrl-C / SIGTERM to stop", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        await loop.run_in_executor(None, sup.stop)
        await asyncio.sleep(0)  # deliver what the stop published
        store.close()
    print("fenliu serve: stopped", file=sys.stderr, flush=True)
    return 0
