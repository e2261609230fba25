"""One SIP worker process: one pjsua2 endpoint on its own SIP port and RTP range.

The pjsua2 wheel holds at most 4 calls per endpoint and one endpoint per process, so the
service runs several of these under a supervisor. A worker:

- answers incoming calls (this first mode: auto-answer, the B2BUA seat mode builds on it);
- taps each call's received audio at 16 kHz and sends 20 ms frames to the supervisor as
  datagrams on a Unix socket, never blocking the media clock (a full socket drops the frame
  and counts it);
- reports facts as JSON lines on a Unix stream socket and takes commands on it
  (``hangup``, ``shutdown``).

Threading (FIELD-NOTES): ``mainThreadOnly`` with ``libHandleEvents`` in this process's main
loop, so SIP callbacks run here; ``onFrameReceived`` runs on the media clock thread and only
copies bytes and sends a datagram. Every callback catches its own exceptions: one escaping
into C++ keeps objects alive and aborts the process at exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import pjsua2 as pj

from fenliu.sip.endpoint import CLOCK_RATE, account_config, serve_until_signalled, start_endpoint
from fenliu.sip.framecopy import make_copier
from fenliu.sip.protocol import FRAME_HEADER, LEG_CALLER, LEG_HOTLINE, LEG_NAMES, LEG_OPERATOR

log = logging.getLogger("fenliu.sip.worker")

FRAME_MS = 20


@dataclass
class WorkerConfig:
    name: str
    address: str
    sip_port: int
    rtp_port: int
    rtp_range: int
    control_path: str
    audio_path: str
    max_calls: int = 4
    seat_uri: str = ""  # B2BUA seat mode: dial this operator seat for every incoming call
    users: tuple[str, ...] = ("*",)  # request-URI users we take (the 110 number); others get 404
    media_timeout: float = 10.0  # no RTP from the caller for this long: the call is dead, end it
    allow: tuple[str, ...] = ()  # static-peer mode: source addresses allowed to call (empty = any)
    registrar: str = ""  # trunk registration: sip:pbx.example:5060 (empty = static peer, no REGISTER)
    reg_user: str = ""
    reg_password: str = ""
    reg_expires: int = 300
    reg_retry: int = 30  # after a failed registration (PBX down or restarting), try again every N s


class Uplink:
    """The two sockets to the supervisor. ``event`` is called on the main thread only;
    ``frame`` on the media thread (sendto on a datagram socket is thread-safe)."""

    def __init__(self, control_path: str, audio_path: str) -> None:
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control.connect(control_path)
        self.control.setblocking(False)
        self.audio = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.audio.setblocking(False)
        self.audio_path = audio_path
        self._inbox = b""
        self.dropped_frames = 0

    def event(self, kind: str, **data: Any) -> None:
        line = json.dumps({"event": kind, "t": time.time(), **data}, ensure_ascii=False) + "\n"
        self.control.setblocking(True)
        try:
            self.control.sendall(line.encode())
        finally:
            self.control.setblocking(False)

    def frame(self, slot: int, leg: int, seq: int, pcm: bytes) -> None:
        try:
            self.audio.sendto(FRAME_HEADER.pack(slot, leg, seq & 0xFFFFFFFF) + pcm, self.audio_path)
        except (BlockingIOError, ConnectionRefusedError, FileNotFoundError):
            self.dropped_frames += 1

    def commands(self) -> list[dict[str, Any]]:
        try:
            data = self.control.recv(65536)
        except BlockingIOError:
            return []
        if not data:
            return [{"cmd": "shutdown", "reason": "supervisor closed the control socket"}]
        self._inbox += data
        out = []
        while b"\n" in self._inbox:
            line, self._inbox = self._inbox.split(b"\n", 1)
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("bad command line from supervisor: %r", line[:200])
        return out


class TapPort(pj.AudioMediaPort):
    """Receives the call's audio from the conference bridge, 20 ms at a time."""

    def __init__(self, worker: Worker, slot: int, leg: int) -> None:
        super().__init__()
        self.worker, self.slot, self.leg = worker, slot, leg
        self.seq = 0
        self.callback_ns = 0  # total time spent in onFrameReceived (for the benchmark)

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:  # noqa: N802 (pjsua2 override)
        start = time.perf_counter_ns()
        try:
            if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO:
                pcm = self.worker.copy(frame.buf)
                if pcm:
                    self.worker.uplink.frame(self.slot, self.leg, self.seq, pcm)
                    self.seq += 1
        except Exception:
            self.worker.callback_errors += 1
        self.callback_ns += time.perf_counter_ns() - start


