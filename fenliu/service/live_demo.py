"""`fenliu demo --live`: the whole product on loopback with embedded defaults.

Starts the local test hotlines that the default `[transfer.targets]` point at (pjsua2 peers on
127.0.0.1:5091…), the supervisor with its SIP workers, then dials each Mandarin fixture into
110 as a real SIP call (`fenliu dial`). The live transcript and decision are printed; when the
decision is a diversion the demo presses the one key (three-way transfer to the target hotline)
the way an operator would, and reports how the transfer went.

Without a Chinese model the calls still run through SIP, the conference bridge and the VAD,
and the fixture's reference transcript (labelled as such) stands in for recognition.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from fenliu.asr.engine import AsrEngine
from fenliu.events import Decision, FinalTranscript
from fenliu.router import Router
from fenliu.service.bus import EventBus, Item, WorkerFact
from fenliu.service.demo import default_fixtures, load_manifest
from fenliu.service.offline import format_event
from fenliu.service.settings import Settings
from fenliu.service.supervisor import Supervisor
from fenliu.sip import protocol as P


def start_hotlines(settings: Settings, folder: Path) -> list[subprocess.Popen[str]]:
    procs = []
    for tid, uri in settings.transfer.targets.items():
        host_port = uri.split("@", 1)[-1]
        host, _, port = host_port.partition(":")
        if host not in ("127.0.0.1", "localhost") or not port.isdigit():
            continue  # a real hotline: nothing to start
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "fenliu.sip.peer", "--port", port, "--user", tid, "--answer", "200",
             "--record", str(folder / f"hotline-{tid}.wav")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True))
    time.sleep(1.0)
    return procs


def run_live_demo(settings: Settings, router: Router, engine: AsrEngine | None, out: IO[str],
                  fixtures: Path | None = None, limit: int | None = None) -> int:
    rows = load_manifest(fixtures or default_fixtures())[:limit]
    folder = fixtures or default_fixtures()
    current: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    sup: Supervisor

    def on_item(item: Item) -> None:  # a bus subscriber: runs on the bus thread, one item at a time
        row = current.get("row")
        if isinstance(item, WorkerFact):
            f = item.fact
            if isinstance(f, P.TransferUpdate) and f.step != P.TransferStep.PROGRESS:
                out.write(f"    ☎ {item.kind} {f.target} {f.reason}\n")
                if row is not None:
                    results[row["id"]]["transfer"] = item.kind + (f" ({f.reason})" if f.step == P.TransferStep.FAILED
                                                                  else "")
            return
        ev = item.event
        if isinstance(ev, FinalTranscript | Decision):
            out.write(f"    {format_event(ev)}\n")
        if isinstance(ev, Decision) and row is not None:
            results[row["id"]]["decision"] = f"{ev.target} {ev.category}"
            if ev.diverted and not results[row["id"]].get("pressed"):
                results[row["id"]]["pressed"] = True
                threading.Thread(target=lambda: press_key(item.call_id, ev.target), daemon=True).start()
        out.flush()

    def press_key(call_id: str, target: str) -> None:
        time.sleep(0.5)  # the operator reads the suggestion
        try:
            sup.transfer(call_id, target)
        except (LookupError, ValueError) as e:
            out.write(f"    ✘ transfer: {e}\n")

    def reference_for(call_id: str) -> str | None:
        row = current.get("row")
        return row["text"] if row else None

    with tempfile.TemporaryDirectory(prefix="fenliu-live-demo-") as tmp:
        hotlines = start_hotlines(settings, Path(tmp))
        bus = EventBus.on_thread()
        bus.subscribe(on_item)
        sup = Supervisor(settings, router, engine, bus, reference_for=reference_for)
        try:
            sup.start()
            s = settings.sip
            out.write(f"fenliu serve: {s.workers} SIP worker(s) on {s.address}:{s.port}; "
                      f"{len(hotlines)} local test hotline(s)\n")
            if engine is None:
                out.write("没有中文模型：通话照常经过 SIP、会议桥和 VAD，【参考文本】代替识别结果。\n")
            from fenliu.service.dial import dial

            for row in rows:
                bus.drain()
                current["row"] = row
                results[row["id"]] = {"expected": f"{row['expected']['target']} {row['expected']['category']}"}
                out.write(f"\n── 拨打 dialling {row['id']}\n")
                try:
                    dial(folder / row["file"], f"sip:{s.users.split(',')[0]}@{s.address}:{s.port}", tail_s=3.0,
                         ring_timeout=10)
                except Exception as e:
                    out.write(f"    ✘ {e}\n")
                time.sleep(1.0)
        finally:
            sup.stop()
            bus.close()
            for p in hotlines:
                p.terminate()
                p.wait(10)
    out.write(f"\n{'fixture':24} {'expected':24} {'decided':24} transfer\n" + "-" * 96 + "\n")
    for fid, r in results.items():
        out.write(f"{fid:24} {r['expected'][:24]:24} {r.get('decision', '(none)')[:24]:24} "
                  f"{r.get('transfer', '-')}\n")
    return 0
