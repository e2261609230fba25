"""The real Vosk path: PyPI's Korean small model on espeak-ng Korean audio.

espeak Korean is recognised poorly, so these assert structure (real words come out, partials
precede finals, silence yields nothing, VAD gating skips silence), not exact text.
"""

import pytest

from fenliu.asr.audio import read_wav, resample
from fenliu.asr.pipeline import StreamPipeline
from fenliu.events import FinalTranscript, PartialTranscript, SpeechStarted, SpeechStopped, StreamEnded
from tests.conftest import FIXTURES, minimal_rules

pytestmark = pytest.mark.slow


def feed(pipe: StreamPipeline, pcm: bytes, chunk: int = 640) -> list:
    events = []
    for i in range(0, len(pcm), chunk):
        events += pipe.push(pcm[i : i + chunk])
    return events + pipe.close()


def with_silence(pcm: bytes, rate: int, seconds: float) -> bytes:
    pad = b"\0" * (int(rate * seconds) * 2)
    return pad + pcm + pad + pcm + pad


def test_real_words_from_real_audio_partials_before_finals(ko_engine):
    clip = read_wav(FIXTURES / "ko" / "ko-01-greeting.wav")
    events = feed(StreamPipeline("ko1", clip.rate, ko_engine), clip.pcm)
    finals = [e for e in events if isinstance(e, FinalTranscript)]
    partials = [e for e in events if isinstance(e, PartialTranscript)]
    assert finals and partials
    assert all("\uac00" <= ch <= "\ud7a3" for ch in finals[0].text.replace(" ", ""))  # Hangul syllables
    assert len(finals[0].text.split()) >= 2
    first_final = events.index(finals[0])
    assert any(events.index(p) < first_final for p in partials)
    # word timings fall inside the audio
    words = finals[0].words
    assert words and 0 <= words[0].start < words[-1].end <= clip.duration + 0.1
    assert isinstance(events[-1], StreamEnded)


def test_silence_produces_no_utterance(ko_engine):
    silence = b"\0" * (16000 * 2 * 3)
    events = feed(StreamPipeline("sil", 16000, ko_engine), silence)
    assert not [e for e in events if isinstance(e, FinalTranscript | PartialTranscript | SpeechStarted)]


def test_vad_gating_skips_silence_and_keeps_speech(ko_engine):
    clip = read_wav(FIXTURES / "ko" / "ko-02-help.wav")
    pcm = with_silence(clip.pcm, clip.rate, 3.0)
    total = len(pcm) / 2 / clip.rate
    gated = StreamPipeline("g", clip.rate, ko_engine, vad_enabled=True)
    ev_gated = feed(gated, pcm)
    ungated = StreamPipeline("u", clip.rate, ko_engine, vad_enabled=False)
    ev_ungated = feed(ungated, pcm)
    assert gated.recognised_seconds < 0.75 * total
    assert ungated.recognised_seconds >= total - 0.05
    # two spoken copies -> two utterances, each bracketed by speech start/stop
    assert sum(isinstance(e, SpeechStarted) for e in ev_gated) == 2
    assert sum(isinstance(e, SpeechStopped) for e in ev_gated) == 2
    finals_g = [e for e in ev_gated if isinstance(e, FinalTranscript)]
    assert len(finals_g) == 2
    # the first utterance's timing is in stream time (after the 3 s of silence)
    assert 2.5 <= finals_g[0].t0 <= 3.0 + clip.duration
    assert [e for e in ev_ungated if isinstance(e, FinalTranscript)]


def test_8khz_input_is_resampled_for_the_model(ko_engine):
    clip = read_wav(FIXTURES / "ko" / "ko-03-power.wav")
    pcm8 = resample(clip.pcm, 16000, 8000)
    events = feed(StreamPipeline("k8", 8000, ko_engine), pcm8, chunk=320)
    assert [e for e in events if isinstance(e, FinalTranscript) and e.text]


def test_torn_chunks_are_reassembled(ko_engine):
    clip = read_wav(FIXTURES / "ko" / "ko-01-greeting.wav")
    events = feed(StreamPipeline("odd", clip.rate, ko_engine), clip.pcm, chunk=333)  # odd byte counts
    assert [e for e in events if isinstance(e, FinalTranscript) and e.text]


def test_router_decision_from_live_korean_transcript(ko_engine):
    """End of the chain: the recogniser's own words drive a decision through a small Korean
    keyword list (the Chinese router is tested on Chinese text elsewhere)."""
    from fenliu.router import CallRouter, Router, parse_rules

    clip = read_wav(FIXTURES / "ko" / "ko-01-greeting.wav")
    first = [e for e in feed(StreamPipeline("probe", clip.rate, ko_engine), clip.pcm)
             if isinstance(e, FinalTranscript)][0]
    word = max(first.text.split(), key=len)  # whatever the model really heard
    rules = parse_rules(minimal_rules(decisive=word, strong="없는말하나", weak="없는말", danger="살려",
                                      negator="안", name="테스트", version="ko-test"))
    pipe = StreamPipeline("ko", clip.rate, ko_engine, router=CallRouter(Router(rules)))
    decisions = [e for e in feed(pipe, clip.pcm) if type(e).__name__ == "Decision"]
    assert decisions and decisions[-1].target == "12345"
    assert word in [m.word for m in decisions[-1].matched]


def test_missing_and_broken_models_say_how_to_fix(tmp_path):
    from fenliu.asr.engine import VoskEngine
    from fenliu.asr.models import resolve_model
    from fenliu.errors import ModelError

    with pytest.raises(ModelError, match="small-cn"):
        resolve_model("vosk-model-small-cn-0.22", tmp_path)
    broken = tmp_path / "broken-model"
    (broken / "am").mkdir(parents=True)
    with pytest.raises(ModelError, match="am/final.mdl"):
        resolve_model(str(broken))
    (broken / "am" / "final.mdl").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="could not load"):
        VoskEngine(broken)


def test_a_reused_recogniser_times_words_from_its_own_call(ko_engine):
    """Recognisers are pooled across calls (a fresh one costs ~1 s of CPU); Vosk keeps counting
    time across them, so the second call's words must still be timed from its own start."""
    clip = read_wav(FIXTURES / "ko" / "ko-01-greeting.wav")
    pcm = resample(clip.pcm, clip.rate, 16000)
    runs, free = [], []
    for _ in range(2):
        pipe = StreamPipeline("reuse", 16000, ko_engine, vad_enabled=False)
        finals = [e for e in feed(pipe, pcm) + pipe.close() if isinstance(e, FinalTranscript)]
        free.append(ko_engine.pool.free)
        runs.append([w for f in finals for w in f.words])
    assert free[0] >= 1 and free[1] == free[0]  # the second call reused a recogniser and gave it back
    assert runs[0] and runs[1]
    assert abs(runs[1][0].start - runs[0][0].start) < 0.1 and runs[1][-1].end <= clip.duration + 0.1
