"""`fenliu demo --live`: the whole product on loopback with embedded defaults.

Starts the local test hotlines that the default `[transfer.targets]` point at (pjsua2 peers on
127.0.0.1:5091…), the supervisor with its SIP workers, then dials each Mandarin fixture into
110 as a real SIP call (`fenliu dial`). The live transcript and decision are printed; when the
decision is a diversion the demo presses the one key (three-way transfer to the target hotline)
the way an operator would, and reports how the transfer went. The console runs on
console.host:console.port with a ready-made login, so a newcomer can watch the calls arrive and
press the key in a browser.

Then the voice front desk (the IVR, ``[ivr]``): the demo dials a diversion and a danger fixture
to the front desk's number (``IVR_NUMBER``, as a PBX sends calls no operator can take). The
caller talks over the welcome; the diversion is offered by key and the demo caller presses 1 when
the offer has been said; the danger call goes to the operators' queue (a local stand-in ACD)
marked urgent.

Without a Chinese model the calls still run through SIP, the conference bridge and the VAD,
and the fixture's reference transcript (labelled as such) stands in for recognition.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from fenliu.asr.engine import AsrEngine
from fenliu.bus import EventBus, Item, WorkerFact
from fenliu.commands.demo import default_fixtures, load_manifest
from fenliu.commands.demo_platform import SECRET_ENV as DEMO_SECRET_ENV
from fenliu.commands.demo_platform import STEPS, DemoPlatform
from fenliu.commands.dial import (
    dial,
    die_with_parent,
    free_udp_port,
    playable,
    signals_ignored,
    sigterm_as_interrupt,
    stop_all,
)
from fenliu.commands.offline import format_event
from fenliu.commands.serve import attach_loop
from fenliu.console.server import Console
from fenliu.events import Decision, FinalTranscript
from fenliu.router import Router
from fenliu.service.ivr import attach_desk
from fenliu.service.supervisor import Supervisor
from fenliu.settings import Settings, service_seat
from fenliu.sip import protocol as P
from fenliu.store.record import Store


def start_hotlines(settings: Settings, folder: Path) -> list[subprocess.Popen[str]]:
    procs = []
    for tid, uri in settings.transfer.targets.items():
        host_port = uri.split("@", 1)[-1]
        host, _, port = host_port.partition(":")
        if host not in ("127.0.0.1", "localhost") or not port.isdigit():
            continue  # a real hotline: nothing to start
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "fenliu.sip.ua.peer", "--port", port, "--user", tid, "--answer", "200",
             "--record", str(folder / f"hotline-{tid}.wav")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, preexec_fn=die_with_parent))
    time.sleep(1.0)
    return procs


IVR_NUMBER = "1100"  # the front desk's number in the demo: where a PBX sends calls no operator can take

DEMO_USER = "demo"
DEMO_CALLER = "13800138000"  # the demo caller's number: a mobile, so the loop's SMS can reach it


def demo_login(console: Console) -> str:
    """A ready-made operator login for the newcomer: account "demo", a fresh password each run."""
    password = secrets.token_urlsafe(9)
    if console.accounts.store.user(DEMO_USER) is None:
        console.accounts.add_user(DEMO_USER, "operator", password)
    else:
        console.accounts.set_password(DEMO_USER, password)
    return password


def run_live_demo(settings: Settings, router: Router, engine: AsrEngine | None, out: IO[str],
                  fixtures: Path | None = None, limit: int | None = None, key_wait: float = 8.0,
                  ivr_demo: bool = True) -> int:
    """Dial the fixtures as real calls while the console shows them. The operator presses the
    one key in the browser; a diversion nobody has acted on after ``key_wait`` seconds is
    transferred by the demo itself ("自动按键"), so an unattended run shows the whole loop.
    With ``limit`` the demo ends after that many calls; without, the console stays up after
    the last call until Ctrl-C."""
    rows = load_manifest(fixtures or default_fixtures())[:limit]
    folder = fixtures or default_fixtures()
    current: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    transferred: set[str] = set()
    sup: Supervisor

    def on_item(item: Item) -> None:  # a bus subscriber: runs on the bus thread, one item at a time
        row = current.get("row")
        if isinstance(item, WorkerFact):
            f = item.fact
            if isinstance(f, P.TransferUpdate):
                transferred.add(f.call_id)
            if isinstance(f, P.TransferUpdate) and f.step != P.TransferStep.PROGRESS:
                out.write(f"    ☎ {item.kind} {f.target} {f.reason}\n")
                if row is not None and not current.get("ivr_key"):
                    results[row["id"]]["transfer"] = item.kind + (f" ({f.reason})" if f.step == P.TransferStep.FAILED
                                                                  else "")
            return
        ev = item.event
        if isinstance(ev, FinalTranscript | Decision):
            out.write(f"    {format_event(ev)}\n")
        if isinstance(ev, Decision) and current.get("ivr_key"):
            results[current["ivr_key"]]["decision"] = f"{ev.target} {ev.category}"  # the IVR acts, not the demo
        elif isinstance(ev, Decision) and row is not None:
            results[row["id"]]["decision"] = f"{ev.target} {ev.category}"
            if ev.diverted and not results[row["id"]].get("pressed"):
                results[row["id"]]["pressed"] = True
                threading.Thread(target=lambda: press_key(item.call_id, ev.target), daemon=True).start()
        out.flush()

    def press_key(call_id: str, target: str) -> None:
        deadline = time.monotonic() + key_wait  # the operator's turn
        while time.monotonic() < deadline:
            if call_id in transferred:
                return
            time.sleep(0.1)
        if call_id in transferred:
            return
        out.write(f"    ⌨ 自动按键 / nobody pressed the key in {key_wait:.0f} s: the demo transfers to {target}\n")
        try:
            sup.transfer(call_id, target)
        except (LookupError, ValueError, PermissionError) as e:
            out.write(f"    ✘ transfer: {e}\n")

    def reference_for(call_id: str) -> str | None:
        row = current.get("row")
        return row["text"] if row else None

    def say(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    interrupted: KeyboardInterrupt | None = None
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="fenliu-live-demo-") as tmp:
        helpers: list[subprocess.Popen[str]] = []  # test hotlines and the stand-in ACD
        bus = EventBus.on_thread()
        platform = DemoPlatform(say)
        store: Store | None = None
        console: Console | None = None
        desk = None
        stop_outbox = asyncio.Event()
        delivering: Any = None
        started = False
        try:
            helpers += start_hotlines(settings, Path(tmp))
            if not settings.platforms:  # no real platform configured: the stand-in shows the loop
                asyncio.run_coroutine_threadsafe(platform.start(), bus.loop).result(30)
                os.environ[DEMO_SECRET_ENV] = platform.secret
                settings = platform.settings_for(settings)
            if ivr_demo and not settings.ivr.flow:  # the shipped front desk, on its own number
                settings, queue_peer = front_desk_settings(settings, Path(tmp))
                helpers.append(queue_peer)
            store = Store(settings.store.url, seat=service_seat(settings), settings=settings)
            bus.subscribe(store.record)
            bus.subscribe(on_item)
            sup = Supervisor(settings, router, engine, bus, reference_for=reference_for)
            console = Console(settings, sup, store)
            outbox = attach_loop(settings, store, bus, console)
            desk = attach_desk(settings, sup, bus, store) if ivr_demo else None
            started = True
            sup.start()
            url = asyncio.run_coroutine_threadsafe(console.start(), bus.loop).result(30)
            platform.console_url = url
            delivering = asyncio.run_coroutine_threadsafe(outbox.run(stop_outbox), bus.loop)
            password = demo_login(console)
            s = settings.sip
            out.write(f"fenliu serve: {s.workers} SIP worker(s) on {s.address}:{s.port}; "
                      f"{len(helpers)} local test hotline(s)\n")
            out.write(f"\n  接警台 console: {url}\n  登录 login: {DEMO_USER} / {password}\n"
                      f"  建议出现后按 F8 一键转接（{key_wait:.0f} 秒内无人操作则自动按键）/ press F8 when the "
                      f"suggestion appears\n")
            if engine is None:
                out.write("没有中文模型：通话照常经过 SIP、会议桥和 VAD，【参考文本】代替识别结果。\n")
            out.flush()
            for row in rows:
                bus.drain()
                current["row"] = row
                results[row["id"]] = {"expected": f"{row['expected']['target']} {row['expected']['category']}"}
                out.write(f"\n── 拨打 dialling {row['id']}\n")
                out.flush()
                try:
                    # the call stays up long enough for the operator to read the card, press the
                    # key and see the three-way call
                    dial(folder / row["file"], f"sip:{s.users.split(',')[0]}@{s.address}:{s.port}",
                         tail_s=key_wait + 4.0, ring_timeout=10, caller=DEMO_CALLER)
                except Exception as e:
                    out.write(f"    ✘ {e}\n")
                time.sleep(1.0)
            if desk is not None:
                for row in front_desk_rows(load_manifest(folder)):
                    bus.drain()
                    current["row"] = row
                    results[row["id"] + " (IVR)"] = {"expected": f"{row['expected']['target']} "
                                                                 f"{row['expected']['category']}"}
                    current["ivr_key"] = row["id"] + " (IVR)"
                    out.write(f"\n── 语音前台 front desk: {row['id']} 拨打 dialling {IVR_NUMBER}\n")
                    out.flush()
                    ivr_call(folder / row["file"], f"sip:{IVR_NUMBER}@{s.address}:{s.port}", bus, Path(tmp), out,
                             results[current["ivr_key"]])
                    current.pop("ivr_key", None)
                    time.sleep(1.0)
            if limit is None:
                out.write(f"\n示例来电已拨完；接警台仍在 {url}（历史记录可查），Ctrl-C 结束 / all fixture calls done; "
                          f"the console stays up until Ctrl-C\n")
                out.flush()
                while True:
                    time.sleep(3600)
            else:  # let the stand-in platform report 办结 and the caller answer
                time.sleep(STEPS[-1][1] + 4.0)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Terminated)
            interrupted = e
            out.write("\n已中断 / interrupted: 正在结束通话、测试热线和 SIP 进程 / ending the calls, the test "
                      "hotlines and the SIP workers\n")
            out.flush()
        finally:
            with signals_ignored():  # a second Ctrl-C must not leave processes behind
                for p in helpers:  # asked first: they stop while the workers do
                    with contextlib.suppress(OSError):
                        p.terminate()
                bus.loop.call_soon_threadsafe(stop_outbox.set)
                if started:
                    sup.stop()
                stop_all(helpers)
                if delivering is not None:
                    with contextlib.suppress(Exception):
                        delivering.result(10)
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(platform.stop(), bus.loop).result(10)
                if console is not None:
                    with contextlib.suppress(Exception):
                        asyncio.run_coroutine_threadsafe(console.stop(), bus.loop).result(10)
                if desk is not None:
                    bus.loop.call_soon_threadsafe(desk.close)
                bus.close()
                if store is not None:
                    store.close()
    out.write(f"\n{'fixture':24} {'expected':24} {'decided':24} transfer\n" + "-" * 96 + "\n")
    for fid, r in results.items():
        out.write(f"{fid:24} {r['expected'][:24]:24} {r.get('decision', '(none)')[:24]:24} "
                  f"{r.get('transfer', '-')}\n")
    if interrupted is not None:
        out.flush()
        raise interrupted
    out.write("\n" + loop_summary(settings) + "\n")
    return 0


def front_desk_settings(settings: Settings, folder: Path) -> tuple[Settings, subprocess.Popen[str]]:
    """The shipped front desk on ``IVR_NUMBER``, handing callers to a local stand-in ACD."""
    from dataclasses import replace

    port = free_udp_port()
    queue = subprocess.Popen(
        [sys.executable, "-m", "fenliu.sip.ua.peer", "--port", str(port), "--user", "acd", "--answer", "200",
         "--hangup-after", "4", "--record", str(folder / "operators-queue.wav")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, preexec_fn=die_with_parent)
    sip, ivr = settings.sip, settings.ivr
    users = sip.users if IVR_NUMBER in sip.users.split(",") or sip.users == "*" else f"{sip.users},{IVR_NUMBER}"
    return replace(settings, sip=replace(sip, users=users),
                   ivr=replace(ivr, flow="front_desk", numbers=IVR_NUMBER,
                               queue_uri=ivr.queue_uri or f"sip:acd@127.0.0.1:{port}")), queue


def front_desk_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One diversion and one danger call for the front desk (when the fixtures have them)."""
    divert = next((r for r in rows if r["expected"]["target"] != "police"), None)
    danger = next((r for r in rows if r["expected"].get("urgent")), None)
    return [r for r in (divert, danger) if r is not None]


