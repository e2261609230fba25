"""The follow-through: a bus subscriber after the store that keeps 110 from being a revolving
door (防回流). When a call starts, the caller's earlier diverted calls within the flow-back
window are looked up and shown on the console before the operator decides; when the router
then names the same matter, the call is marked as a flow-back of the earlier one. It also
wakes the outbox when a diversion has queued a work order, and puts new alerts on the console's
event stream."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fenliu.bus import CallEvent, Item, WorkerFact
from fenliu.events import Decision
from fenliu.hotlines.linkage import caller_number
from fenliu.sip import protocol as P
from fenliu.store.record import Store

STATUS_WORDS = {"local": "待人工转交", "queued": "待送达", "accepted": "已受理", "dispatched": "已派遣",
                "completed": "已办结", "returned": "已退回", "failed": "送达失败"}


Note = Callable[[str, str, dict[str, Any]], object]  # (kind, call id, data): the console feed's ``note``


class FollowThrough:
    """``note`` puts a line on the operators' live view (the console's ``EventFeed.note``);
    without it the follow-through still marks repeat callers and flow-backs in the store."""

    def __init__(self, store: Store, window_days: float, note: Note | None = None, outbox: Any = None) -> None:
        self.store = store
        self.window = window_days * 86400
        self.note = note
        self.outbox = outbox
        self._prior: dict[str, list[dict[str, Any]]] = {}  # live call -> its earlier diverted calls
        if note is not None:
            store.alert_listeners.append(self.alert)

    def __call__(self, item: Item) -> None:
        if isinstance(item, CallEvent):
            if isinstance(item.event, Decision) and item.leg == "caller" and item.call_id in self._prior:
                self._same_matter(item.call_id, item.event)
            return
        assert isinstance(item, WorkerFact)
        f = item.fact
        if isinstance(f, P.CallStarted):
            self._started(f)
        elif isinstance(f, P.CallEnded):
            self._prior.pop(f.call_id, None)
        elif isinstance(f, P.TransferUpdate) and f.step in (P.TransferStep.BRIDGED, P.TransferStep.COMPLETED):
            if self.outbox is not None:
                self.outbox.wake()

    def _started(self, f: P.CallStarted) -> None:
        prior = self.store.prior_calls(f.call_id, caller_number(f.remote), f.t - self.window)
        if not prior:
            return
        self._prior[f.call_id] = prior
        self.store.mark_repeat(f.call_id, prior[0]["call_id"], same_matter=False)
        days = max(1, round(self.window / 86400))
        summary = [{"call_id": p["call_id"][:16], "started_at": p["started_at"], "category": p["category"] or "",
                    "target": p["diverted_to"] or p["suggested"] or "", "diverted": bool(p["diverted_to"]),
                    "order_no": p["order_no"] or "", "order_status": STATUS_WORDS.get(p["order_status"] or "", "")}
                   for p in prior[:5]]
        last = summary[0]
        text = (f"重复来电：此号码 {days} 天内第 {len(prior) + 1} 次来电；上次"
                + (f"已分流至 {last['target']}" if last["diverted"] else f"建议分流至 {last['target']}")
                + (f"（{last['category']}）" if last["category"] else "")
                + (f"，工单 {last['order_no']} {last['order_status']}" if last["order_no"] else ""))
        self._note("repeat_caller", f.call_id, {"count": len(prior), "window_days": days, "prior": summary,
                                                "text": text})

    def _same_matter(self, call_id: str, d: Decision) -> None:
        key = d.category_id or d.category
        if not key:
            return
        match = next((p for p in self._prior[call_id] if (p["suggested_category"] or "") == key), None)
        if match is None:
            return
        del self._prior[call_id]  # once per call
        self.store.mark_repeat(call_id, match["call_id"], same_matter=True)
        self._note("repeat_same_matter", call_id, {
            "same_matter": True, "category": d.category, "prior_call": match["call_id"][:16],
            "prior_order": match["order_no"] or "",
            "text": f"同一事项回流：{d.category}，此前已{'分流' if match['diverted_to'] else '建议分流'}"
                    + (f"（工单 {match['order_no']}）" if match["order_no"] else "") + "，请核实办理情况，必要时由110处置"})

    def alert(self, alert: dict[str, Any]) -> None:
        self._note("alert", "", alert)

    def _note(self, kind: str, call_id: str, data: dict[str, Any]) -> None:
        if self.note is not None:
            self.note(kind, call_id, {**data, "at": round(time.time(), 3)})
