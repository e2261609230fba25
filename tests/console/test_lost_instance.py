"""Losing an instance (issue 21): its calls are ended cleanly by a survivor — a BYE to each leg
from the dialog its worker persisted, records closed as "instance lost", each caller on the
callback list, an alert for supervisors — and an instance found declared dead fences itself.

Two in-process instances on a real PostgreSQL (as tests/console/test_centre.py); the legs' far
ends are a real UDP SIP endpoint in the test that answers each BYE. The same with `kill -9` of a
real instance is in tests/console/test_centre_instances.py."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest

from fenliu.bus import WorkerFact
from fenliu.sip import protocol as P
from fenliu.sip.dialogs import parse
from tests.console.test_api_security import live_call
from tests.console.test_centre import USERS, calls_of, next_event, session, until

pytestmark = pytest.mark.usefixtures("cheap_hashes")


class ByeTaker:
    """A SIP UA's far end on 127.0.0.1 that answers every BYE with 200 and remembers it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.byes: list[dict[str, Any]] = []
        self.sock.settimeout(0.2)
        self.running = True
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(65536)
            except (TimeoutError, OSError):
                continue
            start, headers = parse(data.decode(errors="replace"))
            if not start.startswith("BYE "):
                continue
            self.byes.append({"call_id": headers.get("call-id", [""])[0], "reason": headers.get("reason", [""])[0]})
            reply = ("SIP/2.0 200 OK\r\n" + "".join(f"{h}: {v}\r\n" for h in ("Via", "From", "To", "Call-ID", "CSeq")
                                                   for v in headers.get(h.lower(), [])) + "Content-Length: 0\r\n\r\n")
            self.sock.sendto(reply.encode(), addr)

    def close(self) -> None:
        self.running = False
        self.sock.close()


def dialog(call_id: str, leg: str, port: int) -> P.LegDialog:
    return P.LegDialog(call_id, leg, f"sip-{call_id}-{leg}", f"<sip:110@127.0.0.1>;tag=ours-{leg}",
                       f"<sip:{leg}@127.0.0.1>;tag=theirs-{leg}", f"sip:{leg}@127.0.0.1:{port}")


async def test_a_dead_instances_calls_are_released_by_a_survivor(centre):
    a, b = await centre("A", USERS), await centre("B")
    far = ByeTaker()
    boss = await session(a, "boss")
    try:
        await live_call(b, "c-lost", remote="<sip:13912345678@pbx>")
        for leg in ("caller", "hotline"):  # a three-way call: the caller's and the hotline's legs are up
            b.publish(WorkerFact("w0", dialog("c-lost", leg, far.port)))
        await until(lambda: a.store.db.scalar("SELECT COUNT(*) FROM leg_dialogs WHERE instance = 'B'") == 2,
                    "B's legs persisted")
        await until(lambda: calls_of(boss), "B's call listed on A")
        ws = await boss.ws_connect("/api/events")
        await next_event(ws, lambda e: e["kind"] == "hello")

        b.console.centre._beat = lambda: None  # B dies: no more heartbeats (its last one ages)
        a.store.db.execute("UPDATE instances SET seen = seen - 30 WHERE name = 'B'")
        ended = await next_event(ws, lambda e: e["kind"] == "call_ended" and e["call_id"] == "c-lost")
        assert "instance B lost" in ended["data"]["reason"]
        assert sorted(x["call_id"] for x in far.byes) == ["sip-c-lost-caller", "sip-c-lost-hotline"]
        assert all("instance B lost" in x["reason"] for x in far.byes)
        row = a.store.call("c-lost")
        assert row["ended_at"] is not None and "instance B lost" in row["reason"]
        cbs = (await (await boss.get("/api/callbacks")).json())["callbacks"]
        assert [(c["call_id"], c["number"], c["instance"]) for c in cbs] == [("c-lost", "13912345678", "B")]
        assert [x["kind"] for x in a.store.alerts()] == ["instance_lost"]
        assert await calls_of(boss) == []  # gone from the live view
        assert a.store.db.scalar("SELECT COUNT(*) FROM leg_dialogs") == 0

        # someone calls back: the list is empty for everybody
        op = await session(a, "op1")
        try:
            r = await op.post(f"/api/callbacks/{cbs[0]['id']}/done", json={"note": "已回拨，群众已安全"})
            assert r.status == 200, await r.text()
            await next_event(ws, lambda e: e["kind"] == "callbacks_changed")
            assert (await (await boss.get("/api/callbacks")).json())["callbacks"] == []
        finally:
            await op.close()
        await ws.close()
    finally:
        far.close()
        await boss.close()


async def test_an_instance_found_declared_dead_fences_itself(centre):
    a, b = await centre("A", USERS), await centre("B")
    fenced: list[str] = []
    b.console.centre.on_fenced = fenced.append
    real_beat = b.console.centre._beat
    b.console.centre._beat = lambda: None  # B stalls (SIGSTOP) …
    a.store.db.execute("UPDATE instances SET seen = seen - 30 WHERE name = 'B'")
    await until(lambda: a.store.db.scalar("SELECT dead_by FROM instances WHERE name = 'B'") == "A",
                "A declares B dead")
    b.console.centre._beat = real_beat  # … and resumes: it finds itself declared dead
    await until(lambda: fenced, "B fences itself")
    assert fenced == ["A"]
    assert a.console.centre.fenced_by == ""  # the survivor goes on


async def test_a_restarted_instance_closes_its_own_leftovers(centre):
    """What `fenliu serve` does at start (service.lost.release_instance on its own name)."""
    from fenliu.service.lost import release_instance

    a = await centre("A", USERS)
    far = ByeTaker()
    try:
        await live_call(a, "c-left")
        a.publish(WorkerFact("w0", dialog("c-left", "caller", far.port)))
        await until(lambda: a.store.db.scalar("SELECT COUNT(*) FROM leg_dialogs") == 1, "the leg persisted")
        got = await asyncio.to_thread(release_instance, a.store, "A", "instance A restarted")
        assert [c["call_id"] for c in got.calls] == ["c-left"] and got.legs == [("c-left", "caller", 200)]
        assert [x["call_id"] for x in far.byes] == ["sip-c-left-caller"]
        assert [c["call_id"] for c in a.store.callbacks()] == ["c-left"]
        again = await asyncio.to_thread(release_instance, a.store, "A", "instance A restarted")
        assert again.calls == [] and again.legs == []  # once
    finally:
        far.close()