@dataclass
class Transfer:
    target: str
    mode: str  # "three-way" or "refer"
    deadline: float  # no answer / no final NOTIFY by then: give up, keep the caller
    drop_operator_after: float = 0.0  # three-way: release the operator leg automatically (0 = on command)
    bridged_at: float = 0.0


@dataclass
class Conversation:
    """One 110 call: the caller's leg, the operator seat's leg (B2BUA mode) and, during a
    transfer, the hotline's leg. Keyed by the caller leg's Call-ID."""

    slot: int
    call_id: str
    remote: str
    local: str
    legs: dict[int, Any] = field(default_factory=dict)  # leg -> pj.Call
    media: dict[int, Any] = field(default_factory=dict)  # leg -> pj.AudioMedia
    taps: dict[int, TapPort] = field(default_factory=dict)
    answered: bool = False
    state: str = "ringing"  # ringing, talking, transferring, three-way, handed-over, ended
    transfer: Transfer | None = None
    players: list[Any] = field(default_factory=list)
    rx_packets: int = -1
    rx_changed: float = field(default_factory=time.monotonic)


class LegCall(pj.Call):
    """Any leg of a conversation; callbacks go to the worker with the leg's role."""

    def __init__(self, worker: Worker, account: pj.Account, conv: Conversation | None, leg: int,
                 call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.worker, self.conv, self.leg = worker, conv, leg

    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802
        try:
            self.worker.on_leg_state(self)
        except Exception:
            self.worker.report_exception("onCallState")

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802
        try:
            self.worker.on_leg_media(self)
        except Exception:
            self.worker.report_exception("onCallMediaState")

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:  # noqa: N802
        try:
            self.worker.on_dtmf(self, prm.digit, prm.method)
        except Exception:
            self.worker.report_exception("onDtmfDigit")

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:  # noqa: N802
        try:
            self.worker.on_refer_status(self, prm.statusCode, prm.reason, prm.finalNotify)
        except Exception:
            self.worker.report_exception("onCallTransferStatus")


class PromptPlayer(pj.AudioMediaPlayer):
    def __init__(self, worker: Worker, call_id: str, leg: str, wav: str) -> None:
        super().__init__()
        self.worker, self.call_id, self.leg, self.wav = worker, call_id, leg, wav

    def onEof2(self) -> None:  # noqa: N802
        try:
            self.worker.uplink.event("prompt_done", call_id=self.call_id, leg=self.leg, wav=self.wav)
        except Exception:
            self.worker.callback_errors += 1


class Account(pj.Account):
    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
        try:
            self.worker.on_incoming(self, prm)
        except Exception:
            self.worker.report_exception("onIncomingCall")

    def onRegState(self, prm: pj.OnRegStateParam) -> None:  # noqa: N802
        try:
            info = self.getInfo()
            self.worker.uplink.event("registration", code=prm.code, reason=prm.reason, active=info.regIsActive,
                                     expires=info.regExpiresSec)
        except Exception:
            self.worker.report_exception("onRegState")


class Worker:
    def __init__(self, cfg: WorkerConfig, uplink: Uplink) -> None:
        self.cfg = cfg
        self.uplink = uplink
        self.ep = pj.Endpoint()
        self.copy, self.copy_name = make_copier(pj.ByteVector)
        self.convs: dict[str, Conversation] = {}
        self.ended: list[Any] = []  # pj objects kept until destroy (lifetime rule)
        self.callback_errors = 0
        self.running = True
        self._next_slot = 0
        self._next_media_check = 0.0

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        c = self.cfg
        start_endpoint(self.ep, c.address, c.sip_port, f"fenliu-worker/{c.name}", c.max_calls)
        acfg = account_config(f"sip:fenliu-{c.name}@{c.address}:{c.sip_port}", c.address, c.rtp_port, c.rtp_range)
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
        self.uplink.event("ready", worker=self.cfg.name, sip_port=self.cfg.sip_port, rtp_port=self.cfg.rtp_port,
                          frame_copy=self.copy_name, pid=os.getpid(), seat=self.cfg.seat_uri or "")

    def run(self) -> None:
        while self.running:
            self.ep.libHandleEvents(20)
            for cmd in self.uplink.commands():
                try:
                    self.on_command(cmd)
                except Exception:
                    self.report_exception(f"command {cmd.get('cmd')}")
            self.check_timers()

    def stop(self) -> None:
        """Hang up politely, drop every pj object, then destroy the library."""
        for conv in list(self.convs.values()):
            self._hangup_all(conv)
        deadline = time.monotonic() + 2.0
        while self.convs and time.monotonic() < deadline:
            self.ep.libHandleEvents(20)
        self.convs.clear()
        self.ended.clear()
        self.account = None  # type: ignore[assignment]
        self.uplink.event("stopped", worker=self.cfg.name, dropped_frames=self.uplink.dropped_frames,
                          callback_errors=self.callback_errors)
        self.ep.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)

    # -- incoming call -----------------------------------------------------------------
    def on_incoming(self, account: pj.Account, prm: pj.OnIncomingCallParam) -> None:
        call = LegCall(self, account, None, LEG_CALLER, prm.callId)
        source = prm.rdata.srcAddress.rsplit(":", 1)[0].strip("[]")
        if self.cfg.allow and source not in self.cfg.allow:
            self._reject(call, 403, "Forbidden", f"{source} is not an allowed peer (sip.allow)", source=source)
            return
        user = request_user(prm.rdata.wholeMsg)
        if "*" not in self.cfg.users and user not in self.cfg.users:
            self._reject(call, 404, "Not Found", f"number {user!r} is not served here (sip.users)", user=user)
            return
        info = call.getInfo()
        slot = self._next_slot
        self._next_slot = (self._next_slot + 1) % 65536
        conv = Conversation(slot=slot, call_id=info.callIdString, remote=info.remoteUri, local=info.localUri)
        call.conv = conv
        conv.legs[LEG_CALLER] = call
        self.convs[conv.call_id] = conv
        self.uplink.event("call_started", call_id=conv.call_id, slot=slot, remote=conv.remote, local=conv.local)
        op = pj.CallOpParam()
        if self.cfg.seat_uri:  # B2BUA: ring the caller, dial the operator seat, answer when it does
            op.statusCode = 180
            call.answer(op)
            self._dial(conv, LEG_OPERATOR, self.cfg.seat_uri)
        else:
            op.statusCode = 200
            call.answer(op)

    def _reject(self, call: LegCall, status: int, reason: str, why: str, **data: Any) -> None:
        op = pj.CallOpParam()
        op.statusCode = status
        op.reason = reason
        call.hangup(op)
        self.ended.append(call)
        self.uplink.event("call_rejected", status=status, reason=why, **data)

    def _dial(self, conv: Conversation, leg: int, uri: str) -> LegCall:
        call = LegCall(self, self.account, conv, leg)
        conv.legs[leg] = call
        call.makeCall(uri, pj.CallOpParam(True))
        self.uplink.event("leg_dialing", call_id=conv.call_id, leg=LEG_NAMES[leg], uri=uri)
        return call

    # -- leg events ------------------------------------------------------------------
    def on_leg_state(self, call: LegCall) -> None:
        conv = call.conv
        if conv is None or conv.legs.get(call.leg) is not call:
            return
        info = call.getInfo()
        leg = call.leg
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.uplink.event("leg_answered", call_id=conv.call_id, leg=LEG_NAMES[leg])
            if leg == LEG_CALLER and not conv.answered:
                conv.answered = True
                conv.state = "talking"
                self.uplink.event("call_answered", call_id=conv.call_id)
            elif leg == LEG_OPERATOR and not conv.answered and LEG_CALLER in conv.legs:
                op = pj.CallOpParam()
                op.statusCode = 200
                conv.legs[LEG_CALLER].answer(op)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._leg_gone(conv, leg, info.lastStatusCode, info.lastReason)

    def _leg_gone(self, conv: Conversation, leg: int, status: int, reason: str) -> None:
        call = conv.legs.pop(leg, None)
        conv.media.pop(leg, None)
        tap = conv.taps.pop(leg, None)
        self.ended.extend(x for x in (call, tap) if x is not None)
        if leg == LEG_CALLER:
            self.ended.extend(conv.players)
        self.uplink.event("leg_ended", call_id=conv.call_id, leg=LEG_NAMES[leg], status=status, reason=reason)
        if leg == LEG_CALLER:
            if conv.transfer is not None and conv.state in ("transferring", "three-way", "consulted"):
                self._transfer_failed(conv, 0, "caller hung up during the transfer")
            self._end(conv, status, reason, tap)
        elif leg == LEG_OPERATOR:
            if not conv.answered:  # the seat did not take it: tell the PBX why, so it can re-route
                op = pj.CallOpParam()
                op.statusCode = status if 400 <= status < 700 else 480
                op.reason = f"operator seat: {reason}"
                if LEG_CALLER in conv.legs:
                    conv.legs[LEG_CALLER].hangup(op)  # rejects the still-unanswered INVITE
            elif conv.state == "handed-over":
                pass  # expected: the operator left, caller and hotline talk on
            elif conv.state == "three-way":
                self._handed_over(conv)
            elif LEG_HOTLINE not in conv.legs:
                self._hangup_all(conv)  # operator hung up on an ordinary call: end it
        elif leg == LEG_HOTLINE:
            if conv.state == "consulted":
                pass  # replaced by the caller's own call to the hotline: NOTIFY reports it
            elif conv.state == "transferring":
                self._transfer_failed(conv, status, reason or "rejected")
            elif conv.state == "three-way":
                self._transfer_failed(conv, status, "hotline hung up before the operator left")
            elif conv.state == "handed-over":
                self._hangup_all(conv)  # the hotline finished with the caller

    def _end(self, conv: Conversation, status: int, reason: str, caller_tap: TapPort | None) -> None:
        for call in list(conv.legs.values()):
            self._hangup(call)
        frames = caller_tap.seq if caller_tap else 0
        cb_ns = caller_tap.callback_ns if caller_tap else 0
        conv.state = "ended"
        self.uplink.event("call_ended", call_id=conv.call_id, slot=conv.slot, status=status, reason=reason,
                          frames=frames, callback_us=round(cb_ns / max(frames, 1) / 1000, 2))
        self.convs.pop(conv.call_id, None)

    def on_leg_media(self, call: LegCall) -> None:
        conv = call.conv
        if conv is None or conv.legs.get(call.leg) is not call:
            return
        info = call.getInfo()
        for i, mi in enumerate(info.media):
            if mi.type != pj.PJMEDIA_TYPE_AUDIO or mi.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            aud = call.getAudioMedia(i)
            conv.media[call.leg] = aud
            if call.leg not in conv.taps:
                tap = TapPort(self, conv.slot, call.leg)
                fmt = pj.MediaFormatAudio()
                fmt.init(pj.PJMEDIA_FORMAT_PCM, CLOCK_RATE, 1, FRAME_MS * 1000, 16)
                tap.createPort(f"tap-{conv.slot}-{call.leg}", fmt)
                aud.startTransmit(tap)
                conv.taps[call.leg] = tap
            codec = ""
            try:
                codec = call.getStreamInfo(i).codecName
            except pj.Error:
                pass
            self.uplink.event("media_active", call_id=conv.call_id, slot=conv.slot, leg=LEG_NAMES[call.leg],
                              codec=codec)
            self._bridge(conv)

    def _bridge(self, conv: Conversation) -> None:
        """Connect every pair of live legs (startTransmit is idempotent)."""
        legs = [leg for leg in (LEG_CALLER, LEG_OPERATOR, LEG_HOTLINE) if leg in conv.media]
        if LEG_HOTLINE in legs and conv.state == "transferring" and conv.transfer is not None \
                and conv.transfer.mode == "attended":
            # the hotline answered the consultation: ask the caller's side to replace our
            # hotline leg with a direct call (REFER with Replaces); NOTIFY decides the outcome
            conv.state = "consulted"
            self.uplink.event("transfer_consulted", call_id=conv.call_id, target=conv.transfer.target)
            conv.legs[LEG_CALLER].xferReplaces(conv.legs[LEG_HOTLINE], pj.CallOpParam(True))
            return
        if LEG_HOTLINE in legs and conv.state == "transferring":
            conv.state = "three-way"
            assert conv.transfer is not None
            conv.transfer.bridged_at = time.monotonic()
            self.uplink.event("transfer_bridged", call_id=conv.call_id, target=conv.transfer.target,
                              legs=[LEG_NAMES[x] for x in legs])
            if LEG_OPERATOR not in conv.legs:  # no seat leg (answer mode): the handover is done
                self._handed_over(conv)
        for a in legs:
            for b in legs:
                if a != b:
                    conv.media[a].startTransmit(conv.media[b])

    def on_dtmf(self, call: LegCall, digit: str, method: int) -> None:
        conv = call.conv
        if conv is None:
            return
        how = "info" if method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"
        self.uplink.event("dtmf", call_id=conv.call_id, leg=LEG_NAMES[call.leg], digit=digit, method=how)

    def play(self, conv: Conversation, leg_name: str, wav: str) -> None:
        """Play a prompt (a WAV file) into one leg, e.g. the IVR's confirmation question."""
        leg = next((k for k, v in LEG_NAMES.items() if v == leg_name), None)
        if leg is None or leg not in conv.media:
            self.uplink.event("error", call_id=conv.call_id, message=f"no active {leg_name!r} leg to play into")
            return
        player = PromptPlayer(self, conv.call_id, leg_name, wav)
        try:
            player.createPlayer(wav, pj.PJMEDIA_FILE_NO_LOOP)
        except pj.Error as e:
            self.uplink.event("error", call_id=conv.call_id, message=f"cannot play {wav}: {e.info()}")
            return
        player.startTransmit(conv.media[leg])
        conv.players.append(player)
        self.uplink.event("prompt_started", call_id=conv.call_id, leg=leg_name, wav=wav)

    # -- transfer -----------------------------------------------------------------------
    def on_command(self, cmd: dict[str, Any]) -> None:
        kind = cmd.get("cmd")
        if kind == "shutdown":
            self.running = False
            return
        conv = self.convs.get(str(cmd.get("call_id")))
        if kind in ("hangup", "transfer", "release_operator", "play") and conv is None:
            self.uplink.event("error", call_id=cmd.get("call_id"), message=f"no such call: {cmd.get('call_id')}")
            return
        assert conv is not None or kind not in ("hangup", "transfer", "release_operator", "play")
        if kind == "hangup":
            self._hangup_all(conv)  # type: ignore[arg-type]
        elif kind == "transfer":
            self.start_transfer(conv, str(cmd.get("target", "")), str(cmd.get("mode", "three-way")),  # type: ignore[arg-type]
                                float(cmd.get("timeout", 20)), float(cmd.get("drop_operator_after", 0)))
        elif kind == "release_operator":
            self.release_operator(conv)  # type: ignore[arg-type]
        elif kind == "play":
            self.play(conv, str(cmd.get("leg", "caller")), str(cmd.get("wav", "")))  # type: ignore[arg-type]
        else:
            self.uplink.event("error", message=f"unknown command: {kind}")

    def start_transfer(self, conv: Conversation, target: str, mode: str, timeout: float, drop_after: float) -> None:
        if conv.state != "talking":
            self.uplink.event("transfer_failed", call_id=conv.call_id, target=target, status=0,
                              reason=f"call is {conv.state}, not talking: nothing changed")
            return
        if not target.startswith("sip:"):
            self.uplink.event("transfer_failed", call_id=conv.call_id, target=target, status=0,
                              reason="target must be a sip: URI")
            return
        conv.transfer = Transfer(target, mode, time.monotonic() + timeout, drop_after)
        conv.state = "transferring"
        self.uplink.event("transfer_started", call_id=conv.call_id, target=target, mode=mode)
        if mode == "refer":
            conv.legs[LEG_CALLER].xfer(target, pj.CallOpParam(True))
        elif mode in ("three-way", "attended"):
            self._dial(conv, LEG_HOTLINE, target)  # attended: a consultation leg first
        else:
            self._transfer_failed(conv, 0, f"unknown transfer mode {mode!r}")

    def release_operator(self, conv: Conversation) -> None:
        if conv.state != "three-way":
            self.uplink.event("error", call_id=conv.call_id, message=f"no three-way call to leave (state {conv.state})")
            return
        seat = conv.legs.get(LEG_OPERATOR)
        if seat is not None:
            self._hangup(seat)
        self._handed_over(conv)

    def _handed_over(self, conv: Conversation) -> None:
        conv.state = "handed-over"
        self.uplink.event("transfer_completed", call_id=conv.call_id, target=conv.transfer.target if conv.transfer
                          else "", mode=conv.transfer.mode if conv.transfer else "")

    def _transfer_failed(self, conv: Conversation, status: int, reason: str) -> None:
        """The caller is never dropped: back to caller + operator, and say why."""
        t = conv.transfer
        if t is None:
            return  # already reported (a hang-up below can call back into here synchronously)
        conv.transfer = None
        if conv.state != "ended" and LEG_CALLER in conv.legs:
            conv.state = "talking"
        self.uplink.event("transfer_failed", call_id=conv.call_id, target=t.target, status=status, reason=reason)
        hot = conv.legs.get(LEG_HOTLINE)
        if hot is not None:
            self._hangup(hot)

    def on_refer_status(self, call: LegCall, status: int, reason: str, final: bool) -> None:
        conv = call.conv
        if conv is None or conv.transfer is None or conv.transfer.mode not in ("refer", "attended"):
            return
        self.uplink.event("transfer_progress", call_id=conv.call_id, status=status, reason=reason, final=final)
        if not final:
            return
        if 200 <= status < 300:
            self._handed_over(conv)
            self._hangup_all(conv)  # pjsua2 does not hang up the transferring leg itself
        else:
            self._transfer_failed(conv, status, reason or "REFER failed")

    def check_timers(self) -> None:
        now = time.monotonic()
        if now >= self._next_media_check:
            self._next_media_check = now + 1.0
            for conv in list(self.convs.values()):
                try:
                    self._check_media(conv, now)
                except Exception:
                    self.report_exception("media check")
        for conv in list(self.convs.values()):
            t = conv.transfer
            if t is None:
                continue
            if conv.state in ("transferring", "consulted") and now > t.deadline:
                why = "no answer (timeout)" if t.mode == "three-way" else "no final NOTIFY (timeout)"
                self._transfer_failed(conv, 408, why)
            elif conv.state == "three-way" and t.drop_operator_after and now > t.bridged_at + t.drop_operator_after:
                self.release_operator(conv)

    def _check_media(self, conv: Conversation, now: float) -> None:
        """RTP stopped mid-call (a dead trunk, a crashed phone): end the call after
        ``media_timeout`` seconds rather than hold a slot and a hotline forever."""
        call = conv.legs.get(LEG_CALLER)
        if call is None or LEG_CALLER not in conv.media or not self.cfg.media_timeout:
            return
        try:
            info = call.getInfo()  # keep it referenced: its media vector dies with it
            idx = next(i for i, mi in enumerate(info.media) if mi.type == pj.PJMEDIA_TYPE_AUDIO)
            pkts = call.getStreamStat(idx).rtcp.rxStat.pkt
        except (pj.Error, StopIteration):
            return
        if pkts != conv.rx_packets:
            conv.rx_packets, conv.rx_changed = pkts, now
        elif now - conv.rx_changed > self.cfg.media_timeout:
            self.uplink.event("media_timeout", call_id=conv.call_id, seconds=round(now - conv.rx_changed, 1),
                              packets=pkts)
            conv.rx_changed = now
            self._hangup_all(conv)

    # -- helpers --------------------------------------------------------------------------
    def _hangup(self, call: Any) -> None:
        try:
            if call.isActive():
                call.hangup(pj.CallOpParam(True))
        except pj.Error:
            pass

    def _hangup_all(self, conv: Conversation) -> None:
        for call in list(conv.legs.values()):
            self._hangup(call)

    def report_exception(self, where: str) -> None:
        self.callback_errors += 1
        self.uplink.event("error", message=f"{where}: {traceback.format_exc(limit=3)}")


