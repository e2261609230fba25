"""`fenliu serve`: the supervisor with its SIP workers and ASR processes, one event bus on this
process's asyncio loop, and its subscribers: the store (first), the log printer, the metrics,
the console's event feed; the console and HTTP API on the same loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from fenliu.events import event_to_dict
from fenliu.router import Router
from fenliu.service.auth import Accounts
from fenliu.service.bus import CallEvent, EventBus, Item, WorkerFact
from fenliu.service.feed import EventFeed
from fenliu.service.followthrough import FollowThrough
from fenliu.service.ivr import IvrDesk, LoadedFlow
from fenliu.service.ivr import load as load_ivr
from fenliu.service.metrics import Metrics
from fenliu.service.offline import format_event
from fenliu.service.outbox import Outbox
from fenliu.service.retention import purge
from fenliu.service.settings import Settings
from fenliu.service.store import Store
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


def seat_name(seat_uri: str) -> str:
    """``sip:seat01@pbx:5060`` → ``seat01`` (the seat every call rings in B2BUA mode)."""
    return seat_uri.split(":", 1)[-1].split("@", 1)[0] if seat_uri else ""


def cli_token_path(settings: Settings) -> Path:
    """Where `fenliu serve` leaves the local CLI's API token (beside the SQLite file)."""
    url = settings.store.url
    folder = Path(url[len("sqlite:///"):]).parent if url.startswith("sqlite:///") else Path("var")
    return folder / "cli.token"


def issue_cli_token(accounts: Accounts, store: Store, path: Path) -> None:
    """A fresh token for the local CLI at every start (the old one is revoked), readable by this
    account only. The CLI acts as the built-in account "cli" (supervisor), audited as such."""
    if store.user("cli") is None:
        store.add_user("cli", "supervisor", "!")  # "!" is no argon2 hash: nobody can log in as cli
    name = f"local-cli@{socket.gethostname()}"  # per machine: instances sharing PostgreSQL keep theirs
    store.revoke_token(name)
    token = accounts.create_token(name, "cli")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)


def security_warnings(settings: Settings) -> list[str]:
    c = settings.console
    out = []
    loopback = c.host in ("127.0.0.1", "localhost", "::1")
    if not loopback and not c.tls_cert and not c.behind_proxy:
        out.append(f"警告 / WARNING: the console listens on {c.host}:{c.port} without TLS: passwords and session "
                   f"cookies cross the network in clear. Set console.tls_cert/tls_key, or put a TLS reverse proxy in "
                   f"front and set console.behind_proxy = true.")
    if not loopback and not c.public_host:
        out.append("警告 / WARNING: console.public_host is empty: browsers reaching the console by a name other than "
                   "localhost are refused (Host check). Set it to the name operators use.")
    return out


class Console:
    """The console and API on the supervisor's loop: the store's accounts, the event feed (a bus
    subscriber) and the aiohttp site."""

    def __init__(self, settings: Settings, sup: Supervisor, store: Store, metrics: Metrics | None = None) -> None:
        from fenliu.service.api import create_app

        c = settings.console
        self.settings = settings
        self.accounts = Accounts(store, c.session_idle_minutes)
        self.feed = EventFeed(c.event_buffer, store.seat, settings.transfer.targets)
        sup.bus.subscribe(self.feed)
        self.app = create_app(sup, store, self.feed, self.accounts, metrics)
        self.runner: Any = None
        self.url = ""

    async def start(self) -> str:
        from aiohttp import web

        c = self.settings.console
        ssl_ctx = None
        if c.tls_cert:
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_ctx.load_cert_chain(c.tls_cert, c.tls_key)
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, c.host, c.port, ssl_context=ssl_ctx).start()
        host = c.host if ":" not in c.host else f"[{c.host}]"
        self.url = f"{'https' if ssl_ctx else 'http'}://{host}:{c.port}/"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def attach_loop(settings: Settings, store: Store, bus: EventBus, console: Console) -> Outbox:
    """Closing the loop beside the console: the follow-through (repeat callers, alerts on the
    event stream) after the store on the bus, and the outbox it wakes. Run ``outbox.run``."""
    from fenliu.service.api import WAKE

    outbox = Outbox(store, settings)
    bus.subscribe(FollowThrough(store, settings.followup.window_days, console.feed, outbox))
    console.app[WAKE] = outbox.wake
    return outbox


def attach_ivr(settings: Settings, sup: Supervisor, bus: EventBus, store: Store | None,
               loaded: LoadedFlow | None = None) -> IvrDesk | None:
    """The IVR front desk (``[ivr] flow``): the flow and its prompts are loaded and checked before
    any call (``loaded``, or now) — a bad flow stops the start with file:line, never a live call."""
    if not settings.ivr.flow:
        return None
    desk = IvrDesk(settings, sup, loaded or load_ivr(settings), lambda f: bus.publish(WorkerFact("ivr", f)), store)
    desk.attach(bus)
    print(f"IVR: flow {desk.flow.name} ({len(desk.flow.states)} states, {len(desk.prompts)} prompts) "
          f"when {settings.ivr.when}; operators' queue {settings.ivr.queue_uri or settings.sip.seat_uri}",
          file=sys.stderr, flush=True)
    return desk


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
    store = Store(settings.store.url, seat=seat_name(settings.sip.seat_uri), settings=settings)
    bus.subscribe(store.record)  # first: the record must not depend on the console keeping up
    bus.subscribe(printer(sys.stdout, as_json))
    sup = Supervisor(settings, router, engine, bus)
    metrics = Metrics(sup, store)
    bus.subscribe(metrics)
    console = Console(settings, sup, store, metrics)
    outbox = attach_loop(settings, store, bus, console)
    desk = attach_ivr(settings, sup, bus, store, ivr)
    for w in security_warnings(settings):
        print(w, file=sys.stderr, flush=True)
    stop_loop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        issue_cli_token(console.accounts, store, cli_token_path(settings))
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
    return 0
