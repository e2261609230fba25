"""Prompts -> bridge-format WAVs: real espeak-ng, real sox, real files (no mocks)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from fenliu.asr.audio import read_wav
from fenliu.errors import AudioInputError, ConfigError
from fenliu.ivr_flows.prompts import (
    BRIDGE_RATE,
    PromptCache,
    PromptError,
    PromptSource,
    _espeak_voice,
    duration,
    speakable,
)

ESPEAK = shutil.which("espeak-ng")
SOX = shutil.which("sox")
_no_espeak = pytest.mark.skipif(ESPEAK is None, reason="espeak-ng not installed")


def needs_espeak(f):  # type: ignore[no-untyped-def]
    return pytest.mark.slow(_no_espeak(f))


def write_wav(path: Path, x: np.ndarray, rate: int, sampwidth: int = 2) -> Path:
    """x: float in [-1, 1], shape (n,) or (n, channels)."""
    x = x if x.ndim == 2 else x[:, None]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        if sampwidth == 1:
            w.writeframes((x * 100 + 128).astype(np.uint8).tobytes())
        else:
            w.writeframes((x * 12000).astype("<i2").tobytes())
    return path


def tone(seconds: float, rate: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return np.sin(2 * np.pi * hz * t)


def samples(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getcomptype()) == (BRIDGE_RATE, 1, 2, "NONE")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(float)))
    return float(np.argmax(spec) * rate / len(x))


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


# --- speakable ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, spoken", [
    ("12345", "幺二三四五"),
    ("110", "幺幺零"),
    ("95598", "九五五九八"),
    ("请拨打12345政务服务便民热线", "请拨打幺二三四五政务服务便民热线"),
    ("按1", "按1"),
    ("按0继续等待", "按0继续等待"),
    ("按12", "按12"),
    ("１２３４５", "幺二三四五"),      # full-width digits
    ("按１", "按1"),                  # espeak-ng skips full-width digits: made ASCII
    ("拨110或12345", "拨幺幺零或幺二三四五"),
    ("1998年", "一九九八年"),          # a year is read with 一, not 幺
    ("0571-87654321", "零五七幺-八七六五四三二幺"),
    ("没有数字。", "没有数字。"),
])
def test_speakable(text: str, spoken: str) -> None:
    assert speakable(text) == spoken


# --- text prompts ------------------------------------------------------------------------------

@needs_espeak
def test_text_prompt_is_bridge_format_speech(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path / "cache")
    out = cache.build(PromptSource("welcome", text="这里是110报警服务台，请简要说明您的情况。"))
    x = samples(out)  # asserts 16 kHz mono 16-bit PCM
    assert out.parent == tmp_path / "cache" and out.name.startswith("welcome-") and out.suffix == ".wav"
    assert 2.0 < duration(out) < 12.0, duration(out)  # 18 syllables at 150 wpm
    assert len(x) / BRIDGE_RATE == pytest.approx(duration(out))
    rms = np.sqrt(np.mean(x.astype(float) ** 2))
    assert rms > 300, rms  # speech, not silence
    assert np.mean(np.abs(x) > 1000) > 0.1  # a real share of the samples is loud
    assert cache.stats["generated"] == 1 and cache.stats["espeak_runs"] == 1
    assert leftovers(tmp_path / "cache") == []  # espeak's 22 kHz temp file and the .tmp are gone
    # resampled, not relabelled: as long as espeak-ng's own 22050 Hz output, nothing trimmed
    assert ESPEAK is not None
    raw = tmp_path / "raw.wav"
    subprocess.run([ESPEAK, "-v", _espeak_voice(ESPEAK, "cmn"), "-s", "150", "-w", str(raw),
                    speakable("这里是110报警服务台，请简要说明您的情况。")], check=True)
    with wave.open(str(raw), "rb") as w:
        assert w.getframerate() != BRIDGE_RATE
        assert duration(out) == pytest.approx(w.getnframes() / w.getframerate(), abs=0.020)


@needs_espeak
def test_voice_used_for_cmn_reads_chinese_characters_as_mandarin() -> None:
    # espeak-ng 1.51's "cmn" reads 好 as "hao three" (English), marked "(en)" in its phonemes
    assert ESPEAK is not None
    voice = _espeak_voice(ESPEAK, "cmn")
    phon = subprocess.run([ESPEAK, "-v", voice, "-q", "-x", "请按1报警"], capture_output=True,
                          check=True).stdout.decode()
    assert "(en)" not in phon, (voice, phon)
    assert _espeak_voice(ESPEAK, "yue") == "yue"  # other voices are left alone


@needs_espeak
def test_unchanged_text_is_reused_and_changed_text_regenerated(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    src = PromptSource("menu", text="请按1，或按0转人工。")
    first = cache.build(src)
    mtime = first.stat().st_mtime_ns
    again = cache.build(src)
    assert again == first
    assert cache.stats == {**cache.stats, "generated": 1, "reused": 1, "espeak_runs": 1}
    assert first.stat().st_mtime_ns == mtime

    # a restart (new cache object, same directory) reuses the file too
    restarted = PromptCache(tmp_path)
    assert restarted.build(src) == first
    assert restarted.stats["espeak_runs"] == 0 and restarted.stats["reused"] == 1
    assert first.stat().st_mtime_ns == mtime

    changed = cache.build(PromptSource("menu", text="请按2，或按0转人工。"))
    assert changed != first and changed.exists() and first.exists()
    assert cache.stats["espeak_runs"] == 2 and cache.stats["generated"] == 2
    assert not np.array_equal(samples(changed), samples(first))
    # the speed is part of the key as well
    faster = PromptCache(tmp_path, speed=220).build(src)
    assert faster != first and duration(faster) < duration(first)


@needs_espeak
def test_broken_cache_entry_is_regenerated(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    src = PromptSource("hold", text="请稍候。")
    out = cache.build(src)
    good = out.read_bytes()
    out.write_bytes(good[:30])  # not even a header
    assert cache.build(src) == out
    assert cache.stats["espeak_runs"] == 2 and out.read_bytes() == good
    out.write_bytes(good[: len(good) // 2])  # header intact, audio cut off (a disk that filled up)
    assert cache.build(src) == out
    assert cache.stats["espeak_runs"] == 3 and out.read_bytes() == good


@needs_espeak
def test_espeak_missing_is_a_prompt_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # a machine without espeak-ng on PATH
    cache = PromptCache(tmp_path / "cache")
    with pytest.raises(PromptError) as ei:
        cache.build(PromptSource("welcome", text="您好", line=12, flow_path="flows/front.toml"))
    msg = str(ei.value)
    assert "'welcome'" in msg and "flows/front.toml:12" in msg
    assert "espeak-ng" in msg and "apt-get install espeak-ng" in msg and "recorded wav" in msg
    assert isinstance(ei.value, ConfigError)
    # a recorded prompt does not need espeak-ng
    rec = write_wav(tmp_path / "rec.wav", tone(0.5, 16000), 16000)
    assert duration(cache.build(PromptSource("rec", text="您好", wav=str(rec)))) == pytest.approx(0.5, abs=0.001)


@needs_espeak
def test_espeak_failure_is_a_prompt_error(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path, voice="nosuchvoice")
    with pytest.raises(PromptError) as ei:
        cache.build(PromptSource("welcome", text="您好"))
    msg = str(ei.value)
    assert "'welcome'" in msg and "nosuchvoice" in msg and "espeak-ng failed" in msg
    assert leftovers(tmp_path) == [] and list(tmp_path.glob("*.wav")) == []


def test_neither_text_nor_wav(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    for src in (PromptSource("empty", line=7, flow_path="f.toml"), PromptSource("empty", text="  \n", line=7,
                                                                               flow_path="f.toml")):
        with pytest.raises(PromptError, match=r"f\.toml:7: .*'empty'.*neither text nor wav"):
            cache.build(src)


# --- recorded prompts --------------------------------------------------------------------------

@pytest.mark.parametrize("channels, sampwidth", [(2, 2), (1, 2), (1, 1), (2, 1)])
def test_recorded_8k_is_converted_keeping_duration_and_pitch(tmp_path: Path, channels: int, sampwidth: int) -> None:
    x = tone(1.37, 8000, 440.0)
    if channels == 2:
        x = np.stack([x, x], axis=1)
    rec = write_wav(tmp_path / "hold.wav", x, 8000, sampwidth)
    cache = PromptCache(tmp_path / "cache")
    out = cache.build(PromptSource("hold", wav=str(rec)))
    y = samples(out)
    assert abs(duration(out) - 1.37) <= 0.020
    assert dominant_hz(y, BRIDGE_RATE) == pytest.approx(440.0, abs=3.0)
    assert np.sqrt(np.mean(y.astype(float) ** 2)) > (2000 if sampwidth == 1 else 5000)
    assert cache.stats["generated"] == 1 and cache.stats["espeak_runs"] == 0
    # unchanged file: reused; changed file: regenerated
    mtime = out.stat().st_mtime_ns
    assert cache.build(PromptSource("hold", wav=str(rec))) == out and out.stat().st_mtime_ns == mtime
    write_wav(rec, tone(0.8, 8000), 8000, sampwidth)
    out2 = cache.build(PromptSource("hold", wav=str(rec)))
    assert out2 != out and abs(duration(out2) - 0.8) <= 0.020


def test_stereo_channels_are_mixed(tmp_path: Path) -> None:
    # the voice only on the right channel must not come out as silence
    x = np.stack([np.zeros(8000), tone(1.0, 8000, 500.0)], axis=1)
    out = PromptCache(tmp_path / "cache").build(PromptSource("right", wav=str(write_wav(tmp_path / "r.wav", x, 8000))))
    y = samples(out)
    assert np.sqrt(np.mean(y.astype(float) ** 2)) > 2000
    assert dominant_hz(y, BRIDGE_RATE) == pytest.approx(500.0, abs=3.0)


def test_recording_wins_over_text_and_is_found_next_to_the_flow(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    write_wav(tmp_path / "prompts" / "hold.wav", tone(0.6, 22050, 300.0), 22050)
    flow = tmp_path / "front.toml"
    flow.write_text("")
    cache = PromptCache(tmp_path / "cache")
    out = cache.build(PromptSource("hold", text="请稍候。", wav="prompts/hold.wav", flow_path=str(flow)))
    assert abs(duration(out) - 0.6) <= 0.020
    assert dominant_hz(samples(out), BRIDGE_RATE) == pytest.approx(300.0, abs=3.0)
    assert cache.stats["espeak_runs"] == 0


@pytest.mark.slow
@pytest.mark.skipif(SOX is None, reason="sox not installed")
def test_wav_only_sox_can_read_is_converted_by_sox(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "pcm.wav", tone(1.0, 8000), 8000)
    adpcm = tmp_path / "adpcm.wav"
    subprocess.run([str(SOX), str(src), "-e", "ima-adpcm", str(adpcm)], check=True)
    with pytest.raises(AudioInputError):
        read_wav(adpcm)  # the in-process reader refuses this encoding
    out = PromptCache(tmp_path / "cache").build(PromptSource("adpcm", wav=str(adpcm)))
    assert abs(duration(out) - 1.0) <= 0.020
    assert dominant_hz(samples(out), BRIDGE_RATE) == pytest.approx(440.0, abs=3.0)


def _empty_wav(path: Path) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
    return path


@pytest.mark.parametrize("kind", ["garbage", "empty_wav", "zero_bytes", "missing", "directory"])
def test_bad_recording_is_a_prompt_error_naming_the_prompt(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "bad.wav"
    if kind == "garbage":
        p.write_bytes(bytes(range(256)) * 40)
    elif kind == "empty_wav":
        _empty_wav(p)
        assert p.stat().st_size == 44  # a valid header, 0 frames
    elif kind == "zero_bytes":
        p.write_bytes(b"")
    elif kind == "directory":
        p.mkdir()
    cache = PromptCache(tmp_path / "cache")
    with pytest.raises(PromptError) as ei:
        cache.build(PromptSource("hold", wav=str(p), line=9, flow_path=str(tmp_path / "front.toml")))
    msg = str(ei.value)
    assert "'hold'" in msg and "bad.wav" in msg and "front.toml:9" in msg
    assert any(w in msg for w in ("re-export", "check the path", "convert it"))
    assert list((tmp_path / "cache").iterdir()) == []


# --- several prompts, concat -------------------------------------------------------------------

@needs_espeak
def test_build_all_returns_every_name(tmp_path: Path) -> None:
    rec = write_wav(tmp_path / "r.wav", tone(0.4, 8000), 8000)
    srcs = [PromptSource(f"p{i}", text=f"第{i}条提示，请拨打12345。") for i in range(5)]
    srcs.append(PromptSource("rec", wav=str(rec)))
    srcs.append(PromptSource("中文名", text="您好"))
    cache = PromptCache(tmp_path / "cache")
    got = cache.build_all(srcs)
    assert set(got) == {s.name for s in srcs}
    assert len(set(got.values())) == len(srcs)
    for p in got.values():
        assert len(samples(p)) > 0
    assert cache.stats["espeak_runs"] == 6
    assert cache.build_all(srcs) == got and cache.stats["espeak_runs"] == 6  # all reused


@needs_espeak
def test_build_all_reports_every_failure(tmp_path: Path) -> None:
    srcs = [PromptSource("ok", text="您好"), PromptSource("gone", wav=str(tmp_path / "gone.wav"), line=3),
            PromptSource("blank", line=4)]
    with pytest.raises(PromptError) as ei:
        PromptCache(tmp_path / "cache").build_all(srcs)
    msg = str(ei.value)
    assert "2 prompts failed" in msg and "'gone'" in msg and "'blank'" in msg and "'ok'" not in msg
    with pytest.raises(PromptError, match="defined twice"):
        PromptCache(tmp_path / "cache").build_all([PromptSource("a", text="x"), PromptSource("a", text="y")])


@needs_espeak
def test_concurrent_builders_never_see_half_a_file(tmp_path: Path) -> None:
    src = PromptSource("race", text="这是一个并发测试，请拨打12345。")
    results: list[Path] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(PromptCache(tmp_path).build(src))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1
    assert len(samples(results[0])) > BRIDGE_RATE
    assert leftovers(tmp_path) == []


@needs_espeak
def test_concat_is_the_fragments_one_after_another(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path / "cache")
    rec = write_wav(tmp_path / "r.wav", tone(0.5, 8000), 8000)
    parts = [cache.build(PromptSource("a", text="您要转接的是")), cache.build(PromptSource("b", text="12345热线")),
             cache.build(PromptSource("c", wav=str(rec)))]
    out = cache.concat(parts)
    y = samples(out)
    xs = [samples(p) for p in parts]
    assert len(y) == sum(len(x) for x in xs)
    assert duration(out) == pytest.approx(sum(duration(p) for p in parts), abs=1e-9)
    assert np.array_equal(y, np.concatenate(xs))  # every sample, in order, none lost at the joins
    a, b = len(xs[0]), len(xs[0]) + len(xs[1])
    assert np.array_equal(y[a - 5:a + 5], np.concatenate([xs[0][-5:], xs[1][:5]]))
    assert np.array_equal(y[b - 5:b + 5], np.concatenate([xs[1][-5:], xs[2][:5]]))
    runs = cache.stats["espeak_runs"]
    mtime = out.stat().st_mtime_ns
    assert cache.concat(parts) == out and out.stat().st_mtime_ns == mtime
    assert cache.stats["concat_generated"] == 1 and cache.stats["concat_reused"] == 1
    assert cache.stats["espeak_runs"] == runs
    assert cache.concat(list(reversed(parts))) != out
    assert cache.concat([parts[0]]) == parts[0]


def test_concat_refuses_what_is_not_bridge_format(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path / "cache")
    ok = cache.build(PromptSource("ok", wav=str(write_wav(tmp_path / "a.wav", tone(0.2, 16000), 16000))))
    raw8k = write_wav(tmp_path / "b.wav", tone(0.2, 8000), 8000)
    with pytest.raises(PromptError, match="not 16 kHz mono 16-bit"):
        cache.concat([ok, raw8k])
    with pytest.raises(PromptError, match="cannot read"):
        cache.concat([ok, tmp_path / "missing.wav"])
    with pytest.raises(PromptError):
        cache.concat([])
