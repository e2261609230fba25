"""What a SIP worker and the supervisor say to each other (no pjsua2 import here).

- Audio: one datagram per 20 ms frame on a Unix datagram socket: ``FRAME_HEADER`` (call slot,
  leg, sequence) followed by 16 kHz 16-bit mono PCM.
- Facts and commands: JSON lines on a Unix stream socket (``{"event": …}`` up,
  ``{"cmd": …}`` down).
"""

from __future__ import annotations

import struct

FRAME_HEADER = struct.Struct("!HBI")  # slot, leg, sequence
LEG_CALLER, LEG_OPERATOR, LEG_HOTLINE = 0, 1, 2
LEG_NAMES = {LEG_CALLER: "caller", LEG_OPERATOR: "operator", LEG_HOTLINE: "hotline"}
