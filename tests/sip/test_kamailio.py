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


def test_the_front_takes_tcp_and_tls_trunks_and_keeps_their_transport_to_the_worker(tmp_path):
    """A PBX trunk over TCP (SIPp -t t1) and one over TLS (a pjsua2 peer; Debian's SIPp has no
    TLS) reach a worker through the front; each call is answered by the worker, over the
    transport it came in on, and the worker's BYE reaches the caller."""
    import threading

    from tests.loop.platform_server import make_test_pki
    from tests.sip.peers import PeerProc, fact
    from tests.sip.sipp import talking_caller

    pki = make_test_pki(tmp_path / "pki")
    wtls = free_port(2)
    link = WorkerLink.loopback("kt", free_port(2), rtp_block(), transports=("udp", "tcp", "tls"), tls_port=wtls,
                               tls_cert=str(pki.server_cert), tls_key=str(pki.server_key))
    link.start()
    ftls = free_port(2)
    front = KamailioFront("127.0.0.1", free_port(2), [("127.0.0.1", link.sip_port)], transports=("udp", "tcp", "tls"),
                          tls_port=ftls, tls_cert=str(pki.server_cert), tls_key=str(pki.server_key),
                          worker_tls_ports=[wtls])
    front.start()
    caller = None
    try:
        # TCP
        n = link.mark()
        (tmp_path / "tcp").mkdir()
        box: dict = {}
        audio = alaw_file(FIXTURES / "ko" / "ko-01-greeting.wav", tmp_path)
        t = threading.Thread(target=lambda: box.setdefault("r", run_sipp(
            talking_caller(audio), front.port, tmp_path / "tcp", timeout=60, extra=("-t", "t1"))))
        t.start()
        cid = link.wait(fact(P.CallAnswered), 20, since=n).call_id
        dialog = link.wait(lambda f: isinstance(f, P.LegDialog) and f.call_id == cid and f.leg == "caller", 10, since=n)
        assert "transport=tcp" in dialog.target.lower()  # the worker talks to the caller over TCP
        link.send(P.Hangup(cid))
        t.join(60)
        assert box["r"].returncode == 0, box["r"].stdout[-1500:]
        # TLS
        n = link.mark()
        # a TLS trunk's PBX listens for TLS too (the worker's in-dialog requests come to its Contact)
        ctls = free_port(2)
        caller = PeerProc("--call", f"sip:110@127.0.0.1:{ftls};transport=tls", "--mic", "--transports", "udp,tls",
                          "--tls-port", str(ctls), "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
                          "--contact", f"<sip:caller@127.0.0.1:{ctls};transport=tls>", user="caller")
        cid = link.wait(fact(P.CallAnswered), 20, since=n).call_id
        caller.wait(lambda e: e["event"] == "media", 15)
        link.send(P.Hangup(cid))
        caller.wait(lambda e: e["event"] == "ended", 15)  # our BYE reached the TLS caller
    finally:
        if caller is not None:
            caller.stop()
        front.stop()
        link.stop()
