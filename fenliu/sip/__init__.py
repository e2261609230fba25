"""pjsua2 user agent: SIP workers, B2BUA bridging, transfer (three-way, REFER), media taps.

Not built yet: live calls arrive with issue #3. The offline chain in ``fenliu.asr`` is what a
SIP worker will feed, with a call leg as the audio source instead of a WAV file.
"""
