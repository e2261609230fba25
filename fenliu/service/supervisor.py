"""`fenliu serve`'s core: N SIP worker processes, one ASR pipeline per live call.

Thread boundaries (one each, documented here):
- a worker link's frame thread puts 20 ms frames on the call's queue and returns at once
  (a full queue drops the frame and counts it: the media path is never held up by ASR);
- one ASR thread per call takes frames off its queue and runs the ``StreamPipeline``
  (Vosk releases the GIL in its C calls, so calls recognise in parallel);
- a worker link's event thread turns worker facts into call sessions, and restarts a worker
  that died, with back-off.
Every event the chain produces, tagged with the call id and leg, goes to ``on_event``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fenliu.asr.engine import AsrEngine
from fenliu.asr.pipeline import StreamPipeline
from fenliu.events import Event
from fenliu.router import Router
from fenliu.service.settings import Settings
from fenliu.service.wiring import call_router, vad_config
from fenliu.sip.link import WorkerLink
from fenliu.sip.protocol import LEG_NAMES

log = logging.getLogger("fenliu.supervisor")

QUEUE_FRAMES = 500  # 10 s of audio per leg before frames are dropped


@dataclass
class LegStream:
    """One leg's audio on its way to recognition: a bounded queue and the thread draining it."""

    leg: str
    frames: queue.Queue[bytes | None] = field(default_factory=lambda: queue.Queue(QUEUE_FRAMES))
    dropped: int = 0
    thread: threading.Thread | None = None


@dataclass
class CallSession:
    call_id: str
    worker: str
    slot: int
    remote: str
    started: float
    legs: dict[int, LegStream] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    closed: bool = False

    @property
    def dropped(self) -> int:
        return sum(ls.dropped for ls in self.legs.values())


@dataclass(frozen=True)
class CallEvent:
    """A chain event of one live call, with where it came from."""

    call_id: str
    leg: str
    worker: str
    event: Event


@dataclass(frozen=True)
class WorkerFact:
    """Something a worker reported (call started/answered/ended, restarts, errors)."""

    worker: str
    data: dict[str, Any]


