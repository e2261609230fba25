"""The one key, against real peers on 127.0.0.1: a SIPp or pjsua2 caller, a pjsua2 operator
seat and pjsua2 hotlines, through a real SIP worker in B2BUA seat mode."""

import threading
from contextlib import contextmanager

import pytest

from fenliu.sip import protocol as P
from fenliu.sip.link import WorkerLink
from tests.conftest import FIXTURES, free_port, rtp_block
from tests.sip.peers import PeerProc, fact, rms_after
from tests.sip.sipp import alaw_file, caller_scenario, run_sipp

pytestmark = pytest.mark.slow

WAV = FIXTURES / "ko" / "ko-02-help.wav"


@pytest.fixture
def seat():
    p = PeerProc("--answer", "200", user="seat")
    yield p
    p.stop()


@pytest.fixture
def b2bua(seat):
    link = WorkerLink.loopback("b1", free_port(2), rtp_block(), seat_uri=seat.uri)
    link.start()
    yield link
    assert link.stop() == 0


def sipp_call(link, tmp_path, talk_ms=0):
    """A SIPp caller that loops its audio; returns (thread, result box). With ``talk_ms`` it hangs
    up after that long; without, it talks until it gets a BYE — the test's ``hang_up`` — so a
    busy machine cannot end the call before the test's actions are done."""
    audio = alaw_file(WAV, tmp_path)
    scen = caller_scenario(audio, talk_ms=talk_ms, callee_hangs_up=not talk_ms).replace(
        f"{audio},1,8", f"{audio},-1,8")
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", run_sipp(scen, link.sip_port, tmp_path, timeout=60)))
    t.start()
    return t, box


def hang_up(link, cid, t, box):
    """The test is done: the caller was never cut (no CallEnded so far), so end the call from our
    side now; SIPp's scenario passes only if that BYE is the first it gets."""
    assert not [f for f in link.facts() if isinstance(f, P.CallEnded) and f.call_id == cid], "the call ended early"
    link.send(P.Hangup(cid))
    t.join(60)
    assert box["r"].returncode == 0, box["r"].stdout[-1500:]
    link.wait(fact(P.CallEnded, call_id=cid))


@contextmanager
def answered_pjsua2_call(name, hotline_args, caller_args=()):
    """A worker in answer mode, a hotline peer and a pjsua2 caller already talking to 110.
    Yields (worker link, hotline, caller, call id); everything is stopped afterwards."""
    hotline = PeerProc(*hotline_args, user="12345")
    link = WorkerLink.loopback(name, free_port(2), rtp_block())
    link.start()
    caller = PeerProc("--call", f"sip:110@127.0.0.1:{link.sip_port}", *caller_args, user="caller")
    try:
        cid = link.wait(fact(P.CallStarted)).call_id
        link.wait(fact(P.CallAnswered, call_id=cid))
        yield link, hotline, caller, cid
    finally:
        caller.stop()
        hotline.stop()
        link.stop()


def ev(kind, **match):
    """A peer's JSON event."""
    return lambda e: e["event"] == kind and all(e.get(k) == v for k, v in match.items())


def step(s, call_id):
    return fact(P.TransferUpdate, step=s, call_id=call_id)


def test_three_way_transfer_hands_the_caller_to_the_hotline(b2bua, seat, tmp_path):
    heard = tmp_path / "hotline-heard.wav"
    hotline = PeerProc("--answer", "200", "--record", str(heard), user="12345")
    try:
        t, box = sipp_call(b2bua, tmp_path)
        cid = b2bua.wait(fact(P.CallStarted)).call_id
        b2bua.wait(fact(P.CallAnswered, call_id=cid))  # answered only once the seat took it
        seat.wait(ev("media"))
        b2bua.send(P.Transfer(cid, hotline.uri, P.TransferMode("three-way")))
        bridged = b2bua.wait(step(P.TransferStep.BRIDGED, call_id=cid))
        assert set(bridged.legs) == {"caller", "operator", "hotline"}
        b2bua.send(P.ReleaseOperator(cid))
        b2bua.wait(step(P.TransferStep.COMPLETED, call_id=cid))
        seat.wait(ev("ended"))  # the operator's leg ended
        hotline.wait(ev("heard"), 20)  # a second of the caller's voice reached the hotline
        n = hotline.mark()
        hang_up(b2bua, cid, t, box)  # the caller was with the hotline, never cut, until now
        hotline.wait(ev("ended"), since=n)
    finally:
        hotline.stop()
    assert rms_after(heard, 0.5) > 200  # the hotline really heard the caller's voice


