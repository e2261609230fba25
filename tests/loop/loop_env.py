"""Shared pieces of the closing-the-loop tests: settings pointing at a local platform and SMS
gateway, and a call that is diverted through the store's real path (typed facts and chain
events, as the bus delivers them in `fenliu serve`)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from fenliu.bus import CallEvent, WorkerFact
from fenliu.events import FinalTranscript
from fenliu.settings import PlatformSettings, Settings
from fenliu.sip import protocol as P
from fenliu.store.record import Store

PLATFORM_SECRET_ENV = "FENLIU_TEST_12345_SECRET"
SMS_SECRET_ENV = "FENLIU_TEST_SMS_SECRET"
NOISE = "楼下酒吧天天半夜唱歌，噪音扰民，吵得睡不着"
HOTLINE_URI = "sip:12345@127.0.0.1:5091"


def loop_settings(url: str, platform: str = "", sms: str = "", **outbox: Any) -> Settings:
    """``platform`` / ``sms``: base URLs of the local fakes ("" = not configured)."""
    s = Settings()
    fast = {"retry_base": 0.05, "retry_max": 0.3, "poll_seconds": 0.05, "lease_seconds": 30.0, **outbox}
    platforms = {"12345": PlatformSettings(
        url=f"{platform}/orders", secret_env=PLATFORM_SECRET_ENV, deadline_hours=72.0,
        fields={"gdbh": "{order_no}", "ldhm": "{caller}", "nr": "{category}：{excerpt}", "ly": "110分流"})} \
        if platform else {}
    return replace(s, store=replace(s.store, url=url),
                   sms=replace(s.sms, url=f"{sms}/sms" if sms else "", secret_env=SMS_SECRET_ENV),
                   outbox=replace(s.outbox, **fast), platforms=platforms)


def divert(store: Store, router: Any, call_id: str, number: str = "13812345678", text: str = NOISE,
           target: str = HOTLINE_URI, t: float | None = None, end: bool = True) -> None:
    t = time.time() if t is None else t
    store.record(WorkerFact("w0", P.CallStarted(call_id, 0, f"<sip:{number}@10.0.0.1>", "<sip:110@fenliu>", t=t)))
    store.record(CallEvent(call_id, "caller", "w0", FinalTranscript(call_id, 1, text, 0.0, 2.0)))
    store.record(CallEvent(call_id, "caller", "w0", router.decide(text)))
    if target:
        store.record(WorkerFact("w0", P.TransferUpdate(call_id, P.TransferStep.STARTED, target, "three-way")))
        store.record(WorkerFact("w0", P.TransferUpdate(call_id, P.TransferStep.BRIDGED, target, "three-way")))
    if end:
        store.record(WorkerFact("w0", P.CallEnded(call_id, 0, 200, "BYE", t=t + 60)))
