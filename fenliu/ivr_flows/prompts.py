"""A flow's prompts as WAV files in the conference bridge's format (16 kHz, mono, 16-bit PCM),
cached on disk.

- A recorded file (``wav``) is converted in-process with the same reader and resampler the ASR
  uses (:func:`fenliu.asr.audio.read_wav` + soxr): any rate, mono or stereo (channels mixed),
  8/16/24/32-bit PCM, float, A-law, μ-law. A WAV that reader rejects (e.g. IMA ADPCM, GSM) is
  handed to ``sox`` when it is installed.
- A text prompt is spoken by ``espeak-ng -v {voice} -s {speed}`` (22050 Hz) after
  :func:`speakable` has spelled out digit strings, then resampled to 16 kHz.

Each result is stored as ``{name}-{key16}.wav`` where the key is the sha256 of what the audio
is made from (the spoken text, voice and speed, or the recorded file's bytes): a changed text
or file gets a new file, an unchanged one is reused without running espeak-ng, also across
restarts. Files are written to a temporary name and renamed, so a reader (another process, the
SIP worker) never sees half a file. Old files are not deleted (the cache is small; empty the
directory to clean it, e.g. after upgrading espeak-ng).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import wave
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from fenliu.asr.audio import read_wav, resample
from fenliu.errors import AudioInputError, ConfigError

BRIDGE_RATE = 16000
_FORMAT = "bridge-16k-mono-s16-v1"  # part of every cache key: change it when the conversion changes
_ESPEAK_TIMEOUT = 60.0
_WORKERS = 2
_INSTALL = "install it (apt-get install espeak-ng), or give the prompt a recorded wav"


class PromptError(ConfigError):
    """A prompt cannot be turned into audio. The message names the prompt, the file (and the
    flow line when known) and what to do."""


@dataclass(frozen=True)
class PromptSource:
    name: str
    text: str = ""
    wav: str = ""  # a recorded file; wins over text. Relative to the flow file when flow_path is set
    line: int = 0  # the flow file's line that defines the prompt (0 = unknown)
    flow_path: str = ""


# ---------------------------------------------------------------------------------------------
# Text for espeak-ng

_SPOKEN = "零幺二三四五六七八九"  # telephone style: 1 is 幺 so it is not confused with 7
_YEAR_SPOKEN = "零一二三四五六七八九"  # a year is read with 一: 一九九八年
_FULLWIDTH = str.maketrans("０１２３４５６７８９", "0123456789")
_YEAR = re.compile(r"(?<![0-9])([0-9]{4})(?=年)")
_RUN = re.compile(r"[0-9]{3,}")


def speakable(text: str) -> str:
    """Text as espeak-ng should read it: runs of three or more digits digit by digit, 1 as 幺
    ("12345" → "幺二三四五", "110" → "幺幺零"); a four-digit year before 年 with 一
    ("1998年" → "一九九八年"). Shorter numbers stay ("按1": espeak says 一, as people do).
    Full-width digits count as digits (espeak-ng would skip them)."""
    t = text.translate(_FULLWIDTH)
    t = _YEAR.sub(lambda m: "".join(_YEAR_SPOKEN[int(c)] for c in m.group(1)), t)
    return _RUN.sub(lambda m: "".join(_SPOKEN[int(c)] for c in m.group(0)), t)


# ---------------------------------------------------------------------------------------------
# Helpers


def _where(src: PromptSource) -> str:
    loc = ""
    if src.flow_path:
        loc = f"{src.flow_path}:{src.line}: " if src.line else f"{src.flow_path}: "
    elif src.line:
        loc = f"line {src.line}: "
    return f"{loc}提示音 '{src.name}' / prompt '{src.name}'"


def _safe(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._-")[:48]
    return s or "prompt"


def _valid_bridge_wav(path: Path) -> bool:
    """A complete 16 kHz mono 16-bit WAV with at least one frame (a cache entry worth reusing)."""
    try:
        size = path.stat().st_size
        with wave.open(str(path), "rb") as w:
            ok = (w.getframerate() == BRIDGE_RATE and w.getnchannels() == 1 and w.getsampwidth() == 2
                  and w.getcomptype() == "NONE" and w.getnframes() > 0)
            return ok and size >= 44 + 2 * w.getnframes()
    except (OSError, EOFError, wave.Error):
        return False


def _wav_bytes(pcm: bytes) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(BRIDGE_RATE)
        w.writeframes(pcm)
    return buf.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def duration(path: str | Path) -> float:
    """Length of a WAV file in seconds."""
    p = Path(path)
    try:
        with wave.open(str(p), "rb") as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError):
        pass  # not plain PCM (e.g. float, A-law): soundfile knows more encodings
    except OSError as e:
        raise PromptError(f"{p}: 无法读取 / cannot read ({e})") from e
    try:
        info = sf.info(str(p))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise PromptError(f"{p}: 不是可读的音频文件 / not a readable audio file ({e})") from e
    return info.frames / info.samplerate


_probe_lock = threading.Lock()
_voice_for: dict[tuple[str, str], str] = {}


def _espeak_voice(exe: str, voice: str) -> str:
    """The voice to run for ``voice``. espeak-ng 1.51 (Debian 12, Ubuntu 22.04/24.04) has a broken
    ``cmn``: it reads every Chinese character as pinyin with the tone number in English
    (好 → "hao three"). Its ``cmn-latn-pinyin`` voice reads characters correctly (the two differ
    only in how Latin letters are read), so on such an install that one is used instead."""
    if voice.lower() not in ("cmn", "zh", "zh-cmn"):
        return voice
    with _probe_lock:
        key = (exe, voice)
        if key not in _voice_for:
            try:
                out = subprocess.run([exe, "-v", voice, "-q", "-x", "好"], capture_output=True,
                                     timeout=_ESPEAK_TIMEOUT, check=False).stdout.decode("utf-8", "replace")
            except (OSError, subprocess.SubprocessError):
                out = ""
            _voice_for[key] = "cmn-latn-pinyin" if "(en)" in out else voice
        return _voice_for[key]


# ---------------------------------------------------------------------------------------------
# The cache


class PromptCache:
    """Builds bridge-format WAVs for prompts into ``cache_dir`` and reuses them while their
    source is unchanged. Thread-safe; several processes may share one ``cache_dir``."""

    def __init__(self, cache_dir: str | Path, voice: str = "cmn", speed: int = 150) -> None:
        self.dir = Path(cache_dir)
        self.voice = voice
        self.speed = int(speed)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PromptError(f"{self.dir}: 无法创建提示音缓存目录 / cannot create the prompt cache directory "
                              f"({e}); set ivr.cache_dir to a writable directory") from e
        self._lock = threading.Lock()
        self.stats: dict[str, int] = {"generated": 0, "reused": 0, "espeak_runs": 0,
                                      "concat_generated": 0, "concat_reused": 0}

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    # -- one prompt ---------------------------------------------------------------------------

    def build(self, src: PromptSource) -> Path:
        """The bridge-format WAV for one prompt (made now, or reused from the cache)."""
        if src.wav:
            return self._build_recorded(src)
        if src.text.strip():
            return self._build_text(src)
        raise PromptError(f"{_where(src)}: 既没有 text 也没有 wav / has neither text nor wav; "
                          f'give it a text (name = "…") or a recording (name = {{ wav = "file.wav" }})')

    def _wav_path(self, src: PromptSource) -> Path:
        p = Path(src.wav).expanduser()
        if not p.is_absolute() and src.flow_path:
            p = Path(src.flow_path).parent / p
        return p

    def _build_recorded(self, src: PromptSource) -> Path:
        wav = self._wav_path(src)
        fix = "check the path (relative to the flow file) or re-export the recording as WAV"
        try:
            data = wav.read_bytes()
        except FileNotFoundError as e:
            raise PromptError(f"{_where(src)}: 录音文件不存在 / recorded file not found: {wav}; {fix}") from e
        except IsADirectoryError as e:
            raise PromptError(f"{_where(src)}: {wav} 是目录 / is a directory, not a WAV file; {fix}") from e
        except OSError as e:
            raise PromptError(f"{_where(src)}: 无法读取 / cannot read {wav} ({e}); {fix}") from e
        key = hashlib.sha256(json.dumps(["wav", _FORMAT]).encode() + b"\0" + data).hexdigest()
        out = self.dir / f"{_safe(src.name)}-{key[:16]}.wav"
        if _valid_bridge_wav(out):
            self._count("reused")
            return out
        pcm: bytes | None
        try:
            clip = read_wav(wav, channel="mix")
            pcm = resample(clip.pcm, clip.rate, BRIDGE_RATE)
        except AudioInputError as e:
            pcm = self._sox_convert(wav)  # what soundfile cannot read, sox may (ADPCM, GSM, …)
            if pcm is None:
                raise PromptError(f"{_where(src)}: 录音文件不可用 / unusable recording: {e}") from e
        _write_atomic(out, _wav_bytes(pcm))
        self._count("generated")
        return out

    def _sox_convert(self, wav: Path) -> bytes | None:
        """16 kHz mono int16 PCM of ``wav`` by sox, or None when sox is absent or fails."""
        sox = shutil.which("sox")
        if sox is None or not wav.is_file() or wav.stat().st_size == 0:
            return None
        try:
            r = subprocess.run([sox, "-q", str(wav), "-t", "raw", "-r", str(BRIDGE_RATE), "-c", "1", "-b", "16",
                                "-e", "signed-integer", "-L", "-"], capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        if r.returncode != 0 or len(r.stdout) < 2:
            return None
        return r.stdout[: len(r.stdout) // 2 * 2]

    def _build_text(self, src: PromptSource) -> Path:
        spoken = speakable(src.text.strip())
        key = hashlib.sha256(json.dumps(["text", _FORMAT, self.voice, self.speed, spoken],
                                        ensure_ascii=False).encode()).hexdigest()
        out = self.dir / f"{_safe(src.name)}-{key[:16]}.wav"
        if _valid_bridge_wav(out):
            self._count("reused")
            return out
        exe = shutil.which("espeak-ng")
        if exe is None:
            raise PromptError(f"{_where(src)}: 文字提示音需要 espeak-ng，但没有安装 / a text prompt needs espeak-ng, "
                              f"which is not installed (not on PATH); {_INSTALL}")
        voice = _espeak_voice(exe, self.voice)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{_safe(src.name)}.espeak.", suffix=".wav")
        os.close(fd)
        try:
            cmd = [exe, "-v", voice, "-s", str(self.speed), "-b", "1", "-w", tmp, "--stdin"]
            try:
                r = subprocess.run(cmd, input=spoken.encode("utf-8"), capture_output=True,
                                   timeout=_ESPEAK_TIMEOUT, check=False)
            except subprocess.TimeoutExpired as e:
                raise PromptError(f"{_where(src)}: espeak-ng 超时 / espeak-ng took more than {_ESPEAK_TIMEOUT:.0f} s; "
                                  f"shorten the text or give a recorded wav") from e
            except OSError as e:
                raise PromptError(f"{_where(src)}: 无法运行 espeak-ng / cannot run {exe} ({e}); {_INSTALL}") from e
            self._count("espeak_runs")
            err = r.stderr.decode("utf-8", "replace").strip()
            if r.returncode != 0:
                raise PromptError(f"{_where(src)}: espeak-ng 失败 / espeak-ng failed (exit {r.returncode}: "
                                  f"{err or 'no message'}); check the voice '{self.voice}' "
                                  f"(espeak-ng --voices lists them) or give a recorded wav")
            try:
                clip = read_wav(tmp)
            except AudioInputError as e:
                raise PromptError(f"{_where(src)}: espeak-ng 没有生成可用的音频 / espeak-ng wrote no usable audio "
                                  f"({e}{'; ' + err if err else ''}); check the text and the voice "
                                  f"'{self.voice}', or give a recorded wav") from e
        finally:
            Path(tmp).unlink(missing_ok=True)
        _write_atomic(out, _wav_bytes(resample(clip.pcm, clip.rate, BRIDGE_RATE)))
        self._count("generated")
        return out

    # -- many prompts ------------------------------------------------------------------------

    def build_all(self, sources: Iterable[PromptSource]) -> dict[str, Path]:
        """name → WAV for every prompt, espeak-ng running for two prompts at a time. Every
        prompt is tried; the failures are reported together in one PromptError."""
        srcs = list(sources)
        seen: dict[str, PromptSource] = {}
        for s in srcs:
            if s.name in seen:
                raise PromptError(f"{_where(s)}: 提示音名字重复 / the prompt name is defined twice "
                                  f"(also at {_where(seen[s.name])}); rename one")
            seen[s.name] = s
        result: dict[str, Path] = {}
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="prompt") as pool:
            futures = [(s, pool.submit(self.build, s)) for s in srcs]
            for s, fut in futures:
                try:
                    result[s.name] = fut.result()
                except PromptError as e:
                    errors.append(str(e))
        if errors:
            raise PromptError(errors[0] if len(errors) == 1 else
                              f"{len(errors)} 个提示音有错误 / {len(errors)} prompts failed:\n" + "\n".join(errors))
        return result

    # -- assembled at call time --------------------------------------------------------------

    def concat(self, paths: Sequence[Path]) -> Path:
        """One WAV that plays the given bridge-format WAVs one after another (cached; no espeak)."""
        ps = [Path(p) for p in paths]
        if not ps:
            raise PromptError("concat: 没有要拼接的提示音 / no prompts to join; give at least one WAV")
        if len(ps) == 1:
            return ps[0]
        h = hashlib.sha256(_FORMAT.encode())
        for p in ps:
            try:
                st = p.stat()
            except OSError as e:
                raise PromptError(f"concat: {p}: 无法读取 / cannot read ({e}); build it with PromptCache.build") from e
            h.update(f"\0{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}".encode())
        key = h.hexdigest()
        out = self.dir / f"concat-{key[:16]}.wav"
        if _valid_bridge_wav(out):
            self._count("concat_reused")
            return out
        chunks: list[bytes] = []
        for p in ps:
            try:
                with wave.open(str(p), "rb") as w:
                    if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (BRIDGE_RATE, 1, 2):
                        raise PromptError(f"concat: {p}: 不是 16 kHz 单声道 16 位 / not 16 kHz mono 16-bit "
                                          f"({w.getframerate()} Hz, {w.getnchannels()} ch, {8 * w.getsampwidth()}-bit); "
                                          "build it with PromptCache.build first")
                    chunks.append(w.readframes(w.getnframes()))
            except (OSError, EOFError, wave.Error) as e:
                raise PromptError(f"concat: {p}: 不是可读的 WAV / not a readable WAV ({e}); "
                                  "build it with PromptCache.build first") from e
        _write_atomic(out, _wav_bytes(b"".join(chunks)))
        self._count("concat_generated")
        return out

