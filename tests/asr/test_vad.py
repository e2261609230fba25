"""The VAD state machine on literal frame sequences, then webrtcvad on real audio."""

import pytest

from fenliu.asr.audio import read_wav, resample
from fenliu.asr.vad import Start, Stop, VadConfig, VadSegmenter, VadState, Voice, webrtc_classifier
from tests.conftest import FIXTURES

RATE = 16000
FRAME = b"\0" * (RATE * 20 // 1000 * 2)


def run(pattern: str, config: VadConfig) -> list:
    """pattern: one char per 20 ms frame, 'x' voiced, '.' silent."""
    voiced = iter(c == "x" for c in pattern)
    seg = VadSegmenter(lambda _f: next(voiced), RATE, config)
    events = []
    for _ in pattern:
        events += seg.push(FRAME)
    return events + seg.flush()


CFG = VadConfig(min_speech_ms=60, start_window_ms=100, stop_ms=100, padding_ms=100, max_utterance_ms=1000)


def kinds(events):
    return "".join("S" if isinstance(e, Start) else "E" if isinstance(e, Stop) else "v" for e in events)


def test_silence_produces_nothing():
    assert run("." * 100, CFG) == []


def test_a_short_blip_below_min_speech_does_not_start():
    assert run("...x.....x....x....", CFG) == []


def test_start_stop_hysteresis_with_preroll():
    events = run("....." + "xxxxxxxx" + "..x.." + "......", CFG)
    k = kinds(events)
    assert k.count("S") == 1 and k.count("E") == 1, k
    start = events[0]
    # started after 3 voiced frames (min 60 ms), back-dated by the pre-roll (5 frames max)
    assert isinstance(start, Start) and start.t == pytest.approx(0.06)
    # the single voiced frame inside the gap does not end or restart the utterance
    stop = next(e for e in events if isinstance(e, Stop))
    assert not stop.forced
    voice = [e for e in events if isinstance(e, Voice)]
    assert len(voice) == 5 + 13  # pre-roll (5) + 5 voiced + '..x..' + 3 silent frames until the stop


def test_max_utterance_forces_a_cut_and_restarts():
    events = run("x" * 120, CFG)
    stops = [e for e in events if isinstance(e, Stop)]
    assert stops[0].forced
    assert kinds(events).count("S") >= 2  # speech goes on: a new utterance starts at once


def test_wrong_frame_size_is_refused():
    seg = VadSegmenter(lambda f: True, RATE, CFG)
    with pytest.raises(ValueError):
        seg.push(b"\0" * 10)


def _frames(pcm: bytes, n: int):
    return [pcm[i : i + n] for i in range(0, len(pcm) - n + 1, n)]


def test_webrtcvad_finds_real_mandarin_speech_and_skips_padding():
    clip = read_wav(FIXTURES / "aishell" / "BAC009S0764W0121.wav")
    assert clip.rate == 16000
    silence = b"\0" * (RATE * 2)  # 1 s of digital silence each side
    pcm = silence + clip.pcm + silence
    seg = VadSegmenter(webrtc_classifier(RATE, 2), RATE, VadConfig())
    events = []
    for f in _frames(pcm, seg.frame_bytes):
        events += seg.push(f)
    events += seg.flush()
    starts = [e for e in events if isinstance(e, Start)]
    stops = [e for e in events if isinstance(e, Stop)]
    assert starts and stops
    assert 0.6 <= starts[0].t <= 1.6  # speech begins after the 1 s of silence (minus pre-roll)
    assert stops[-1].t <= 1.0 + clip.duration + 0.8
    assert seg.state is VadState.QUIET


def test_webrtcvad_on_8khz_telephony_fixture():
    clip = read_wav(FIXTURES / "cmn" / "cmn-06-power.wav")
    assert clip.rate == 8000
    pcm = resample(clip.pcm, 8000, RATE)
    seg = VadSegmenter(webrtc_classifier(RATE, 2), RATE, VadConfig())
    events = [e for f in _frames(pcm, seg.frame_bytes) for e in seg.push(f)] + seg.flush()
    assert any(isinstance(e, Start) for e in events)
    assert seg.voiced_frames < seg.frames  # the padding was silence


def test_energy_floor_keeps_line_noise_after_speech_from_holding_the_vad_open():
    import numpy as np

    clip = read_wav(FIXTURES / "aishell" / "BAC009S0764W0121.wav")
    hiss = np.random.default_rng(7).normal(0, 30, RATE * 2).astype(np.int16).tobytes()  # ~ -60 dBFS
    pcm = clip.pcm + hiss + clip.pcm + hiss

    def utterances(floor):
        seg = VadSegmenter(webrtc_classifier(RATE, 2, floor), RATE, VadConfig())
        events = [e for f in _frames(pcm, seg.frame_bytes) for e in seg.push(f)] + seg.flush()
        return [e for e in events if isinstance(e, Start)], [e for e in events if isinstance(e, Stop)]

    starts, stops = utterances(-50.0)
    assert len(starts) == 2
    assert stops[0].t < clip.duration + 1.0  # closed during the hiss, not at the next utterance
    # without the floor webrtcvad keeps calling the hiss speech: one utterance from the first
    # word to the end of the file (what the floor is for)
    starts_nf, stops_nf = utterances(None)
    assert len(starts_nf) == 1 and stops_nf[-1].t > 2 * clip.duration + 2.0
