"""Audio input: WAV files of any rate and common telephony encodings -> 16-bit mono PCM,
and a streaming resampler. No SIP here: the SIP side hands PCM to the same stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from fenliu.errors import AudioInputError

# WAV encodings we accept: what recorders and PBXes write (G.711 included).
SUPPORTED_SUBTYPES = {"PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ALAW", "ULAW"}
_FIX = "convert it with: sox INPUT.wav -r 16000 -c 1 -b 16 OUTPUT.wav"


@dataclass(frozen=True)
class AudioClip:
    pcm: bytes  # int16 little-endian mono
    rate: int
    source_channels: int
    source_subtype: str

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / self.rate


def read_wav(path: str | Path, channel: int | str = 0) -> AudioClip:
    """Read a WAV file as mono int16. ``channel``: index to keep (0 = left, usually the caller
    in a two-channel call recording) or ``"mix"`` to average all channels."""
    p = Path(path)
    if not p.exists():
        raise AudioInputError(f"{p}: 文件不存在 / file not found")
    if p.is_dir():
        raise AudioInputError(f"{p}: 是目录，不是 WAV 文件 / is a directory, not a WAV file")
    if p.stat().st_size == 0:
        raise AudioInputError(f"{p}: 空文件（0 字节）/ empty file (0 bytes); re-export the recording")
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioInputError(f"{p}: 无法读取（文件损坏或不是音频）/ not a readable audio file ({e}); "
                              f"check the file, or {_FIX}") from e
    if info.format not in ("WAV", "WAVEX"):
        raise AudioInputError(f"{p}: 不是 WAV 文件（{info.format}）/ not a WAV file ({info.format_info}); {_FIX}")
    if info.subtype not in SUPPORTED_SUBTYPES:
        raise AudioInputError(f"{p}: 不支持的 WAV 编码 {info.subtype} / unsupported WAV encoding "
                              f"({info.subtype_info}); supported: PCM 8/16/24/32-bit, float, A-law, μ-law; {_FIX}")
    if info.frames == 0:
        raise AudioInputError(f"{p}: WAV 文件没有音频帧 / the WAV file has no audio frames; re-export the recording")
    try:
        data, rate = sf.read(str(p), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioInputError(f"{p}: 音频数据损坏 / audio data is corrupt ({e}); {_FIX}") from e
    if data.shape[0] == 0:
        raise AudioInputError(f"{p}: WAV 文件没有音频帧 / the WAV file has no audio frames")
    channels = data.shape[1]
    if channel == "mix":
        mono = data.astype(np.int32).mean(axis=1).astype(np.int16)
    else:
        idx = int(channel)
        if not 0 <= idx < channels:
            raise AudioInputError(f"{p}: 没有第 {idx} 声道（共 {channels} 个）/ no channel {idx}; the file has "
                                  f"{channels} channel(s): use --channel 0..{channels - 1} or --channel mix")
        mono = np.ascontiguousarray(data[:, idx])
    return AudioClip(pcm=mono.tobytes(), rate=int(rate), source_channels=channels, source_subtype=info.subtype)


def resample(pcm: bytes, rate_in: int, rate_out: int) -> bytes:
    """Whole-buffer resampling of int16 mono PCM (soxr, high quality)."""
    if rate_in == rate_out or not pcm:
        return pcm
    x = np.frombuffer(pcm, dtype=np.int16)
    return soxr.resample(x, rate_in, rate_out).astype(np.int16).tobytes()


class StreamResampler:
    """Chunk-by-chunk resampler for live audio; ``push`` returns what is ready."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in, self.rate_out = rate_in, rate_out
        self._stream = None if rate_in == rate_out else soxr.ResampleStream(rate_in, rate_out, 1, dtype="int16")

    def push(self, pcm: bytes, last: bool = False) -> bytes:
        if self._stream is None:
            return pcm
        x = np.frombuffer(pcm, dtype=np.int16)
        return self._stream.resample_chunk(x, last=last).tobytes()

    def flush(self) -> bytes:
        return self.push(b"", last=True)
