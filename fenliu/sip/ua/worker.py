"""One SIP worker process: one pjsua2 endpoint on its own SIP port and RTP range.

The pjsua2 wheel holds at most 4 calls per endpoint and one endpoint per process, so the
service runs several of these under a supervisor. A worker:

- admits as many conversations as leave a SIP leg for each one's transfer (a three-way call
  needs a third leg); the next caller gets 486 and is reported (``CallRejected``);
- answers them (or rings the caller and dials the operator seat: B2BUA mode);
- taps each leg's received audio at 16 kHz and sends 20 ms frames as datagrams to its
  recogniser (the supervisor or an ASR process), never blocking the media clock;
- reports facts and takes commands as typed messages (``fenliu.sip.protocol``); what a
  hang-up or a failed transfer means is decided by ``fenliu.sip.conversation``, this module
  only carries it out on pjsua2.

Threading (FIELD-NOTES): ``mainThreadOnly`` with ``libHandleEvents`` in this process's main
loop, so SIP callbacks run here; ``onFrameReceived`` runs on the media clock thread and only
copies bytes and sends a datagram. Every callback catches its own exceptions: one escaping
into C++ keeps objects alive and aborts the process at exit.

Lifetimes (so the conference bridge's ports and the memory stay bounded however many calls a
worker takes): a ``Call`` object is dropped inside its own DISCONNECTED callback, never later
— pjsua reuses the call id at once, and pjsua2's ``~Call`` hangs up whatever call holds its id
by then. Tap ports and prompt players own their bridge slot, so they are kept for a short
grace period after their leg (the media thread may still be in them) and then released.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import socket
import sys
import time
import traceback
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pjsua2 as pj

from fenliu.sip import protocol as P
from fenliu.sip.conversation import (
    Action,
    AnswerCaller,
    Bridge,
    Conversation,
    Dial,
    Emit,
    Finish,
    HangupAll,
    HangupLeg,
    ProbeCaller,
    Refer,
    ReferReplaces,
    RejectCaller,
)
from fenliu.sip.dialogs import answering_seat, dialog_from, moved_to_seat
from fenliu.sip.protocol import FRAME_HEADER, LEG_CLOSE, LEG_OPEN, RELAYED_HEADER, Leg, WorkerSettings
from fenliu.sip.ua.endpoint import (
    CLOCK_RATE,
    account_config,
    serve_until_signalled,
    start_endpoint,
)
from fenliu.sip.ua.framecopy import make_copier

log = logging.getLogger("fenliu.sip.ua.worker")

FRAME_MS = 20
RELEASE_AFTER_S = 2.0  # keep an ended leg's pjsua2 objects this long, then let them go
PLAYER_RELEASE_AFTER_S = 0.2  # a prompt that ended or was stopped mid-call


class Uplink:
    """The two sockets to the supervisor. ``send`` is called on the main thread only;
    ``frame`` on the media thread (sendto on a datagram socket is thread-safe)."""

    def __init__(self, control_path: str) -> None:
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control.connect(control_path)
        self.audio = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.audio.setblocking(False)
        self.audio_paths: tuple[str, ...] = ()
        self._inbox = b""
        self.dropped_frames = 0

    def configure(self, timeout: float = 10.0) -> WorkerSettings:
        """The first message down is the whole configuration."""
        self.control.settimeout(timeout)
        while b"\n" not in self._inbox:
            data = self.control.recv(65536)
            if not data:
                raise ConnectionError("supervisor closed the control socket before configuring")
            self._inbox += data
        line, self._inbox = self._inbox.split(b"\n", 1)
        msg = P.decode(line)
        if not isinstance(msg, P.Configure):
            raise P.ProtocolError(f"expected Configure first, got {type(msg).__name__}")
        self.control.setblocking(False)
        self.audio_paths = msg.settings.audio_paths or ("",)
        return msg.settings

    def send(self, fact: P.Fact) -> None:
        self.control.setblocking(True)
        try:
            self.control.sendall(P.encode(fact))
        finally:
            self.control.setblocking(False)

    def frame(self, slot: int, leg: int, seq: int, pcm: bytes) -> None:
        try:
            self.audio.sendto(FRAME_HEADER.pack(slot, leg, seq & 0xFFFFFFFF) + pcm,
                              self.audio_paths[slot % len(self.audio_paths)])
        except (BlockingIOError, ConnectionRefusedError, FileNotFoundError):
            self.dropped_frames += 1

    def mark(self, slot: int, marker: int, payload: bytes = b"") -> None:
        """A control datagram (leg open / close) in order with the frames."""
        for _ in range(50):
            try:
                self.audio.sendto(FRAME_HEADER.pack(slot, marker, 0) + payload,
                                  self.audio_paths[slot % len(self.audio_paths)])
                return
            except BlockingIOError:
                time.sleep(0.002)  # the receiver is behind: wait a little, markers must arrive
            except (ConnectionRefusedError, FileNotFoundError):
                return

    def commands(self) -> list[P.Message]:
        try:
            data = self.control.recv(65536)
        except BlockingIOError:
            return []
        if not data:
            return [P.Shutdown("supervisor closed the control socket")]
        self._inbox += data
        out: list[P.Message] = []
        while b"\n" in self._inbox:
            line, self._inbox = self._inbox.split(b"\n", 1)
            if line.strip():
                try:
                    out.append(P.decode(line))
                except P.ProtocolError as e:
                    log.warning("bad command from supervisor: %s", e)
        return out


class TapPort(pj.AudioMediaPort):
    """Receives one leg's audio from the conference bridge, 20 ms at a time."""

    def __init__(self, worker: Worker, slot: int, leg: int) -> None:
        super().__init__()
        self.worker, self.slot, self.leg = worker, slot, leg
        self.seq = 0
        self.callback_ns = 0  # total time spent in onFrameReceived (for the benchmark)

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:  # noqa: N802 (pjsua2 override)
        start = time.perf_counter_ns()
        try:  # nothing may escape into the media thread (not even a half-torn-down self)
            if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO:
                pcm = self.worker.copy(frame.buf)
                if pcm:
                    self.worker.uplink.frame(self.slot, self.leg, self.seq, pcm)
                    self.seq += 1
            self.callback_ns += time.perf_counter_ns() - start
        except BaseException:
            with contextlib.suppress(BaseException):
                self.worker.callback_errors += 1


