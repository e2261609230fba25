"""Bad input at the SIP edge: each gets a clear answer, and the service stays up."""

import socket
from collections import defaultdict

import pytest

from fenliu.sip.link import WorkerLink
from tests.conftest import FIXTURES, free_port
from tests.sip.sipp import alaw_file, caller_scenario, run_sipp, stray_bye_scenario

pytestmark = pytest.mark.slow

WAV = FIXTURES / "ko" / "ko-01-greeting.wav"


@pytest.fixture
def worker():
    frames = defaultdict(int)

    def on_frame(slot, leg, seq, pcm):
        frames[slot] += 1

    link = WorkerLink("bad", sip_port=free_port(2), rtp_port=free_port(2) // 2 * 2, on_frame=on_frame,
                      users="110", media_timeout=2.0)
    link.start()
    link.frame_counts = frames
    yield link
    assert link.stop() == 0  # still alive and able to shut down cleanly after all of it


def errors(tmp_path):
    f = tmp_path / "sipp-errors.log"
    return f.read_text(errors="replace") if f.exists() else ""


def a_good_call_still_works(link, tmp_path):
    r = run_sipp(caller_scenario(alaw_file(WAV, tmp_path), talk_ms=1500), link.sip_port, tmp_path)
    assert r.returncode == 0, r.stdout[-1500:]


def test_unknown_number_gets_404(worker, tmp_path):
    r = run_sipp(caller_scenario(None, talk_ms=100, user="999"), worker.sip_port, tmp_path, timeout=10)
    assert r.returncode != 0 and "404" in errors(tmp_path)
    rejected = worker.wait_event(lambda e: e["event"] == "call_rejected")
    assert rejected["user"] == "999" and "sip.users" in rejected["reason"]
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


def test_rtp_stopping_mid_call_ends_it_after_the_media_timeout(worker, tmp_path):
    # the caller answers the handshake but never sends a single RTP packet
    r = run_sipp(caller_scenario(None, talk_ms=0, callee_hangs_up=True), worker.sip_port, tmp_path, timeout=20)
    assert r.returncode == 0, r.stdout[-1500:] + errors(tmp_path)  # SIPp got our BYE and said 200
    timeout = worker.wait_event(lambda e: e["event"] == "media_timeout", timeout=10)
    assert timeout["seconds"] >= 2.0
    worker.wait_event(lambda e: e["event"] == "call_ended")


def test_an_invite_flood_beyond_capacity_is_refused_and_answered_calls_keep_audio(worker, tmp_path):
    audio = alaw_file(WAV, tmp_path)
    r = run_sipp(caller_scenario(audio, talk_ms=4000), worker.sip_port, tmp_path, calls=7, rate=50, timeout=30)
    assert r.returncode != 0  # some calls were refused
    log = errors(tmp_path)
    assert "486" in log or "503" in log
    ended = []
    for _ in range(4):
        ended.append(worker.wait_event(lambda e: e["event"] == "call_ended", timeout=20))
    started = [e for e in list(worker.events.queue)]  # anything left
    assert all(e["event"] != "call_started" for e in started)  # no fifth call got in
    assert all(e["frames"] >= 100 for e in ended)  # each answered call kept ~2 s+ of audio
    a_good_call_still_works(worker, tmp_path)
