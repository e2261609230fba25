"""The console's HTTP server itself (``Console.start``, as `fenliu serve` runs it): a client that
never finishes its request headers is disconnected after console.header_timeout, while a
client that does is answered."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from fenliu.bus import EventBus
from fenliu.console.server import Console
from fenliu.service.supervisor import Supervisor
from fenliu.settings import Settings
from fenliu.store.record import Store
from tests.conftest import free_port


async def test_half_sent_headers_are_cut_off_and_whole_requests_answered(tmp_path, router):
    s = Settings()
    s = replace(s, store=replace(s.store, url=f"sqlite:///{tmp_path}/f.db"),
                console=replace(s.console, port=free_port(), header_timeout=1.0))
    bus = EventBus(asyncio.get_running_loop())
    store = Store(s.store.url)
    console = Console(s, Supervisor(s, router, None, bus), store)
    await console.start()
    try:
        slow = []
        for _ in range(20):  # slowloris: a request line and one header, then nothing
            reader, writer = await asyncio.open_connection("127.0.0.1", s.console.port)
            writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            await writer.drain()
            slow.append((reader, writer))
        # a whole request on a fresh connection is answered meanwhile
        reader, writer = await asyncio.open_connection("127.0.0.1", s.console.port)
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 30)).startswith(b"HTTP/1.1 200")
        writer.close()
        for reader, writer in slow:  # each half-sent request is closed by the server (EOF), none answered
            assert await asyncio.wait_for(reader.read(), 30) == b""
            writer.close()
    finally:
        await console.stop()
        store.close()


async def test_an_event_stream_outlives_the_header_timeout(tmp_path, router, monkeypatch):
    """The header timeout is not a limit on a WebSocket that is streaming (nor on its silence)."""
    from functools import partial

    import aiohttp
    from argon2 import PasswordHasher

    from fenliu.bus import WorkerFact
    from fenliu.sip import protocol as P

    monkeypatch.setattr("fenliu.console.auth.PasswordHasher",
                        partial(PasswordHasher, time_cost=1, memory_cost=1024, parallelism=1))
    s = Settings()
    s = replace(s, store=replace(s.store, url=f"sqlite:///{tmp_path}/f.db"),
                console=replace(s.console, port=free_port(), header_timeout=1.0))
    bus = EventBus(asyncio.get_running_loop())
    store = Store(s.store.url)
    bus.subscribe(store.record)
    console = Console(s, Supervisor(s, router, None, bus), store)
    console.accounts.add_user("op1", "operator", "correct horse 110")
    url = await console.start()
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # an IP host
            r = await http.post(url + "api/login", json={"username": "op1", "password": "correct horse 110"})
            assert r.status == 200
            async with http.ws_connect(url.replace("http", "ws") + "api/events") as ws:
                assert (await ws.receive_json(timeout=30))["kind"] == "hello"
                await asyncio.sleep(3 * s.console.header_timeout)  # silent for three header timeouts
                bus.publish(WorkerFact("w0", P.CallStarted("c-late", 0, "<sip:13800000000@pbx>")))
                got = await ws.receive_json(timeout=30)
                assert got["kind"] == "call_started" and got["call_id"] == "c-late"
    finally:
        await console.stop()
        store.close()


def test_two_instances_on_one_machine_keep_a_cli_token_each(tmp_path):
    """Starting instance B (another console port, same store) does not revoke A's local token."""
    from fenliu.console.auth import Accounts, AuthError
    from fenliu.console.server import cli_token_path, issue_cli_token

    s = Settings()
    s = replace(s, store=replace(s.store, url=f"sqlite:///{tmp_path}/f.db"))
    a, b = replace(s, console=replace(s.console, port=8110)), replace(s, console=replace(s.console, port=8111))
    assert cli_token_path(a) != cli_token_path(b)
    store = Store(s.store.url)
    accounts = Accounts(store)
    try:
        issue_cli_token(accounts, store, cli_token_path(a), 8110)
        issue_cli_token(accounts, store, cli_token_path(b), 8111)
        for inst in (a, b):
            assert accounts.token_user(cli_token_path(inst).read_text().strip()).name == "cli"
        old_a = cli_token_path(a).read_text().strip()
        issue_cli_token(accounts, store, cli_token_path(a), 8110)  # A restarts: its old token goes, B's stays
        assert accounts.token_user(cli_token_path(b).read_text().strip()).name == "cli"
        with pytest.raises(AuthError, match="revoked"):
            accounts.token_user(old_a)
    finally:
        store.close()
