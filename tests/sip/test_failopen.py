"""Fail-open: when no fenliu worker can take a 110 call — all dead or all full — the Kamailio
front sends it straight to the operators (here a SIPp seat), marked X-Fenliu-Failopen.

Who answered is read from each call's 200 OK (its Contact), by the SIPp caller itself: the
seat's is ``sip:seat@…``, a worker's ``sip:fenliu-NAME@127.0.0.1:PORT``. The seat refuses (never answers)
an INVITE without the fail-open header, so a call that reached it any other way fails."""

import os
import shutil

import pytest

from fenliu.sip.front.kamailio import KamailioFront
from fenliu.sip.link import WorkerLink
from tests.conftest import free_port, rtp_block
from tests.sip.sipp_seat import SEAT, WORKER, SippSeat, run_caller

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("kamailio") and not os.path.exists("/usr/sbin/kamailio"),
                                 reason="kamailio not installed (scripts/setup.sh installs it)")]

def worker(name: str, sip_port: int = 0) -> WorkerLink:
    link = WorkerLink.loopback(name, sip_port or free_port(2), rtp_block())
    link.start()
    return link


def kill9(link: WorkerLink) -> None:
    assert link.proc is not None
    link.proc.kill()
    link.proc.wait(10)  # the fact: the process is gone


def test_dead_workers_fail_open_to_the_seat_and_a_returning_worker_takes_calls_again(tmp_path):
    seat = SippSeat(tmp_path, require_failopen=True)
    links = [worker(f"f{i}") for i in range(2)]
    front = KamailioFront("127.0.0.1", free_port(2), [("127.0.0.1", x.sip_port) for x in links],
                          fallback_uri=seat.uri)
    front.start()
    back = None
    try:
        # (a) workers alive: the calls land on the workers, never on the seat
        alive = run_caller(front.port, tmp_path, calls=4, rate=20, limit=1, expect=WORKER, name="alive")
        assert alive.returncode == 0, alive.errors or alive.stdout[-1500:]
        assert alive.count(WORKER) == 4 and alive.count(SEAT) == 0
        assert {ua.split("@")[0] for ua in alive.answered_by} == {f"{WORKER}f0", f"{WORKER}f1"}  # round-robin
        assert not [x for x in front.lines() if x.startswith("failopen")]

        # (b) both worker processes killed -9: every call placed afterwards is answered by the seat
        mark = front.mark()
        for link in links:
            kill9(link)
        dead = run_caller(front.port, tmp_path, calls=8, rate=4, expect=SEAT, name="dead")
        assert dead.returncode == 0, dead.errors or dead.stdout[-1500:]
        assert dead.count(SEAT) == 8
        failopen = [x for x in front.lines(mark) if x.startswith("failopen")]
        assert len(failopen) == 8 and all(seat.uri in x for x in failopen)
        # the dead workers were found by the calls themselves (no reply at all) or by the probes
        for link in links:
            assert any(x.endswith(f"sip:127.0.0.1:{link.sip_port}") and x.startswith(("worker-silent", "worker-down"))
                       for x in front.lines(mark)), front.lines(mark)
        # given up on within ~2 × fr_timer, not tm's default 30 s per worker
        assert max(dead.answer_ms) < 10_000, dead.answer_ms

        # (c) a worker comes back on its port: the OPTIONS probe sees it, new calls go to it again
        mark = front.mark()
        back = worker("f0b", links[0].sip_port)
        front.wait_log(lambda x: x == f"worker-up sip:127.0.0.1:{links[0].sip_port}", timeout=15, since=mark)
        again = run_caller(front.port, tmp_path, calls=3, rate=20, limit=1, expect=f"{WORKER}f0b@",
                           name="again")
        assert again.returncode == 0, again.errors or again.stdout[-1500:]
        assert again.count(f"{WORKER}f0b@") == 3
        assert not [x for x in front.lines(mark) if x.startswith("failopen")]
    finally:
        front.stop()
        for link in links + ([back] if back else []):
            link.stop()
        seat.stop()
    assert front.proc is not None and front.proc.poll() is not None  # no orphan kamailio


