"""`fenliu serve`: the supervisor with its SIP workers, live transcripts and decisions in the log."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from typing import IO

from fenliu.events import event_to_dict
from fenliu.router import Router
from fenliu.service.offline import format_event
from fenliu.service.settings import Settings
from fenliu.service.supervisor import CallEvent, Supervisor, WorkerFact


def printer(out: IO[str], as_json: bool):  # type: ignore[no-untyped-def]
    lock = threading.Lock()

    def emit(item: CallEvent | WorkerFact) -> None:
        with lock:
            if as_json:
                if isinstance(item, CallEvent):
                    d = {"call_id": item.call_id, "leg": item.leg, "worker": item.worker, **event_to_dict(item.event)}
                else:
                    d = {"worker": item.worker, **item.data}
                out.write(json.dumps(d, ensure_ascii=False) + "\n")
            elif isinstance(item, CallEvent):
                out.write(f"{item.call_id[:12]} {item.leg:7} {format_event(item.event)}\n")
            else:
                data = {k: v for k, v in item.data.items() if k not in ("event", "t")}
                out.write(f"[{item.worker}] {item.data.get('event')} {json.dumps(data, ensure_ascii=False)}\n")
            out.flush()

    return emit


def run_serve(settings: Settings, router: Router, engine, as_json: bool = False) -> int:  # type: ignore[no-untyped-def]
    return asyncio.run(_serve(settings, router, engine, as_json))


async def _serve(settings: Settings, router: Router, engine, as_json: bool) -> int:  # type: ignore[no-untyped-def]
    from aiohttp import web

    from fenliu.service.api import create_app

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from fenliu.service.store import Store

    store = Store(settings.store.url)
    show = printer(sys.stdout, as_json)

    def on_event(item: CallEvent | WorkerFact) -> None:
        store.record(item)  # first: the record must not depend on the console keeping up
        show(item)

    sup = Supervisor(settings, router, engine, on_event)
    runner = web.AppRunner(create_app(sup))
    try:
        await loop.run_in_executor(None, sup.start)
        await runner.setup()
        c = settings.console
        await web.TCPSite(runner, c.host, c.port).start()
        s = settings.sip
        print(f"fenliu serve: {s.workers} SIP worker(s) on {s.address}:{s.port}..{s.port + s.workers - 1}, "
              f"API on http://{c.host}:{c.port}/api/calls; Ctrl-C / SIGTERM to stop", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        await loop.run_in_executor(None, sup.stop)
        store.close()
    print("fenliu serve: stopped", file=sys.stderr, flush=True)
    return 0
