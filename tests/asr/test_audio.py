"""WAV input: encodings, rates, channels, and every kind of bad file."""

import numpy as np
import pytest

from fenliu.asr.audio import StreamResampler, read_wav, resample
from fenliu.errors import AudioInputError
from tests.conftest import FIXTURES, sox

SRC = FIXTURES / "cmn" / "cmn-06-power.wav"


@pytest.mark.parametrize("args,rate", [
    (["-e", "a-law", "-b", "8"], 8000),
    (["-e", "u-law", "-b", "8"], 8000),
    (["-e", "unsigned-integer", "-b", "8"], 8000),
    (["-r", "44100", "-b", "16"], 44100),
    (["-r", "16000", "-b", "24"], 16000),
])
def test_supported_encodings_decode_to_the_same_speech(tmp_path, args, rate):
    out = tmp_path / "x.wav"
    sox(str(SRC), *args, str(out))
    ref = read_wav(SRC)
    clip = read_wav(out)
    assert clip.rate == rate
    assert clip.duration == pytest.approx(ref.duration, abs=0.01)
    a = np.frombuffer(resample(clip.pcm, rate, 8000), dtype=np.int16).astype(float)
    b = np.frombuffer(ref.pcm, dtype=np.int16).astype(float)
    n = min(len(a), len(b))
    corr = np.corrcoef(a[:n], b[:n])[0, 1]
    assert corr > 0.9


def test_stereo_channel_choice(tmp_path):
    silence = tmp_path / "sil.wav"
    sox("-n", "-r", "8000", "-c", "1", "-b", "16", str(silence), "trim", "0", str(read_wav(SRC).duration))
    stereo = tmp_path / "st.wav"
    sox("-M", str(silence), str(SRC), str(stereo))  # left silent, right speech
    left, right = read_wav(stereo, 0), read_wav(stereo, 1)
    assert left.source_channels == 2
    assert np.abs(np.frombuffer(left.pcm, np.int16)).max() <= 2  # sox's dither
    assert np.abs(np.frombuffer(right.pcm, np.int16)).max() > 1000
    mix = read_wav(stereo, "mix")
    assert 0 < np.abs(np.frombuffer(mix.pcm, np.int16)).max() < np.abs(np.frombuffer(right.pcm, np.int16)).max()
    with pytest.raises(AudioInputError, match="channel 2"):
        read_wav(stereo, 2)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioInputError, match="empty"):
        read_wav(p)


def test_header_only_wav_has_no_frames(tmp_path):
    p = tmp_path / "h.wav"
    data = SRC.read_bytes()
    p.write_bytes(data[:44])
    with pytest.raises(AudioInputError, match="no audio frames|not a readable"):
        read_wav(p)


def test_garbage_and_truncated_files(tmp_path):
    g = tmp_path / "g.wav"
    g.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(AudioInputError, match="not a readable audio file"):
        read_wav(g)


def test_non_wav_container_and_unsupported_encoding(tmp_path):
    flac = tmp_path / "x.flac"
    sox(str(SRC), str(flac))
    with pytest.raises(AudioInputError, match="not a WAV"):
        read_wav(flac)
    adpcm = tmp_path / "adpcm.wav"
    sox(str(SRC), "-e", "ima-adpcm", str(adpcm))
    with pytest.raises(AudioInputError, match="unsupported WAV encoding"):
        read_wav(adpcm)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(AudioInputError, match="not found"):
        read_wav(tmp_path / "nope.wav")
    with pytest.raises(AudioInputError, match="directory"):
        read_wav(tmp_path)


def test_stream_resampler_matches_whole_buffer_length():
    clip = read_wav(SRC)
    rs = StreamResampler(8000, 16000)
    out = b"".join(rs.push(clip.pcm[i : i + 320]) for i in range(0, len(clip.pcm), 320)) + rs.flush()
    assert abs(len(out) - 2 * len(clip.pcm)) <= 64
