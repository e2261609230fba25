"""Bad input and normal-use faults at the SIP edge: each gets a clear answer, no call lives
for ever, and the service stays up."""

import signal
import socket
import threading
from collections import defaultdict

import pytest

from fenliu.sip import protocol as P
from fenliu.sip.link import WorkerLink
from tests.conftest import FIXTURES, free_port, rtp_block
from tests.sip.peers import fact
from tests.sip.sipp import (
    alaw_file,
    caller_scenario,
    no_sdp_scenario,
    repeated_invite_scenario,
    run_sipp,
    start_sipp,
    stray_bye_scenario,
)

pytestmark = pytest.mark.slow

WAV = FIXTURES / "ko" / "ko-01-greeting.wav"


@pytest.fixture
def worker():
    frames = defaultdict(int)
    lock = threading.Lock()

    def on_frame(slot, leg, seq, pcm):
        with lock:
            frames[slot] += 1

    link = WorkerLink.loopback("bad", free_port(2), rtp_block(), on_frame=on_frame,
                               users=("110",), media_timeout=2.0)
    link.start()
    link.frame_counts = frames
    yield link
    assert link.stop() == 0  # still alive and able to shut down cleanly after all of it


def errors(tmp_path):
    f = tmp_path / "sipp-errors.log"
    return f.read_text(errors="replace") if f.exists() else ""


def a_good_call_still_works(link, tmp_path):
    n = link.mark()
    r = run_sipp(caller_scenario(alaw_file(WAV, tmp_path), talk_ms=1500), link.sip_port, tmp_path)
    assert r.returncode == 0, r.stdout[-1500:]
    ended = link.wait(fact(P.CallEnded), since=n)
    assert ended.frames > 50  # and it had audio


def test_unknown_number_gets_404_and_is_recorded(worker, tmp_path):
    n = worker.mark()
    r = run_sipp(caller_scenario(None, talk_ms=100, user="999"), worker.sip_port, tmp_path, timeout=10)
    assert r.returncode != 0 and "404" in errors(tmp_path)
    rejected = worker.wait(fact(P.CallRejected), since=n)
    assert rejected.status == 404 and rejected.user == "999" and "sip.users" in rejected.reason
    assert "13800000000" in rejected.remote and rejected.call_id
    a_good_call_still_works(worker, tmp_path)


def test_malformed_sdp_is_refused_and_the_service_stays_up(worker, tmp_path):
    r = run_sipp(caller_scenario(None, talk_ms=100, sdp="v=0\n      this is not an SDP body"),
                 worker.sip_port, tmp_path, timeout=10)
    assert r.returncode != 0
    assert any(code in errors(tmp_path) for code in ("400", "488"))
    a_good_call_still_works(worker, tmp_path)


