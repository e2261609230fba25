"""The audio chain for one stream: PCM in (8 or 16 kHz or any rate) -> resample -> 20 ms
frames -> VAD segmenter -> recogniser -> transcripts -> incremental router -> events out.

The offline replay feeds it from a WAV file and the SIP worker from a call leg: same stages,
different source. With no engine (no model available) it still runs the VAD and, if a
reference transcript is given, hands that to the router as ``source="reference"`` — never
presented as recognition.
"""

from __future__ import annotations

from collections.abc import Callable

from fenliu.asr.audio import StreamResampler
from fenliu.asr.engine import AsrEngine, Hypothesis, RecognizerStream
from fenliu.asr.vad import Start, Stop, VadConfig, VadSegmenter, Voice, webrtc_classifier
from fenliu.events import (
    Event,
    FinalTranscript,
    PartialTranscript,
    SpeechStarted,
    SpeechStopped,
    StreamEnded,
    Word,
)
from fenliu.router.decide import Context, Router
from fenliu.router.stable import CallRouter
from fenliu.settings import Settings


class StreamPipeline:
    def __init__(
        self,
        stream_id: str,
        in_rate: int,
        engine: AsrEngine | None,
        vad: VadConfig | None = None,
        vad_enabled: bool = True,
        router: CallRouter | None = None,
        reference_text: str | None = None,
        is_speech: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.engine = engine
        self.rate = engine.sample_rate if engine else 16000
        self.vad_config = vad or VadConfig()
        self.resampler = StreamResampler(in_rate, self.rate)
        self.vad_enabled = vad_enabled
        classifier = is_speech or webrtc_classifier(self.rate, self.vad_config.aggressiveness,
                                                    self.vad_config.energy_floor_dbfs)
        self.segmenter = VadSegmenter(classifier, self.rate, self.vad_config)
        self.frame_bytes = self.segmenter.frame_bytes
        self.stream: RecognizerStream | None = engine.open_stream() if engine else None
        self.router = router
        self.reference_text = reference_text
        self._buf = bytearray()
        self._odd = b""
        self.frames = 0
        self.dropped_frames = 0
        self.recognised_seconds = 0.0  # audio actually given to the recogniser
        self.utterance_id = 0
        self._seg_t0 = 0.0
        self._seg_fed0 = 0.0
        self._in_speech = False
        self._speech_span: tuple[float, float] | None = None
        self._closed = False
        self._reference_sent = False

    @property
    def t(self) -> float:
        return self.frames * self.vad_config.frame_ms / 1000

    def push(self, pcm: bytes) -> list[Event]:
        """Feed any amount of 16-bit mono PCM at the input rate."""
        if self._closed:
            raise RuntimeError("stream already closed")
        data = self._odd + pcm
        if len(data) % 2:  # a torn sample: keep the byte for the next chunk
            self._odd, data = data[-1:], data[:-1]
        else:
            self._odd = b""
        self._buf += self.resampler.push(data)
        return self._drain()

    def close(self) -> list[Event]:
        """End of stream (hang-up / end of file): flush everything and return the last events."""
        if self._closed:
            return []
        self._buf += self.resampler.flush()
        if self._buf:
            self._buf += b"\0" * (self.frame_bytes - len(self._buf) % self.frame_bytes)
        events = self._drain()
        self._closed = True
        if self.vad_enabled:
            for seg in self.segmenter.flush():
                events += self._segment_event(seg)
        elif self.stream is not None:
            events += self._final(self.stream.end_utterance(), self.t)
        events += self._reference_events(self.t)
        events.append(StreamEnded(self.stream_id, self.t, self.frames, self.dropped_frames))
        if self.stream is not None and hasattr(self.stream, "release"):
            self.stream.release()
        return events

    # -- internals --------------------------------------------------------------------
    def _drain(self) -> list[Event]:
        events: list[Event] = []
        fb = self.frame_bytes
        while len(self._buf) >= fb:
            frame = bytes(self._buf[:fb])
            del self._buf[:fb]
            self.frames += 1
            if self.vad_enabled:
                for seg in self.segmenter.push(frame):
                    events += self._segment_event(seg)
            elif self.stream is not None:
                events += self._recognise(frame)
        return events

    def _segment_event(self, seg: Start | Voice | Stop) -> list[Event]:
        if isinstance(seg, Voice):
            return self._recognise(seg.pcm)
        if isinstance(seg, Start):
            self._in_speech = True
            self._seg_t0 = seg.t
            self._seg_fed0 = self.stream.fed_seconds if self.stream else 0.0
            span = self._speech_span
            self._speech_span = (span[0] if span else seg.t, seg.t)
            return [SpeechStarted(self.stream_id, seg.t)]
        self._in_speech = False
        if self._speech_span:
            self._speech_span = (self._speech_span[0], seg.t)
        events: list[Event] = []
        if self.stream is not None:
            events += self._final(self.stream.end_utterance(), seg.t)
        else:  # no recogniser: the reference stands in once the caller first pauses (live calls too)
            events += self._reference_events(seg.t)
        events.append(SpeechStopped(self.stream_id, seg.t))
        return events

    def _reference_events(self, t1: float) -> list[Event]:
        if self.stream is not None or not self.reference_text or self._reference_sent:
            return []
        self._reference_sent = True
        t0 = self._speech_span[0] if self._speech_span else 0.0
        self.utterance_id += 1
        return self._transcript_events(FinalTranscript(
            self.stream_id, self.utterance_id, self.reference_text, t0, t1, source="reference"))

    def _recognise(self, pcm: bytes) -> list[Event]:
        if self.stream is None:
            return []
        self.recognised_seconds += len(pcm) / 2 / self.rate
        hyp = self.stream.accept(pcm)
        if hyp is None:
            return []
        if hyp.final:
            return self._final(hyp, self.t)
        return self._transcript_events(PartialTranscript(
            self.stream_id, self.utterance_id + 1, hyp.text, self._seg_t0, self.t))

    def _final(self, hyp: Hypothesis, t1: float) -> list[Event]:
        if not hyp.text:
            return []
        self.utterance_id += 1
        offset = self._seg_t0 - self._seg_fed0 if self.vad_enabled else 0.0
        words = tuple(Word(w.word, round(w.start + offset, 3), round(w.end + offset, 3), w.conf) for w in hyp.words)
        t0 = words[0].start if words else self._seg_t0
        if not self.vad_enabled:  # the next utterance starts where this one ended
            self._seg_t0 = t1
        return self._transcript_events(FinalTranscript(self.stream_id, self.utterance_id, hyp.text, t0, t1, words))

    def _transcript_events(self, ev: PartialTranscript | FinalTranscript) -> list[Event]:
        events: list[Event] = [ev]
        if self.router is not None:
            if isinstance(ev, FinalTranscript):
                d = self.router.on_final(ev.utterance_id, ev.text, ev.t1)
            else:
                d = self.router.on_partial(ev.utterance_id, ev.text, ev.t1)
            if d is not None:
                events.append(d)
        return events


def vad_config(settings: Settings) -> VadConfig:
    """The VAD of every leg, from ``[vad]``."""
    v = settings.vad
    return VadConfig(frame_ms=v.frame_ms, aggressiveness=v.aggressiveness, energy_floor_dbfs=v.energy_floor_dbfs,
                     min_speech_ms=v.min_speech_ms,
                     start_window_ms=v.start_window_ms, stop_ms=v.stop_ms, padding_ms=v.padding_ms,
                     max_utterance_ms=v.max_utterance_ms)


def call_router(router: Router, settings: Settings, call_id: str) -> CallRouter:
    """The caller leg's incremental router (``router.switch_margin``)."""
    return CallRouter(router, Context(call_id=call_id), switch_margin=settings.router.switch_margin)
