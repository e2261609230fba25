"""Audio frames in, utterances out: resampling, VAD segmentation, the ASR engine and the
stream pipeline. No SIP imports: a WAV file or a call leg is just a PCM source."""