@pytest.mark.parametrize("answer,status,reason", [("486", 486, "Busy"), ("603", 603, "Decline"),
                                                  ("none", 408, "no answer (timeout)")])
def test_failed_transfer_keeps_the_caller_with_the_operator(b2bua, seat, tmp_path, answer, status, reason):
    hotline = PeerProc("--answer", answer, user="12345")
    try:
        t, box = sipp_call(b2bua, tmp_path)
        cid = b2bua.wait(fact(P.CallStarted)).call_id
        b2bua.wait(fact(P.CallAnswered, call_id=cid))
        b2bua.send(P.Transfer(cid, hotline.uri, P.TransferMode("three-way"), timeout=2))
        failed = b2bua.wait(step(P.TransferStep.FAILED, call_id=cid), timeout=10)
        assert failed.status == status and reason.lower() in failed.reason.lower()
        assert not seat.has("ended")  # operator still on the call
        hang_up(b2bua, cid, t, box)  # caller never dropped: the call went on until the test ended it
    finally:
        hotline.stop()


def test_operator_cancels_a_ringing_transfer_and_keeps_the_caller(b2bua, seat, tmp_path):
    hotline = PeerProc("--answer", "none", user="12345")  # rings and never answers
    try:
        t, box = sipp_call(b2bua, tmp_path)
        cid = b2bua.wait(fact(P.CallStarted)).call_id
        b2bua.wait(fact(P.CallAnswered, call_id=cid))
        b2bua.send(P.Transfer(cid, hotline.uri, P.TransferMode("three-way"), timeout=30))
        hotline.wait(ev("incoming"))  # ringing at the hotline now
        n = b2bua.mark()
        b2bua.send(P.CancelTransfer(cid))
        failed = b2bua.wait(step(P.TransferStep.FAILED, call_id=cid), since=n, timeout=10)
        assert failed.status == 487 and "cancelled by the operator" in failed.reason
        hotline.wait(ev("ended"), 10)  # the hotline stopped ringing
        assert not seat.has("ended")  # the operator is still with the caller
        b2bua.send(P.CancelTransfer(cid))  # nothing left to cancel: said so, nothing changes
        b2bua.wait(fact(P.WorkerError, call_id=cid), since=n)
        hang_up(b2bua, cid, t, box)  # the caller's call went on until the test ended it
    finally:
        hotline.stop()


def test_caller_hanging_up_mid_transfer_cleans_up_every_leg(b2bua, seat, tmp_path):
    hotline = PeerProc("--answer", "none", user="12345")
    try:
        t, box = sipp_call(b2bua, tmp_path, talk_ms=2500)
        cid = b2bua.wait(fact(P.CallStarted)).call_id
        b2bua.wait(fact(P.CallAnswered, call_id=cid))
        b2bua.send(P.Transfer(cid, hotline.uri, P.TransferMode("three-way"), timeout=30))
        hotline.wait(ev("incoming"))
        failed = b2bua.wait(step(P.TransferStep.FAILED, call_id=cid), timeout=15)
        assert "caller hung up" in failed.reason
        b2bua.wait(fact(P.CallEnded, call_id=cid))
        seat.wait(ev("ended"))
        hotline.wait(ev("ended"))
        t.join(30)
    finally:
        hotline.stop()


