"""What real PBXs, carriers and ACDs do to a call, played against a real SIP worker on 127.0.0.1:
early media from a hotline, a hotline that answers and drops, re-INVITEs that move the media
(hold, unhold, another port, no SDP), and bursts of them. Each case asserts what the caller gets
(never dropped by us) and what recognition gets (never deaf in silence).

The callers are SIPp scenarios that talk until they get a BYE: each test ends the call itself
when it is done, after checking that nobody else ended it."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from fenliu.sip import protocol as P
from fenliu.sip.link import WorkerLink
from tests.conftest import FIXTURES, free_port, rtp_block
from tests.sip.peers import fact
from tests.sip.sipp import (
    CALLER_HEADERS,
    alaw_file,
    answer_then_bye,
    caller_reinvite,
    caller_scenario,
    early_media_then,
    reply,
    run_sipp,
    start_sipp_server,
    talking_caller,
)

pytestmark = pytest.mark.slow

WAV = FIXTURES / "ko" / "ko-02-help.wav"
HEADERS = CALLER_HEADERS.replace("USER", "110")


class Frames:
    """The recognition tap's frames as the supervisor would get them, per call slot."""

    def __init__(self) -> None:
        self.count: Counter[int] = Counter()
        self.lock = threading.Lock()

    def __call__(self, slot: int, leg: int, seq: int, pcm: bytes) -> None:
        if leg == P.Leg.CALLER:
            with self.lock:
                self.count[slot] += 1

    def of(self, slot: int) -> int:
        with self.lock:
            return self.count[slot]


def start_worker(name: str, frames: Frames | None = None, **settings) -> WorkerLink:
    link = WorkerLink.loopback(name, free_port(2), rtp_block(), on_frame=frames, **settings)
    link.start()
    return link


def caller_thread(scenario: str, link: WorkerLink, work: Path, timeout: float = 90) -> tuple[threading.Thread, dict]:
    work.mkdir(parents=True, exist_ok=True)
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("r", run_sipp(scenario, link.sip_port, work, timeout=timeout)))
    t.start()
    return t, box


def ended(link: WorkerLink, cid: str) -> bool:
    return any(isinstance(f, P.CallEnded) and f.call_id == cid for f in link.facts())


def hang_up(link: WorkerLink, cid: str, t: threading.Thread, box: dict) -> None:
    """The test is done: the call must still be up (nobody dropped the caller); end it now."""
    assert not ended(link, cid), "the caller was dropped"
    link.send(P.Hangup(cid))
    t.join(60)
    assert box["r"].returncode == 0, box["r"].stdout[-1500:]
    link.wait(fact(P.CallEnded, call_id=cid))


def misbehaving_hotline(scenario: str, work: Path) -> tuple[subprocess.Popen[str], str]:
    port = free_port(2)
    proc = start_sipp_server(scenario, port, work)
    return proc, f"sip:12345@127.0.0.1:{port}"


# -- early media and hotlines that do not stay ----------------------------------------------------


@pytest.mark.parametrize("seat", [False, True], ids=["answer-mode", "seat-mode"])
def test_early_media_then_busy_is_a_failed_transfer_and_the_caller_stays(tmp_path, seat):
    """183 + SDP (ringback) then 486: never "bridged", a failed transfer with the status, and the
    caller stays where they were (with the operator's seat, or the worker) — not hung up."""
    from tests.sip.peers import PeerProc

    seat_peer = PeerProc("--answer", "200", user="seat") if seat else None
    link = start_worker("em" + ("s" if seat else "a"), seat_uri=seat_peer.uri if seat_peer else "")
    hotline, uri = misbehaving_hotline(early_media_then("486 Busy Here", ring_ms=1500), tmp_path)
    try:
        t, box = caller_thread(talking_caller(alaw_file(WAV, tmp_path)), link, tmp_path / "caller")
        cid = link.wait(fact(P.CallAnswered), 20).call_id
        n = link.mark()
        link.send(P.Transfer(cid, uri, P.TransferMode.THREE_WAY, timeout=20, min_talk=3))
        progress = link.wait(lambda f: isinstance(f, P.TransferUpdate) and f.step == P.TransferStep.PROGRESS, 15,
                             since=n)
        assert progress.status == 183
        failed = link.wait(lambda f: isinstance(f, P.TransferUpdate) and f.step == P.TransferStep.FAILED, 15,
                           since=n)
        assert failed.status == 486 and "early media" in failed.reason
        steps = [f.step for f in link.facts(since=n) if isinstance(f, P.TransferUpdate)]
        assert P.TransferStep.BRIDGED not in steps and P.TransferStep.COMPLETED not in steps
        if seat_peer is not None:
            assert not seat_peer.has("ended")  # the operator still has the caller
        hang_up(link, cid, t, box)
    finally:
        hotline.kill()
        link.stop()
        if seat_peer is not None:
            seat_peer.stop()