def ivr_call(wav: Path, to: str, bus: EventBus, folder: Path, out: IO[str], result: dict[str, Any]) -> None:
    """One caller of the front desk: it talks over the welcome, and presses 1 once the offer has
    been said to its end (as a caller who listened would). Returns when the call has ended."""
    play = playable(wav, folder)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fenliu.sip.ua.peer", "--port", str(free_udp_port()), "--user", DEMO_CALLER, "--call", to,
         "--play", str(play), "--commands", "--mic", "--hangup-after", "60", "--exit-after-call", "--ring-timeout", "10"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        preexec_fn=die_with_parent)
    state: dict[str, Any] = {"offer": False, "token": ""}
    finished = threading.Event()

    def send(line: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()

    def watch(item: Item) -> None:  # a bus subscriber
        if not isinstance(item, WorkerFact):
            return
        f = item.fact
        if isinstance(f, P.IvrStep):
            urgent = "（紧急）" if f.urgent else ""
            out.write(f"    ☏ 语音前台 {f.state}: {f.step}{urgent} {f.detail}\n".rstrip() + "\n")
            state["offer"] = state["offer"] or f.step == "offer"
            if f.outcome:
                result["transfer"] = f"IVR {f.outcome}" + (" urgent" if f.urgent else "")
                bye = threading.Timer(3.0, lambda: send("hangup"))  # a few words with whoever has it, then bye
                bye.daemon = True
                bye.start()
        elif isinstance(f, P.PromptStarted) and state["offer"] and not state["token"]:
            state["token"] = f.token
        elif isinstance(f, P.PromptDone) and f.token and f.token == state["token"] and not f.interrupted:
            out.write("    ⌨ 来电人听完提示后按 1 / the caller presses 1\n")
            send("dtmf 1")
        elif isinstance(f, P.CallEnded):
            finished.set()
        out.flush()

    unsubscribe = bus.subscribe(watch)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        out.write("    ✘ 语音前台呼叫超时 / the front-desk call did not end in 90 s\n")
    finally:  # also when interrupted: the caller process ends with the demo
        unsubscribe()
        stop_all([proc])
    finished.wait(5)


def loop_summary(settings: Settings) -> str:
    """The closing-the-loop record of the run: orders, SMS and follow-ups from the store."""
    store = Store(settings.store.url, settings=settings)
    try:
        orders = store.orders(limit=1000, since=time.time() - 3600)
        lines = [f"工单 work orders: {len(orders)}"]
        for o in orders:
            loop = store.call_loop(o["call_id"])
            scores = ", ".join(f"{'110' if f['side'] == '110' else '热线'}评价 {f['score']}" for f in loop["followups"])
            lines.append(f"  {o['order_no']} → {o['target']} {o['status']}"
                         + (f" (平台 {o['platform_ref']})" if o["platform_ref"] else "")
                         + f"; 短信 {'/'.join(m['status'] for m in loop['sms']) or '-'}" + (f"; {scores}" if scores else ""))
        return "\n".join(lines)
    finally:
        store.close()
