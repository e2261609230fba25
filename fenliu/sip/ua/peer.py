"""A small standalone pjsua2 user agent: a test hotline, a test operator seat, or a caller.

It is what `fenliu dial` runs to place a real call into the service (拨测), what the demo
starts as local test hotlines, and what the integration tests use as the far end:

    python -m fenliu.sip.ua.peer --port 5091 --answer 200 --record heard.wav       # a hotline
    python -m fenliu.sip.ua.peer --port 5092 --answer 486                          # a busy seat
    python -m fenliu.sip.ua.peer --port 5093 --call sip:110@127.0.0.1:5060 --play call.wav

It prints one JSON object per line on stdout for each thing that happened (ready, incoming,
state, media, transfer request, ended), and follows a REFER (it is a well-behaved transferee).
With ``--commands`` it also takes one command per line on stdin, for its current call — a caller
that answers an IVR the way a person would, when the test has seen the prompt start:

    dtmf 1          send DTMF (RFC 4733)
    play FILE.wav   play a recording into the call (speech)
    hangup
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from typing import Any

import pjsua2 as pj

from fenliu.sip.ua.endpoint import account_config, serve_until_signalled, start_endpoint

HEARD_S = 1.0  # "heard": this much voiced audio reached the recorder
VOICE_LEVEL = 8  # pjmedia's signal level (0..255) above which a frame counts as voice, not line noise


def emit(kind: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"event": kind, "t": time.time(), **data}, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class PeerCall(pj.Call):
    def __init__(self, peer: Peer, acc: pj.Account, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(acc, call_id)
        self.peer = peer
        self.player: pj.AudioMediaPlayer | None = None
        self.recorder: pj.AudioMediaRecorder | None = None
        self.heard_s = 0.0  # voiced audio recorded so far (up to HEARD_S)
        self.last_listen = 0.0
        self.extra_players: list[pj.AudioMediaPlayer] = []  # played on command (stdin "play")

    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802
        try:
            info = self.getInfo()
            emit("state", call_id=info.callIdString, state=info.stateText, status=info.lastStatusCode,
                 reason=info.lastReason, remote=info.remoteUri)
            if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.peer.on_ended(self, info)
        except Exception as e:
            emit("error", where="onCallState", message=str(e))

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802
        try:
            info = self.getInfo()
            for i, mi in enumerate(info.media):
                if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                    self.peer.on_media(self, self.getAudioMedia(i))
        except Exception as e:
            emit("error", where="onCallMediaState", message=str(e))

    def onCallReplaced(self, prm: pj.OnCallReplacedParam) -> None:  # noqa: N802
        try:
            emit("replaced", call_id=self.getInfo().callIdString)
            new = PeerCall(self.peer, self.peer.account, prm.newCallId)
            self.peer.calls.append(new)
            prm.newCall = new  # keep the replacing call's callbacks (and the recording) alive
        except Exception as e:
            emit("error", where="onCallReplaced", message=str(e))

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:  # noqa: N802
        try:
            emit("transfer_request", to=prm.dstUri)
            if self.peer.args.refuse_refer:
                prm.statusCode = 603  # a caller side that will not be transferred
                return
            new = PeerCall(self.peer, self.peer.account)
            self.peer.calls.append(new)
            prm.newCall = new  # without this the new leg's callbacks are lost (FIELD-NOTES)
        except Exception as e:
            emit("error", where="onCallTransferRequest", message=str(e))


class Account(pj.Account):
    def __init__(self, peer: Peer) -> None:
        super().__init__()
        self.peer = peer

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
        try:
            self.peer.on_incoming(prm)
        except Exception as e:
            emit("error", where="onIncomingCall", message=str(e))


class Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ep = pj.Endpoint()
        self.calls: list[PeerCall] = []
        self.running = True
        self.finished_calls = 0
        self.commands: queue.Queue[str] = queue.Queue()
        if args.commands:
            threading.Thread(target=self._read_commands, daemon=True).start()

    def _read_commands(self) -> None:
        for line in sys.stdin:
            self.commands.put(line.strip())

    def command(self, line: str) -> None:
        """One stdin command for the latest call that has media (see the module docstring)."""
        verb, _, arg = line.partition(" ")
        call = next((c for c in reversed(self.calls) if c.isActive()), None)
        if call is None:
            emit("error", where="command", message=f"no active call for {line!r}")
            return
        if verb == "dtmf":
            call.dialDtmf(arg.strip())
            emit("dtmf_sent", digits=arg.strip())
        elif verb == "play":
            info = call.getInfo()
            idx = next(i for i, mi in enumerate(info.media) if mi.type == pj.PJMEDIA_TYPE_AUDIO)
            player = pj.AudioMediaPlayer()
            player.createPlayer(arg.strip(), pj.PJMEDIA_FILE_NO_LOOP)
            player.startTransmit(call.getAudioMedia(idx))
            call.extra_players.append(player)
            emit("playing", file=arg.strip())
        elif verb == "hangup":
            call.hangup(pj.CallOpParam(True))
        else:
            emit("error", where="command", message=f"unknown command {line!r}")

    def start(self) -> None:
        a = self.args
        for codec in start_endpoint(self.ep, a.address, a.port, "fenliu-peer", codecs=tuple(a.codecs.split(",")),
                                    exclusive=True, transports=tuple(a.transports.split(",")), tls_port=a.tls_port,
                                    tls_cert=a.tls_cert or "", tls_key=a.tls_key or ""):
            emit("error", where="codec", message=f"unknown codec {codec}")
        acfg = account_config(f"sip:{a.user}@{a.address}:{a.port}", a.address, a.rtp_port, 20)
        if a.contact:  # as a PBX does: the address where it takes requests, not a connection's port
            acfg.sipConfig.contactForced = a.contact
        self.account = Account(self)
        self.account.create(acfg, True)
        emit("ready", uri=acfg.idUri)
        if a.call:
            call = PeerCall(self, self.account)
            self.calls.append(call)
            call.makeCall(a.call, pj.CallOpParam(True))
            if a.ring_timeout:
                call.hangup_at = time.monotonic() + a.ring_timeout

    def on_incoming(self, prm: pj.OnIncomingCallParam) -> None:
        call = PeerCall(self, self.account, prm.callId)
        self.calls.append(call)
        info = call.getInfo()
        emit("incoming", call_id=info.callIdString, remote=info.remoteUri)
        op = pj.CallOpParam()
        if self.args.answer == "none":
            op.statusCode = 180
        else:
            op.statusCode = int(self.args.answer)
        call.answer(op)

    def on_media(self, call: PeerCall, aud: pj.AudioMedia) -> None:
        a = self.args
        if a.record and call.recorder is None:
            call.recorder = pj.AudioMediaRecorder()
            call.recorder.createRecorder(a.record)
            aud.startTransmit(call.recorder)
        call.hangup_at = None  # answered: the ring timeout is over
        if a.hangup_after:
            call.hangup_at = time.monotonic() + a.hangup_after
        if a.mic and not getattr(call, "mic_on", False):  # a phone's microphone: RTP never stops (nor DTMF with it)
            self.ep.audDevManager().getCaptureDevMedia().startTransmit(aud)
            call.mic_on = True
        if a.play and call.player is None:
            call.player = pj.AudioMediaPlayer()
            call.player.createPlayer(a.play, pj.PJMEDIA_FILE_NO_LOOP)
            call.player.startTransmit(aud)
        emit("media", call_id=call.getInfo().callIdString)

    def on_ended(self, call: PeerCall, info: pj.CallInfo) -> None:
        emit("ended", call_id=info.callIdString, status=info.lastStatusCode, reason=info.lastReason,
             duration=info.connectDuration.sec + info.connectDuration.msec / 1000)
        self.finished_calls += 1
        if self.args.call and self.args.exit_after_call:
            self.running = False

    def run(self) -> None:
        while self.running:
            self.ep.libHandleEvents(20)
            while not self.commands.empty():
                line = self.commands.get()
                try:
                    self.command(line)
                except Exception as e:  # a bad command must not stop the peer
                    emit("error", where="command", message=f"{line!r}: {e}")
            now = time.monotonic()
            for call in list(self.calls):
                self._listen(call, now)
                due = getattr(call, "hangup_at", None)
                if due is not None and now >= due:
                    call.hangup_at = None
                    try:
                        call.hangup(pj.CallOpParam(True))
                    except pj.Error:
                        pass

    def _listen(self, call: PeerCall, now: float) -> None:
        """A recording peer says once when it has heard a second of voice (signal above the line's
        noise) — a fact a test can wait for instead of letting a call run for a fixed time."""
        if call.recorder is None or call.heard_s >= HEARD_S:
            return
        try:
            level = call.recorder.getRxLevel()
        except pj.Error:
            return
        if level >= VOICE_LEVEL:
            call.heard_s += now - (call.last_listen or now)
            if call.heard_s >= HEARD_S:
                emit("heard", call_id=call.getInfo().callIdString, seconds=round(call.heard_s, 2))
        call.last_listen = now

    def stop(self) -> None:
        for call in self.calls:
            try:
                if call.isActive():
                    call.hangup(pj.CallOpParam(True))
            except pj.Error:
                pass
        end = time.monotonic() + 1.0
        while time.monotonic() < end and any(c.isActive() for c in self.calls):
            self.ep.libHandleEvents(20)
        for call in self.calls:
            call.player = None
            call.recorder = None
            call.extra_players.clear()
        self.calls.clear()
        self.account = None  # type: ignore[assignment]
        self.ep.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="fenliu test/demo SIP peer (hotline, seat or caller)")
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rtp-port", type=int, default=0, help="first RTP port (0 = any)")
    p.add_argument("--user", default="peer")
    p.add_argument("--answer", default="200", help="status to answer with: 200, 486, 603 …, or 'none' (ring)")
    p.add_argument("--record", help="record what this peer hears to a WAV file")
    p.add_argument("--play", help="play this WAV into the call once media is up")
    p.add_argument("--call", help="place a call to this URI instead of waiting")
    p.add_argument("--exit-after-call", action="store_true", help="exit when the placed call ends")
    p.add_argument("--ring-timeout", type=float, default=0.0, help="give up a placed call not answered in N s")
    p.add_argument("--hangup-after", type=float, default=0.0, help="hang up N s after media starts")
    p.add_argument("--refuse-refer", action="store_true", help="answer REFER with 603 Decline")
    p.add_argument("--mic", action="store_true",
                   help="send audio all through the call like a phone's microphone (silence from the null device); "
                        "without it pjmedia stops sending RTP — and RFC 4733 keys — when nothing plays")
    p.add_argument("--commands", action="store_true", help="take commands on stdin: dtmf D, play FILE, hangup")
    p.add_argument("--codecs", default="PCMA/8000/1,PCMU/8000/1", help="codecs to offer, best first (only these)")
    p.add_argument("--transports", default="udp", help="udp,tcp,tls (a call's URI picks one: ;transport=tcp)")
    p.add_argument("--tls-port", type=int, default=0, help="TLS listening port (0: any, for a caller)")
    p.add_argument("--tls-cert", help="PEM certificate to serve TLS with (a caller needs none)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--contact", help="Contact to send, e.g. <sip:pbx@127.0.0.1:5061;transport=tls>")
    args = p.parse_args(argv)
    peer = Peer(args)
    rc = serve_until_signalled(peer, lambda why: emit("error", where="start", message=why))
    if rc:
        return rc
    emit("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