class LegCall(pj.Call):
    """Any leg of a conversation; callbacks go to the worker with the leg's role."""

    def __init__(self, worker: Worker, account: pj.Account, call_id: str, leg: Leg,
                 pj_call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, pj_call_id)
        self.worker, self.call_id, self.leg = worker, call_id, leg
        self.messages: list[str] = []  # the INVITE transaction's messages, for LegDialog
        self.reinvites: deque[float] = deque()  # when this leg's recent re-INVITEs came (the rate bound)
        self.limited_at = 0.0  # when the bound last refused one (said once per window)

    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802
        self.worker.guard("onCallState", self.keep_messages, prm)
        self.worker.guard("onCallState", self.worker.on_leg_state, self)

    def keep_messages(self, prm: pj.OnCallStateParam) -> None:
        if len(self.messages) >= 8:
            return
        body = prm.e.body
        for get in (lambda: body.tsxState.src.rdata.wholeMsg, lambda: body.tsxState.src.tdata.wholeMsg,
                    lambda: body.rxMsg.rdata.wholeMsg):
            try:
                msg = get()
            except Exception:  # noqa: BLE001 - not this kind of event
                continue
            if msg:
                self.messages.append(str(msg))

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802
        self.worker.guard("onCallMediaState", self.worker.on_leg_media, self)

    def onCallRxReinvite(self, prm: pj.OnCallRxReinviteParam) -> None:  # noqa: N802
        self.worker.guard("onCallRxReinvite", self.worker.on_reinvite, self, prm)

    def onCallTsxState(self, prm: pj.OnCallTsxStateParam) -> None:  # noqa: N802
        self.worker.guard("onCallTsxState", self.worker.on_tsx, self, prm)

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:  # noqa: N802
        self.worker.guard("onDtmfDigit", self.worker.on_dtmf, self, prm.digit, prm.method)

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:  # noqa: N802
        self.worker.guard("onCallTransferStatus", self.worker.on_refer_status, self, prm.statusCode, prm.reason,
                          prm.finalNotify)


class PromptPlayer(pj.AudioMediaPlayer):
    def __init__(self, worker: Worker, call_id: str, leg: str, wav: str, token: str = "") -> None:
        super().__init__()
        self.worker, self.call_id, self.leg, self.wav, self.token = worker, call_id, leg, wav, token
        self.sink: Any = None  # the leg's AudioMedia it transmits to
        self.done = False

    def onEof2(self) -> None:  # noqa: N802
        with contextlib.suppress(BaseException):  # the media thread: nothing may escape
            self.worker.finished_players.append(self)  # reported and freed by the main loop


class Account(pj.Account):
    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
        self.worker.guard("onIncomingCall", self.worker.on_incoming, self, prm)

    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # noqa: N802
        def report() -> None:
            info = self.getInfo()
            self.worker.uplink.send(P.Registration(prm.code, prm.reason, info.regIsActive, info.regExpiresSec))

        self.worker.guard("onRegState", report)


@dataclass
class Live:
    """The pjsua2 side of one conversation (the rules are in ``conv``)."""

    conv: Conversation
    calls: dict[Leg, LegCall] = field(default_factory=dict)
    media: dict[Leg, Any] = field(default_factory=dict)  # leg -> pj.AudioMedia
    ports: dict[Leg, int] = field(default_factory=dict)  # leg -> its audio's port on the bridge now
    sip_call_id: str = ""  # the caller's SIP Call-ID (conv.call_id is ours)
    taps: dict[Leg, TapPort] = field(default_factory=dict)
    players: list[PromptPlayer] = field(default_factory=list)
    seat: str = ""  # the seat on the operator's leg (its 2xx, or the ACD's re-INVITE that moved the call)