def test_a_hotline_that_answers_and_hangs_up_at_once_keeps_the_caller(tmp_path):
    link = start_worker("fast")
    hotline, uri = misbehaving_hotline(answer_then_bye(200), tmp_path)
    try:
        t, box = caller_thread(talking_caller(alaw_file(WAV, tmp_path)), link, tmp_path / "caller")
        cid = link.wait(fact(P.CallAnswered), 20).call_id
        n = link.mark()
        link.send(P.Transfer(cid, uri, P.TransferMode.THREE_WAY, timeout=20, min_talk=3))
        link.wait(lambda f: isinstance(f, P.TransferUpdate) and f.step == P.TransferStep.BRIDGED, 15, since=n)
        failed = link.wait(lambda f: isinstance(f, P.TransferUpdate) and f.step == P.TransferStep.FAILED, 15,
                           since=n)
        assert "after answering" in failed.reason and "min_talk" in failed.reason
        link.wait(lambda f: isinstance(f, P.LegEnded) and f.leg == "hotline", 10, since=n)
        hang_up(link, cid, t, box)  # the caller was never hung up
    finally:
        hotline.kill()
        link.stop()


# -- re-INVITEs: recognition follows the media ----------------------------------------------------

REINVITES = {
    "hold-sendonly-then-unhold": [dict(direction="sendonly"), dict(direction="sendrecv")],
    "hold-inactive-then-unhold": [dict(direction="inactive"), dict(direction="sendrecv")],
    "rtp-moves-to-another-port": [dict(port_shift=2)],
    "codec-order-changes": [dict(codecs="0 8 101")],
    "reinvite-without-sdp": [dict(with_sdp=False)],
}


@pytest.mark.parametrize("case", list(REINVITES))
def test_recognition_follows_the_media_through_a_reinvite(tmp_path, case):
    """After each re-INVITE the caller's audio keeps reaching the recognition tap (before the
    fix it stopped at the first one: 400 of 1,500 frames in a 30 s call)."""
    frames = Frames()
    link = start_worker("ri", frames)
    audio = alaw_file(WAV, tmp_path)
    steps = REINVITES[case]
    middle = '<pause milliseconds="1500"/>\n  ' + "\n  ".join(
        caller_reinvite(HEADERS, 2 + i, version=2 + i, **kw) + '\n  <pause milliseconds="300"/>'
        for i, kw in enumerate(steps))
    scenario = caller_scenario(audio, 0, callee_hangs_up=True, middle=middle)
    scenario = scenario.replace(f"{audio},1,8", f"{audio},-1,8")
    try:
        n = link.mark()
        t, box = caller_thread(scenario, link, tmp_path / "caller")
        cid = link.wait(fact(P.CallAnswered), 20, since=n).call_id
        slot = link.wait(fact(P.CallStarted, call_id=cid), since=n).slot
        # the last re-INVITE's media is up (hold with a=inactive brings no audio: its unhold does)
        expected = 1 + sum(1 for kw in steps if kw.get("direction") != "inactive")
        link.wait(lambda f: isinstance(f, P.MediaActive) and f.call_id == cid, 20, since=n, nth=expected)
        after = frames.of(slot)
        deadline = time.monotonic() + 30
        while frames.of(slot) < after + 100 and time.monotonic() < deadline:  # 2 s of the caller's audio
            time.sleep(0.05)
        assert frames.of(slot) >= after + 100, f"recognition went deaf after the re-INVITE ({case})"
        assert not [f for f in link.facts(since=n) if isinstance(f, P.CallDegraded)]
        hang_up(link, cid, t, box)
    finally:
        link.stop()


