"""`fenliu serve`'s core: N SIP worker processes, recognition for every live leg, one event bus.

Where the work happens:
- each SIP worker (a process) holds up to 4 SIP legs and sends each leg's audio as datagrams;
- recognition (``asr.mode``):
  - ``processes`` (default): ASR processes receive the workers' audio directly and publish
    transcripts and decisions back (``fenliu.asr.service``) — the supervisor never sees a frame;
  - ``threads``: the issue-3 design, kept as the benchmark's baseline and for running without a
    model (the demo's reference transcripts): a frame thread per worker and one recognition
    thread per leg in this process, sharing its GIL;
- this process keeps the live-call table, sends the operator's commands, restarts a worker that
  died (with back-off, for ever), and publishes every fact and chain event on the ``EventBus``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fenliu.asr.engine import AsrEngine
from fenliu.asr.pipeline import StreamPipeline, call_router, vad_config
from fenliu.bus import CallEvent, EventBus, WorkerFact
from fenliu.errors import ConfigError, FenliuError, quoted
from fenliu.hotlines.linkage import Linkage, uri_host, uri_user
from fenliu.router import Router
from fenliu.router.rules import RuleSet, load_rules, parse_rules
from fenliu.service.controls import CentreControls
from fenliu.settings import Settings
from fenliu.sip import protocol as P
from fenliu.sip.dialogs import DialogId, release
from fenliu.sip.link import WorkerLink
from fenliu.sip.protocol import WorkerSettings, leg_label

log = logging.getLogger("fenliu.supervisor")

QUEUE_FRAMES = 500  # threads mode: 10 s of audio per leg before frames are dropped
RESTART_MAX_DELAY = 30.0

__all__ = ["CallEvent", "CallSession", "Supervisor", "WorkerFact"]


@dataclass
class LegStream:
    """Threads mode: one leg's audio on its way to recognition."""

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
    state: str = "ringing"
    degraded: str = ""
    transfer: str = ""
    site: str = ""  # the 110 site the call came in for (by called number / trunk): its own targets
    legs: dict[int, LegStream] = field(default_factory=dict)
    closed: bool = False

    @property
    def dropped(self) -> int:
        return sum(ls.dropped for ls in self.legs.values())


@dataclass
class WorkerState:
    name: str
    index: int
    state: str = "starting"  # starting, alive, restarting, dead, stopped
    pid: int = 0
    restarts: int = 0
    last_error: str = ""
    capacity: int = 0


