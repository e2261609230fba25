"""The short PBX-behaviour soak CI runs (the full one is `python scripts/soak_pbx.py --calls 300`):
50 calls mixing hold/unhold, re-INVITE bursts, codec and port changes, re-INVITEs without SDP,
silent callers and misbehaving hotlines through one worker — nobody dropped by us, nobody deaf,
the worker's memory and file descriptors flat."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))


def test_fifty_mixed_pbx_calls_drop_nobody_and_deafen_nobody():
    from soak_pbx import run_soak

    lines: list[str] = []
    ok, reasons = run_soak(50, batch=25, concurrency=2, out=lines.append)
    assert ok, "\n".join(reasons + lines)