def request_user(message: str) -> str:
    """The user part of the request line: ``INVITE sip:110@host SIP/2.0`` -> ``110``."""
    line = message.split("\r\n", 1)[0].split("\n", 1)[0]
    parts = line.split()
    if len(parts) < 2:
        return ""
    uri = parts[1].split(":", 1)[-1]
    return uri.split("@", 1)[0] if "@" in uri else ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="fenliu SIP worker (started by the supervisor)")
    p.add_argument("--name", required=True)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--sip-port", type=int, required=True)
    p.add_argument("--rtp-port", type=int, required=True)
    p.add_argument("--rtp-range", type=int, default=40)
    p.add_argument("--control", required=True, help="supervisor's Unix stream socket")
    p.add_argument("--audio", required=True, help="supervisor's Unix datagram socket for frames")
    p.add_argument("--seat", default="", help="B2BUA mode: the operator seat's SIP URI")
    p.add_argument("--users", default="*", help="comma list of numbers served (request-URI user), * = any")
    p.add_argument("--media-timeout", type=float, default=10.0, help="end a call after N s without RTP (0 = never)")
    p.add_argument("--allow", default="", help="comma list of peer addresses allowed to call (empty = any)")
    p.add_argument("--registrar", default="", help="register to this PBX (sip:host:port), digest auth")
    p.add_argument("--reg-user", default="")
    p.add_argument("--reg-expires", type=int, default=300)
    p.add_argument("--reg-retry", type=int, default=30)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    cfg = WorkerConfig(a.name, a.address, a.sip_port, a.rtp_port, a.rtp_range, a.control, a.audio,
                       seat_uri=a.seat, users=tuple(u.strip() for u in a.users.split(",") if u.strip()),
                       media_timeout=a.media_timeout,
                       allow=tuple(x.strip() for x in a.allow.split(",") if x.strip()),
                       registrar=a.registrar, reg_user=a.reg_user,
                       reg_password=os.environ.get("FENLIU_SIP_PASSWORD", ""),  # never on the command line
                       reg_expires=a.reg_expires, reg_retry=a.reg_retry)
    uplink = Uplink(cfg.control_path, cfg.audio_path)
    worker = Worker(cfg, uplink)
    return serve_until_signalled(worker, lambda why: uplink.event(
        "error", message=f"cannot start SIP endpoint on {cfg.address}:{cfg.sip_port}: {why} "
                         f"(is the port in use? set sip.port / sip.rtp_port)"))


if __name__ == "__main__":
    sys.exit(main())