def test_a_burst_of_reinvites_leaves_the_worker_and_a_bystander_call_alone(tmp_path):
    """150 hold/unhold re-INVITEs back to back in one call (a raw-SIP peer: each sent the moment the
    last was answered), while another call on the same worker talks on. Unbounded, the burst
    outran the bridge's port release (PJ_ETOOMANY, an RTP bind on a port still held, pjlib's ioqueue
    assertion: the worker and the bystander gone). Now the worker takes one per 100 ms and 30 per
    10 s and answers the rest 491 with Retry-After: it stays up, the bystander is untouched, the
    stormy call goes on and recognition still gets its audio."""
    from tests.sip.rawsip import RawCaller

    frames = Frames()
    link = start_worker("storm", frames, reserve_transfer_leg=False)
    audio = alaw_file(WAV, tmp_path)
    storm = RawCaller(link.sip_port)
    try:
        n = link.mark()
        bt, bbox = caller_thread(talking_caller(audio), link, tmp_path / "bystander")
        bystander = link.wait(fact(P.CallAnswered), 20, since=n).call_id
        m = link.mark()
        assert storm.call().status == 200
        cid = link.wait(fact(P.CallAnswered), 20, since=m).call_id
        slot = link.wait(fact(P.CallStarted, call_id=cid), since=m).slot
        answers = [storm.reinvite("sendonly" if i % 2 == 0 else "sendrecv") for i in range(150)]
        statuses = Counter(a.status for a in answers)
        assert set(statuses) <= {200, 491} and statuses[200] >= 1, statuses
        refused = [a for a in answers if a.status == 491]
        assert refused and all(a.headers.get("retry-after") == "1" for a in refused)
        assert link.wait(fact(P.ReinviteLimited, call_id=cid), 10, since=m).leg == "caller"
        assert storm.reinvite("sendrecv").status in (200, 491)  # still answering afterwards
        assert wait_frames(frames, slot), "recognition is deaf after the storm"
        assert link.proc is not None and link.proc.poll() is None, "the worker died"
        assert not [f for f in link.facts(since=n) if isinstance(f, P.WorkerError | P.CallDegraded)]
        assert not ended(link, cid) and not ended(link, bystander)
        assert storm.bye().status == 200
        hang_up(link, bystander, bt, bbox)  # the bystander's call was never touched
    finally:
        storm.close()
        link.stop()


# -- silence is not a hang-up ---------------------------------------------------------------------


def test_a_caller_on_hold_is_kept_however_long_the_silence(tmp_path):
    """The caller's PBX puts it on hold with a=inactive and its RTP stops, as it should, for four
    times the media timeout: nothing is asked and nothing is ended; after the unhold recognition
    hears the caller again."""
    frames = Frames()
    link = start_worker("hold", frames, media_timeout=1.0)
    audio = alaw_file(WAV, tmp_path)
    middle = f"""<pause milliseconds="1000"/>
  {caller_reinvite(HEADERS, 2, "inactive", version=2)}
  <nop><action><exec rtp_stream="pause"/></action></nop>
  <pause milliseconds="4000"/>
  {caller_reinvite(HEADERS, 3, "sendrecv", version=3)}
  <nop><action><exec rtp_stream="resume"/></action></nop>"""
    scenario = caller_scenario(audio, 0, callee_hangs_up=True, middle=middle).replace(f"{audio},1,8", f"{audio},-1,8")
    try:
        n = link.mark()
        t, box = caller_thread(scenario, link, tmp_path / "caller")
        cid = link.wait(fact(P.CallAnswered), 20, since=n).call_id
        slot = link.wait(fact(P.CallStarted, call_id=cid), since=n).slot
        held = link.wait(fact(P.LegHeld, call_id=cid), 20, since=n)
        assert held.held
        unheld = link.wait(fact(P.LegHeld, call_id=cid), 30, since=n, nth=2)
        assert not unheld.held
        during = link.facts(since=n)
        assert not [f for f in during if isinstance(f, P.MediaProbe | P.MediaTimeout | P.CallEnded)], \
            "a caller on hold was questioned or cut off"
        after = frames.of(slot)
        deadline = time.monotonic() + 30
        while frames.of(slot) < after + 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert frames.of(slot) >= after + 100, "recognition is deaf after the unhold"
        hang_up(link, cid, t, box)
    finally:
        link.stop()


# -- call identity ----------------------------------------------------------------------------------


def test_a_new_call_reusing_an_old_sip_call_id_is_a_new_call(tmp_path):
    """Two calls, one after the other, with the same SIP Call-ID (a PBX that recycles them): two
    calls with ids of fenliu's own, each keeping the SIP Call-ID as a field."""
    link = start_worker("cid")
    scenario = caller_scenario(None, talk_ms=300)
    try:
        ids = []
        for i in range(2):
            n = link.mark()
            (tmp_path / f"c{i}").mkdir()
            r = run_sipp(scenario, link.sip_port, tmp_path / f"c{i}", extra=("-cid_str", "recycled-7@pbx.example"))
            assert r.returncode == 0, r.stdout[-1500:]
            started = link.wait(fact(P.CallStarted), 15, since=n)
            link.wait(fact(P.CallEnded, call_id=started.call_id), 15, since=n)
            assert started.sip_call_id == "recycled-7@pbx.example"
            ids.append(started.call_id)
        assert ids[0] != ids[1] and all(len(x) == 36 and x.count("-") == 4 for x in ids)  # UUIDs, not the Call-ID
    finally:
        link.stop()