class Supervisor:
    def __init__(self, settings: Settings, router: Router, engine: AsrEngine | None,
                 on_event: Callable[[CallEvent | WorkerFact], None],
                 reference_for: Callable[[dict[str, Any]], str | None] | None = None) -> None:
        self.settings = settings
        self.router = router
        self.engine = engine
        self.on_event = on_event
        # without a model (the demo on a machine with no Chinese model) the caller's reference
        # transcript, labelled as such, stands in for recognition
        self.reference_for = reference_for
        self.links: dict[str, WorkerLink] = {}
        self.sessions: dict[tuple[str, int], CallSession] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watchers: list[threading.Thread] = []
        self.restarts: dict[str, int] = {}
        self.front: Any = None  # the Kamailio front, when sip.front_port is set

    # -- workers -----------------------------------------------------------------------
    def worker_ports(self, i: int) -> tuple[int, int]:
        s = self.settings.sip
        return s.port + i, s.rtp_port + i * s.rtp_range

    def start(self) -> None:
        sip = self.settings.sip
        for i in range(sip.workers):
            self._start_worker(f"w{i}", i)
        if sip.front_port:
            from fenliu.sip.kamailio import KamailioFront

            self.front = KamailioFront(sip.address, sip.front_port,
                                       [(sip.address, self.worker_ports(i)[0]) for i in range(sip.workers)])
            self.front.start()
            self.on_event(WorkerFact("front", {"event": "front_ready", "address": sip.address,
                                               "port": sip.front_port, "workers": sip.workers}))

    def _start_worker(self, name: str, index: int) -> None:
        sip_port, rtp_port = self.worker_ports(index)
        link = WorkerLink(name, sip_port, rtp_port, address=self.settings.sip.address,
                          on_frame=lambda slot, leg, seq, pcm, n=name: self._frame(n, slot, leg, pcm),
                          rtp_range=self.settings.sip.rtp_range, seat_uri=self.settings.sip.seat_uri,
                          users=self.settings.sip.users, media_timeout=self.settings.sip.media_timeout,
                          allow=self.settings.sip.allow, registrar=self.settings.sip.registrar,
                          reg_user=self.settings.sip.reg_user.replace("{i}", str(index)),
                          reg_password=self.settings.sip.reg_password, reg_expires=self.settings.sip.reg_expires,
                          reg_retry=self.settings.sip.reg_retry)
        ready = link.start()
        self.links[name] = link
        self.on_event(WorkerFact(name, ready))
        t = threading.Thread(target=self._watch, args=(name, index, link), name=f"watch-{name}", daemon=True)
        t.start()
        self._watchers.append(t)

    def _watch(self, name: str, index: int, link: WorkerLink) -> None:
        while not self._stopping.is_set():
            try:
                ev = link.events.get(timeout=0.5)
            except queue.Empty:
                continue
            kind = ev.get("event")
            if kind == "call_started":
                self._open_session(name, ev)
            elif kind == "call_ended":
                self._close_session(name, ev)
            self.on_event(WorkerFact(name, ev))
            if kind == "worker_lost":
                self._restart(name, index, link)
                return

    def _restart(self, name: str, index: int, link: WorkerLink) -> None:
        """A crashed worker affects only its own calls: close them, start it again."""
        for key in [k for k in self.sessions if k[0] == name]:
            self._close_session(name, {"slot": key[1], "call_id": self.sessions[key].call_id,
                                       "reason": "worker lost"})
        link.stop(timeout=1)
        n = self.restarts.get(name, 0) + 1
        self.restarts[name] = n
        delay = min(0.5 * 2 ** (n - 1), 10.0)
        if self._stopping.wait(delay):
            return
        try:
            self._start_worker(name, index)
            self.on_event(WorkerFact(name, {"event": "worker_restarted", "restarts": n}))
        except Exception as e:
            self.on_event(WorkerFact(name, {"event": "error", "message": f"restart failed: {e}"}))

    # -- calls ------------------------------------------------------------------------
    def _open_session(self, worker: str, ev: dict[str, Any]) -> None:
        s = CallSession(call_id=ev["call_id"], worker=worker, slot=ev["slot"], remote=ev.get("remote", ""),
                        started=time.time(), info=ev)
        with self._lock:
            self.sessions[(worker, s.slot)] = s
            self._open_leg(s, 0)

    def _open_leg(self, s: CallSession, leg: int) -> LegStream:
        """A recognition stream for one leg (caller at call start, the others on their first
        frame). Only the caller's words drive the router; the operator's and the hotline's
        transcripts are separate speakers in the record."""
        name = LEG_NAMES.get(leg, f"leg{leg}")
        router = call_router(self.router, self.settings, s.call_id) if leg == 0 else None
        reference = self.reference_for(s.info) if (self.engine is None and leg == 0 and self.reference_for) else None
        pipe = StreamPipeline(f"{s.call_id}/{name}", 16000, self.engine, vad=vad_config(self.settings),
                              vad_enabled=self.settings.vad.enabled, router=router, reference_text=reference)
        ls = LegStream(name)
        ls.thread = threading.Thread(target=self._recognise, args=(s, ls, pipe), name=f"asr-{s.call_id[:8]}-{name}",
                                     daemon=True)
        s.legs[leg] = ls
        ls.thread.start()
        return ls

    def _close_session(self, worker: str, ev: dict[str, Any]) -> None:
        with self._lock:
            s = self.sessions.pop((worker, ev["slot"]), None) if "slot" in ev else None
            if s is None:
                s = next((x for k, x in self.sessions.items() if x.call_id == ev.get("call_id")), None)
                if s is not None:
                    del self.sessions[(s.worker, s.slot)]
        if s is not None:
            with self._lock:
                s.closed = True
                for ls in s.legs.values():
                    ls.frames.put(None)  # the end of the stream: FinalResult and close

    def _frame(self, worker: str, slot: int, leg: int, pcm: bytes) -> None:
        s = self.sessions.get((worker, slot))
        if s is None:
            return
        ls = s.legs.get(leg)
        if ls is None:
            with self._lock:
                if s.closed:
                    return
                ls = s.legs.get(leg) or self._open_leg(s, leg)
        try:
            ls.frames.put_nowait(pcm)
        except queue.Full:
            ls.dropped += 1

    def _recognise(self, s: CallSession, ls: LegStream, pipe: StreamPipeline) -> None:
        try:
            while True:
                pcm = ls.frames.get()
                if pcm is None:
                    break
                for ev in pipe.push(pcm):
                    self.on_event(CallEvent(s.call_id, ls.leg, s.worker, ev))
            for ev in pipe.close():
                self.on_event(CallEvent(s.call_id, ls.leg, s.worker, ev))
            self.on_event(WorkerFact(s.worker, {"event": "call_asr_done", "call_id": s.call_id, "leg": ls.leg,
                                                "dropped_frames": ls.dropped, "audio_s": round(pipe.t, 2),
                                                "recognised_s": round(pipe.recognised_seconds, 2)}))
        except Exception as e:  # one call's failure must not take down the others
            log.exception("ASR failed for call %s", s.call_id)
            self.on_event(WorkerFact(s.worker, {"event": "error", "call_id": s.call_id, "message": str(e)}))

    # -- the one key ------------------------------------------------------------------
    def transfer(self, call_id: str, target: str, mode: str | None = None) -> dict[str, Any]:
        """Ask the call's worker to transfer it. ``target`` is a target id (12345, 12348, …,
        social) from settings, or a SIP URI. Progress and the outcome arrive as events."""
        t = self.settings.transfer
        uri = target if target.startswith("sip:") else t.targets.get(target)
        if uri is None:
            raise ValueError(f"unknown target {target!r}; configured: {', '.join(sorted(t.targets))}")
        mode = mode or t.mode
        if mode not in ("three-way", "refer", "attended"):
            raise ValueError(f"unknown transfer mode {mode!r}: use three-way, refer or attended")
        s = self._session(call_id)
        self.links[s.worker].send(cmd="transfer", call_id=s.call_id, target=uri, mode=mode,
                                  timeout=t.answer_timeout, drop_operator_after=t.drop_operator_after)
        return {"call_id": s.call_id, "target": target, "uri": uri, "mode": mode, "status": "requested"}

    def release_operator(self, call_id: str) -> dict[str, Any]:
        s = self._session(call_id)
        self.links[s.worker].send(cmd="release_operator", call_id=s.call_id)
        return {"call_id": s.call_id, "status": "requested"}

    def hangup(self, call_id: str) -> dict[str, Any]:
        s = self._session(call_id)
        self.links[s.worker].send(cmd="hangup", call_id=s.call_id)
        return {"call_id": s.call_id, "status": "requested"}

    def _session(self, call_id: str) -> CallSession:
        """Exact call id, or a prefix that names exactly one live call."""
        with self._lock:
            found = [s for s in self.sessions.values() if s.call_id.startswith(call_id)] if call_id else []
        exact = [s for s in found if s.call_id == call_id]
        if exact or len(found) == 1:
            return (exact or found)[0]
        if found:
            raise LookupError(f"{call_id!r} matches {len(found)} live calls; give more of the call id")
        raise LookupError(f"no live call {call_id!r}")

    def calls(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"call_id": s.call_id, "worker": s.worker, "slot": s.slot, "remote": s.remote,
                     "since": s.started, "dropped_frames": s.dropped} for s in self.sessions.values()]

    def stop(self) -> None:
        """Idempotent: workers hang up politely and exit; ASR threads finish their calls."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self.front is not None:
            self.front.stop()
        for link in list(self.links.values()):
            link.stop()
        sessions = list(self.sessions.values())
        for s in sessions:
            self._close_session(s.worker, {"slot": s.slot})
        for s in sessions:
            for ls in s.legs.values():
                if ls.thread is not None:
                    ls.thread.join(10)
        self.sessions.clear()
