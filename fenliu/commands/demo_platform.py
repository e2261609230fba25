"""A stand-in 12345 platform and SMS gateway for `fenliu demo --live`, so the main job shows the
whole loop on one machine: the work order is received (and deduplicated by its idempotency
key), the platform reports 受理 → 派遣 → 办结 back through fenliu's signed webhook a few
seconds apart, the SMS gateway takes the caller's messages, and the caller "answers" the
follow-up question with 1 (满意). Never used outside the demo: a deployment points
``[platforms.*]`` and ``[sms]`` at the real systems."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp
from aiohttp import web

from fenliu.hotlines.signing import sign
from fenliu.settings import PlatformSettings, Settings

SECRET_ENV = "FENLIU_DEMO_PLATFORM_SECRET"
STEPS = (("受理", 1.0), ("派遣", 3.0), ("办结", 6.0))  # status word, seconds after the order arrived


class DemoPlatform:
    def __init__(self, say: Callable[[str], None], step_scale: float = 1.0) -> None:
        self.say = say
        self.scale = step_scale
        self.secret = secrets.token_urlsafe(24)
        self.orders: dict[str, dict[str, Any]] = {}  # idempotency key -> order
        self.sms: list[dict[str, Any]] = []
        self.console_url = ""
        self._seq = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    def settings_for(self, settings: Settings) -> Settings:
        """The demo's settings: every hotline's orders and every SMS go to this stand-in."""
        platforms = {tid: PlatformSettings(url=f"{self.url}/orders", name=f"模拟 {tid} 平台", secret_env=SECRET_ENV,
                                           deadline_hours=72.0)
                     for tid in settings.transfer.targets if tid not in settings.transfer.urgent}
        return replace(settings, platforms=platforms, sms=replace(settings.sms, url=f"{self.url}/sms",
                                                                  secret_env=SECRET_ENV))

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/orders", self._order)
        app.router.add_post("/sms", self._sms)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _order(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        body = await request.json()
        if key in self.orders:  # a repeat of an order we already have: the same answer, nothing new
            return web.json_response(self.orders[key]["answer"])
        answer = {"order_no": f"YC12345-{next(self._seq):05d}", "status": "accepted"}
        self.orders[key] = {"answer": answer, "body": body}
        target = str(body.get("target") or "12345")
        self.say(f"    📋 模拟12345平台收到工单 {body.get('order_no')} → 平台编号 {answer['order_no']}"
                 f"（{body.get('category') or '未分类'}）")
        self._later(self._progress(target, answer["order_no"]))
        return web.json_response(answer, status=201)

    async def _sms(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.sms.append(body)
        self.say(f"    ✉ 短信 → {str(body.get('to', ''))[:3]}****{str(body.get('to', ''))[-4:]}: {body.get('text', '')}")
        if "回复数字评价办理结果" in str(body.get("text", "")):
            self._later(self._reply(str(body.get("to", ""))))
        return web.json_response({"message_id": f"SM{next(self._seq)}", "status": "queued"}, status=201)

    def _later(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _progress(self, target: str, platform_no: str) -> None:
        started = time.monotonic()
        for word, at in STEPS:
            await asyncio.sleep(max(0.0, started + at * self.scale - time.monotonic()))
            await self._post(f"/api/hooks/platform/{target}", {"order_no": platform_no, "status": word,
                                                           "note": "模拟平台" if word != "办结" else "已联系当事人处理完毕"})
            self.say(f"    ↩ 平台回报 {platform_no}: {word}")

    async def _reply(self, number: str) -> None:
        await asyncio.sleep(2.0 * self.scale)
        await self._post("/api/hooks/sms", {"from": number, "text": "1"})
        self.say("    ↩ 来电人回复短信 1（满意）")

    async def _post(self, path: str, doc: dict[str, Any]) -> None:
        if not self.console_url:
            return
        body = json.dumps(doc, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json",
                   **sign(self.secret.encode(), secrets.token_hex(8), int(time.time()), body)}
        try:
            async with aiohttp.ClientSession() as s, \
                    s.post(self.console_url.rstrip("/") + path, data=body, headers=headers,
                           timeout=aiohttp.ClientTimeout(total=10)) as r:
                if r.status >= 300:
                    self.say(f"    ✘ webhook {path}: HTTP {r.status} {(await r.text())[:120]}")
        except (aiohttp.ClientError, TimeoutError) as e:
            self.say(f"    ✘ webhook {path}: {e}")
