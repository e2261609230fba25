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
import signal
import socket
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import pjsua2 as pj

from fenliu.sip.framecopy import make_copier

log = logging.getLogger("fenliu.sip.worker")

# audio datagram: call slot (H), leg (B: 0 caller, 1 operator, 2 hotline), sequence (I), PCM
FRAME_HEADER = struct.Struct("!HBI")
CLOCK_RATE = 16000
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
class CallState:
    slot: int
    call: Any
    call_id: str
    remote: str
    local: str
    taps: list[TapPort] = field(default_factory=list)
    answered: bool = False


class InboundCall(pj.Call):
    def __init__(self, worker: Worker, account: pj.Account, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        self.worker = worker

    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802
        try:
            self.worker.on_call_state(self)
        except Exception:
            self.worker.report_exception("onCallState")

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802
        try:
            self.worker.on_call_media(self)
        except Exception:
            self.worker.report_exception("onCallMediaState")


class Account(pj.Account):
    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
        try:
            self.worker.on_incoming(self, prm)
        except Exception:
            self.worker.report_exception("onIncomingCall")


class Worker:
    def __init__(self, cfg: WorkerConfig, uplink: Uplink) -> None:
        self.cfg = cfg
        self.uplink = uplink
        self.ep = pj.Endpoint()
        self.copy, self.copy_name = make_copier(pj.ByteVector)
        self.calls: dict[str, CallState] = {}
        self.ended: list[Any] = []  # pj objects kept until destroy (lifetime rule)
        self.callback_errors = 0
        self.running = True
        self._next_slot = 0

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        ep = self.ep
        ep.libCreate()
        ep_cfg = pj.EpConfig()
        ep_cfg.uaConfig.threadCnt = 0
        ep_cfg.uaConfig.mainThreadOnly = True
        ep_cfg.uaConfig.maxCalls = self.cfg.max_calls
        ep_cfg.uaConfig.userAgent = f"fenliu-worker/{self.cfg.name}"
        ep_cfg.logConfig.level = 1
        ep_cfg.logConfig.consoleLevel = 1
        ep_cfg.medConfig.clockRate = CLOCK_RATE
        ep_cfg.medConfig.sndClockRate = CLOCK_RATE
        ep_cfg.medConfig.noVad = True
        ep_cfg.medConfig.ecTailLen = 0
        ep.libInit(ep_cfg)
        ep.audDevManager().setNullDev()
        tcfg = pj.TransportConfig()
        tcfg.port = self.cfg.sip_port
        tcfg.boundAddress = self.cfg.address
        ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        ep.libStart()
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:fenliu-{self.cfg.name}@{self.cfg.address}:{self.cfg.sip_port}"
        acfg.mediaConfig.transportConfig.port = self.cfg.rtp_port
        acfg.mediaConfig.transportConfig.portRange = self.cfg.rtp_range
        acfg.mediaConfig.transportConfig.boundAddress = self.cfg.address
        self.account = Account(self)
        self.account.create(acfg, True)
        self.uplink.event("ready", worker=self.cfg.name, sip_port=self.cfg.sip_port,
                          rtp_port=self.cfg.rtp_port, frame_copy=self.copy_name, pid=os.getpid())

    def run(self) -> None:
        while self.running:
            self.ep.libHandleEvents(20)
            for cmd in self.uplink.commands():
                self.on_command(cmd)

    def stop(self) -> None:
        """Hang up politely, drop every pj object, then destroy the library."""
        for st in list(self.calls.values()):
            try:
                st.call.hangup(pj.CallOpParam(True))
            except Exception:
                pass
        deadline = time.monotonic() + 2.0
        while self.calls and time.monotonic() < deadline:
            self.ep.libHandleEvents(20)
        self.calls.clear()
        self.ended.clear()
        self.account = None  # type: ignore[assignment]
        self.uplink.event("stopped", worker=self.cfg.name, dropped_frames=self.uplink.dropped_frames,
                          callback_errors=self.callback_errors)
        self.ep.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)

    # -- callbacks ---------------------------------------------------------------------
    def on_incoming(self, account: pj.Account, prm: pj.OnIncomingCallParam) -> None:
        call = InboundCall(self, account, prm.callId)
        info = call.getInfo()
        slot = self._next_slot
        self._next_slot = (self._next_slot + 1) % 65536
        st = CallState(slot=slot, call=call, call_id=info.callIdString, remote=info.remoteUri, local=info.localUri)
        self.calls[info.callIdString] = st
        self.uplink.event("call_started", call_id=st.call_id, slot=slot, remote=st.remote, local=st.local)
        op = pj.CallOpParam()
        op.statusCode = 200
        call.answer(op)

    def on_call_state(self, call: InboundCall) -> None:
        info = call.getInfo()
        st = self.calls.get(info.callIdString)
        if st is None:
            return
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and not st.answered:
            st.answered = True
            self.uplink.event("call_answered", call_id=st.call_id)
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            frames = sum(t.seq for t in st.taps)
            cb_ns = sum(t.callback_ns for t in st.taps)
            self.uplink.event("call_ended", call_id=st.call_id, slot=st.slot, status=info.lastStatusCode,
                              reason=info.lastReason, frames=frames,
                              callback_us=round(cb_ns / max(frames, 1) / 1000, 2))
            self.ended.extend([st.call, *st.taps])
            del self.calls[info.callIdString]

    def on_call_media(self, call: InboundCall) -> None:
        info = call.getInfo()
        st = self.calls.get(info.callIdString)
        if st is None:
            return
        for i, mi in enumerate(info.media):
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE and not st.taps:
                aud = call.getAudioMedia(i)
                tap = TapPort(self, st.slot, 0)
                fmt = pj.MediaFormatAudio()
                fmt.init(pj.PJMEDIA_FORMAT_PCM, CLOCK_RATE, 1, FRAME_MS * 1000, 16)
                tap.createPort(f"tap-{st.slot}", fmt)
                aud.startTransmit(tap)
                st.taps.append(tap)
                codec = ""
                try:
                    codec = call.getStreamInfo(i).codecName
                except Exception:
                    pass
                self.uplink.event("media_active", call_id=st.call_id, slot=st.slot, codec=codec)

    def on_command(self, cmd: dict[str, Any]) -> None:
        kind = cmd.get("cmd")
        if kind == "shutdown":
            self.running = False
        elif kind == "hangup":
            st = self.calls.get(str(cmd.get("call_id")))
            if st is None:
                self.uplink.event("error", message=f"no such call: {cmd.get('call_id')}")
            else:
                st.call.hangup(pj.CallOpParam(True))
        else:
            self.uplink.event("error", message=f"unknown command: {kind}")

    def report_exception(self, where: str) -> None:
        self.callback_errors += 1
        self.uplink.event("error", message=f"{where}: {traceback.format_exc(limit=3)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="fenliu SIP worker (started by the supervisor)")
    p.add_argument("--name", required=True)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--sip-port", type=int, required=True)
    p.add_argument("--rtp-port", type=int, required=True)
    p.add_argument("--rtp-range", type=int, default=40)
    p.add_argument("--control", required=True, help="supervisor's Unix stream socket")
    p.add_argument("--audio", required=True, help="supervisor's Unix datagram socket for frames")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    cfg = WorkerConfig(a.name, a.address, a.sip_port, a.rtp_port, a.rtp_range, a.control, a.audio)
    uplink = Uplink(cfg.control_path, cfg.audio_path)
    worker = Worker(cfg, uplink)

    def on_term(_sig: int, _frm: object) -> None:
        worker.running = False

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        worker.start()
    except pj.Error as e:
        uplink.event("error", message=f"cannot start SIP endpoint on {cfg.address}:{cfg.sip_port}: {e.info()}")
        return 3
    try:
        worker.run()
    finally:
        worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