# -- transports: TCP, TLS, IPv6 ---------------------------------------------------------------------


def wait_frames(frames: Frames, slot: int, more: int = 100, within: float = 30) -> bool:
    """Until ``more`` frames of the caller (2 s of audio) have reached recognition."""
    start = frames.of(slot)
    deadline = time.monotonic() + within
    while frames.of(slot) < start + more and time.monotonic() < deadline:
        time.sleep(0.05)
    return frames.of(slot) >= start + more


def test_a_pbx_trunk_over_tcp(tmp_path):
    """SIPp over TCP (-t t1) to a worker that listens on UDP and TCP (the same port)."""
    frames = Frames()
    link = start_worker("tcp", frames, transports=("udp", "tcp"))
    audio = alaw_file(WAV, tmp_path)
    try:
        n = link.mark()
        (tmp_path / "caller").mkdir()
        box: dict = {}
        t = threading.Thread(target=lambda: box.setdefault("r", run_sipp(
            talking_caller(audio), link.sip_port, tmp_path / "caller", timeout=60, extra=("-t", "t1"))))
        t.start()
        cid = link.wait(fact(P.CallAnswered), 20, since=n).call_id
        slot = link.wait(fact(P.CallStarted, call_id=cid), since=n).slot
        assert wait_frames(frames, slot), "no audio from the TCP trunk's caller"
        hang_up(link, cid, t, box)
    finally:
        link.stop()


