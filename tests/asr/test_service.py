"""Recognition as the ASR processes do it, with the real Korean Vosk model: the ``Recogniser``
loop driven in-process with the datagrams a SIP worker sends (LEG_OPEN, 20 ms frames,
LEG_CLOSE), the warm recogniser pool, and one real ``AsrPool`` process fed through its Unix
datagram socket at real-time pace."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import replace
from functools import cache

import pytest

from fenliu.asr.audio import read_wav, resample
from fenliu.asr.pipeline import StreamPipeline
from fenliu.asr.service import AsrJob, AsrPool, Recogniser
from fenliu.events import Decision, FinalTranscript, StreamEnded
from fenliu.router import Router, parse_rules
from fenliu.settings import load_settings
from fenliu.sip import protocol as P
from fenliu.sip.protocol import FRAME_HEADER, LEG_CLOSE, LEG_OPEN
from tests.conftest import FIXTURES, minimal_rules

pytestmark = pytest.mark.slow

RATE = 16000
FRAME = 640  # 20 ms of 16 kHz 16-bit mono


@cache
def speech(name: str = "ko-01-greeting.wav", tail_s: float = 1.5) -> bytes:
    """A Korean fixture at 16 kHz, then silence long enough for the VAD to close the utterance."""
    clip = read_wav(FIXTURES / "ko" / name)
    return resample(clip.pcm, clip.rate, RATE) + b"\0" * int(RATE * 2 * tail_s)


def frames(pcm: bytes) -> list[bytes]:
    out = [pcm[i:i + FRAME] for i in range(0, len(pcm), FRAME)]
    out[-1] = out[-1].ljust(FRAME, b"\0")
    return out


def frame(slot: int, seq: int, pcm: bytes, leg: int = 0) -> bytes:
    return FRAME_HEADER.pack(slot, leg, seq) + pcm


def leg_open(slot: int, call_id: str) -> bytes:
    return FRAME_HEADER.pack(slot, LEG_OPEN, 0) + call_id.encode()


def leg_close(slot: int) -> bytes:
    return FRAME_HEADER.pack(slot, LEG_CLOSE, 0)


def settings(**asr):
    s = load_settings(env={})
    asr.setdefault("max_delay", 60.0)  # a loaded test machine must not shed legs unless a test asks
    return replace(s, asr=replace(s.asr, **asr))


class Sent(list):
    """What the recogniser sent up: ("event", call_id, leg, worker, event) and ("fact", worker, fact)."""

    def events(self, call_id: str, cls: type = object, leg: str = "caller") -> list:
        return [x[4] for x in self if x[0] == "event" and x[1] == call_id and x[2] == leg and isinstance(x[4], cls)]

    def facts(self, cls: type, **match) -> list:
        return [x[2] for x in self if x[0] == "fact" and isinstance(x[2], cls)
                and all(getattr(x[2], k) == v for k, v in match.items())]


@pytest.fixture
def make(ko_engine, router):
    def build(router=router, **asr) -> tuple[Recogniser, Sent]:
        sent = Sent()
        job = AsrJob("asr-test", settings(**asr), router, ko_engine, {})
        return Recogniser(job, sent.append), sent

    return build


def feed(rec: Recogniser, worker: str, slot: int, pcm: bytes, leg: int = 0, first_seq: int = 0) -> int:
    chunks = frames(pcm)
    for i, f in enumerate(chunks):
        rec.on_datagram(worker, frame(slot, first_seq + i, f, leg))
    return len(chunks)


def test_a_call_is_recognised_and_reported_done_on_close(make):
    rec, sent = make()
    rec.on_datagram("w0", leg_open(1, "call-a"))
    n = feed(rec, "w0", 1, speech())
    assert sent.events("call-a", FinalTranscript)  # live: the VAD closed the utterance before the hang-up
    rec.on_datagram("w0", leg_close(1))
    finals = sent.events("call-a", FinalTranscript)
    assert all("\uac00" <= ch <= "\ud7a3" for ch in finals[0].text.replace(" ", ""))  # Hangul
    assert all(x[3] == "w0" for x in sent if x[0] == "event")
    assert isinstance(sent.events("call-a")[-1], StreamEnded)
    (done,) = sent.facts(P.AsrDone)
    assert sent[-1] == ("fact", "w0", done)  # the last word about the call
    assert (done.call_id, done.leg, done.degraded, done.dropped_frames) == ("call-a", "caller", False, 0)
    assert done.audio_s == pytest.approx(n * 0.02)
    assert 0 < done.recognised_s < done.audio_s  # the VAD kept the trailing silence from Vosk
    assert not sent.facts(P.CallDegraded)
    assert rec.active == 0 and not rec.calls and rec.frames == n


def test_the_caller_leg_drives_the_router_and_the_operator_leg_does_not(make, ko_engine):
    probe = StreamPipeline("probe", RATE, ko_engine)
    heard = [e for e in probe.push(speech()) + probe.close() if isinstance(e, FinalTranscript)]
    word = max(heard[0].text.split(), key=len)  # whatever the model really hears: the list's word
    rules = parse_rules(minimal_rules(decisive=word, strong="없는말하나", weak="없는말", danger="살려",
                                      negator="안", name="테스트", version="ko-test"))
    rec, sent = make(router=Router(rules))
    rec.on_datagram("w0", leg_open(1, "call-r"))
    feed(rec, "w0", 1, speech())
    feed(rec, "w0", 1, speech(), leg=int(P.Leg.OPERATOR))  # the operator says the same words
    rec.on_datagram("w0", leg_close(1))
    decisions = sent.events("call-r", Decision)
    assert decisions and decisions[-1].target == "12345" and decisions[-1].call_id == "call-r"
    assert sent.events("call-r", FinalTranscript, leg="operator")  # recognised ...
    assert not sent.events("call-r", Decision, leg="operator")  # ... but never routed
    assert {e.stream_id for e in sent.events("call-r", FinalTranscript, leg="operator")} == {"call-r/operator"}


def test_a_leg_beyond_streams_per_process_is_opened_degraded_and_the_first_keeps_its_finals(make):
    rec, sent = make(streams_per_process=1)
    rec.on_datagram("w0", leg_open(1, "call-a"))
    rec.on_datagram("w0", leg_open(2, "call-b"))
    (degraded,) = sent.facts(P.CallDegraded)
    assert degraded.call_id == "call-b" and degraded.leg == "caller" and "ASR pool full" in degraded.reason
    chunks = frames(speech())
    for i, f in enumerate(chunks):  # both calls talk at the same time
        rec.on_datagram("w0", frame(1, i, f))
        rec.on_datagram("w0", frame(2, i, f))
    rec.on_datagram("w0", leg_close(1))
    rec.on_datagram("w0", leg_close(2))
    assert sent.events("call-a", FinalTranscript)
    assert not sent.events("call-b")  # nothing recognised, not even an empty StreamEnded
    (done_b,) = sent.facts(P.AsrDone, call_id="call-b")
    assert done_b.degraded and done_b.dropped_frames == len(chunks) and done_b.recognised_s == 0
    assert done_b.audio_s == pytest.approx(len(chunks) * 0.02)  # the call's audio still counted
    assert not sent.facts(P.AsrDone, call_id="call-a")[0].degraded
    assert rec.degraded_legs == 1 and rec.active == 0
    # the stream is free again: the next call is recognised
    rec.on_datagram("w0", leg_open(3, "call-c"))
    assert len(sent.facts(P.CallDegraded)) == 1 and rec.active == 1


def test_frames_for_an_unknown_slot_are_orphans(make):
    rec, sent = make()
    pcm = speech()[:FRAME * 5]
    feed(rec, "w0", 9, pcm)  # never opened
    rec.on_datagram("w0", leg_open(1, "call-a"))
    feed(rec, "w1", 1, pcm)  # slot 1 is open, but for worker w0
    rec.on_datagram("w0", leg_close(1))
    feed(rec, "w0", 1, pcm)  # after its close
    rec.on_datagram("w0", b"\x00\x01")  # shorter than a header: ignored, not counted
    rec.on_datagram("w0", leg_close(42))  # closing what was never opened: nothing to say
    assert rec.orphan_frames == 15 and rec.frames == 0
    assert [type(x[2]) for x in sent if x[0] == "fact"] == [P.AsrDone]  # call-a's, nothing else
    assert rec.stats().orphan_frames == 15


def test_a_new_call_on_a_slot_still_open_closes_the_old_one(make):
    rec, sent = make()
    rec.on_datagram("w0", leg_open(1, "old"))
    feed(rec, "w0", 1, speech()[:FRAME * 10])
    rec.on_datagram("w0", leg_open(1, "new"))  # its LEG_CLOSE was lost
    (done,) = sent.facts(P.AsrDone)
    assert done.call_id == "old" and done.audio_s == pytest.approx(0.2)
    assert rec.calls[("w0", 1)].call_id == "new" and rec.active == 1


def test_worker_gone_closes_only_that_workers_calls(make):
    rec, sent = make()
    rec.on_datagram("w0", leg_open(1, "call-w0"))
    rec.on_datagram("w1", leg_open(1, "call-w1"))  # the same slot on another worker
    pcm = speech()
    feed(rec, "w0", 1, pcm[:FRAME * 50])
    feed(rec, "w1", 1, pcm[:FRAME * 50])
    rec.worker_gone("w0")
    (done,) = sent.facts(P.AsrDone)
    assert done.call_id == "call-w0" and sent[-1] == ("fact", "w0", done)
    assert done.audio_s == pytest.approx(1.0)
    assert list(rec.calls) == [("w1", 1)] and rec.active == 1
    # the other worker's call goes on and ends normally
    feed(rec, "w1", 1, pcm[FRAME * 50:], first_seq=50)
    rec.on_datagram("w1", leg_close(1))
    assert sent.events("call-w1", FinalTranscript)
    assert sent.facts(P.AsrDone, call_id="call-w1")[0].audio_s == pytest.approx(len(frames(pcm)) * 0.02)
    assert rec.active == 0


def test_shed_degrades_an_operator_leg_first_and_waits_before_the_next(make):
    rec, sent = make(max_delay=30.0)
    pcm = speech()[:FRAME * 10]
    rec.on_datagram("w0", leg_open(1, "call-a"))
    feed(rec, "w0", 1, pcm)
    feed(rec, "w0", 1, pcm, leg=int(P.Leg.OPERATOR))  # the operator's leg opens on its first frame
    rec.on_datagram("w0", leg_open(2, "call-b"))
    feed(rec, "w0", 2, pcm)
    assert rec.active == 3 and not sent.facts(P.CallDegraded)
    rec.shed(40.0)
    (shed,) = sent.facts(P.CallDegraded)
    assert (shed.call_id, shed.leg) == ("call-a", "operator") and "40.0 s behind" in shed.reason
    assert rec.active == 2
    rec.shed(45.0)  # within max_delay of the first: the others get time to catch up
    assert len(sent.facts(P.CallDegraded)) == 1 and rec.active == 2
    # the shed leg's frames are dropped from now on, the callers' still recognised
    feed(rec, "w0", 1, pcm, leg=int(P.Leg.OPERATOR), first_seq=10)
    rec.on_datagram("w0", leg_close(1))
    ops = sent.facts(P.AsrDone, call_id="call-a", leg="operator")
    assert ops[0].degraded and ops[0].dropped_frames == 10
    assert not sent.facts(P.AsrDone, call_id="call-a", leg="caller")[0].degraded


def test_shed_takes_the_longest_running_caller_when_only_callers_are_left(make):
    rec, sent = make(max_delay=30.0)
    pcm = speech()[:FRAME * 5]
    for slot, call_id in ((1, "first"), (2, "second"), (3, "third")):
        rec.on_datagram("w0", leg_open(slot, call_id))
        feed(rec, "w0", slot, pcm)
    rec.shed(31.0)
    assert [(f.call_id, f.leg) for f in sent.facts(P.CallDegraded)] == [("first", "caller")]


def test_a_leg_falling_behind_the_call_is_shed_by_the_frame_loop(make):
    rec, sent = make(max_delay=3.0)
    rec.on_datagram("w0", leg_open(1, "late"))
    chunks = frames(speech()[:FRAME * 20])
    # the first frame arrived 10 s ago and recognition only gets to it now: 10 s behind
    rec.on_datagram("w0", frame(1, 0, chunks[0]), arrived=time.monotonic() - 10.0)
    (shed,) = sent.facts(P.CallDegraded)
    assert shed.call_id == "late" and "behind" in shed.reason
    for i, f in enumerate(chunks[1:], start=1):
        rec.on_datagram("w0", frame(1, i, f))
    rec.on_datagram("w0", leg_close(1))
    (done,) = sent.facts(P.AsrDone)
    assert done.degraded and done.dropped_frames == 19
    assert rec.stats().lag_max_s >= 10.0


def test_a_released_stream_is_reused_by_the_next_open_and_carries_nothing_over(ko_engine):
    pool = ko_engine.pool
    pipe = StreamPipeline("reuse", RATE, ko_engine)
    held = pool.free  # whatever other tests left warm, minus the one this pipe took (if any)
    recogniser = pipe.stream._rec
    half = speech("ko-02-help.wav", tail_s=0)
    pipe.push(half[:len(half) // 2])
    pipe.close()
    assert pool.free == held + 1
    again = ko_engine.open_stream()
    assert pool.free == held and again._rec is recogniser  # the warm one, not a new one
    # the released recogniser starts clean: silence after the half utterance yields no text
    for f in frames(b"\0" * RATE * 2):
        again.accept(f)
    assert again.end_utterance().text == ""
    again.release()
    assert pool.free == held + 1


# -- one real ASR process -----------------------------------------------------------------------------


def test_asr_pool_process_recognises_a_worker_socket_at_real_time_pace(ko_engine, router):
    cfg = settings(warm_streams=1, max_delay=3.0)
    items: list = []
    final, done = threading.Event(), threading.Event()

    def make_job(name: str, sockets: dict[str, str]) -> AsrJob:
        return AsrJob(name, cfg, router, ko_engine, sockets)

    def on_item(obj) -> None:  # on the pool's reader thread
        items.append(obj)
        if obj[0] == "event" and obj[1] == "live-1" and isinstance(obj[4], FinalTranscript) and obj[4].text:
            final.set()
        if obj[0] == "fact" and isinstance(obj[2], P.AsrDone) and obj[2].call_id == "live-1":
            done.set()

    pool = AsrPool(1, ["w0"], make_job, on_item)
    pool.start()
    proc = pool.procs[0].proc
    chunks = frames(speech())
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            path = pool.audio_paths("w0")[0]
            s.sendto(leg_open(5, "live-1"), path)
            t0 = time.monotonic()
            for i, f in enumerate(chunks):  # one frame every 20 ms, as a call leg sends them
                wait = t0 + i * 0.02 - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                s.sendto(frame(5, i, f), path)
            assert final.wait(30), "no final transcript while the call was still up"
            assert not done.is_set()
            s.sendto(leg_close(5), path)
            assert done.wait(30), "no AsrDone after LEG_CLOSE"
    finally:
        pool.stop()
    assert proc.poll() == 0  # it exited, by itself and cleanly
    (asr_done,) = [x[2] for x in items if x[0] == "fact" and isinstance(x[2], P.AsrDone)]
    assert asr_done.audio_s == pytest.approx(len(chunks) * 0.02)
    assert asr_done.dropped_frames == 0 and not asr_done.degraded
    assert all(x[0] != "lost" for x in items)  # a stop is not reported as a lost process
