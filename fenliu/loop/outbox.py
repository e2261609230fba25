"""Delivers the outbox: work orders to their hotline platform, SMS to the gateway.

Each item was written in the same transaction as the diversion that caused it, so nothing is
lost if a platform is down or fenliu restarts. An item is leased before it is sent: if this
process dies between sending and hearing the answer, the lease runs out and the item is sent
again — with the same ``Idempotency-Key`` (and ``webhook-id``), so the platform can answer the
repeat with the order it already created instead of creating a second one.

Answers: 2xx delivered; 408/409/425/429/5xx, timeouts and connection errors are retried with
exponential back-off and jitter (``Retry-After`` honoured); any other 4xx is a permanent refusal
(a mapping or data problem): the item stops and an alert says so. Items still undelivered after
``outbox.stuck_minutes`` raise an alert and keep trying; orders past their deadline without 办结
raise a flow-back alert.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from typing import Any

import aiohttp

from fenliu.errors import ConfigError
from fenliu.hotlines.linkage import map_fields
from fenliu.hotlines.signing import secret_from_env, sign
from fenliu.settings import PlatformSettings, Settings
from fenliu.store.record import Store

log = logging.getLogger("fenliu.outbox")
RETRYABLE = {408, 409, 425, 429}
BATCH = 32  # items claimed per round
PARALLEL = 8  # deliveries in flight at once


class Outbox:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.o = settings.outbox
        self._wake = asyncio.Event()
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._slots = asyncio.Semaphore(PARALLEL)
        self.delivered = 0
        self.retried = 0
        self.refused = 0
        self._last_check = 0.0
        self._ssl = {pid: _ssl_context(pid, p) for pid, p in settings.platforms.items()}

    def wake(self) -> None:
        """Something was queued (called on this loop by the store's subscriber)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; poll every ``poll_seconds`` (other instances' items too)."""
        try:
            while not stop.is_set():
                try:
                    n = await self.deliver_due()
                    now = time.time()
                    if now - self._last_check >= 30.0:
                        self._last_check = now
                        self.store.check_deadlines(now, self.o.stuck_minutes * 60)  # on the loop: alerts go to the feed
                except Exception:  # the store or the network hiccuped: keep the loop alive
                    log.exception("outbox round failed; retrying")
                    n = 0
                if n:
                    continue  # more may be due
                self._wake.clear()
                stopper = asyncio.ensure_future(stop.wait())
                waker = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({stopper, waker}, timeout=self.o.poll_seconds,
                                   return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                waker.cancel()
        finally:
            await self.close()

    async def deliver_due(self) -> int:
        """One round: claim what is due and deliver it; returns how many were tried."""
        self.store.flush()  # records that waited for the database (they may open orders)
        items = self.store.claim(time.time(), BATCH, self.o.lease_seconds)
        if items:
            await asyncio.gather(*(self._deliver(item) for item in items))
        return len(items)

    async def close(self) -> None:
        for s in self._sessions.values():
            await s.close()
        self._sessions.clear()

    # -- one item ---------------------------------------------------------------------------------
    async def _deliver(self, item: dict[str, Any]) -> None:
        async with self._slots:
            now = time.time()
            try:
                url, body, headers, timeout, platform = self._request(item)
            except LookupError as e:
                self._retry(item, str(e), None)
                return
            except ValueError as e:
                self.refused += 1
                self.store.give_up(item, str(e), now)
                return
            session = self._session(item["destination"], platform)
            try:
                async with session.post(url, data=body, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                    text = await r.text(errors="replace")
                    status, retry_after = r.status, r.headers.get("Retry-After")
            except TimeoutError:
                self._retry(item, f"timeout after {timeout:g} s", None)
                return
            except (aiohttp.ClientError, OSError) as e:
                self._retry(item, f"{type(e).__name__}: {e}"[:300], None)
                return
            if 200 <= status < 300:
                answer = _json(text)
                ref_field = platform.ref_field if platform else "message_id"
                ref = answer.get(ref_field) if isinstance(answer.get(ref_field), str | int) else None
                self.store.delivered(item, answer, str(ref) if ref is not None else None, time.time())
                self.delivered += 1
                if int(item["attempts"]) > 1 and self.store.hurry(item["destination"], time.time()):
                    self.wake()  # it is back: what waited out its back-off goes now
            elif status in RETRYABLE or status >= 500:
                self._retry(item, f"HTTP {status}: {text[:200]}", retry_after)
            else:
                self.refused += 1
                self.store.give_up(item, f"HTTP {status}: {text[:300]}", time.time())

    def _request(self, item: dict[str, Any]) -> tuple[str, bytes, dict[str, str], float, PlatformSettings | None]:
        payload = self.store.payload(item)
        if payload is None:
            raise ValueError(f"{item['kind']} {item['ref']} is no longer in the store")
        platform: PlatformSettings | None = None
        if item["kind"] == "order":
            platform = self.settings.platforms.get(item["destination"])
            if platform is None or not platform.url:
                raise LookupError(f"平台未配置 / platform {item['destination']!r} has no URL in this configuration")
            doc = map_fields(payload, platform.fields)
            url, timeout, secret_env, extra = platform.url, platform.timeout, platform.secret_env, platform.headers
        else:
            s = self.settings.sms
            if not s.url:
                raise LookupError("未配置短信网关 / sms.url is empty")
            doc = {"to": payload["number"], "text": payload["body"], "sender": s.sender, "ref": item["idem_key"]}
            url, timeout, secret_env, extra = s.url, s.timeout, s.secret_env, {}
        body = json.dumps(doc, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "Idempotency-Key": item["idem_key"],
                   "X-Fenliu-Attempt": str(item["attempts"]), **extra}
        secret = secret_from_env(secret_env)
        if secret:
            headers.update(sign(secret, item["idem_key"], int(time.time()), body))
        return url, body, headers, timeout, platform

    def _retry(self, item: dict[str, Any], error: str, retry_after: str | None) -> None:
        delay = min(self.o.retry_max, self.o.retry_base * 2 ** max(0, int(item["attempts"]) - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: instances that failed together do not retry together
        if retry_after and retry_after.strip().isdigit():
            delay = min(self.o.retry_max, max(delay, float(retry_after)))
        self.retried += 1
        log.warning("%s %s: %s; retry in %.1f s", item["kind"], item["ref"], error, delay)
        self.store.retry_later(item, error, time.time() + delay)

    def _session(self, destination: str, platform: PlatformSettings | None) -> aiohttp.ClientSession:
        s = self._sessions.get(destination)
        if s is None or s.closed:
            ctx = self._ssl.get(destination, True)
            s = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=PARALLEL))
            self._sessions[destination] = s
        return s


def _ssl_context(pid: str, p: PlatformSettings) -> ssl.SSLContext | bool:
    """The TLS context for a platform (its CA, our client certificate), checked at start."""
    if not (p.ca or p.client_cert):
        return True
    try:
        ctx = ssl.create_default_context(cafile=p.ca or None)
        if p.client_cert:
            ctx.load_cert_chain(p.client_cert, p.client_key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"配置错误 / platforms.{pid}: cannot load its TLS files (ca={p.ca!r}, client_cert="
                          f"{p.client_cert!r}, client_key={p.client_key!r}): {e}. Give PEM files readable by "
                          f"fenliu.") from e
    return ctx


def _json(text: str) -> dict[str, Any]:
    try:
        v = json.loads(text)
    except ValueError:
        return {"text": text[:500]}
    return v if isinstance(v, dict) else {"value": v}