def test_a_caller_over_tls(tmp_path):
    """Debian's SIPp has no TLS: a pjsua2 peer calls a worker over TLS (its certificate from a
    throw-away CA) and the call carries audio."""
    from tests.loop.platform_server import make_test_pki
    from tests.sip.peers import PeerProc

    pki = make_test_pki(tmp_path / "pki")
    tls_port = free_port(2)
    frames = Frames()
    link = WorkerLink.loopback("tls", free_port(2), rtp_block(), on_frame=frames, transports=("udp", "tls"),
                               tls_port=tls_port, tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    link.start()
    caller = None
    try:
        n = link.mark()
        caller = PeerProc("--call", f"sip:110@127.0.0.1:{tls_port};transport=tls", "--play", str(WAV), "--mic",
                          "--transports", "udp,tls", user="caller")
        cid = link.wait(fact(P.CallAnswered), 20, since=n).call_id
        slot = link.wait(fact(P.CallStarted, call_id=cid), since=n).slot
        assert wait_frames(frames, slot, more=50), "no audio from the TLS caller"
        link.send(P.Hangup(cid))
        link.wait(fact(P.CallEnded, call_id=cid), 15, since=n)
        caller.wait(lambda e: e["event"] == "ended", 15)  # the BYE reached the caller over TLS
    finally:
        if caller is not None:
            caller.stop()
        link.stop()


# -- which seat answered (behind an ACD) -------------------------------------------------------------


@pytest.mark.parametrize(("headers", "seat_header", "seat", "source"), [
    ("P-Asserted-Identity: <sip:1003@acd.example>", "", "1003", "p-asserted-identity"),
    ("", "", "seat", "contact"),  # no PAI: the answering Contact's user
    ("X-Agent-Id: 7788\nP-Asserted-Identity: <sip:1003@acd.example>", "X-Agent-Id", "7788", "x-agent-id"),
], ids=["pai", "contact", "configured-header"])
def test_the_seat_that_answers_is_reported(tmp_path, headers, seat_header, seat, source):
    """Seat mode dials the ACD's queue URI; its 200 says which agent took the call: the worker
    reports that seat (configured header, else P-Asserted-Identity, else Contact)."""
    from tests.sip.sipp_seat import seat_scenario

    port = free_port(2)
    (tmp_path / "acd").mkdir()
    acd = start_sipp_server(seat_scenario(answer_headers=headers), port, tmp_path / "acd")
    link = start_worker("seat" + source[:4], seat_uri=f"sip:queue@127.0.0.1:{port}", seat_header=seat_header)
    try:
        t, box = caller_thread(talking_caller(alaw_file(WAV, tmp_path)), link, tmp_path / "caller")
        cid = link.wait(fact(P.CallAnswered), 20).call_id
        answered = link.wait(lambda f: isinstance(f, P.SeatAnswered) and f.call_id == cid, 20)
        assert (answered.seat, answered.source) == (seat, source)
        hang_up(link, cid, t, box)
    finally:
        acd.kill()
        acd.wait()
        link.stop()


def test_a_seat_list_rings_the_next_seat_when_the_first_is_busy(tmp_path):
    """sip.seats without an ACD: the worker rings the first seat of the supervisor's order; a busy
    seat (486) passes the caller to the next, which takes the call and is reported as the seat."""
    from tests.sip.peers import PeerProc
    from tests.sip.sipp import uas_reply

    busy_port = free_port(2)
    (tmp_path / "busy").mkdir()
    busy = start_sipp_server(f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="a seat that is busy">
  <recv request="INVITE"/>
  {uas_reply("486 Busy Here")}
  <recv request="ACK"/>
</scenario>
""", busy_port, tmp_path / "busy")
    seat2 = PeerProc("--answer", "200", user="seat02")
    first = f"sip:seat01@127.0.0.1:{busy_port}"
    link = start_worker("seats", seat_uri=first, seats=(first, seat2.uri), seat_ring=10.0)
    try:
        t, box = caller_thread(talking_caller(alaw_file(WAV, tmp_path)), link, tmp_path / "caller")
        cid = link.wait(fact(P.CallAnswered), 30).call_id
        dialled = [f.uri for f in link.facts() if isinstance(f, P.LegDialing) and f.call_id == cid]
        assert dialled == [first, seat2.uri]
        busy_end = next(f for f in link.facts() if isinstance(f, P.LegEnded) and f.leg == "operator")
        assert busy_end.status == 486
        answered = link.wait(lambda f: isinstance(f, P.SeatAnswered) and f.call_id == cid, 20)
        assert answered.seat == "seat02"
        hang_up(link, cid, t, box)
    finally:
        busy.kill()
        busy.wait()
        link.stop()
        seat2.stop()


def acd_that_moves_the_call(first: str, second: str, after_ms: int) -> str:
    """An ACD stand-in: agent ``first`` answers (P-Asserted-Identity), ``after_ms`` later the ACD
    moves the call to agent ``second`` with a re-INVITE carrying the new identity (as a PBX's
    connected-line update does); then it waits for the BYE."""
    sdp = """v=0
      o=acd 53655765 {v} IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
      a=sendrecv"""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="an ACD that moves the call to another agent">
  <recv request="INVITE" rrs="true"/>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]acd[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:acd@[local_ip]:[local_port]>
      P-Asserted-Identity: <sip:{first}@acd.example>
      Content-Type: application/sdp
      Content-Length: [len]

      {sdp.format(v=1)}
    ]]>
  </send>
  <recv request="ACK">
    <action><ereg regexp=".*" search_in="hdr" header="From:" assign_to="peer"/></action>
  </recv>
  <pause milliseconds="{after_ms}"/>
  <send retrans="500">
    <![CDATA[
      INVITE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:queue@[local_ip]:[local_port]>;tag=[pid]acd[call_number]
      To: [$peer]
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:acd@[local_ip]:[local_port]>
      P-Asserted-Identity: <sip:{second}@acd.example>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      {sdp.format(v=2)}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:queue@[local_ip]:[local_port]>;tag=[pid]acd[call_number]
      To: [$peer]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:acd@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv request="BYE"/>
  {reply("200 OK")}
</scenario>
"""


def test_a_call_the_acd_moves_to_another_agent_follows_the_new_seat(tmp_path):
    """The ACD's agent 1001 answers; the ACD then moves the call to agent 1002 (a re-INVITE with
    the new P-Asserted-Identity): the worker reports the new seat, so the call's card and key
    follow to that operator (tests/console/test_seats.py: the console side of SeatAnswered)."""
    port = free_port(2)
    (tmp_path / "acd").mkdir()
    acd = start_sipp_server(acd_that_moves_the_call("1001", "1002", 1500), port, tmp_path / "acd")
    link = start_worker("acdmove", seat_uri=f"sip:queue@127.0.0.1:{port}")
    try:
        t, box = caller_thread(talking_caller(alaw_file(WAV, tmp_path)), link, tmp_path / "caller")
        cid = link.wait(fact(P.CallAnswered), 20).call_id
        first = link.wait(lambda f: isinstance(f, P.SeatAnswered) and f.call_id == cid, 20)
        assert (first.seat, first.source) == ("1001", "p-asserted-identity")
        moved = link.wait(lambda f: isinstance(f, P.SeatAnswered) and f.call_id == cid and f.seat != "1001", 20)
        assert (moved.seat, moved.source) == ("1002", "p-asserted-identity (re-INVITE)")
        hang_up(link, cid, t, box)
    finally:
        acd.kill()
        acd.wait()
        link.stop()
