"""The real console app (aiohttp) on a real SQLite store and a real (not started) supervisor,
for API tests through aiohttp's test client. Calls appear the way they do in `fenliu serve`:
as typed facts and chain events published on the event bus, which the store and the event
feed subscribe to."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

from fenliu.bus import CallEvent, EventBus, WorkerFact
from fenliu.console.server import Console
from fenliu.service.supervisor import Supervisor
from fenliu.settings import Settings, StoreSettings
from fenliu.sip import protocol as P
from fenliu.store.record import Store

PASSWORD = "correct horse 110"


@dataclass
class ApiEnv:
    settings: Settings
    bus: EventBus
    store: Store
    sup: Supervisor
    console: Console

    def publish(self, item: CallEvent | WorkerFact) -> None:
        self.bus.publish(item)

    def start_call(self, call_id: str, remote: str = "<sip:13812345678@pbx>", worker: str = "w0") -> None:
        self.publish(WorkerFact(worker, P.CallStarted(call_id, 0, remote)))

    def end_call(self, call_id: str, worker: str = "w0") -> None:
        self.publish(WorkerFact(worker, P.CallEnded(call_id, 0, 200, "BYE")))

    def add_user(self, name: str, role: str, seat: str = "") -> None:
        self.console.accounts.add_user(name, role, PASSWORD, seat)

    def token(self, user: str) -> str:
        return self.console.accounts.create_token(f"t-{user}", user)


def make_env(tmp_path: Any, router: Any, **console: Any) -> ApiEnv:
    s = Settings()
    s = replace(s, store=StoreSettings(url=f"sqlite:///{tmp_path}/fenliu.db"),
                console=replace(s.console, **console))
    bus = EventBus(asyncio.get_running_loop())
    store = Store(s.store.url)
    bus.subscribe(store.record)
    sup = Supervisor(s, router, None, bus)
    return ApiEnv(s, bus, store, sup, Console(s, sup, store))


async def login(client: Any, name: str, password: str = PASSWORD) -> str:
    """Log in through the API; returns the CSRF token (the client keeps the cookie)."""
    r = await client.post("/api/login", json={"username": name, "password": password})
    assert r.status == 200, await r.text()
    return str((await r.json())["csrf"])