def test_overflow_beyond_every_workers_capacity_goes_to_the_seat_not_503(tmp_path):
    seat = SippSeat(tmp_path, require_failopen=True)
    links = [worker(f"o{i}") for i in range(2)]
    front = KamailioFront("127.0.0.1", free_port(2), [("127.0.0.1", x.sip_port) for x in links],
                          fallback_uri=seat.uri)
    front.start()
    try:
        # a pjsua2 endpoint holds at most 4 calls (fewer when legs are kept for transfers), so
        # 10 simultaneous calls overflow two workers by at least 2
        calls = 2 * 4 + 2
        r = run_caller(front.port, tmp_path, calls=calls, rate=200, talk_ms=4000, name="overflow")
        assert r.returncode == 0, r.errors or r.stdout[-1500:]  # every call answered: nobody got 486/503
        assert len(r.answered_by) == calls
        on_workers, on_seat = r.count(WORKER), r.count(SEAT)
        assert on_workers + on_seat == calls
        assert on_seat >= 2 and on_workers >= 2  # the workers took what they hold, the seat the rest
        overflow = [x for x in front.lines() if x.startswith("failopen")]
        assert len(overflow) == on_seat and all("every worker failed, last 503" in x for x in overflow), overflow
    finally:
        front.stop()
        for link in links:
            assert link.stop() == 0
        seat.stop()


def test_without_a_fallback_the_front_still_answers_503_when_no_worker_is_up(tmp_path):
    link = worker("n0")
    front = KamailioFront("127.0.0.1", free_port(2), [("127.0.0.1", link.sip_port)])
    front.start()
    try:
        mark = front.mark()
        kill9(link)
        front.wait_log(lambda x: x == f"worker-down sip:127.0.0.1:{link.sip_port}", timeout=15, since=mark)
        r = run_caller(front.port, tmp_path, calls=1, timeout=15, name="nofallback")
        assert r.returncode != 0 and not r.answered_by
        assert "503" in r.errors, r.errors
    finally:
        front.stop()
        link.stop()


def test_stalled_workers_do_not_answer_an_invite_the_front_has_failed_over(tmp_path):
    """Both workers are stopped (SIGSTOP: a stalled host) when a call comes: the front waits
    sip.front_timeout for each and fails open to the seat. When the workers run again they find
    the old INVITE in their socket — relayed longer ago than the front waits — and refuse it
    (StaleInvite, 408): no call is started, no slot is held, no second answer reaches the caller."""
    import signal

    from fenliu.sip import protocol as P
    from tests.sip.peers import fact

    seat = SippSeat(tmp_path, require_failopen=True)
    links = [worker(f"s{i}") for i in range(2)]
    front = KamailioFront("127.0.0.1", free_port(2), [("127.0.0.1", x.sip_port) for x in links],
                          fallback_uri=seat.uri)
    front.start()
    try:
        marks = [link.mark() for link in links]
        mark = front.mark()
        for link in links:
            assert link.proc is not None
            link.proc.send_signal(signal.SIGSTOP)
        call = run_caller(front.port, tmp_path, calls=1, expect=SEAT, talk_ms=500, name="stalled")
        assert call.returncode == 0, call.errors or call.stdout[-1500:]
        assert call.count(SEAT) == 1  # the caller got the operators, at once
        relayed = [link for link in links
                   if any(x == f"worker-silent sip:127.0.0.1:{link.sip_port}" for x in front.lines(mark))]
        assert relayed, front.lines(mark)  # the front did try (at least) the first worker
        for link in links:
            link.proc.send_signal(signal.SIGCONT)
        for link, m in zip(links, marks, strict=True):
            if link in relayed:
                stale = link.wait(fact(P.StaleInvite), 20, since=m)
                assert stale.age_s > 1.5
        for link, m in zip(links, marks, strict=True):
            assert not [f for f in link.facts(since=m) if isinstance(f, P.CallStarted)], "a stale INVITE became a call"
    finally:
        for link in links:
            if link.proc is not None and link.proc.poll() is None:
                link.proc.send_signal(signal.SIGCONT)
        front.stop()
        for link in links:
            link.stop()
        seat.stop()