class Worker:
    def __init__(self, cfg: WorkerSettings, uplink: Uplink) -> None:
        self.cfg = cfg
        self.uplink = uplink
        self.ep = pj.Endpoint()
        self.copy, self.copy_name = make_copier(pj.ByteVector)
        self.live: dict[str, Live] = {}
        self.seat_order: tuple[str, ...] = cfg.seats  # sip.seats, in the order the supervisor last sent
        self.draining = ""  # why no new call is taken (the instance drains before it stops); "" = taking calls
        self.capacity = cfg.capacity()
        self._graveyard: deque[tuple[float, Any]] = deque()  # (release at, tap port / player)
        self._unlinked: set[LegCall] = set()  # calls outside a conversation, kept until DISCONNECTED
        self.callback_errors = 0
        self.running = True
        self._next_slot = 0
        self._next_media_check = 0.0
        self.account: Account | None = None
        self.finished_players: deque[PromptPlayer] = deque()  # appended on the media thread (onEof2)
        self.pending_refusals: deque[LegCall] = deque()  # re-INVITEs over the bound, answered 491 next

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        c = self.cfg
        # a bridge just big enough for max_calls legs, their taps and a prompt each: a leak of
        # ports shows within a few calls instead of after a day (the soak test relies on it)
        start_endpoint(self.ep, c.address, c.sip_port, f"fenliu-worker/{c.name}", c.max_calls,
                       max_media_ports=4 * c.max_calls + 4, transports=c.transports, tls_port=c.tls_port,
                       tls_cert=c.tls_cert, tls_key=c.tls_key)
        acfg = account_config(f"sip:fenliu-{c.name}@{c.address}:{c.sip_port}", c.address, c.rtp_port,
                              c.rtp_range)
        # no re-INVITE just to narrow an answer that listed several codecs: a seat or PBX that
        # ignores it would hold the leg (and a worker slot) until the transaction times out
        acfg.mediaConfig.lockCodecEnabled = False
        acfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_OPTIONAL
        acfg.callConfig.timerSessExpiresSec = max(90, c.session_expires)
        if c.registrar:  # register to the PBX with digest auth; pjsua refreshes before expiry
            domain = c.registrar.removeprefix("sip:").split(";")[0]
            acfg.idUri = f"sip:{c.reg_user}@{domain}"
            acfg.regConfig.registrarUri = c.registrar
            acfg.regConfig.timeoutSec = c.reg_expires
            acfg.regConfig.retryIntervalSec = c.reg_retry
            acfg.regConfig.firstRetryIntervalSec = min(c.reg_retry, 5)
            acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", c.reg_user, 0, c.reg_password))
            acfg.sipConfig.contactForced = f"<sip:{c.reg_user}@{c.address}:{c.sip_port}>"
        self.account = Account(self)
        self.account.create(acfg, True)
        self.uplink.send(P.Ready(c.name, c.sip_port, c.rtp_port, os.getpid(), self.copy_name, c.seat_uri,
                                 self.capacity))

    def run(self) -> None:
        while self.running:
            self.ep.libHandleEvents(20)
            for cmd in self.uplink.commands():
                self.guard(f"command {type(cmd).__name__}", self.on_command, cmd)
            self.check_timers()

    def stop(self) -> None:
        """Hang up politely, drop every pj object, then destroy the library."""
        for lv in list(self.live.values()):
            self._hangup_all(lv)
        deadline = time.monotonic() + 2.0
        while self.live and time.monotonic() < deadline:
            self.ep.libHandleEvents(20)
        for lv in self.live.values():  # calls that would not end in time: their ports go the same way
            for obj in [*lv.taps.values(), *lv.players]:
                self._release_later(obj)
        self.live.clear()
        self._unlinked.clear()
        # a tap port or player freed while the bridge may still call it is a use-after-free
        # (seen as SIGSEGV at exit): let each go only after a grace period. The bridge applies a
        # port's removal on its clock thread within a few 20 ms ticks; mid-call a tap keeps the
        # long grace, at shutdown (every call already hung up) the prompt's short one is enough,
        # so a stopping worker is gone in a fraction of a second, not 2 s
        soon = time.monotonic() + PLAYER_RELEASE_AFTER_S
        self._graveyard = deque((min(t, soon), obj) for t, obj in self._graveyard)
        while self._graveyard:
            self.ep.libHandleEvents(20)
            self.check_timers()
        self.account = None
        self.uplink.send(P.Stopped(self.cfg.name, self.uplink.dropped_frames, self.callback_errors))
        self.ep.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)

    def guard(self, where: str, fn: Any, *args: Any) -> None:
        """Run a callback's work; an exception is reported, never let into C++."""
        try:
            fn(*args)
        except Exception:
            self.callback_errors += 1
            try:
                self.uplink.send(P.WorkerError(f"{where}: {traceback.format_exc(limit=3)}"))
            except OSError:
                pass

    # -- incoming call -----------------------------------------------------------------
    def on_incoming(self, account: pj.Account, prm: pj.OnIncomingCallParam) -> None:
        call = LegCall(self, account, "", Leg.CALLER, prm.callId)
        call.messages.append(str(prm.rdata.wholeMsg))
        info = call.getInfo()
        source = prm.rdata.srcAddress.rsplit(":", 1)[0].strip("[]")
        user = request_user(prm.rdata.wholeMsg)
        age = relayed_age(prm.rdata.wholeMsg, time.time())
        if age is not None and age > self.cfg.invite_max_age:
            # the front relayed this INVITE longer ago than it waits for a worker: it has failed it
            # over (to another worker or the operators). Starting a call now would hold a slot,
            # and a second answer, for a caller somebody else already has.
            op = pj.CallOpParam()
            op.statusCode = 408
            op.reason = "Stale INVITE"
            call.hangup(op)
            self._unlinked.add(call)
            self.uplink.send(P.StaleInvite(info.callIdString, round(age, 2), info.remoteUri))
            return
        refusal = self.admission(source, user)
        sip_call_id = info.callIdString
        call_id = new_call_id()  # ours: a PBX may reuse a Call-ID, a new call must never join an old record
        repeated = next((lv.conv.call_id for lv in self.live.values() if lv.sip_call_id == sip_call_id), None)
        if repeated is not None:
            # the same INVITE again after we answered it (a retransmission that crossed our 200,
            # or a loop): it is not a new call. The caller's transaction is over, so this answer
            # is dropped by a well-behaved UAC; the conversation goes on untouched.
            refusal = (482, "Loop Detected", "INVITE repeated for a call already in progress: not a new call")
            call_id = repeated
        if refusal is not None:
            status, reason, why = refusal
            op = pj.CallOpParam()
            op.statusCode = status
            op.reason = reason
            if status == 503:  # full: the front (or the PBX) tries elsewhere now, and here again later
                op.txOption.headers.append(sip_header("Retry-After", str(RETRY_AFTER_S)))
                call.answer(op)  # a final answer to the INVITE carries our headers (hangup here drops them)
            else:
                call.hangup(op)
            self._unlinked.add(call)
            self.uplink.send(P.CallRejected(status, why, call_id, info.remoteUri, user, source, sip_call_id=sip_call_id))
            return
        slot = self._next_slot
        self._next_slot = (self._next_slot + 1) % 65536
        conv = Conversation(call_id, slot, time.monotonic(), seat_mode=bool(self.cfg.seat_uri),
                            overflow=self.cfg.overflow and bool(self.cfg.seat_uri), seat_timeout=self.cfg.seat_timeout,
                            seat_ring=self.cfg.seat_ring)
        call.call_id = conv.call_id
        lv = Live(conv, calls={Leg.CALLER: call}, sip_call_id=sip_call_id)
        self.live[conv.call_id] = lv
        self.uplink.send(P.CallStarted(conv.call_id, slot, info.remoteUri, info.localUri, sip_call_id=sip_call_id))
        self.uplink.mark(slot, LEG_OPEN, conv.call_id.encode())
        op = pj.CallOpParam()
        if self.cfg.seat_uri:  # B2BUA: ring the caller, dial the operator seat, answer when it does
            op.statusCode = 180
            call.answer(op)
            self.execute(lv, conv.ring_seats(self.seat_order or (self.cfg.seat_uri,), time.monotonic()))
        else:
            op.statusCode = 200
            call.answer(op)

    def admission(self, source: str, user: str) -> tuple[int, str, str] | None:
        c = self.cfg
        if c.allow and source not in c.allow:
            return 403, "Forbidden", f"{source} is not an allowed peer (sip.allow)"
        if "*" not in c.users and user not in c.users:
            return 404, "Not Found", f"number {user!r} is not served here (sip.users)"
        if self.draining:
            return 503, "Service Unavailable", f"worker {c.name} {self.draining}: no new calls"
        if len(self.live) >= self.capacity:
            return 503, "Service Unavailable", (f"worker {c.name} full: {len(self.live)} conversation(s), "
                                                f"{c.legs_per_conversation()} SIP legs reserved each of {c.max_calls}")
        return None

    def legs_in_use(self) -> int:
        return sum(len(lv.calls) for lv in self.live.values())

    # -- what the conversation decided ---------------------------------------------------
    def execute(self, lv: Live, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Emit):
                self.uplink.send(a.fact)
            elif isinstance(a, AnswerCaller):
                op = pj.CallOpParam()
                op.statusCode = 200
                lv.calls[Leg.CALLER].answer(op)
            elif isinstance(a, RejectCaller):
                op = pj.CallOpParam()
                op.statusCode = a.status
                op.reason = a.reason
                caller = lv.calls.get(Leg.CALLER)
                if caller is not None:
                    caller.hangup(op)  # rejects the still-unanswered INVITE
            elif isinstance(a, Dial):
                self._dial(lv, a.leg, a.uri or self.cfg.seat_uri)
            elif isinstance(a, Refer):
                lv.calls[Leg.CALLER].xfer(a.uri, pj.CallOpParam(True))
            elif isinstance(a, ReferReplaces):
                lv.calls[Leg.CALLER].xferReplaces(lv.calls[Leg.HOTLINE], pj.CallOpParam(True))
            elif isinstance(a, Bridge):
                for x in a.legs:  # startTransmit is idempotent
                    for y in a.legs:
                        if x != y and x in lv.media and y in lv.media:
                            lv.media[x].startTransmit(lv.media[y])
            elif isinstance(a, HangupLeg):
                call = lv.calls.get(a.leg)
                if call is not None:
                    self._hangup(call)
            elif isinstance(a, HangupAll):
                self._hangup_all(lv)
            elif isinstance(a, Finish):
                self._finish(lv, a.status, a.reason)
            elif isinstance(a, ProbeCaller):
                self._probe(lv)

    def _dial(self, lv: Live, leg: Leg, uri: str) -> None:
        conv = lv.conv
        if self.legs_in_use() >= self.cfg.max_calls:
            self.execute(lv, conv.dial_failed(leg, f"all {self.cfg.max_calls} SIP legs of this worker in use",
                                              time.monotonic()))
            return
        call = LegCall(self, self.account, conv.call_id, leg)
        try:
            call.makeCall(uri, pj.CallOpParam(True))
        except pj.Error as e:  # never got a call id: safe to drop
            self.execute(lv, conv.dial_failed(leg, e.info().strip() or e.reason, time.monotonic()))
            return
        lv.calls[leg] = call
        conv.dialled(leg)
        self.uplink.send(P.LegDialing(conv.call_id, leg.label, uri))

    def _finish(self, lv: Live, status: int, reason: str) -> None:
        conv = lv.conv
        tap = lv.taps.get(Leg.CALLER)
        frames = tap.seq if tap else 0
        cb_ns = tap.callback_ns if tap else 0
        self.uplink.mark(conv.slot, LEG_CLOSE)
        self.uplink.send(P.CallEnded(conv.call_id, conv.slot, status, reason, frames,
                                     round(cb_ns / max(frames, 1) / 1000, 2)))
        self.live.pop(conv.call_id, None)
        self._unlinked.update(lv.calls.values())  # legs still hanging up: dropped on their DISCONNECTED
        for obj in [*lv.taps.values(), *lv.players]:
            self._release_later(obj)
        lv.calls.clear()
        lv.taps.clear()
        lv.players.clear()
        lv.media.clear()
        lv.ports.clear()

    # -- leg events ------------------------------------------------------------------
    def _live_of(self, call: LegCall) -> Live | None:
        lv = self.live.get(call.call_id)
        if lv is None or lv.calls.get(call.leg) is not call:
            return None
        return lv

    def on_leg_state(self, call: LegCall) -> None:
        info = call.getInfo()
        lv = self._live_of(call)
        if lv is None:
            if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self._unlinked.discard(call)  # the last reference: freed as this callback returns
            return
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            d = dialog_from(call.messages, uas=call.leg == Leg.CALLER)
            if d is not None:
                self.uplink.send(P.LegDialog(lv.conv.call_id, call.leg.label, d.sip_call_id, d.local, d.remote,
                                             d.target, d.routes))
            if call.leg == Leg.OPERATOR:  # behind an ACD: which agent's seat took the call
                seat, source = answering_seat(call.messages, self.cfg.seat_header)
                if seat:
                    lv.seat = seat
                    self.uplink.send(P.SeatAnswered(lv.conv.call_id, seat, source))
            call.messages.clear()
            self.execute(lv, lv.conv.leg_confirmed(call.leg, time.monotonic()))
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            lv.calls.pop(call.leg, None)
            lv.media.pop(call.leg, None)
            lv.ports.pop(call.leg, None)
            tap = lv.taps.pop(call.leg, None)  # (the Call itself is freed as this callback returns)
            if tap is not None:
                self._release_later(tap)
                if call.leg == Leg.CALLER:
                    lv.taps[Leg.CALLER] = tap  # its counters go into CallEnded
            self.execute(lv, lv.conv.leg_gone(call.leg, info.lastStatusCode, info.lastReason, time.monotonic()))

    def on_leg_media(self, call: LegCall) -> None:
        """A leg's media came up or changed (answer, early media, a re-INVITE or UPDATE: hold,
        unhold, another codec or port, an offer without SDP). pjsua may give the leg a new port
        on the bridge each time: the tap, the prompts playing to it and the bridge to the other
        legs follow the leg to its current port, or the call would go on deaf to recognition."""
        lv = self._live_of(call)
        if lv is None:
            return
        info = call.getInfo()
        for i, mi in enumerate(info.media):
            # on remote hold (the far end sends a=sendonly, e.g. music on hold) its audio still flows
            if mi.type != pj.PJMEDIA_TYPE_AUDIO or mi.status not in (pj.PJSUA_CALL_MEDIA_ACTIVE,
                                                                        pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                continue
            try:
                aud = call.getAudioMedia(i)
                port = aud.getPortId()
            except pj.Error:
                continue  # no audio on the bridge for this stream (inactive)
            # Reconnect on every media change, not only when the port id differs: pjmedia frees
            # the old port on its next clock tick, and when that tick falls between the removal
            # and the new port's creation the new port gets the same id with no connections
            # (seen under load: half a call deaf after a codec or port change). Connecting
            # twice is harmless (pjmedia keeps one connection per pair).
            lv.media[call.leg] = aud
            lv.ports[call.leg] = port
            if call.leg not in lv.taps:
                self._tap(lv, call.leg, aud)
            else:
                self._retap(lv, call.leg, aud)
            for player in lv.players:
                if player.leg == call.leg.label and not player.done:
                    with contextlib.suppress(pj.Error):
                        player.startTransmit(aud)
                    player.sink = aud
            codec = ""
            try:
                codec = call.getStreamInfo(i).codecName
            except pj.Error:
                pass
            self.uplink.send(P.MediaActive(lv.conv.call_id, lv.conv.slot, call.leg.label, codec))
            early = info.state == pj.PJSIP_INV_STATE_EARLY  # a 183 with SDP: ringing, not answered
            self.execute(lv, lv.conv.media_up(call.leg, time.monotonic(), early))
            return

    def _retap(self, lv: Live, leg: Leg, aud: Any) -> None:
        """The leg's audio moved to another bridge port: connect the existing tap to it (the
        recogniser's stream goes on, same sequence). If it cannot, say so: never deaf in silence."""
        try:
            aud.startTransmit(lv.taps[leg])
        except pj.Error as e:
            self.uplink.send(P.CallDegraded(lv.conv.call_id, f"recognition lost the {leg.label} leg after a media "
                                                             f"change: {e.info().strip()}", leg.label))

    def _tap(self, lv: Live, leg: Leg, aud: Any) -> None:
        """Copy this leg's audio out for recognition. If the bridge has no port left the call
        goes on (the caller is never refused for it) and is reported as degraded."""
        tap = TapPort(self, lv.conv.slot, int(leg))
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, CLOCK_RATE, 1, FRAME_MS * 1000, 16)
        try:
            tap.createPort(f"tap-{lv.conv.slot}-{int(leg)}", fmt)
            aud.startTransmit(tap)
        except pj.Error as e:
            self._release_later(tap)
            self.uplink.send(P.CallDegraded(lv.conv.call_id, f"no media port for recognition: {e.info().strip()}",
                                            leg.label))
            return
        lv.taps[leg] = tap

    def _probe(self, lv: Live) -> None:
        """An in-dialog OPTIONS to the caller's side: a UA that is there answers it at once."""
        call = lv.calls.get(Leg.CALLER)
        if call is None:
            return
        prm = pj.CallSendRequestParam()
        prm.method = "OPTIONS"
        try:
            call.sendRequest(prm)
        except pj.Error as e:  # no dialog to send it in: nobody can answer
            log.info("probe of %s not sent: %s", lv.conv.call_id, e.info().strip())
            self.execute(lv, lv.conv.probe_answered(0, time.monotonic()))

    def on_reinvite(self, call: LegCall, prm: pj.OnCallRxReinviteParam) -> None:
        """A bound on re-INVITEs per leg (see ``MAX_REINVITES``): a PBX needs a few a minute (hold,
        unhold, a session refresh); a burst is a loop or an attack, and each one rebuilds the leg's
        media. The extra ones get 491 Request Pending with Retry-After (the sender may try again);
        the call, its media and every other call go on untouched."""
        now = time.monotonic()
        recent = call.reinvites
        while recent and now - recent[0] > REINVITE_WINDOW_S:
            recent.popleft()
        if len(recent) >= MAX_REINVITES or (recent and now - recent[-1] < REINVITE_MIN_GAP_S):
            # answered right after this callback (pjsua turns a refusal set here into 488; an
            # asynchronous answer carries the status and header we mean)
            prm.isAsync = True
            self.pending_refusals.append(call)
            lv = self._live_of(call)
            if lv is not None and now - call.limited_at > REINVITE_WINDOW_S:
                call.limited_at = now
                self.uplink.send(P.ReinviteLimited(lv.conv.call_id, call.leg.label, len(recent) + 1,
                                                   REINVITE_WINDOW_S))
            return
        recent.append(now)
        lv = self._live_of(call)
        if lv is not None and call.leg == Leg.OPERATOR and lv.seat:  # an ACD moving the call to another agent
            seat, source = moved_to_seat(str(prm.rdata.wholeMsg), self.cfg.seat_header)
            if seat and seat != lv.seat:
                lv.seat = seat
                self.uplink.send(P.SeatAnswered(lv.conv.call_id, seat, f"{source} (re-INVITE)"))

    def _refuse_reinvite(self, call: LegCall) -> None:
        op = pj.CallOpParam()
        op.statusCode = 491
        op.reason = "Request Pending"
        op.txOption.headers.append(sip_header("Retry-After", "1"))
        call.answer(op)

    def on_tsx(self, call: LegCall, prm: pj.OnCallTsxStateParam) -> None:
        """The answer to our OPTIONS probe (other transactions are pjsua's business)."""
        lv = self._live_of(call)
        if lv is None or call.leg != Leg.CALLER or prm.e.type != pj.PJSIP_EVENT_TSX_STATE:
            return
        tsx = prm.e.body.tsxState.tsx
        if tsx.method != "OPTIONS" or tsx.role != pj.PJSIP_ROLE_UAC or tsx.statusCode < 200:
            return
        if tsx.state in (pj.PJSIP_TSX_STATE_COMPLETED, pj.PJSIP_TSX_STATE_TERMINATED):
            self.execute(lv, lv.conv.probe_answered(tsx.statusCode, time.monotonic()))

    def on_dtmf(self, call: LegCall, digit: str, method: int) -> None:
        if self._live_of(call) is None:
            return
        how = "info" if method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"
        self.uplink.send(P.Dtmf(call.call_id, call.leg.label, digit, how))

    def on_refer_status(self, call: LegCall, status: int, reason: str, final: bool) -> None:
        lv = self._live_of(call)
        if lv is not None:
            self.execute(lv, lv.conv.refer_status(status, reason, final))

    # -- commands ---------------------------------------------------------------------------
    def on_command(self, cmd: P.Message) -> None:
        if isinstance(cmd, P.Shutdown):
            self.running = False
            return
        if isinstance(cmd, P.SeatOrder):  # where the next call rings first (sip.seats)
            self.seat_order = tuple(cmd.seats)
            return
        if isinstance(cmd, P.Drain):  # no new calls; the live ones go on
            self.draining = cmd.reason
            return
        call_id = getattr(cmd, "call_id", None)
        lv = self.live.get(str(call_id))
        if lv is None:
            if isinstance(cmd, P.Transfer):  # the key must always get an answer
                self.uplink.send(P.TransferUpdate(str(call_id), P.TransferStep.FAILED, cmd.target, cmd.mode, 404,
                                                  f"no such call: {call_id}", True))
            else:
                self.uplink.send(P.WorkerError(f"no such call: {call_id}", str(call_id or "")))
            return
        now = time.monotonic()
        if isinstance(cmd, P.Hangup):
            if cmd.reason:
                lv.conv.end_reason = cmd.reason
            self._hangup_all(lv)
        elif isinstance(cmd, P.Transfer):
            free = self.cfg.max_calls - self.legs_in_use()
            self.execute(lv, lv.conv.start_transfer(cmd.target, cmd.mode, cmd.timeout, cmd.drop_operator_after,
                                                    now, free, cmd.min_talk))
        elif isinstance(cmd, P.ReleaseOperator):
            self.execute(lv, lv.conv.release_operator())
        elif isinstance(cmd, P.CancelTransfer):
            self.execute(lv, lv.conv.cancel_transfer())
        elif isinstance(cmd, P.Play):
            self.play(lv, cmd.leg, cmd.wav, cmd.token)
        elif isinstance(cmd, P.StopPrompt):
            self.stop_prompts(lv)
        elif isinstance(cmd, P.ToQueue):
            free = self.cfg.max_calls - self.legs_in_use()
            self.execute(lv, lv.conv.to_queue(cmd.uri, cmd.timeout, now, free))
        else:
            self.uplink.send(P.WorkerError(f"unknown command: {type(cmd).__name__}"))

    def play(self, lv: Live, leg_name: str, wav: str, token: str = "") -> None:
        """Play a prompt (a WAV file) into one leg, e.g. an IVR flow's question. One prompt at a
        time per leg: a prompt still playing there is stopped first (reported interrupted)."""
        call_id = lv.conv.call_id
        leg = next((x for x in Leg if x.label == leg_name), None)
        if leg is None or leg not in lv.media:
            self.uplink.send(P.WorkerError(f"no active {leg_name!r} leg to play into", call_id))
            if token:  # an IVR waits for this prompt: it must hear that it will not come
                self.uplink.send(P.PromptDone(call_id, leg_name, wav, token, interrupted=True))
            return
        self.stop_prompts(lv, leg_name)
        player = PromptPlayer(self, call_id, leg_name, wav, token)
        try:
            player.createPlayer(wav, pj.PJMEDIA_FILE_NO_LOOP)
        except pj.Error as e:
            self._release_later(player)
            self.uplink.send(P.WorkerError(f"cannot play {wav}: {e.info()}", call_id))
            if token:
                self.uplink.send(P.PromptDone(call_id, leg_name, wav, token, interrupted=True))
            return
        player.sink = lv.media[leg]
        player.startTransmit(player.sink)
        lv.players.append(player)
        self.uplink.send(P.PromptStarted(call_id, leg_name, wav, token))

    def stop_prompts(self, lv: Live, leg_name: str = "") -> None:
        """Barge-in: stop the prompts playing into the call (or one leg of it)."""
        for player in [p for p in lv.players if not p.done and (not leg_name or p.leg == leg_name)]:
            self._retire_player(lv, player, interrupted=True)

    def _retire_player(self, lv: Live, player: PromptPlayer, interrupted: bool) -> None:
        """A prompt is over (played out or stopped): say so once, and free its bridge port."""
        if player.done:
            return
        player.done = True
        with contextlib.suppress(pj.Error):
            if player.sink is not None:
                player.stopTransmit(player.sink)
        if player in lv.players:
            lv.players.remove(player)
        # off the caller already (stopTransmit): a short grace, so that an IVR's many prompts (most of
        # them cut short by barge-in) do not hold the bridge's few ports for the full grace period
        self._release_later(player, PLAYER_RELEASE_AFTER_S)
        self.uplink.send(P.PromptDone(player.call_id, player.leg, player.wav, player.token, interrupted))

    # -- time -------------------------------------------------------------------------------
    def check_timers(self) -> None:
        now = time.monotonic()
        while self.pending_refusals:
            self.guard("re-INVITE refusal", self._refuse_reinvite, self.pending_refusals.popleft())
        while self.finished_players:
            player = self.finished_players.popleft()
            lv = self.live.get(player.call_id)
            if lv is not None and player in lv.players:
                self.guard("prompt done", self._retire_player, lv, player, False)
        if self._graveyard and min(t for t, _ in self._graveyard) <= now:
            due = [obj for t, obj in self._graveyard if t <= now]
            self._graveyard = deque((t, obj) for t, obj in self._graveyard if t > now)
            for obj in due:
                destroy(obj)
        for lv in list(self.live.values()):
            self.guard("transfer timer", lambda x=lv: self.execute(x, x.conv.tick(now)))
        if now < self._next_media_check:
            return
        self._next_media_check = now + 1.0
        for lv in list(self.live.values()):
            self.guard("media check", lambda x=lv: self.execute(x, x.conv.media_check(
                now, self._rx_packets(x), self.cfg.media_timeout, self.cfg.max_duration, self._held(x),
                self.cfg.max_hold)))

    def _rx_packets(self, lv: Live) -> int | None:
        call = lv.calls.get(Leg.CALLER)
        if call is None or Leg.CALLER not in lv.media:
            return None
        try:
            info = call.getInfo()  # keep it referenced: its media vector dies with it
            idx = next(i for i, mi in enumerate(info.media) if mi.type == pj.PJMEDIA_TYPE_AUDIO)
            return int(call.getStreamStat(idx).rtcp.rxStat.pkt)
        except (pj.Error, StopIteration):
            return None

    def _held(self, lv: Live) -> bool:
        """The caller's audio is on hold as negotiated (a=sendonly/recvonly/inactive): no RTP from
        it is what hold means, not a sign that nobody is there."""
        call = lv.calls.get(Leg.CALLER)
        if call is None or Leg.CALLER not in lv.media:
            return False
        try:
            info = call.getInfo()
        except pj.Error:
            return False
        for mi in info.media:
            if mi.type == pj.PJMEDIA_TYPE_AUDIO:
                return bool(mi.status in (pj.PJSUA_CALL_MEDIA_LOCAL_HOLD, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD)
                            or mi.dir != pj.PJMEDIA_DIR_ENCODING_DECODING)
        return False

    # -- helpers --------------------------------------------------------------------------
    def _release_later(self, obj: Any, after: float = RELEASE_AFTER_S) -> None:
        self._graveyard.append((time.monotonic() + after, obj))

    def _hangup(self, call: Any) -> None:
        try:
            if call.isActive():
                call.hangup(pj.CallOpParam(True))
        except pj.Error:
            pass

    def _hangup_all(self, lv: Live) -> None:
        for call in list(lv.calls.values()):
            self._hangup(call)