def test_busy_seat_is_relayed_so_the_pbx_can_reroute(tmp_path):
    busy = PeerProc("--answer", "486", user="seat")
    link = WorkerLink.loopback("b2", free_port(2), rtp_block(), seat_uri=busy.uri)
    link.start()
    try:
        audio = alaw_file(WAV, tmp_path)
        r = run_sipp(caller_scenario(audio, talk_ms=500), link.sip_port, tmp_path, timeout=10)
        assert r.returncode != 0
        log = (tmp_path / "sipp-errors.log").read_text(errors="replace")
        assert "486" in log
        link.wait(fact(P.CallEnded))
    finally:
        link.stop()
        busy.stop()


def test_blind_refer_moves_a_pjsua2_caller_to_the_hotline(tmp_path):
    with answered_pjsua2_call("r1", ("--answer", "200"), ("--play", str(WAV))) as (link, hotline, caller, cid):
        link.send(P.Transfer(cid, hotline.uri, P.TransferMode("refer")))
        caller.wait(ev("transfer_request", to=hotline.uri))
        hotline.wait(ev("incoming"))  # the target got the new INVITE
        link.wait(step(P.TransferStep.COMPLETED, call_id=cid), timeout=15)
        link.wait(fact(P.CallEnded, call_id=cid))  # our leg ended after NOTIFY 200


def test_refer_to_a_busy_hotline_keeps_the_call(tmp_path):
    with answered_pjsua2_call("r2", ("--answer", "486")) as (link, hotline, caller, cid):
        link.send(P.Transfer(cid, hotline.uri, P.TransferMode("refer"), timeout=10))
        failed = link.wait(step(P.TransferStep.FAILED, call_id=cid), timeout=15)
        assert failed.status == 486
        assert not caller.has("ended") or caller.wait(ev("state", state="CONFIRMED"))
        link.send(P.Hangup(cid))
        link.wait(fact(P.CallEnded, call_id=cid))


def test_attended_transfer_replaces_our_hotline_leg_with_the_callers_own_call(tmp_path):
    with answered_pjsua2_call("a1", ("--answer", "200"), ("--play", str(WAV))) as (link, hotline, caller, cid):
        link.send(P.Transfer(cid, hotline.uri, P.TransferMode("attended"), timeout=15))
        link.wait(step(P.TransferStep.CONSULTED, call_id=cid))  # the hotline answered our consultation call
        caller.wait(ev("transfer_request"))  # REFER with Replaces reached the caller
        hotline.wait(ev("replaced"))  # the hotline swapped our leg for the caller's own call
        link.wait(step(P.TransferStep.COMPLETED, call_id=cid), timeout=15)
        link.wait(fact(P.CallEnded, call_id=cid))
        # the caller is now talking to the hotline directly, on its own new call
        caller.wait(lambda e: e["event"] == "state" and e.get("state") == "CONFIRMED" and "12345" in e["remote"])


def test_hotline_hanging_up_before_the_operator_leaves_keeps_the_caller(b2bua, seat, tmp_path):
    hotline = PeerProc("--answer", "200", "--hangup-after", "1", user="12345")
    try:
        t, box = sipp_call(b2bua, tmp_path)
        cid = b2bua.wait(fact(P.CallStarted)).call_id
        b2bua.wait(fact(P.CallAnswered, call_id=cid))
        b2bua.send(P.Transfer(cid, hotline.uri, P.TransferMode("three-way")))
        b2bua.wait(step(P.TransferStep.BRIDGED, call_id=cid))
        failed = b2bua.wait(step(P.TransferStep.FAILED, call_id=cid), timeout=10)
        assert "hotline hung up" in failed.reason
        assert not seat.has("ended")  # caller and operator still together
        hang_up(b2bua, cid, t, box)
    finally:
        hotline.stop()


