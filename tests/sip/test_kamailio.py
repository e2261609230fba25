"""One trunk address for many workers: the generated Kamailio front spreads more simultaneous
calls than one worker can hold over the workers."""

import shutil

import pytest

from fenliu.sip.kamailio import KamailioFront
from fenliu.sip.link import WorkerLink
from tests.conftest import FIXTURES, free_port
from tests.sip.sipp import alaw_file, caller_scenario, run_sipp

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("kamailio") and not __import__("os").path.exists("/usr/sbin/kamailio"),
                                 reason="kamailio not installed (scripts/setup.sh installs it)")]


def test_six_simultaneous_calls_spread_over_two_four_call_workers(tmp_path):
    links = [WorkerLink(f"k{i}", sip_port=free_port(2), rtp_port=free_port(2) // 2 * 2) for i in range(2)]
    for link in links:
        link.start()
    front = KamailioFront("127.0.0.1", free_port(2), [("127.0.0.1", link.sip_port) for link in links])
    front.start()
    try:
        audio = alaw_file(FIXTURES / "ko" / "ko-01-greeting.wav", tmp_path)
        r = run_sipp(caller_scenario(audio, talk_ms=4000), front.port, tmp_path, calls=6, rate=50, timeout=40)
        assert r.returncode == 0, r.stdout[-2000:]  # all six answered: none got 486
        per_worker = []
        for link in links:
            n = sum(1 for e in list(link.events.queue) if e["event"] == "call_started")
            per_worker.append(n)
        assert sum(per_worker) >= 6 and all(n >= 2 for n in per_worker) and max(per_worker) <= 4
    finally:
        front.stop()
        for link in links:
            assert link.stop() == 0
    assert front.proc.poll() is not None  # no orphan kamailio