RETRY_AFTER_S = 5  # a full worker's 503: when it may have a free slot again
# re-INVITEs per leg: each one that changes the media gives the leg a new port on the conference
# bridge, and pjmedia frees the old one only on its next clock tick (20 ms, asynchronously). A burst
# faster than that piles ports up in the worker's 20-port bridge: PJ_ETOOMANY, then pjsua rebuilding
# the media transport on a port still held (bind: address in use), then pjlib's ioqueue assertion —
# the worker and every call on it gone. So: at most one re-INVITE per REINVITE_MIN_GAP_S and
# MAX_REINVITES per REINVITE_WINDOW_S per leg; the others get 491 Request Pending with Retry-After.
MAX_REINVITES, REINVITE_WINDOW_S, REINVITE_MIN_GAP_S = 30, 10.0, 0.1


def new_call_id() -> str:
    """fenliu's id of a call: a UUID, unique across workers, instances and restarts."""
    return str(uuid.uuid4())


def sip_header(name: str, value: str) -> pj.SipHeader:
    h = pj.SipHeader()
    h.hName, h.hValue = name, value
    return h


_RELAYED = re.compile(rf"^{RELAYED_HEADER}:\s*([0-9]+(?:\.[0-9]+)?)\s*$", re.I | re.M)


def relayed_age(msg: str, now: float) -> float | None:
    """How long ago the front relayed this INVITE (its latest ``X-Fenliu-Relayed``), or None when
    it did not come through the front."""
    stamps = [float(x) for x in _RELAYED.findall(msg or "")]
    return now - max(stamps) if stamps else None


