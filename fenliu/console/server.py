"""The console's server: the aiohttp site on the supervisor's loop with the store's accounts and
the event feed (a bus subscriber); the local CLI's token; warnings about an exposed console."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from fenliu.console.api import CENTRE, create_app, run_carried
from fenliu.console.auth import Accounts
from fenliu.console.centre import Centre
from fenliu.console.feed import EventFeed
from fenliu.service.lost import Released
from fenliu.service.metrics import Metrics
from fenliu.service.supervisor import Supervisor
from fenliu.settings import Settings, instance_name
from fenliu.store.record import Store


def cli_token_path(settings: Settings) -> Path:
    """Where `fenliu serve` leaves the local CLI's API token (beside the SQLite file), one per
    instance (by its console port): two instances on one machine keep a token each."""
    url = settings.store.url
    folder = Path(url[len("sqlite:///"):]).parent if url.startswith("sqlite:///") else Path("var")
    return folder / f"cli-{settings.console.port}.token"


def issue_cli_token(accounts: Accounts, store: Store, path: Path, port: int = 0) -> None:
    """A fresh token for the local CLI at every start (this instance's old one is revoked),
    readable by this account only. The CLI acts as the built-in account "cli" (supervisor),
    audited as such."""
    if store.user("cli") is None:
        store.add_user("cli", "supervisor", "!")  # "!" is no argon2 hash: nobody can log in as cli
    # per instance (machine and console port): instances sharing a store keep theirs
    name = f"local-cli@{socket.gethostname()}:{port}"
    store.revoke_token(name)
    token = accounts.create_token(name, "cli")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)


def announce_lost(store: Store, feed: EventFeed, released: Released) -> None:
    """An instance's calls were released (it died, or this instance restarted): an alert for every
    supervisor, and every console reloads its callback list."""
    if released.calls or released.legs:
        store.raise_alert("instance_lost", f"{released.instance}:{int(time.time())}",
                          f"实例 {released.instance} 失联：{len(released.calls)} 通电话已结束并列入回拨名单 / "
                          f"{released.reason}: {released.summary()}; the callers are on the callback list")
    feed.note("callbacks_changed", "", {"instance": released.instance, "calls": len(released.calls)})


def centre_view(settings: Settings) -> bool:
    """Does this instance share one live view with the others on its store? (store.centre: "auto"
    is yes on PostgreSQL, the store several instances share; SQLite is one instance's.)"""
    mode = settings.store.centre
    return mode == "on" or (mode == "auto" and settings.store.url.startswith(("postgresql://", "postgres://")))


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
        c = settings.console
        self.settings = settings
        self.accounts = Accounts(store, c.session_idle_minutes)
        self.feed = EventFeed(c.event_buffer, store.seat, settings.transfer.targets, instance_name(settings))
        sup.bus.subscribe(self.feed)
        self.app = create_app(sup, store, self.feed, self.accounts, metrics)
        self.centre: Centre | None = None
        if centre_view(settings):  # one live view over every instance on the store
            self.centre = Centre(settings.store.url, instance_name(settings), self.feed,
                                 keep_hours=settings.store.centre_keep_hours, store=store,
                                 sip_address=settings.sip.address)
            self.centre.executor = lambda cmd: run_carried(self.app, cmd)
            self.centre.on_lost = lambda released: announce_lost(store, self.feed, released)
            self.app[CENTRE] = self.centre
        self.runner: Any = None
        self.url = ""

    async def start(self) -> str:
        from aiohttp import web

        c = self.settings.console
        ssl_ctx = None
        if c.tls_cert:
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_ctx.load_cert_chain(c.tls_cert, c.tls_key)
        # a connection must send its request's headers within header_timeout s (slowloris: aiohttp
        # closes a connection that has not completed a request when its keep-alive timer runs out,
        # from the connection's start), and an idle keep-alive connection is closed as fast
        if self.centre is not None:
            self.centre.console_url = f"{c.public_host or c.host}:{c.port}"
            self.centre.start(asyncio.get_running_loop())
        self.runner = web.AppRunner(self.app, access_log=None, keepalive_timeout=c.header_timeout)
        await self.runner.setup()
        await web.TCPSite(self.runner, c.host, c.port, ssl_context=ssl_ctx).start()
        host = c.host if ":" not in c.host else f"[{c.host}]"
        self.url = f"{'https' if ssl_ctx else 'http'}://{host}:{c.port}/"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.centre is not None:
            await asyncio.to_thread(self.centre.stop)
