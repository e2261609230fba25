"""What runs a centre's calls: the supervisor (SIP workers, ASR, restarts), the wiring of the
stages from settings, the IVR desk and the metrics. May import the ground floor, the domain
packages and ``loop``."""
