"""A real SIP worker process answering real SIPp calls on 127.0.0.1, its tapped audio
going through the real Vosk pipeline."""

import threading
from collections import defaultdict

import pytest

from fenliu.asr.audio import read_wav
from fenliu.asr.pipeline import StreamPipeline
from fenliu.events import FinalTranscript
from fenliu.sip import protocol as P
from fenliu.sip.link import WorkerLink, pid_alive
from tests.conftest import FIXTURES, free_port, rtp_block
from tests.sip.peers import fact
from tests.sip.sipp import alaw_file, caller_scenario, run_sipp

pytestmark = pytest.mark.slow


@pytest.fixture
def worker():
    frames: dict[int, list[bytes]] = defaultdict(list)
    lock = threading.Lock()

    def on_frame(slot, leg, seq, pcm):
        with lock:
            frames[slot].append(pcm)

    link = WorkerLink.loopback("t1", free_port(2), rtp_block(), on_frame=on_frame)
    ready = link.start()
    link.frames = frames
    yield link, ready
    rc = link.stop()
    assert rc == 0  # clean shutdown: no abort at exit
    assert not pid_alive(ready.pid)


def test_worker_answers_a_sipp_call_and_streams_the_callers_audio(worker, ko_engine, tmp_path):
    link, ready = worker
    assert ready.frame_copy == "pointer"  # the fast frame copy proved itself on this build
    wav = FIXTURES / "ko" / "ko-01-greeting.wav"
    duration = read_wav(wav).duration
    audio = alaw_file(wav, tmp_path)
    n = link.mark()
    r = run_sipp(caller_scenario(audio, talk_ms=int(duration * 1000) + 1500), link.sip_port, tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    started = link.wait(fact(P.CallStarted), since=n)
    assert "13800000000" in started.remote
    media = link.wait(fact(P.MediaActive, call_id=started.call_id), since=n)
    assert media.codec.upper() in ("PCMA", "PCMU")
    ended = link.wait(fact(P.CallEnded, call_id=started.call_id), timeout=15, since=n)
    assert ended.frames >= int(duration * 50)
    assert ended.callback_us < 1000  # reported for the benchmark; the media thread is not held
    link.wait_audio_closed(started.slot)  # every frame of the call has been received

    pcm = b"".join(link.frames[started.slot])
    assert len(pcm) / 2 / 16000 >= duration  # 16 kHz from an 8 kHz A-law caller, the whole call

    pipe = StreamPipeline("live", 16000, ko_engine)
    events = []
    for i in range(0, len(pcm), 640):
        events += pipe.push(pcm[i : i + 640])
    events += pipe.close()
    finals = [e for e in events if isinstance(e, FinalTranscript)]
    assert finals and any("\uac00" <= ch <= "\ud7a3" for ch in finals[0].text)


def test_worker_refuses_a_call_with_no_common_codec(worker, tmp_path):
    link, _ = worker
    audio = alaw_file(FIXTURES / "ko" / "ko-01-greeting.wav", tmp_path)
    r = run_sipp(caller_scenario(audio, talk_ms=500, codecs="99"), link.sip_port, tmp_path, timeout=10)
    assert r.returncode != 0  # SIPp expected 200 and got an error answer
    errors = (tmp_path / "sipp-errors.log").read_text(errors="replace") if (tmp_path / "sipp-errors.log").exists() else ""
    assert "488" in errors or "488" in r.stdout + r.stderr


def test_a_worker_that_cannot_bind_its_port_says_so_and_exits_cleanly():
    import socket

    from fenliu.errors import FenliuError

    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    link = WorkerLink.loopback("busy", port, rtp_block())
    try:
        with pytest.raises(FenliuError, match="cannot start SIP endpoint"):
            link.start()
        assert link.proc.wait(10) == 3  # a clear exit code, not an abort
    finally:
        busy.close()


@pytest.mark.parametrize("codec", ["G722/16000/1", "L16/44100/1", "PCMU/8000/1"])
def test_wideband_and_linear_codecs_from_the_caller_reach_asr(worker, ko_engine, codec):
    from tests.sip.peers import PeerProc

    link, _ = worker
    n = link.mark()
    caller = PeerProc("--call", f"sip:110@127.0.0.1:{link.sip_port}", "--codecs", codec,
                      "--play", str(FIXTURES / "ko" / "ko-01-greeting.wav"), "--hangup-after", "4",
                      user="caller")
    try:
        started = link.wait(fact(P.CallStarted), since=n)
        media = link.wait(fact(P.MediaActive, call_id=started.call_id), since=n)
        assert media.codec.upper() == codec.split("/")[0].upper()
        link.wait(fact(P.CallEnded, call_id=started.call_id), timeout=20, since=n)
    finally:
        caller.stop()
    link.wait_audio_closed(started.slot)
    pcm = b"".join(link.frames[started.slot])
    pipe = StreamPipeline("codec", 16000, ko_engine)
    events = []
    for i in range(0, len(pcm), 640):
        events += pipe.push(pcm[i : i + 640])
    events += pipe.close()
    assert [e for e in events if isinstance(e, FinalTranscript) and e.text]