class Supervisor:
    def __init__(self, settings: Settings, router: Router, engine: AsrEngine | None, bus: EventBus,
                 reference_for: Callable[[str], str | None] | None = None) -> None:
        self.settings = settings
        self.router = router
        self.engine = engine
        self.bus = bus
        # without a model (the demo on a machine with no Chinese model) the caller's reference
        # transcript, labelled as such, stands in for recognition (threads mode)
        self.reference_for = reference_for
        self.linkage = Linkage(settings)  # sites: a call's targets by its called number / trunk
        self.mode = settings.asr.mode if engine is not None else "threads"
        self.links: dict[str, WorkerLink] = {}
        self.workers: dict[str, WorkerState] = {}
        self.sessions: dict[tuple[str, int], CallSession] = {}
        self.dialogs: dict[str, dict[tuple[str, str], DialogId]] = {}  # worker -> (call id, leg) -> dialog
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.warmed = threading.Event()  # the start-up recognisers are ready (threads mode)
        self.controls = CentreControls()  # centre-wide switches (kept current from the store by the console)
        self.draining = ""  # why this instance takes no new calls ("" = it does)
        self.pool: Any = None
        self.front: Any = None  # the Kamailio front, when sip.front_port is set
        # the seats fenliu rings (sip.seats): the call each is ringing or talking to, when each was freed
        self.seats = tuple(x.strip() for x in settings.sip.seats.split(",") if x.strip())
        self.seat_calls: dict[str, str] = {}
        self.seat_freed: dict[str, float] = dict.fromkeys(self.seats, 0.0)
        self._next_turn = 0  # round robin: the seat after the one rung last

    # -- start-up ------------------------------------------------------------------------
    def check_targets(self) -> None:
        """Every hotline the rules can suggest must be dialable: a start-up error, not a surprise
        at the key."""
        missing = self.missing_targets(self.router.rules)
        if missing:
            raise ConfigError(f"配置错误 / the negative list diverts to {', '.join(missing)} but [transfer.targets] "
                              f"has no SIP URI for {'it' if len(missing) == 1 else 'them'}; add e.g. "
                              f"{missing[0]} = \"sip:{missing[0]}@pbx.example:5060\"")

    def missing_targets(self, rules: RuleSet) -> list[str]:
        """The hotlines a list can divert to that [transfer.targets] has no SIP URI for."""
        return sorted({c.target for c in rules.categories} - set(self.settings.transfer.targets))

    def legs_admitted(self) -> int:
        """How many legs the workers can have recognised at once (caller, and operator in seat mode)."""
        ws = self.worker_settings("probe", 0)
        return self.settings.sip.workers * ws.capacity() * (2 if ws.seat_uri or ws.queue_leg else 1)

    def _warm(self, n: int) -> None:
        try:
            self.engine.warm(n)  # type: ignore[union-attr]
        finally:
            self.warmed.set()

    def worker_ports(self, i: int) -> tuple[int, int]:
        s = self.settings.sip
        return s.port + i, s.rtp_port + i * s.rtp_range

    def worker_settings(self, name: str, index: int) -> WorkerSettings:
        """The one place SIP settings become a worker's configuration."""
        s = self.settings.sip
        ivr = self.settings.ivr
        sip_port, rtp_port = self.worker_ports(index)
        split = lambda v: tuple(x.strip() for x in v.split(",") if x.strip())  # noqa: E731
        # an IVR flow: in seat mode the seat's refusal overflows to it; when every call starts in
        # the flow the worker answers (the flow hands the caller to the seat/queue, a leg kept for it)
        seat = s.seat_uri or (self.seats[0] if self.seats else "")  # seat mode: one seat / the ACD, or the list
        front_first = bool(ivr.flow) and (ivr.when == "always" or not seat)
        return WorkerSettings(
            name=name, address=s.address, sip_port=sip_port, rtp_port=rtp_port, rtp_range=s.rtp_range,
            audio_paths=self.pool.audio_paths(name) if self.pool is not None else (),
            seat_uri="" if front_first else seat, overflow=bool(ivr.flow) and not front_first,
            seats=() if front_first else self.seat_order(), seat_ring=s.seat_ring if self.seats else 0.0,
            seat_timeout=ivr.seat_timeout, queue_leg=front_first,
            users=split(s.users) or ("*",), media_timeout=s.media_timeout,
            max_duration=s.max_duration, max_hold=s.max_hold, invite_max_age=s.front_timeout,
            reserve_transfer_leg=s.reserve_transfer_leg and self.settings.transfer.mode != "refer",
            allow=split(s.allow), registrar=s.registrar, reg_user=s.reg_user.replace("{i}", str(index)),
            reg_password=s.reg_password, reg_expires=s.reg_expires, reg_retry=s.reg_retry,
            session_expires=s.session_expires, transports=s.transports,
            tls_port=(s.tls_port or s.port + s.workers) + index if "tls" in s.transports else 0,
            tls_cert=s.tls_cert, tls_key=s.tls_key, seat_header=s.seat_header)

    # -- the seat list (sip.seats) --------------------------------------------------------
    def seat_order(self) -> tuple[str, ...]:
        """The order the next call rings the seats: the free ones first (the longest idle first,
        or in turn after the last one rung), then the taken ones (each answers busy or rings on)."""
        with self._lock:
            free = [x for x in self.seats if x not in self.seat_calls]
            taken = [x for x in self.seats if x in self.seat_calls]
            if self.settings.sip.seat_strategy == "round-robin":
                n = len(self.seats)
                turn = [self.seats[(self._next_turn + i) % n] for i in range(n)] if n else []
                free = [x for x in turn if x in free]
            else:
                free.sort(key=lambda x: self.seat_freed.get(x, 0.0))
            return tuple(free + taken)

    def _track_seat(self, fact: P.Fact) -> None:
        """A seat of the list was dialled, or left its call: the next call's order changes."""
        changed = False
        with self._lock:
            if isinstance(fact, P.LegDialing) and fact.leg == "operator" and fact.uri in self.seat_freed:
                self.seat_calls[fact.uri] = fact.call_id
                self._next_turn = (self.seats.index(fact.uri) + 1) % len(self.seats)
                changed = True
            elif isinstance(fact, P.LegEnded | P.CallEnded) and (not isinstance(fact, P.LegEnded)
                                                                 or fact.leg == "operator"):
                for seat in [x for x, cid in self.seat_calls.items() if cid == fact.call_id]:
                    del self.seat_calls[seat]
                    self.seat_freed[seat] = time.time()
                    changed = True
        if changed:
            order = P.SeatOrder(self.seat_order())
            for link in list(self.links.values()):
                try:
                    link.send(order)
                except Exception:  # noqa: BLE001 - a worker restarting gets the order with its settings
                    pass

    def start(self) -> None:
        self.check_targets()
        sip = self.settings.sip
        names = [f"w{i}" for i in range(sip.workers)]
        if self.mode == "processes":
            from fenliu.asr.service import AsrJob, AsrPool

            n = self.settings.asr.processes or os.cpu_count() or 1
            self.pool = AsrPool(n, names, lambda name, socks: AsrJob(name, self.settings, self.router, self.engine,
                                                                     socks), self._from_asr)
            self.pool.start()
            self.warmed.set()  # each process warms before it says ready (the rest in its background)
        elif self.engine is not None and hasattr(self.engine, "warm"):
            # threads mode: warm recognisers in the background (Vosk releases the GIL), so the first
            # calls do not each spend ~1 s of CPU on a fresh recogniser
            self.router.decide("热身：楼上装修太吵了")
            threading.Thread(target=self._warm, args=(self.settings.asr.warm_streams or self.legs_admitted(),),
                             name="asr-warm", daemon=True).start()
        else:
            self.warmed.set()
        for i, name in enumerate(names):
            self.workers[name] = WorkerState(name, i)
            self._start_worker(name, i)
        if sip.front_port:
            from fenliu.sip.front.kamailio import KamailioFront

            self.front = KamailioFront(sip.address, sip.front_port,
                                       [(sip.address, self.worker_ports(i)[0]) for i in range(sip.workers)],
                                       fallback_uri=sip.fallback_uri, fr_timer_ms=int(sip.front_timeout * 1000),
                                       on_line=lambda line: self._publish("front", P.FrontEvent(line)),
                                       transports=sip.transports, tls_port=sip.front_tls_port or sip.front_port + 1,
                                       tls_cert=sip.tls_cert, tls_key=sip.tls_key,
                                       worker_tls_ports=[self.worker_settings(n, i).tls_port
                                                         for i, n in enumerate(self.workers)])
            self.front.start()
            self._publish("front", P.FrontReady(sip.address, sip.front_port, sip.workers))

    def _start_worker(self, name: str, index: int) -> None:
        ws = self.workers[name]

        def on_frame(slot: int, leg: int, seq: int, pcm: bytes) -> None:
            self._frame(name, slot, leg, pcm)

        def on_fact(fact: P.Fact) -> None:
            self._on_fact(name, fact)

        link = WorkerLink(self.worker_settings(name, index), on_frame=on_frame if self.pool is None else None,
                          on_fact=on_fact)
        ready = link.start()
        self.links[name] = link
        if self.draining:  # restarted while the instance drains: no new calls for it either
            link.send(P.Drain(self.draining))
        ws.state, ws.pid, ws.capacity, ws.last_error = "alive", ready.pid, ready.capacity, ""

    def _publish(self, worker: str, fact: P.Fact) -> None:
        self.bus.publish(WorkerFact(worker, fact))

    # -- facts from workers (a link's reader thread) ----------------------------------------
    def _on_fact(self, name: str, fact: P.Fact) -> None:
        if isinstance(fact, P.LegDialog | P.LegEnded | P.CallEnded):
            self._track_dialog(name, fact)
        if self.seats and isinstance(fact, P.LegDialing | P.LegEnded | P.CallEnded):
            self._track_seat(fact)
        if isinstance(fact, P.CallStarted):
            self._open_session(name, fact)
        elif isinstance(fact, P.CallAnswered | P.TransferUpdate):
            with self._lock:
                s = self._find(fact.call_id)
                if s is not None:
                    if isinstance(fact, P.CallAnswered):
                        s.state = "talking"
                    else:
                        s.transfer = fact.kind
        self._publish(name, fact)
        if isinstance(fact, P.CallEnded):
            self._close_session(name, fact.slot, fact.call_id)
        elif isinstance(fact, P.WorkerLost):
            threading.Thread(target=self._restart, args=(name,), name=f"restart-{name}", daemon=True).start()

    def _track_dialog(self, name: str, fact: P.LegDialog | P.LegEnded | P.CallEnded) -> None:
        with self._lock:
            mine = self.dialogs.setdefault(name, {})
            if isinstance(fact, P.LegDialog):
                mine[(fact.call_id, fact.leg)] = DialogId(fact.sip_call_id, fact.local, fact.remote, fact.target,
                                                          tuple(fact.routes))
            elif isinstance(fact, P.LegEnded):
                mine.pop((fact.call_id, fact.leg), None)
            else:
                for key in [k for k in mine if k[0] == fact.call_id]:
                    del mine[key]

    def _release_orphans(self, name: str, index: int) -> None:
        """Hang up, from the dead worker's address, every leg it still had: a hotline or a seat
        must not stay on a silent line, a caller must not wait for a BYE answer."""
        with self._lock:
            orphans = self.dialogs.pop(name, {})
        if not orphans:
            return
        sip_port, _ = self.worker_ports(index)
        status = release(list(orphans.values()), self.settings.sip.address, sip_port,
                         reason=f"fenliu worker {name} restarted")
        self._publish(name, P.OrphansReleased(name, tuple(f"{cid}/{leg}={status.get(d.sip_call_id, 0)}"
                                                          for (cid, leg), d in orphans.items())))

    def _restart(self, name: str) -> None:
        """A crashed worker affects only its own calls: record them as ended, start it again —
        with back-off, for as long as it takes (a held port, a slow machine)."""
        ws = self.workers[name]
        ws.state = "restarting"
        old = self.links.pop(name, None)
        with self._lock:
            orphans = [s for k, s in self.sessions.items() if k[0] == name]
        for s in orphans:
            self._publish(name, P.CallEnded(s.call_id, s.slot, 0, f"worker {name} lost (crashed); call ended"))
            self._close_session(name, s.slot, s.call_id)
        if self.pool is not None:
            self.pool.worker_gone(name)
        if old is not None:
            old.stop(timeout=1)
        self._release_orphans(name, ws.index)
        attempt = 0
        while not self._stopping.is_set():
            attempt += 1
            delay = min(0.5 * 2 ** (attempt - 1), RESTART_MAX_DELAY)
            if self._stopping.wait(0.5 if attempt == 1 else 0):
                return
            try:
                self._start_worker(name, ws.index)
            except FenliuError as e:
                ws.state, ws.last_error = "dead", str(e)
                self._publish(name, P.RestartFailed(name, attempt, str(e), delay))
                if self._stopping.wait(delay):
                    return
                continue
            ws.restarts += 1
            self._publish(name, P.WorkerRestarted(name, ws.restarts))
            return

    # -- facts from ASR processes ----------------------------------------------------------
    def _from_asr(self, item: Any) -> None:
        kind = item[0]
        if kind == "event":
            _, call_id, leg, worker, ev = item
            self.bus.publish(CallEvent(call_id, leg, worker, ev))
        elif kind == "fact":
            _, worker, fact = item
            if isinstance(fact, P.CallDegraded):
                with self._lock:
                    s = self._find(fact.call_id)
                    if s is not None:
                        s.degraded = fact.reason
            self._publish(worker, fact)
        elif kind == "lost" and not self._stopping.is_set():
            self._publish("asr", P.WorkerError(f"ASR process {item[1]} died; restarting it (its legs lose live "
                                               f"suggestions until then)"))
            threading.Thread(target=self.pool.restart, args=(item[1],), daemon=True).start()

    # -- calls ------------------------------------------------------------------------
    def _open_session(self, worker: str, ev: P.CallStarted) -> None:
        site = self.linkage.site_for(uri_user(ev.local), uri_host(ev.remote)) if self.settings.sites else ""
        s = CallSession(call_id=ev.call_id, worker=worker, slot=ev.slot, remote=ev.remote, started=time.time(),
                        site=site)
        with self._lock:
            self.sessions[(worker, s.slot)] = s
            if self.pool is None:
                self._open_leg(s, 0)

    def _find(self, call_id: str) -> CallSession | None:
        return next((s for s in self.sessions.values() if s.call_id == call_id), None)

    def _open_leg(self, s: CallSession, leg: int) -> LegStream:
        """Threads mode: a recognition stream for one leg (caller at call start, the others on
        their first frame). Only the caller's words drive the router."""
        name = leg_label(leg)
        router = call_router(self.router, self.settings, s.call_id) if leg == 0 else None
        reference = self.reference_for(s.call_id) if (self.engine is None and leg == 0 and self.reference_for) \
            else None
        pipe = StreamPipeline(f"{s.call_id}/{name}", 16000, self.engine, vad=vad_config(self.settings),
                              vad_enabled=self.settings.vad.enabled, router=router, reference_text=reference)
        ls = LegStream(name)
        ls.thread = threading.Thread(target=self._recognise, args=(s, ls, pipe), name=f"asr-{s.call_id[:8]}-{name}",
                                     daemon=True)
        s.legs[leg] = ls
        ls.thread.start()
        return ls

    def _close_session(self, worker: str, slot: int, call_id: str) -> None:
        with self._lock:
            s = self.sessions.get((worker, slot))
            if s is None or s.call_id != call_id:
                return
            del self.sessions[(worker, slot)]
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
            if ls.dropped == 1:  # say so once: the operator sees "live suggestion delayed/unavailable"
                why = (f"识别落后超过 {QUEUE_FRAMES * 20 / 1000:.0f} 秒，实时建议不可靠 / recognition more than "
                       f"{QUEUE_FRAMES * 20 / 1000:.0f} s behind: audio is being dropped, live suggestion unreliable")
                s.degraded = why
                self._publish(worker, P.CallDegraded(s.call_id, why, ls.leg))

    def _recognise(self, s: CallSession, ls: LegStream, pipe: StreamPipeline) -> None:
        try:
            while True:
                pcm = ls.frames.get()
                if pcm is None:
                    break
                for ev in pipe.push(pcm):
                    self.bus.publish(CallEvent(s.call_id, ls.leg, s.worker, ev))
            for ev in pipe.close():
                self.bus.publish(CallEvent(s.call_id, ls.leg, s.worker, ev))
            self._publish(s.worker, P.AsrDone(s.call_id, ls.leg, ls.dropped, round(pipe.t, 2),
                                              round(pipe.recognised_seconds, 2)))
        except Exception as e:  # one call's failure must not take down the others
            log.exception("ASR failed for call %s", s.call_id)
            self._publish(s.worker, P.WorkerError(f"recognition failed: {e}", s.call_id))

    # -- the one key ------------------------------------------------------------------
    def resolve_target(self, target: str, mode: str | None, site: str = "",
                       allow_raw: bool = False) -> tuple[str, str]:
        """A target id's SIP URI for the call's site ([sites.X.targets] over [transfer.targets]).
        A SIP address is taken only when it is a configured target's, or ``allow_raw`` (the API
        decides: transfer.allow_uris for a role); else PermissionError — a 110 caller is never
        sent to an address nobody configured."""
        t = self.settings.transfer
        targets = self.linkage.targets_for(site)
        if target.startswith(("sip:", "sips:")):
            if target not in targets.values() and not allow_raw:
                raise PermissionError(f"不允许的转接去向 / {quoted(target)!r} is not a configured target: a caller is "
                                      f"transferred only to {', '.join(sorted(targets))} (by id); raw SIP addresses "
                                      f"need transfer.allow_uris")
            uri: str | None = target
        else:
            uri = targets.get(target)
        if uri is None:
            raise ValueError(f"unknown target {quoted(target)!r}; configured: {', '.join(sorted(targets))}")
        mode = mode or t.mode
        if mode not in ("three-way", "refer", "attended"):
            raise ValueError(f"unknown transfer mode {quoted(mode)!r}: use three-way, refer or attended")
        return uri, mode

    def targets_of(self, call_id: str) -> dict[str, str]:
        """The target ids (and SIP URIs) a live call can be transferred to: its site's."""
        return self.linkage.targets_for(self._session(call_id).site)

    def transfer(self, call_id: str, target: str, mode: str | None = None, allow_raw: bool = False) -> dict[str, Any]:
        """Ask the call's worker to transfer it. ``target`` is a target id (12345, 12348, …,
        social) from settings, or a configured target's SIP URI (any other only with
        ``allow_raw``). Progress and the outcome arrive on the bus."""
        s = self._session(call_id)  # first: a call that is not live is that, whatever the target
        uri, mode = self.resolve_target(target, mode, s.site, allow_raw)
        t = self.settings.transfer
        self._link(s).send(P.Transfer(s.call_id, uri, P.TransferMode(mode), t.answer_timeout, t.drop_operator_after,
                                         t.min_talk))
        return {"call_id": s.call_id, "target": target, "uri": uri, "mode": mode, "status": "requested"}

    def cancel_transfer(self, call_id: str) -> dict[str, Any]:
        s = self._session(call_id)
        self._link(s).send(P.CancelTransfer(s.call_id))
        return {"call_id": s.call_id, "status": "requested"}

    def reload_rules(self, text: str | None = None) -> tuple[str, str]:
        """Replace the negative list: re-read ``router.rules_path`` (or the shipped list), or
        validate ``text`` and write it there. New calls use the new list; a call in progress
        keeps the list it started with. A bad list raises RuleListError (file:line) and the old
        one stays active. Returns (new version, previous version)."""
        if self.mode == "processes":
            raise RuntimeError("asr.mode = processes: the ASR processes hold their own copy of the list; "
                               "restart fenliu serve to load the edited list")
        path = self.settings.router.rules_path or None
        if text is not None:
            if path is None:
                raise RuntimeError("the shipped list cannot be edited in place: copy it, set router.rules_path "
                                   "to the copy and restart")
            rules = parse_rules(text, path)
        else:
            rules = load_rules(path)
        new = Router(rules, model=self.router.model)
        missing = self.missing_targets(rules)
        if missing:
            raise ConfigError(f"{path or 'negative list'}: diverts to {', '.join(missing)}, which [transfer.targets] "
                              f"does not have; add it to the configuration first")
        if text is not None and path is not None:
            tmp = Path(path).with_suffix(".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
        previous, self.router = self.router.rules.version, new
        return rules.version, previous

    def release_operator(self, call_id: str) -> dict[str, Any]:
        s = self._session(call_id)
        self._link(s).send(P.ReleaseOperator(s.call_id))
        return {"call_id": s.call_id, "status": "requested"}

    def hangup(self, call_id: str, reason: str = "") -> dict[str, Any]:
        s = self._session(call_id)
        self._link(s).send(P.Hangup(s.call_id, reason))
        return {"call_id": s.call_id, "status": "requested"}

    # -- drain: out of rotation, the live calls end by themselves ------------------------------
    def drain(self, reason: str = "draining") -> int:
        """Every worker takes no new call (503: the front sends it to another instance) — also a
        worker restarted meanwhile; returns how many calls are still live."""
        self.draining = reason
        for link in list(self.links.values()):
            try:
                link.send(P.Drain(reason))
            except OSError:
                pass  # a worker restarting: it gets the drain with its start
        with self._lock:
            return len(self.sessions)

    def live_calls(self) -> int:
        with self._lock:
            return len(self.sessions)

    def play(self, call_id: str, wav: str, leg: str = "caller", token: str = "") -> dict[str, Any]:
        s = self._session(call_id)
        self._link(s).send(P.Play(s.call_id, wav, leg, token))
        return {"call_id": s.call_id, "status": "requested"}

    def stop_prompt(self, call_id: str) -> dict[str, Any]:
        s = self._session(call_id)
        self._link(s).send(P.StopPrompt(s.call_id))
        return {"call_id": s.call_id, "status": "requested"}

    def to_queue(self, call_id: str, uri: str = "", timeout: float | None = None) -> dict[str, Any]:
        """Hand the caller to the operators' queue (``ivr.queue_uri``, else the seat); the
        outcome arrives as QueueUpdate on the bus."""
        s = self._session(call_id)
        uri = uri or self.settings.ivr.queue_uri or self.settings.sip.seat_uri
        if not uri.startswith("sip:"):
            raise ValueError("no operators' queue configured: set ivr.queue_uri (or sip.seat_uri)")
        self._link(s).send(P.ToQueue(s.call_id, uri, timeout or self.settings.ivr.queue_timeout))
        return {"call_id": s.call_id, "uri": uri, "status": "requested"}

    def _link(self, s: CallSession) -> WorkerLink:
        link = self.links.get(s.worker)
        if link is None:
            raise LookupError(f"the worker of call {s.call_id} is restarting; the call has ended")
        return link

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
                     "since": s.started, "state": s.state, "transfer": s.transfer, "degraded": s.degraded,
                     "dropped_frames": s.dropped} for s in self.sessions.values()]

    def health(self) -> dict[str, Any]:
        """Each worker as it really is (a dead one is reported dead), the ASR processes, the front."""
        from fenliu.sip.link import pid_alive

        workers = []
        for ws in self.workers.values():
            state = ws.state
            if state == "alive" and ws.pid and not pid_alive(ws.pid):
                state = "dead"
            workers.append({"name": ws.name, "state": state, "pid": ws.pid, "restarts": ws.restarts,
                            "capacity": ws.capacity, "error": ws.last_error})
        asr = []
        if self.pool is not None:
            for p in self.pool.procs:
                st = p.stats
                asr.append({"name": p.name, "pid": p.pid, "alive": bool(p.pid) and pid_alive(p.pid),
                            "streams": st.streams if st else 0, "degraded": st.degraded if st else 0,
                            "lag_max_s": st.lag_max_s if st else 0.0})
        ok = all(w["state"] == "alive" for w in workers) and all(a["alive"] for a in asr)
        return {"ok": ok, "mode": self.mode, "workers": workers, "asr": asr, "calls": len(self.sessions),
                "front": bool(self.front)}

    def stop(self) -> None:
        """Idempotent: workers hang up politely and exit; recognition finishes its calls."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self.front is not None:
            self.front.stop()
        links = list(self.links.values())
        for link in links:  # all at once: each worker hangs up its calls while the others do
            link.request_stop()
        for link in links:
            link.stop()
        for ws in self.workers.values():
            ws.state = "stopped"
        with self._lock:
            sessions = list(self.sessions.values())
        for s in sessions:
            self._close_session(s.worker, s.slot, s.call_id)
        for s in sessions:
            for ls in s.legs.values():
                if ls.thread is not None:
                    ls.thread.join(10)
        if self.pool is not None:
            self.pool.stop()
        self.bus.drain()
