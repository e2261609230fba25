"""Audio frames in, utterances out: resampling, VAD segmentation, the ASR engine, the stream
pipeline and the ASR processes. May import the ground floor, ``router`` and ``sip.protocol``."""
