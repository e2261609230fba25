"""The event stream the console and API clients read (``GET /api/events``, a WebSocket).

``EventFeed`` is a bus subscriber: it turns each bus item a client cares about into one JSON
envelope ``{"id", "at", "kind", "call_id", "leg", "worker", "data"}`` with a strictly increasing
id, keeps the last ``size`` envelopes so that a client reconnecting with ``?since=<id>`` gets
what it missed (no gap, no duplicate), and hands each new envelope to every connected client's
queue. It also folds the stream into the live view ``GET /api/calls`` serves (each call's
latest decision and transfer step, and the id up to which the view is current).

Masking and visibility are per client, applied when an envelope is sent (``Client``): the ring
holds the full record once. There is no second event model: the envelopes are the bus's typed
items, serialised.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fenliu.bus import CallEvent, Item, WorkerFact
from fenliu.console.auth import User
from fenliu.events import (
    Decision,
    FinalTranscript,
    PartialTranscript,
    SpeechStarted,
    SpeechStopped,
    event_to_dict,
)
from fenliu.hotlines.masking import mask_number

CHAIN_KINDS = {SpeechStarted: "speech_started", SpeechStopped: "speech_stopped",
               PartialTranscript: "partial_transcript", FinalTranscript: "final_transcript", Decision: "decision"}
CALL_FACTS = {"call_started", "call_answered", "call_ended", "call_degraded", "media_timeout", "media_probe",
              "leg_held", "reinvite_limited", "dtmf",
              "leg_dialing", "leg_answered", "leg_ended", "transfer_started", "transfer_progress",
              "transfer_consulted", "transfer_bridged", "transfer_completed", "transfer_failed",
              "ivr_step", "overflowed", "queue_dialing", "queue_answered", "queue_failed", "seat_answered"}
SUPERVISOR_FACTS = {"worker_lost", "worker_restarted", "restart_failed", "front_event", "orphans_released",
                    "call_rejected"}
SUPERVISOR_KINDS = SUPERVISOR_FACTS | {"negative_list_reloaded", "alert", "alert_acked"}
REPEAT_KINDS = {"repeat_caller", "repeat_same_matter"}  # notes of the follow-through (flow-back window)
DROP_FIELDS = {"event", "call_id", "t"}  # already in the envelope


STATE_AFTER = {"call_answered": "talking", "transfer_started": "transferring", "transfer_consulted": "consulted",
               "transfer_bridged": "three-way", "transfer_completed": "handed-over", "transfer_failed": "talking"}


# fields of an event's data that hold a caller's number (in any form: fenliu.hotlines.masking)
NUMBER_FIELDS = frozenset({"remote", "number", "caller", "from"})


@dataclass
class LiveCall:
    state: str = ""  # the conversation state as the events tell it (ConversationState values)
    decision: dict[str, Any] | None = None
    transfer: dict[str, Any] | None = None
    repeat: dict[str, Any] | None = None  # the caller called before within the flow-back window
    ivr: dict[str, Any] | None = None  # the IVR front desk: the caller's step, urgency and why
    seat: str = ""  # the seat that answered (seat_answered: an ACD's agent), over the service's seat
    last_event_id: int = 0
    # where the call lives (the centre view: another instance's calls are folded from the store)
    instance: str = ""
    worker: str = ""
    remote: str = ""
    since: float = 0.0
    service_seat: str = ""  # the seat its instance rings (sip.seat_uri there)


@dataclass(eq=False)  # one per connection, kept in a set by identity
class Client:
    """One connected event-stream reader."""

    user: User
    credential: str = ""  # how it was opened (auth.credential_of): the session or token it lives by
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(maxsize=5000))  # JSON texts
    overflowed: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # its session/token ended: close it
    end_reason: str = ""

    close_code: int = 4401  # 4401: the session or token ended (the console shows its login)

    def end(self, reason: str, code: int = 4401) -> None:
        if not self.ended.is_set():
            self.end_reason, self.close_code = reason, code
            self.ended.set()

    def wants(self, env: dict[str, Any], visible: Callable[[User, str], bool]) -> bool:
        if env["kind"] in SUPERVISOR_KINDS:
            return self.user.at_least("supervisor")
        return not env["call_id"] or visible(self.user, env["call_id"])

    def view(self, text: str, masked: str | None) -> str:
        """The envelope as this client may see it (JSON made once per envelope, not per client)."""
        return masked if masked is not None and not self.user.sees_full_numbers else text


class EventFeed:
    def __init__(self, size: int = 10_000, seat: str = "", targets: dict[str, str] | None = None,
                 instance: str = "") -> None:
        self.run_id = secrets.token_hex(6)  # ids are only comparable within one server run (or one centre)
        self.instance = instance
        # the centre view (fenliu.console.centre): envelopes go through the store, which numbers them
        # for every instance, and come back through accept(); None: this instance numbers its own
        self.outbound: Callable[[dict[str, Any]], None] | None = None
        self.ring: deque[dict[str, Any]] = deque(maxlen=size)
        self._texts: deque[tuple[str, str | None]] = deque(maxlen=size)  # each ring entry as JSON (full, masked)
        self.last_id = 0
        self.seat = seat
        self.live: dict[str, LiveCall] = {}
        self._ended: dict[str, str] = {}  # recently ended calls -> the seat that had answered, oldest first (bounded)
        self.clients: set[Client] = set()
        self._target_ids = {uri: tid for tid, uri in (targets or {}).items()}
        self.sent = 0

    def seat_of(self, call_id: str) -> str:
        """The seat a call belongs to: the one that answered it (behind an ACD), else the
        service's (sip.seat_uri's user on the call's instance; "" in answer mode)."""
        lc = self.live.get(call_id)
        return self._service_seat(lc) if lc is None or not lc.seat else lc.seat

    def _service_seat(self, lc: LiveCall | None) -> str:
        """The seat the call's own instance rings (sip.seat_uri there; this instance's for its own)."""
        return lc.service_seat if lc is not None and lc.instance and lc.instance != self.instance else self.seat

    def visible_to(self, user: User, call_id: str) -> bool:
        """May this user see this call? Its service seat's operator (or everybody in answer mode,
        supervisors always) as before, and the operator of the seat that answered it."""
        lc = self.live.get(call_id)
        answered = lc.seat if lc is not None else self._ended.get(call_id, "")  # its last events, its detail
        return user.may_see(self._service_seat(lc)) or (bool(answered) and user.may_see(answered))

    def remote_calls(self) -> list[tuple[str, LiveCall]]:
        """The live calls other instances hold (the centre view), oldest first."""
        return sorted(((cid, lc) for cid, lc in self.live.items() if lc.instance and lc.instance != self.instance),
                      key=lambda x: x[1].since)

    # -- in -------------------------------------------------------------------------------------
    def __call__(self, item: Item) -> None:
        """A bus subscriber (runs on the bus loop)."""
        env = self._envelope(item)
        if env is not None:
            self._send(env)

    def note(self, kind: str, call_id: str = "", data: dict[str, Any] | None = None) -> None:
        """An event of the console itself (an operator's key, a list reload), on the same stream."""
        self._send({"kind": kind, "call_id": call_id, "leg": "", "worker": "", "data": data or {}})

    def _send(self, env: dict[str, Any]) -> None:
        env = {"instance": self.instance, "at": round(time.time(), 3), **env}
        if self.outbound is not None:
            self.outbound(env)  # numbered by the store, back through accept() on every instance
        else:
            self.deliver(env)

    def deliver(self, env: dict[str, Any]) -> dict[str, Any]:
        """This instance numbers the envelope itself (no centre, or the store cannot be written)."""
        self.last_id += 1
        return self._add({"id": self.last_id, **env})

    def accept(self, env: dict[str, Any]) -> None:
        """An envelope numbered by the store (any instance's, in the store's order)."""
        if env["id"] <= self.last_id:
            return  # seen already
        self.last_id = env["id"]
        self._add(env)

    def load(self, envs: list[dict[str, Any]], run_id: str) -> None:
        """At start (centre view): the store's latest envelopes, so that a client can resume with
        ``?since=`` across a restart and the live view holds the calls other instances have."""
        self.run_id = run_id
        for env in envs:
            self.last_id = max(self.last_id, env["id"])
            self._keep(env)

    def rejoin(self, run_id: str) -> None:
        """The store numbers envelopes again after this instance numbered its own for a while:
        the ids start a new run; every open stream is told to reconnect (and reloads its view)."""
        self.run_id = run_id
        self.ring.clear()
        self._texts.clear()
        self.last_id = 0
        for c in list(self.clients):
            c.end("reconnect", 1012)

    def _envelope(self, item: Item) -> dict[str, Any] | None:
        if isinstance(item, CallEvent):
            kind = CHAIN_KINDS.get(type(item.event))
            if kind is None:
                return None
            data = {k: v for k, v in event_to_dict(item.event).items() if k not in ("type", "stream_id")}
            if kind == "decision":
                data.pop("call_id", None)
            return {"kind": kind, "call_id": item.call_id, "leg": item.leg, "worker": item.worker, "data": data}
        assert isinstance(item, WorkerFact)
        kind = item.kind
        if kind not in CALL_FACTS and kind not in SUPERVISOR_FACTS:
            return None
        data = {k: v for k, v in item.fact.to_dict().items() if k not in DROP_FIELDS}
        if kind.startswith("transfer_"):
            data["target_id"] = self._target_ids.get(data.get("target", ""), "")
        if kind == "call_started":
            data["seat"] = self.seat
        return {"kind": kind, "call_id": item.call_id, "leg": str(data.pop("leg", "") or ""),
                "worker": item.worker, "data": data}

    def _keep(self, env: dict[str, Any]) -> tuple[str, str | None]:
        text = json.dumps(env, ensure_ascii=False)
        masked = None
        numbers = {k: mask_number(str(v)) for k, v in env["data"].items() if k in NUMBER_FIELDS and v}
        if numbers:  # the view of those who may not see callers' numbers in full (operators)
            masked = json.dumps({**env, "data": {**env["data"], **numbers}}, ensure_ascii=False)
        self.ring.append(env)
        self._texts.append((text, masked))
        self._fold(env)
        return text, masked

    def _add(self, env: dict[str, Any]) -> dict[str, Any]:
        text, masked = self._keep(env)
        for c in list(self.clients):
            if c.overflowed or not c.wants(env, self.visible_to):
                continue
            try:
                c.queue.put_nowait(c.view(text, masked))
            except asyncio.QueueFull:  # a reader that stopped reading: cut it; it resumes from the ring
                c.overflowed = True
        return env

    def _fold(self, env: dict[str, Any]) -> None:
        call_id, kind = env["call_id"], env["kind"]
        if not call_id:
            return
        if kind == "call_ended":
            gone = self.live.pop(call_id, None)
            self._ended[call_id] = gone.seat if gone is not None else ""
            if len(self._ended) > 10_000:
                del self._ended[next(iter(self._ended))]
            return
        if kind not in CALL_FACTS and kind not in CHAIN_KINDS.values() and kind != "operator_action" \
                and kind not in REPEAT_KINDS:
            return
        if call_id in self._ended:  # recognition finishing after the hang-up: not a live call again
            return
        lc = self.live.setdefault(call_id, LiveCall())
        lc.last_event_id = env["id"]
        lc.state = STATE_AFTER.get(kind, lc.state)
        if env.get("instance"):
            lc.instance = env["instance"]
        if kind == "call_started":
            d = env["data"]
            lc.worker, lc.remote, lc.since = env["worker"], str(d.get("remote", "")), float(env["at"])
            lc.service_seat = str(d.get("seat", ""))
        if kind in REPEAT_KINDS:
            lc.repeat = {**(lc.repeat or {}), **env["data"]}
        elif kind == "seat_answered":  # from now on the call is that seat's operator's (and supervisors')
            lc.seat = str(env["data"].get("seat", ""))
        elif kind == "ivr_step":
            d = env["data"]
            was = lc.ivr or {}
            lc.ivr = {**was, "flow": d.get("flow"), "state": d.get("state"), "step": d.get("step"),
                      "detail": d.get("detail") or was.get("detail", ""),
                      "urgent": bool(d.get("urgent") or was.get("urgent")), "outcome": d.get("outcome", "")}
            if d.get("step") in ("danger", "queue") and d.get("detail") and not was.get("reason"):
                lc.ivr["reason"] = d["detail"]  # why the front desk did what it did: kept after the hand-over
            if d.get("step") == "heard":
                lc.ivr["heard"] = d.get("detail", "")
        elif kind == "overflowed":
            lc.ivr = {**(lc.ivr or {}), "overflow": {"status": env["data"].get("status"),
                                                      "reason": env["data"].get("reason", "")}}
        elif kind.startswith("queue_"):
            lc.ivr = {**(lc.ivr or {}), "queue": kind.removeprefix("queue_")}
        elif kind == "decision" and env["leg"] == "caller":
            lc.decision = env["data"]
        elif kind.startswith("transfer_"):
            d = env["data"]
            lc.transfer = {"target": d.get("target_id") or d.get("target"), "mode": d.get("mode"),
                           "step": kind.removeprefix("transfer_"), "reason": d.get("reason", "")}

    # -- out ------------------------------------------------------------------------------------
    def connect(self, user: User, since: int | None, run_id: str | None,
                credential: str = "") -> tuple[Client, dict[str, Any], list[str]]:
        """Register a client; returns it, its hello and the missed envelopes to send first.
        Registration and the replay are taken together on the loop thread: nothing can fall
        between them."""
        c = Client(user, credential)
        oldest = self.ring[0]["id"] if self.ring else self.last_id + 1
        resumed = since is not None and run_id in (None, self.run_id) and since >= oldest - 1 \
            and since <= self.last_id
        missed = [c.view(*t) for e, t in zip(self.ring, self._texts, strict=True)
                  if e["id"] > since and c.wants(e, self.visible_to)] if resumed else []
        hello = {"id": self.last_id, "at": round(time.time(), 3), "kind": "hello", "call_id": "", "leg": "",
                 "worker": "", "data": {"user": user.name, "role": user.role, "server": self.run_id,
                                        "resumed": resumed}}
        self.clients.add(c)
        return c, hello, missed

    def disconnect(self, c: Client) -> None:
        self.clients.discard(c)

    def streams_of(self, credential: str) -> int:
        return sum(1 for c in self.clients if c.credential == credential)

    def end_streams(self, credential: str, reason: str) -> int:
        """Close every stream opened with this session or token (logout, revocation, …)."""
        ended = [c for c in self.clients if c.credential == credential]
        for c in ended:
            c.end(reason)
        return len(ended)