def test_garbage_datagrams_are_ignored(worker, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for junk in (b"\x00\xff" * 200, b"INVITE nonsense\r\n\r\n", b"SIP/2.0 200 OK\r\nVia: broken\r\n\r\n"):
            s.sendto(junk, ("127.0.0.1", worker.sip_port))
    a_good_call_still_works(worker, tmp_path)


def test_bye_for_an_unknown_dialog_gets_481(worker, tmp_path):
    r = run_sipp(stray_bye_scenario(), worker.sip_port, tmp_path, timeout=10)
    assert r.returncode == 0, r.stdout[-1500:] + errors(tmp_path)


def test_a_silent_caller_who_answers_is_never_cut_off(worker, tmp_path):
    """No RTP at all (a phone that suppresses silence, a caller who whispers or hides): after
    media_timeout an in-dialog OPTIONS asks; the caller's side answers, so the call goes on — and
    is asked again after the next stretch of silence. Only the test ends it."""
    n = worker.mark()
    proc = start_sipp(caller_scenario(None, talk_ms=0, callee_hangs_up=True), worker.sip_port, tmp_path)
    try:
        cid = worker.wait(fact(P.CallAnswered), 15, since=n).call_id
        first = worker.wait(fact(P.MediaProbe, call_id=cid), 20, since=n)
        assert first.alive and first.status == 200 and first.silent_s >= 2.0
        worker.wait(fact(P.MediaProbe, call_id=cid), 20, since=n, nth=2)  # asked again, answered again
        assert not [f for f in worker.facts(since=n) if isinstance(f, P.MediaTimeout | P.CallEnded)]
        worker.send(P.Hangup(cid))
        assert proc.wait(20) == 0, errors(tmp_path)  # SIPp got our BYE (the test's) and said 200
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_caller_whose_line_is_dead_is_ended_with_the_reason(worker, tmp_path):
    """The caller's side stops dead (SIGSTOP: no RTP, no answer to anything): provably dead only
    after the OPTIONS probe goes unanswered; the call ends and its record says why."""
    n = worker.mark()
    proc = start_sipp(caller_scenario(None, talk_ms=0, callee_hangs_up=True), worker.sip_port, tmp_path)
    try:
        cid = worker.wait(fact(P.CallAnswered), 15, since=n).call_id
        proc.send_signal(signal.SIGSTOP)
        timeout = worker.wait(fact(P.MediaTimeout, call_id=cid), 40, since=n)
        assert "no answer to OPTIONS" in timeout.why and timeout.seconds >= 2.0
        probe = worker.wait(fact(P.MediaProbe, call_id=cid), since=n)
        assert not probe.alive and probe.status == 0
        ended = worker.wait(fact(P.CallEnded, call_id=cid), 20, since=n)
        assert ended.reason.startswith("fenliu: no RTP for") and "no answer to OPTIONS" in ended.reason
    finally:
        proc.kill()
        proc.wait()


def test_an_invite_repeated_after_the_ack_is_not_a_second_call(worker, tmp_path):
    n = worker.mark()
    r = run_sipp(repeated_invite_scenario(), worker.sip_port, tmp_path, timeout=20)
    assert r.returncode == 0, r.stdout[-1500:] + errors(tmp_path)  # 482 to the copy, then the call ran to its BYE
    first = worker.wait(fact(P.CallStarted), since=n)
    worker.wait(fact(P.CallEnded, call_id=first.call_id), since=n)
    facts = worker.facts(since=n)
    assert sum(isinstance(f, P.CallStarted) for f in facts) == 1
    dup = [f for f in facts if isinstance(f, P.CallRejected)]
    assert len(dup) == 1 and dup[0].status == 482 and dup[0].call_id == first.call_id


def test_a_call_without_sdp_in_invite_and_ack_does_not_live_for_ever(worker, tmp_path):
    """No audio stream at all: the RTP timeout never starts; the call must still end."""
    n = worker.mark()
    r = run_sipp(no_sdp_scenario(), worker.sip_port, tmp_path, timeout=20)
    assert r.returncode == 0, r.stdout[-1500:] + errors(tmp_path)  # SIPp received our BYE
    timeout = worker.wait(fact(P.MediaTimeout), since=n)
    assert "SDP" in timeout.why
    worker.wait(fact(P.CallEnded, call_id=timeout.call_id), since=n)
    a_good_call_still_works(worker, tmp_path)


def test_an_invite_flood_beyond_capacity_is_refused_recorded_and_answered_calls_keep_audio(worker, tmp_path):
    """Answer mode reserves a leg per conversation for its transfer: 2 conversations of 4 legs."""
    assert worker.ready.capacity == 2
    audio = alaw_file(WAV, tmp_path)
    n = worker.mark()
    r = run_sipp(caller_scenario(audio, talk_ms=4000), worker.sip_port, tmp_path, calls=7, rate=50, timeout=30)
    assert r.returncode != 0  # some calls were refused
    refused = errors(tmp_path)
    assert "503 Service Unavailable" in refused and "Retry-After: 5" in refused  # try elsewhere now, here later
    ended = [worker.wait(fact(P.CallEnded), timeout=20, since=n)]
    ended.append(worker.wait(lambda f: isinstance(f, P.CallEnded) and f.call_id != ended[0].call_id, since=n))
    facts = worker.facts(since=n)
    started = [f for f in facts if isinstance(f, P.CallStarted)]
    rejected = [f for f in facts if isinstance(f, P.CallRejected)]
    assert len(started) == 2  # no third conversation got in
    assert len(rejected) == 5 and all(f.status == 503 and "full" in f.reason for f in rejected)  # each one recorded
    assert all(e.frames >= 100 for e in ended)  # each answered call kept ~2 s+ of audio
    a_good_call_still_works(worker, tmp_path)


def test_soak_short_calls_keep_their_audio_and_the_worker_stays_bounded(worker, tmp_path):
    """Many short calls through one worker: the last ones still carry audio (no leaked bridge
    ports), and the worker's memory and file descriptors stay bounded. The bridge is sized for
    4 legs (20 ports), so a leak of one port per call fails within ~20 calls."""
    audio = alaw_file(WAV, tmp_path)
    pid = worker.ready.pid

    def rss_kb():
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def fds():
        import os

        return len(os.listdir(f"/proc/{pid}/fd"))

    def batch(calls):
        n = worker.mark()
        r = run_sipp(caller_scenario(audio, talk_ms=600), worker.sip_port, tmp_path, calls=calls, rate=20,
                     limit=1, timeout=120)
        assert r.returncode == 0, r.stdout[-1500:] + errors(tmp_path)
        worker.wait(fact(P.CallEnded), since=n, nth=calls)
        ended = [f for f in worker.facts(since=n) if isinstance(f, P.CallEnded)]
        assert not [f for f in worker.facts(since=n) if isinstance(f, P.CallDegraded)]
        return ended

    batch(30)  # warm up: allocations that happen once
    rss0, fd0 = rss_kb(), fds()
    ended = batch(60)
    assert all(e.frames >= 25 for e in ended[-10:])  # the last calls still had audio (≥0.5 s)
    assert fds() <= fd0 + 4
    assert rss_kb() - rss0 < 20_000  # < 20 MB growth over 60 calls
