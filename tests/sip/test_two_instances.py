"""Two machines' shape on one host: two real `fenliu serve` instances (two SIP workers each)
behind one `fenliu front` (Kamailio dispatcher over all four workers). One instance is killed
-9 as a whole (supervisor and workers: its process group) while SIPp calls run; every call
placed after it is gone is answered by the other instance.

Who answered is read from each call's 200 OK (Contact ``sip:fenliu-wN@127.0.0.1:PORT``: the port
says which instance)."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import ROOT, free_port, rtp_block, udp_free
from tests.sip.sipp_seat import run_caller

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not shutil.which("kamailio") and not os.path.exists("/usr/sbin/kamailio"),
                                 reason="kamailio not installed (scripts/setup.sh installs it)")]

WORKERS = 2


def free_block(n: int, lo: int = 40000, hi: int = 60000) -> int:
    """The first of ``n`` consecutive free UDP ports (above the RTP blocks of ``rtp_block``)."""
    for _ in range(200):
        base = random.randrange(lo, hi - n)
        if all(udp_free(p) for p in range(base, base + n)):
            return base
    raise RuntimeError("no free port block")


class Proc:
    """A child in its own process group, its stdout lines collected."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.cv = threading.Condition()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cv:
                self.lines.append(line.rstrip("\n"))
                self.cv.notify_all()

    def wait_for(self, pred, count: int = 1, timeout: float = 60.0) -> list[str]:
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                hits = [x for x in self.lines if pred(x)]
                if len(hits) >= count:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"{self.proc.args[3:5]}: {count} matching line(s) not seen; "
                                       f"last lines {self.lines[-5:]}")
                self.cv.wait(min(left, 0.5))

    def kill_group(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, sig: int = signal.SIGINT) -> None:
        """Stop now (SIGINT; SIGTERM would drain: wait for the live calls to end)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def event(kind: str):
    def pred(line: str) -> bool:
        try:
            return json.loads(line).get("event") == kind
        except ValueError:
            return False
    return pred


def serve(tmp_path, name: str, **more: str) -> tuple[Proc, list[int]]:
    port = free_block(WORKERS)
    env = {**os.environ, **more, "FENLIU_SIP__PORT": str(port), "FENLIU_SIP__WORKERS": str(WORKERS),
           "FENLIU_SIP__RTP_PORT": str(rtp_block(WORKERS * 40)), "FENLIU_SIP__USERS": "110",
           "FENLIU_CONSOLE__PORT": str(free_port()), "FENLIU_STORE__URL": f"sqlite:///{tmp_path}/{name}.db",
           # SIP routing is under test: the model is loaded, recognition runs in threads (lighter)
           "FENLIU_ASR__MODEL": "ko-test", "FENLIU_ASR__MODE": "threads"}
    return Proc([sys.executable, "-m", "fenliu", "serve", "--json"], env), [port + i for i in range(WORKERS)]


def test_two_instances_behind_one_front_survive_one_instance_killed(tmp_path):
    (a, a_ports), (b, b_ports) = serve(tmp_path, "a"), serve(tmp_path, "b")
    front_port = free_port(2)
    instances = f"127.0.0.1:{a_ports[0]}-{a_ports[-1]},127.0.0.1:{b_ports[0]}-{b_ports[-1]}"
    front = None
    try:
        for inst in (a, b):
            inst.wait_for(event("ready"), count=WORKERS, timeout=90)
        front = Proc([sys.executable, "-m", "fenliu", "front", "--port", str(front_port),
                      "--instances", instances], {**os.environ})
        front.wait_for(lambda x: x.startswith("fenliu front: udp:"), timeout=20)

        # SIPp calls through the front, two a second, while instance A is killed
        box = {}
        load = threading.Thread(target=lambda: box.setdefault("r", run_caller(
            front_port, tmp_path, calls=40, rate=2, limit=10, talk_ms=1000, timeout=120, name="load")))
        load.start()
        a.wait_for(event("call_started"), count=2, timeout=30)  # A takes its share of the calls
        b.wait_for(event("call_started"), count=2, timeout=30)
        a.kill_group()
        deadline = time.monotonic() + 10
        while not all(udp_free(p) for p in a_ports):  # the fact: A's workers are gone too
            assert time.monotonic() < deadline, "instance A's workers outlived kill -9 of its group"
            time.sleep(0.05)
        killed_at = time.time()
        load.join(180)
        r = box["r"]
        after = [c for c, t in r.sent_at.items() if t > killed_at]
        assert len(after) >= 10, (len(after), len(r.sent_at))  # the kill happened under load
        unanswered = [c for c in after if c not in r.contact_of]
        assert not unanswered, (unanswered, r.errors[-1500:])
        on = {int(r.contact_of[c].rsplit(":", 1)[1]) for c in after}
        assert on <= set(b_ports), on
        # a dead worker costs a call at most fr_timer (1.5 s) per try, not tm's default 30 s
        assert max(r.answer_ms_of[c] for c in after) < 10_000, sorted(r.answer_ms_of[c] for c in after)
        before = [c for c, t in r.sent_at.items() if t < killed_at and c in r.contact_of]
        assert {int(r.contact_of[c].rsplit(":", 1)[1]) for c in before} & set(a_ports)  # A did take calls

        # the front has A's workers down; a new batch all goes to B, every call completes
        for p in a_ports:
            front.wait_for(lambda x, p=p: x.startswith(("front: worker-down", "front: worker-silent"))
                           and x.endswith(f":{p}"), timeout=15)
        again = run_caller(front_port, tmp_path, calls=8, rate=4, limit=4, talk_ms=500, name="again")
        assert again.returncode == 0, again.errors[-1500:]
        assert len(again.answered_by) == 8
        assert {int(x.rsplit(":", 1)[1]) for x in again.answered_by} == set(b_ports)
    finally:
        if front is not None:
            front.stop()
            assert front.proc.returncode == 0
            assert any(x == "fenliu front: stopped" for x in front.lines)
        for inst in (a, b):
            inst.stop()
    assert b.proc.returncode == 0


def test_sigterm_drains_an_instance_under_calls_without_cutting_one(tmp_path):
    """A rolling restart's step: SIGTERM to instance A while it holds calls. Its workers refuse new
    INVITEs (503), so the front sends every new call to B; A's own calls go on until their callers
    hang up (none is cut: each SIPp caller sends its own BYE and gets 200), then A exits 0."""
    (a, a_ports), (b, b_ports) = serve(tmp_path, "a"), serve(tmp_path, "b")
    front_port = free_port(2)
    front = None
    try:
        for inst in (a, b):
            inst.wait_for(event("ready"), count=WORKERS, timeout=90)
        front = Proc([sys.executable, "-m", "fenliu", "front", "--port", str(front_port), "--instances",
                      f"127.0.0.1:{a_ports[0]}-{a_ports[-1]},127.0.0.1:{b_ports[0]}-{b_ports[-1]}"], {**os.environ})
        front.wait_for(lambda x: x.startswith("fenliu front: udp:"), timeout=20)
        box = {}
        first = threading.Thread(target=lambda: box.setdefault("r", run_caller(
            front_port, tmp_path, calls=3, rate=3, limit=3, talk_ms=8000, timeout=60, name="first")))
        first.start()
        a.wait_for(event("call_answered"), timeout=30)  # A holds at least one of them
        a.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)  # (the signal is handled by A's loop; the new calls below come after it)
        # one new call at a time (B has a free slot for each: 4, less its share of the first three)
        again = run_caller(front_port, tmp_path, calls=4, rate=2, limit=1, talk_ms=500, name="again")
        assert again.returncode == 0, again.errors[-1500:]
        assert {int(x.rsplit(":", 1)[1]) for x in again.answered_by} <= set(b_ports), again.answered_by
        assert len(again.answered_by) == 4
        first.join(90)
        r = box["r"]
        assert r.returncode == 0, r.errors[-1500:]  # none of A's calls was cut: each caller hung up itself
        assert a.proc.wait(30) == 0  # drained, then stopped by itself
        ended = [json.loads(x) for x in a.lines if event("call_ended")(x)]
        assert ended and all("fenliu" not in e["reason"] for e in ended), ended
    finally:
        if front is not None:
            front.stop()
        for inst in (a, b):
            inst.stop()


def test_a_drain_bound_ends_the_calls_left_and_puts_their_callers_on_the_callback_list(tmp_path):
    from fenliu.store.record import Store

    a, a_ports = serve(tmp_path, "bound", FENLIU_SIP__DRAIN_TIMEOUT="1")
    try:
        a.wait_for(event("ready"), count=WORKERS, timeout=90)
        box = {}
        caller = threading.Thread(target=lambda: box.setdefault("r", run_caller(
            a_ports[0], tmp_path, calls=1, talk_ms=60_000, timeout=90, name="long")))
        caller.start()
        a.wait_for(event("call_answered"), timeout=30)
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(30) == 0
        caller.join(30)
    finally:
        a.stop()
    store = Store(f"sqlite:///{tmp_path}/bound.db")
    try:
        [call] = store.calls()
        assert "drain bound" in call["reason"]
        assert [c["call_id"] for c in store.callbacks()] == [call["call_id"]]
    finally:
        store.close()


def test_two_fronts_when_one_dies_the_other_carries_the_calls(tmp_path):
    """The centre's front redundancy: two `fenliu front` (two addresses the PBX trunk lists, or a
    floating address moved between them) over the same instances. One is killed: calls sent to the
    other are answered by the instances as before."""
    (a, a_ports), (b, b_ports) = serve(tmp_path, "a"), serve(tmp_path, "b")
    instances = f"127.0.0.1:{a_ports[0]}-{a_ports[-1]},127.0.0.1:{b_ports[0]}-{b_ports[-1]}"
    fronts = []
    try:
        for inst in (a, b):
            inst.wait_for(event("ready"), count=WORKERS, timeout=90)
        ports = [free_port(2), free_port(2)]
        for port in ports:
            f = Proc([sys.executable, "-m", "fenliu", "front", "--port", str(port), "--instances", instances],
                     {**os.environ})
            f.wait_for(lambda x: x.startswith("fenliu front: udp:"), timeout=20)
            fronts.append(f)
        first = run_caller(ports[0], tmp_path, calls=2, rate=2, limit=1, talk_ms=300, name="via-first")
        assert first.returncode == 0 and len(first.answered_by) == 2, first.errors[-1500:]
        fronts[0].kill_group()  # the first front's machine dies
        assert udp_free(ports[0])  # (nothing answers there any more)
        second = run_caller(ports[1], tmp_path, calls=4, rate=2, limit=1, talk_ms=300, name="via-second")
        assert second.returncode == 0 and len(second.answered_by) == 4, second.errors[-1500:]
        assert {int(x.rsplit(":", 1)[1]) for x in second.answered_by} <= set(a_ports) | set(b_ports)
    finally:
        for f in fronts:
            f.stop()
        for inst in (a, b):
            inst.stop()