def destroy(obj: Any) -> None:
    """Free a tap port's or player's C++ half now, on this (main) thread, while its Python half
    is whole. Its destructor takes the port off the conference bridge, waiting for a media-thread
    callback in progress — which still finds every attribute. Left to Python's garbage
    collection, the instance's attributes were cleared first and the C++ destructor ran later
    with the GIL released: a callback in that window found a half-destroyed object (seen in CI as
    "'TapPort' object has no attribute 'callback_ns'", then SIGSEGV)."""
    with contextlib.suppress(Exception):
        if obj.this.own():
            type(obj).__swig_destroy__(obj)  # the SWIG delete disowns it: Python frees nothing more


def request_user(message: str) -> str:
    """The user part of the request line: ``INVITE sip:110@host SIP/2.0`` -> ``110``."""
    line = message.split("\r\n", 1)[0].split("\n", 1)[0]
    parts = line.split()
    if len(parts) < 2:
        return ""
    uri = parts[1].split(":", 1)[-1]
    return uri.split("@", 1)[0] if "@" in uri else ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="fenliu SIP worker (started by the supervisor, configured by it)")
    p.add_argument("--control", required=True, help="supervisor's Unix stream socket")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    uplink = Uplink(a.control)
    try:
        cfg = uplink.configure()
    except (OSError, P.ProtocolError) as e:
        print(f"fenliu worker: no configuration from the supervisor: {e}", file=sys.stderr)
        return 2
    worker = Worker(cfg, uplink)
    return serve_until_signalled(worker, lambda why: uplink.send(P.StartFailed(
        f"cannot start SIP endpoint on {cfg.address}:{cfg.sip_port}: {why} "
        f"(is the port in use? set sip.port / sip.rtp_port)")))


if __name__ == "__main__":
    sys.exit(main())