def test_refer_refused_by_the_caller_side_keeps_the_call(tmp_path):
    with answered_pjsua2_call("r3", ("--answer", "200"), ("--refuse-refer",)) as (link, hotline, caller, cid):
        link.send(P.Transfer(cid, hotline.uri, P.TransferMode("refer"), timeout=10))
        failed = link.wait(step(P.TransferStep.FAILED, call_id=cid), timeout=15)
        assert failed.status == 603
        assert not hotline.has("incoming")
        link.send(P.Hangup(cid))
        link.wait(fact(P.CallEnded, call_id=cid))


def test_refer_whose_notify_never_comes_times_out_and_keeps_the_call(tmp_path):
    from tests.sip.sipp import refer_without_notify

    hotline = PeerProc("--answer", "200", user="12345")
    link = WorkerLink.loopback("r4", free_port(2), rtp_block())
    link.start()
    try:
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("r", run_sipp(
            refer_without_notify(alaw_file(WAV, tmp_path)), link.sip_port, tmp_path, timeout=30)))
        t.start()
        cid = link.wait(fact(P.CallAnswered)).call_id
        link.send(P.Transfer(cid, hotline.uri, P.TransferMode("refer"), timeout=2))
        failed = link.wait(step(P.TransferStep.FAILED, call_id=cid), timeout=10)
        assert failed.status == 408 and "NOTIFY" in failed.reason
        t.join(40)
        assert box["r"].returncode == 0, box["r"].stdout[-1500:]  # the caller's call went on to its own BYE
    finally:
        hotline.stop()
        link.stop()


def answered_sipp_calls(link, tmp_path, n, talk_ms=8000):
    """n SIPp callers talking to ``link``; returns (thread, result box, their CallAnswered facts)."""
    audio = alaw_file(WAV, tmp_path)
    box = {}
    mark = link.mark()
    t = threading.Thread(target=lambda: box.setdefault("r", run_sipp(
        caller_scenario(audio, talk_ms=talk_ms), link.sip_port, tmp_path, calls=n, rate=50, timeout=60)))
    t.start()
    answered = []
    while len(answered) < n:
        seen = {a.call_id for a in answered}
        answered.append(link.wait(lambda f, s=seen: isinstance(f, P.CallAnswered) and f.call_id not in s,
                                  since=mark))
    return t, box, answered


def test_transfer_on_a_full_worker_fails_at_once_with_the_true_reason(tmp_path):
    """Without a reserved leg, four callers fill the worker: the key must say so, not time out."""
    hotline = PeerProc("--answer", "200", user="12345")
    link = WorkerLink.loopback("full", free_port(2), rtp_block(), reserve_transfer_leg=False)
    link.start()
    try:
        assert link.ready.capacity == 4
        t, box, answered = answered_sipp_calls(link, tmp_path, 4)
        cid = answered[0].call_id
        n = link.mark()
        link.send(P.Transfer(cid, hotline.uri))
        failed = link.wait(step(P.TransferStep.FAILED, cid), since=n)
        assert failed.status == 503 and "no free SIP leg" in failed.reason
        assert not [f for f in link.facts(since=n) if isinstance(f, P.WorkerError)]  # no traceback
        assert not hotline.has("incoming")
        t.join(60)
        assert box["r"].returncode == 0, box["r"].stdout[-1500:]  # every caller kept to their own BYE
    finally:
        hotline.stop()
        link.stop()


def test_with_reserved_legs_every_admitted_call_can_be_transferred(tmp_path):
    hotline = PeerProc("--answer", "200", user="12345")
    link = WorkerLink.loopback("resv", free_port(2), rtp_block())
    link.start()
    try:
        assert link.ready.capacity == 2  # 4 legs: each conversation keeps one for its hotline
        t, box, answered = answered_sipp_calls(link, tmp_path, 2)
        n = link.mark()
        for a in answered:
            link.send(P.Transfer(a.call_id, hotline.uri))
        for a in answered:
            link.wait(step(P.TransferStep.COMPLETED, a.call_id), since=n)  # answer mode: bridged = handed over
        t.join(60)
        assert box["r"].returncode == 0, box["r"].stdout[-1500:]
    finally:
        hotline.stop()
        link.stop()
