"""`fenliu serve`: the supervisor with its SIP workers, live transcripts and decisions in the log."""

from __future__ import annotations

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
    stop = threading.Event()

    def on_signal(_sig: int, _frm: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sup = Supervisor(settings, router, engine, printer(sys.stdout, as_json))
    try:
        sup.start()
        s = settings.sip
        print(f"fenliu serve: {s.workers} SIP worker(s) on {s.address}:{s.port}..{s.port + s.workers - 1}; "
              f"Ctrl-C / SIGTERM to stop", file=sys.stderr, flush=True)
        stop.wait()
    finally:
        sup.stop()
    print("fenliu serve: stopped", file=sys.stderr, flush=True)
    return 0
