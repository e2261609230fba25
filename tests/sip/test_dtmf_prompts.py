"""DTMF in (RFC 4733 and SIP INFO) as events, prompts played into a leg, and the static-peer
allow-list — against SIPp and a pjsua2 peer on 127.0.0.1 (and 127.0.0.2 as a foreign PBX)."""

import pytest

from fenliu.sip import protocol as P
from fenliu.sip.link import WorkerLink
from tests.conftest import FIXTURES, free_port, rtp_block
from tests.sip.peers import PeerProc, fact, rms_after
from tests.sip.sipp import alaw_file, caller_scenario, dtmf_info, dtmf_rfc4733, run_sipp

pytestmark = pytest.mark.slow

WAV = FIXTURES / "ko" / "ko-01-greeting.wav"


@pytest.fixture
def worker():
    link = WorkerLink.loopback("d1", free_port(2), rtp_block(), allow=("127.0.0.1",))
    link.start()
    yield link
    assert link.stop() == 0


def test_dtmf_by_sip_info_and_rfc4733_become_events(worker, tmp_path):
    middle = dtmf_info("5") + '\n  <pause milliseconds="300"/>\n  ' + dtmf_rfc4733("1") + \
        '\n  <pause milliseconds="1500"/>'
    r = run_sipp(caller_scenario(None, talk_ms=500, middle=middle), worker.sip_port, tmp_path, timeout=20)
    assert r.returncode == 0, r.stdout[-1500:]
    info = worker.wait(fact(P.Dtmf, method="info"))
    assert info.digit == "5" and info.leg == "caller"
    rfc = worker.wait(fact(P.Dtmf, method="rfc4733"))
    assert rfc.digit == "1"


def test_a_prompt_is_played_into_the_callers_leg(worker, tmp_path):
    heard = tmp_path / "caller-heard.wav"
    caller = PeerProc("--call", f"sip:110@127.0.0.1:{worker.sip_port}", "--record", str(heard), user="caller")
    try:
        cid = worker.wait(fact(P.CallAnswered)).call_id
        worker.send(P.Play(cid, str(WAV), "caller"))
        worker.wait(fact(P.PromptStarted, call_id=cid))
        worker.wait(fact(P.PromptDone, call_id=cid), timeout=15)
        n = worker.mark()
        worker.send(P.Play(cid, str(WAV), "hotline"))
        err = worker.wait(fact(P.WorkerError), since=n)
        assert "hotline" in err.message
        worker.send(P.Hangup(cid))
        caller.wait(lambda e: e["event"] == "ended")
    finally:
        caller.stop()
    assert rms_after(heard) > 200  # the caller really heard the prompt


def test_calls_from_a_peer_not_on_the_allow_list_get_403(worker, tmp_path):
    audio = alaw_file(WAV, tmp_path)
    r = run_sipp(caller_scenario(audio, talk_ms=300), worker.sip_port, tmp_path, timeout=10, local_ip="127.0.0.2")
    assert r.returncode != 0
    assert "403" in (tmp_path / "sipp-errors.log").read_text(errors="replace")
    rej = worker.wait(fact(P.CallRejected))
    assert rej.status == 403 and rej.source == "127.0.0.2"
    ok = run_sipp(caller_scenario(audio, talk_ms=1000), worker.sip_port, tmp_path, timeout=20)
    assert ok.returncode == 0  # the allowed PBX still gets through


def test_barge_in_stops_a_prompt_and_every_prompt_frees_its_bridge_port(worker, tmp_path):
    """An IVR plays many prompts per call and stops most of them (barge-in): each one is reported
    once with its token, and its conference-bridge port is freed — the bridge holds 20 ports, so a
    leak would make the 17th prompt fail."""
    caller = PeerProc("--call", f"sip:110@127.0.0.1:{worker.sip_port}", user="caller")
    try:
        cid = worker.wait(fact(P.CallAnswered)).call_id
        worker.wait(fact(P.MediaActive, call_id=cid))
        for i in range(30):
            n = worker.mark()
            worker.send(P.Play(cid, str(WAV), "caller", f"t{i}"))
            worker.wait(fact(P.PromptStarted, token=f"t{i}"), since=n)
            worker.send(P.StopPrompt(cid))
            done = worker.wait(fact(P.PromptDone, token=f"t{i}"), since=n)
            assert done.interrupted
        n = worker.mark()
        worker.send(P.Play(cid, str(WAV), "caller", "last"))
        worker.send(P.Play(cid, str(WAV), "caller", "newer"))  # one prompt per leg: the newer replaces it
        assert worker.wait(fact(P.PromptDone, token="last"), since=n).interrupted
        done = worker.wait(fact(P.PromptDone, token="newer"), since=n, timeout=15)
        assert not done.interrupted  # played to its end
        assert not [f for f in worker.facts(n) if isinstance(f, P.WorkerError)]
        worker.send(P.Hangup(cid))
        caller.wait(lambda e: e["event"] == "ended")
    finally:
        caller.stop()
