"""fenliu (分流): divert non-police 110 calls to 12345 and its sibling hotlines, safely.

Layers, lowest first (tests/test_layout.py keeps them): ground (errors, events, settings) →
domain (router, asr, sip, ivr_flows, hotlines, bus, store) → loop → service → console → commands.
A module imports its own package, the packages below it, and may import nothing above it.
"""

__version__ = "0.1.0"
