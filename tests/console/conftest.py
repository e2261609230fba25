"""What the console's tests share: Debian's Chromium driven by Playwright, a page logged in to
the console that records every script error, dialog and CSP violation; and the real API app on
a real SQLite store with three accounts (``open_env`` / ``env``)."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from fenliu.bus import EventBus
from fenliu.console.server import Console
from fenliu.service.supervisor import Supervisor
from fenliu.settings import Settings, StoreSettings, seat_name
from fenliu.store.record import Store
from tests.console.api_env import ApiEnv

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    if CHROMIUM is None:
        pytest.fail("Chromium is required for the console tests (apt-get install chromium; scripts/setup.sh test)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def open_console(browser: Any, url: str, user: str, password: str, **context: Any) -> tuple[Any, list[str]]:
    """Log ``user`` in and wait until the event stream is up; returns the page and the list its
    errors go to. A script error, a dialog (alert() from injected markup) or a CSP violation is
    a failure; a refused request (e.g. a 409 a test asks for) is logged by Chromium as "Failed to
    load resource" and is not."""
    ctx = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN", **context)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (errors.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("console", lambda m: errors.append(f"console: {m.text}")
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.goto(url)
    page.fill("#login-form input[name=username]", user)
    page.fill("#login-form input[name=password]", password)
    page.press("#login-form input[name=password]", "Enter")
    page.wait_for_selector("#logout", state="visible")
    page.wait_for_selector('#conn:has-text("已连接")')  # the event stream is up (no eval: the CSP forbids it)
    return page, errors


# -- the API on a real store (tests/console/test_api_security.py, test_streams.py, …) ----------
def build_env(tmp_path: Path, router: Any, *, rules_path: str = "", seat_uri: str = "",
              transfer: dict[str, Any] | None = None, **console: Any) -> ApiEnv:
    """Like api_env.make_env, plus a router section (``router.rules_path``) and a B2BUA seat
    (``sip.seat_uri``: the store, and the feed built from it, then belong to that seat, as in
    `fenliu serve`)."""
    s = Settings()
    s = replace(s, store=StoreSettings(url=f"sqlite:///{tmp_path}/fenliu.db"),
                router=replace(s.router, rules_path=rules_path), sip=replace(s.sip, seat_uri=seat_uri),
                console=replace(s.console, **console), transfer=replace(s.transfer, **(transfer or {})))
    bus = EventBus(asyncio.get_running_loop())
    store = Store(s.store.url, seat=seat_name(s.sip.seat_uri))
    bus.subscribe(store.record)
    sup = Supervisor(s, router, None, bus)
    return ApiEnv(s, bus, store, sup, Console(s, sup, store))


@pytest.fixture
async def open_env(tmp_path, router, aiohttp_client, monkeypatch):
    """``await open_env(**settings)``: an env with users op1 (operator), boss (supervisor) and
    root (admin), and its test client as ``env.client``. Passwords are still argon2id, with
    cheap parameters (the production ones cost 0.3 s a hash here, and nothing below is about cost)."""
    monkeypatch.setattr("fenliu.console.auth.PasswordHasher",
                        partial(PasswordHasher, time_cost=1, memory_cost=1024, parallelism=1))
    made: list[ApiEnv] = []

    async def _open(users: tuple[tuple[str, str, str], ...] = (("op1", "operator", ""), ("boss", "supervisor", ""),
                                                               ("root", "admin", "")),
                    **settings: Any) -> ApiEnv:
        e = build_env(tmp_path, router, **settings)
        for name, role, seat in users:
            e.add_user(name, role, seat)
        e.client = await aiohttp_client(e.console.app)  # type: ignore[attr-defined]
        made.append(e)
        return e

    yield _open
    for e in made:
        e.sup.stop()
        e.store.close()


@pytest.fixture
async def env(open_env):
    return await open_env()


# -- the centre view: instances sharing a real PostgreSQL store (test_centre.py, test_lost_instance.py) --
@pytest.fixture
def cheap_hashes(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr("fenliu.console.auth.PasswordHasher",
                        partial(PasswordHasher, time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
async def centre(pg_store_url, router, aiohttp_client):  # type: ignore[no-untyped-def]
    """``await centre("A")``: an instance on the shared store, its centre view started."""
    made: list[ApiEnv] = []

    async def _open(name: str, users: tuple[tuple[str, str, str], ...] = (), seat_uri: str = "") -> ApiEnv:
        s = Settings()
        s = replace(s, store=StoreSettings(url=pg_store_url, instance=name), console=replace(s.console, port=0),
                    sip=replace(s.sip, seat_uri=seat_uri))
        bus = EventBus(asyncio.get_running_loop())
        store = Store(s.store.url, seat=seat_name(seat_uri), settings=s)
        bus.subscribe(store.record)
        sup = Supervisor(s, router, None, bus)
        e = ApiEnv(s, bus, store, sup, Console(s, sup, store))
        for user, role, seat in users:
            if store.user(user) is None:
                e.add_user(user, role, seat)
        assert e.console.centre is not None, "a PostgreSQL store shares its live view (store.centre = auto)"
        e.console.centre.start(asyncio.get_running_loop())
        e.client = await aiohttp_client(e.console.app)  # type: ignore[attr-defined]
        made.append(e)
        return e

    yield _open
    for e in made:
        await close(e)


async def close(e: ApiEnv) -> None:
    if e.console.centre is not None and e.console.centre.feed.outbound is not None:
        await asyncio.to_thread(e.console.centre.stop)
    e.sup.stop()
    e.store.close()


