"""One trunk address for many workers: the generated Kamailio front spreads more simultaneous
calls than one worker can hold over the workers."""

import shutil

import pytest

from fenliu.sip import protocol as P
from fenliu.sip.front.kamailio import KamailioFront
from fenliu.sip.link import WorkerLink
from tests.conftest import FIXTURES, free_port, rtp_block
from tests.sip.sipp import alaw_file, caller_scenario, run_sipp

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("kamailio") and not __import__("os").path.exists("/usr/sbin/kamailio"),
                                 reason="kamailio not installed (scripts/setup.sh installs it)")]


def test_more_simultaneous_calls_than_one_worker_holds_spread_over_two_workers(tmp_path):
    links = [WorkerLink.loopback(f"k{i}", free_port(2), rtp_block()) for i in range(2)]
    capacity = [link.start().capacity for link in links]  # conversations each admits (2: a leg kept for transfer)
    front = KamailioFront("127.0.0.1", free_port(2), [("127.0.0.1", link.sip_port) for link in links])
    front.start()
    try:
        audio = alaw_file(FIXTURES / "ko" / "ko-01-greeting.wav", tmp_path)
        calls = sum(capacity)  # more than one worker holds, all at once
        r = run_sipp(caller_scenario(audio, talk_ms=4000), front.port, tmp_path, calls=calls, rate=50, timeout=40)
        assert r.returncode == 0, r.stdout[-2000:]  # all answered: the front moved past the 503 of a full worker
        per_worker = [len([f for f in link.facts() if isinstance(f, P.CallStarted)]) for link in links]
        assert per_worker == capacity
    finally:
        front.stop()
        for link in links:
            assert link.stop() == 0
    assert front.proc.poll() is not None  # no orphan kamailio
