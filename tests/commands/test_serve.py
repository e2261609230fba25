"""The supervisor with real SIP worker processes, real SIPp callers and the real Vosk model."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

from fenliu.bus import CallEvent, EventBus, WorkerFact
from fenliu.events import Decision, FinalTranscript, PartialTranscript
from fenliu.service.supervisor import Supervisor
from fenliu.settings import load_settings
from fenliu.sip.link import pid_alive
from tests.conftest import FIXTURES, ROOT, free_port, minimal_rules, rtp_block
from tests.sip.sipp import alaw_file, caller_scenario, run_sipp, talking_caller

pytestmark = pytest.mark.slow


def settings_for(workers: int = 2):
    s = load_settings(env={})
    base = free_port(2)
    while base + workers >= 65000:
        base = free_port(2)
    return replace(s, sip=replace(s.sip, port=base, workers=workers, rtp_port=rtp_block(workers * 40)))


class Collector:
    """A bus subscriber keeping every item; ``wait(pred, since=mark())`` for facts after an action."""

    def __init__(self):
        self.items = []
        self.cv = threading.Condition()
        self.bus = EventBus.on_thread()
        self.bus.subscribe(self)

    def __call__(self, item):
        with self.cv:
            self.items.append(item)
            self.cv.notify_all()

    def mark(self):
        with self.cv:
            return len(self.items)

    def wait(self, pred, timeout=20.0, since=0):
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for it in self.items[since:]:
                    if pred(it):
                        return it
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no matching event")
                self.cv.wait(left)


def fact(kind):
    return lambda it: isinstance(it, WorkerFact) and it.kind == kind


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_live_call_is_recognised_and_routed_with_call_tags(ko_engine, router, tmp_path, mode):
    got = Collector()
    s = settings_for(2)
    s = replace(s, asr=replace(s.asr, mode=mode))
    sup = Supervisor(s, router, ko_engine, got.bus)
    sup.start()
    try:
        assert len(sup.links) == 2 and sup.mode == mode and (sup.pool is not None) == (mode == "processes")
        wav = FIXTURES / "ko" / "ko-02-help.wav"
        port = sup.worker_ports(1)[0]  # the second worker takes this call
        done = {}
        t = threading.Thread(target=lambda: done.setdefault("r", run_sipp(
            caller_scenario(alaw_file(wav, tmp_path), talk_ms=4500), port, tmp_path)))
        t.start()
        started = got.wait(fact("call_started"))
        assert started.worker == "w1"
        call_id = started.fact.call_id
        got.wait(fact("media_active"))
        assert [c["call_id"] for c in sup.calls()] == [call_id]
        final = got.wait(lambda it: isinstance(it, CallEvent) and isinstance(it.event, FinalTranscript), 30)
        assert final.call_id == call_id and final.leg == "caller" and final.event.text
        decision = got.wait(lambda it: isinstance(it, CallEvent) and isinstance(it.event, Decision), 30)
        assert decision.call_id == call_id and decision.event.call_id == call_id
        t.join(60)
        assert done["r"].returncode == 0, done["r"].stdout[-1500:]
        got.wait(fact("call_ended"))
        partials = [it for it in got.items if isinstance(it, CallEvent) and isinstance(it.event, PartialTranscript)]
        assert partials and got.items.index(partials[0]) < got.items.index(final)
    finally:
        sup.stop()
    assert sup.calls() == []


def test_a_crashed_worker_is_restarted_and_takes_calls_again(ko_engine, router, tmp_path):
    got = Collector()
    sup = Supervisor(settings_for(1), router, ko_engine, got.bus)
    sup.start()
    try:
        pid = got.wait(fact("ready")).fact.pid
        n = got.mark()
        os.kill(pid, signal.SIGKILL)
        got.wait(fact("worker_lost"), since=n)
        got.wait(fact("worker_restarted"), timeout=15, since=n)
        assert sup.workers["w0"].restarts == 1 and sup.health()["ok"]
        wav = FIXTURES / "ko" / "ko-01-greeting.wav"
        r = run_sipp(caller_scenario(alaw_file(wav, tmp_path), talk_ms=3500), sup.worker_ports(0)[0], tmp_path)
        assert r.returncode == 0, r.stdout[-1500:]
        got.wait(lambda it: isinstance(it, CallEvent) and isinstance(it.event, FinalTranscript), 30)
    finally:
        sup.stop()


def test_fenliu_serve_stops_cleanly_on_sigterm(tmp_path):
    s = settings_for(2)
    env = {**os.environ, "FENLIU_SIP__PORT": str(s.sip.port), "FENLIU_SIP__RTP_PORT": str(s.sip.rtp_port),
           "FENLIU_ASR__MODEL": "ko-test"}
    proc = subprocess.Popen([sys.executable, "-m", "fenliu", "serve", "--json"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids = []
    try:
        while len(pids) < 2:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            ev = json.loads(line)
            if ev.get("event") == "ready":
                pids.append(ev["pid"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.2)
    assert not any(pid_alive(p) for p in pids)  # no orphan workers
    assert "stopped" in proc.stderr.read()


def test_one_key_transfer_through_the_api_and_cli(tmp_path):
    """fenliu serve (B2BUA seat mode) + `fenliu calls` / `fenliu transfer` / `fenliu release`;
    the diversion's work order and SMS reach the (local) platform and gateway, and the
    platform's signed status report comes back through the service's webhook."""
    from fenliu.hotlines.signing import sign
    from tests.loop.platform_server import FakePlatform
    from tests.sip.peers import PeerProc

    platform = FakePlatform().start()
    config = tmp_path / "fenliu.toml"
    config.write_text(f"""
[platforms.12345]
url = "{platform.url}/orders"
secret_env = "FENLIU_TEST_PLATFORM_SECRET"
[sms]
url = "{platform.url}/sms"
""", encoding="utf-8")
    s = settings_for(1)
    seat = PeerProc("--answer", "200", user="seat")
    hotline = PeerProc("--answer", "200", "--commands", "--record", str(tmp_path / "hotline.wav"), user="12345")
    busy = PeerProc("--answer", "486", user="12348")
    api = free_port()
    env = {**os.environ, "FENLIU_SIP__PORT": str(s.sip.port), "FENLIU_SIP__RTP_PORT": str(s.sip.rtp_port),
           "FENLIU_SIP__WORKERS": "1", "FENLIU_SIP__SEAT_URI": seat.uri, "FENLIU_ASR__MODEL": "ko-test",
           "FENLIU_CONSOLE__PORT": str(api),
           # every hotline the negative list can suggest needs a URI, or serve refuses to start
           "FENLIU_TRANSFER__TARGETS": f"12345={hotline.uri},12348={busy.uri},"
                                       + ",".join(f"{t}=sip:{t}@127.0.0.1:9" for t in ("12328", "12338", "95598", "social")),
           "FENLIU_STORE__URL": f"sqlite:///{tmp_path}/fenliu.db", "FENLIU_CONFIG": str(config),
           "FENLIU_TEST_PLATFORM_SECRET": "shared-secret",
           # the hotline hangs up once it has heard the caller (a second of voice): longer than this
           "FENLIU_TRANSFER__MIN_TALK": "0.5"}
    proc = subprocess.Popen([sys.executable, "-m", "fenliu", "serve", "--json"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = []

    def read():
        for line in proc.stdout:
            events.append(json.loads(line))

    threading.Thread(target=read, daemon=True).start()

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "fenliu", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    def wait(kind, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in events:
                if e.get("event") == kind:
                    return e
            time.sleep(0.1)
        raise TimeoutError(kind)

    try:
        wait("ready")
        audio = alaw_file(FIXTURES / "ko" / "ko-02-help.wav", tmp_path)
        # the caller talks until the test is done and hangs up (the hotline's BYE), however
        # long the actions below take on a busy machine
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("r", run_sipp(talking_caller(audio), s.sip.port, tmp_path,
                                                                          timeout=120)))
        t.start()
        wait("call_answered")
        listed = cli("calls")
        assert listed.returncode == 0 and "13800000000" in listed.stdout
        call_id = listed.stdout.split()[0]
        bad = cli("transfer", call_id, "99999")
        assert bad.returncode == 2 and "unknown target" in bad.stderr
        missing = cli("transfer", "no-such-call", "12345")
        assert missing.returncode == 2 and "404" in missing.stderr
        refused = cli("transfer", call_id, busy.uri)  # waits for the outcome, says it, exits non-zero
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert json.loads(refused.stdout.splitlines()[0])["sip_status"] == 486
        assert "transfer failed" in refused.stderr and "stays with the operator" in refused.stderr
        ok = cli("transfer", call_id[:10], "12345")  # returns once the three-way call is up
        assert ok.returncode == 0, ok.stderr
        out = json.loads(ok.stdout.splitlines()[0])
        assert out["uri"] == hotline.uri and out["status"] == "transfer_bridged"
        # the diversion's work order and the caller's SMS leave through the outbox
        order_req = platform.wait_for_requests(1, timeout=20, path="/orders")[0]
        assert order_req["json"]["call_id"] == call_id and order_req["json"]["caller"] == "13800000000"
        assert order_req["json"]["target"] == "12345" and order_req["headers"]["webhook-signature"].startswith("v1,")
        sms_req = platform.wait_for_requests(1, timeout=20, path="/sms")[0]
        assert sms_req["json"]["to"] == "13800000000" and order_req["json"]["order_no"] in sms_req["json"]["text"]
        import urllib.request

        body = json.dumps({"order_no": order_req["json"]["order_no"], "status": "办结"}).encode()
        report = urllib.request.Request(f"http://127.0.0.1:{api}/api/hooks/platform/12345", data=body, method="POST",
                                        headers={"Content-Type": "application/json",
                                                 **sign(b"shared-secret", "done-1", int(time.time()), body)})
        with urllib.request.urlopen(report, timeout=10) as r:
            assert json.load(r)["status"] == "completed"
        hotline.wait(lambda e: e["event"] == "media")
        released = cli("release", call_id)
        assert released.returncode == 0 and json.loads(released.stdout.splitlines()[0])["status"] == \
            "transfer_completed"

        with urllib.request.urlopen(f"http://127.0.0.1:{api}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert 'fenliu_transfers_total{step="failed"} 1.0' in metrics
        assert 'fenliu_transfers_total{step="completed"} 1.0' in metrics
        assert 'fenliu_calls_total{outcome="started"} 1.0' in metrics
        assert 'fenliu_workers{state="alive"} 1.0' in metrics
        assert 'fenliu_outbox_items{kind="order",state="delivered"} 1.0' in metrics
        with urllib.request.urlopen(f"http://127.0.0.1:{api}/api/health", timeout=10) as r:
            assert json.load(r) == {"ok": True, "status": "up"}  # the public answer
        token = next(tmp_path.glob("cli-*.token")).read_text().strip()  # the detail: with the local CLI's token
        detailed = urllib.request.Request(f"http://127.0.0.1:{api}/api/health",
                                          headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(detailed, timeout=10) as r:
            health = json.load(r)
        assert health["ok"] and health["mode"] == "threads" and health["workers"][0]["state"] == "alive"
        seat.wait(lambda e: e["event"] == "ended")
        hotline.wait(lambda e: e["event"] == "heard", 30)  # the caller talked to the hotline
        hotline.send("hangup")  # the caller and the hotline are done: the hotline hangs up
        t.join(60)
        assert box["r"].returncode == 0, box["r"].stdout[-1500:]
        decisions = [e for e in events if e.get("type") == "Decision"]
        assert decisions and decisions[0]["call_id"] == call_id
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
            seat.stop()
            hotline.stop()
            busy.stop()
            platform.stop()
    from fenliu.store.record import Store

    store = Store(f"sqlite:///{tmp_path}/fenliu.db")  # the record survived the service
    rows = store.calls()
    assert [r["call_id"] for r in rows] == [call_id] and rows[0]["ended_at"] is not None
    order = store.orders()[0]
    assert order["call_id"] == call_id and order["status"] == "completed"
    assert order["platform_ref"] == next(iter(platform.orders.values()))["order_no"]
    # the Korean speech gave no Chinese suggestion: the operator diverted on its own judgement
    assert store.db.scalar("SELECT final_action FROM calls") == "unsuggested"
    assert [m["purpose"] for m in store.call_loop(call_id)["sms"]] == ["guidance", "followup"]
    kinds = [e["kind"] for e in store.events(call_id)]
    assert "Decision" in kinds and "FinalTranscript" in kinds
    assert kinds.index("transfer_failed") < kinds.index("transfer_bridged") < kinds.index("transfer_completed")
    store.close()
    unreachable = subprocess.run([sys.executable, "-m", "fenliu", "calls", "--url",
                                  f"http://127.0.0.1:{free_port()}"], cwd=ROOT, capture_output=True, text=True)
    assert unreachable.returncode == 2 and "cannot reach fenliu serve" in unreachable.stderr


def test_fenliu_dial_plays_a_recording_into_the_service(ko_engine, router, tmp_path):
    got = Collector()
    s = settings_for(1)
    sup = Supervisor(s, router, ko_engine, got.bus)
    sup.start()
    try:
        r = subprocess.run([sys.executable, "-m", "fenliu", "dial",
                            str(FIXTURES / "ko" / "ko-03-power.wav"), "--to", f"sip:110@127.0.0.1:{s.sip.port}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=90)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "call ended" in r.stdout
        final = got.wait(lambda it: isinstance(it, CallEvent) and isinstance(it.event, FinalTranscript), 30)
        assert final.event.text
    finally:
        sup.stop()
    nobody = subprocess.run([sys.executable, "-m", "fenliu", "dial", str(FIXTURES / "ko" / "ko-03-power.wav"),
                             "--to", f"sip:110@127.0.0.1:{free_port(2)}", "--ring-timeout", "3"], cwd=ROOT, capture_output=True, text=True,
                            timeout=90)
    assert nobody.returncode == 2 and "not answered" in nobody.stderr
    empty = tmp_path / "e.wav"
    empty.write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "fenliu", "dial", str(empty)], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "empty" in r.stderr


def test_b2bua_seat_mode_recognises_caller_and_operator_as_separate_speakers(ko_engine, router, tmp_path):
    from tests.sip.peers import PeerProc

    seat = PeerProc("--answer", "200", "--play", str(FIXTURES / "ko" / "ko-03-power.wav"), user="seat")
    got = Collector()
    s = settings_for(1)
    s = replace(s, sip=replace(s.sip, seat_uri=seat.uri))
    sup = Supervisor(s, router, ko_engine, got.bus)
    sup.start()
    try:
        audio = alaw_file(FIXTURES / "ko" / "ko-02-help.wav", tmp_path)
        r = run_sipp(caller_scenario(audio, talk_ms=5000), s.sip.port, tmp_path)
        assert r.returncode == 0, r.stdout[-1500:]
        for leg in ("caller", "operator"):
            ev = got.wait(lambda it, leg=leg: isinstance(it, CallEvent) and it.leg == leg
                          and isinstance(it.event, FinalTranscript), 30)
            assert ev.event.text
        decisions = [it for it in got.items if isinstance(it, CallEvent) and isinstance(it.event, Decision)]
        assert decisions and all(d.leg == "caller" for d in decisions)
    finally:
        sup.stop()
        seat.stop()


def test_serve_with_a_kamailio_front_takes_calls_on_one_address(ko_engine, router, tmp_path):
    got = Collector()
    s = settings_for(2)
    s = replace(s, sip=replace(s.sip, front_port=free_port(2)))
    sup = Supervisor(s, router, ko_engine, got.bus)
    sup.start()
    try:
        got.wait(fact("front_ready"))
        audio = alaw_file(FIXTURES / "ko" / "ko-01-greeting.wav", tmp_path)
        r = run_sipp(caller_scenario(audio, talk_ms=3000), s.sip.front_port, tmp_path, calls=2, rate=10)
        assert r.returncode == 0, r.stdout[-1500:]
        workers = {it.worker for it in got.items if isinstance(it, WorkerFact) and it.kind == "call_started"}
        assert workers == {"w0", "w1"}  # round-robin over both workers
    finally:
        sup.stop()
    assert sup.front.proc.poll() is not None



def test_end_to_end_live_korean_speech_decides_and_the_one_key_reaches_the_hotline(ko_engine, tmp_path):
    """SIPp speaks a Korean fixture -> worker -> real Vosk -> router (small Korean list) ->
    Decision -> one key -> the hotline peer hears the caller. No stub in the chain."""
    from fenliu.router import Router, parse_rules
    from tests.conftest import heard_over_a_line
    from tests.sip.peers import PeerProc, rms_after

    wav = FIXTURES / "ko" / "ko-02-help.wav"
    # what the model hears of this audio after an A-law telephone line: its words become the list
    words = sorted(heard_over_a_line(ko_engine, wav, tmp_path))
    assert words, "the model heard nothing in the probe"
    rules = parse_rules(minimal_rules(decisive=words, strong="없는말하나", weak="없는말", danger="살려줘요",
                                      negator="안", name="테스트", version="ko-e2e"))
    recording = tmp_path / "hotline.wav"
    hotline = PeerProc("--answer", "200", "--record", str(recording), user="12345")
    got = Collector()
    s = settings_for(1)
    s = replace(s, transfer=replace(s.transfer, targets={"12345": hotline.uri}))
    pressed = threading.Event()
    sup = None

    def on_event(item):
        if isinstance(item, CallEvent) and isinstance(item.event, Decision) and item.event.diverted \
                and not pressed.is_set():
            pressed.set()
            threading.Thread(target=lambda: sup.transfer(item.call_id, item.event.target), daemon=True).start()

    got.bus.subscribe(on_event)
    sup = Supervisor(s, Router(rules), ko_engine, got.bus)
    sup.start()
    try:
        audio = alaw_file(wav, tmp_path)
        # the caller talks until it gets a BYE: however slow recognition is on a busy machine,
        # the call lasts until the decision and the transfer have happened
        box = {}
        t = threading.Thread(target=lambda: box.setdefault("r", run_sipp(talking_caller(audio), s.sip.port, tmp_path,
                                                                          timeout=120)))
        t.start()
        d = got.wait(lambda it: isinstance(it, CallEvent) and isinstance(it.event, Decision) and it.event.diverted,
                     60)
        assert d.event.target == "12345" and any(m.word in words for m in d.event.matched)
        got.wait(fact("transfer_completed"), 30)
        hotline.wait(lambda e: e["event"] == "heard", 30)  # a second of the caller's voice reached the hotline
        assert not any(isinstance(it, WorkerFact) and it.kind == "call_ended" for it in got.items)  # never cut
        sup.hangup(d.call_id)
        t.join(60)
        assert box["r"].returncode == 0, box["r"].stdout[-1500:]  # the caller's first BYE was the test's
        hotline.wait(lambda e: e["event"] == "ended", 20)
    finally:
        sup.stop()
        hotline.stop()
    assert rms_after(recording, 0.3) > 200  # the hotline heard the caller's voice


def test_kill_9_mid_three_way_call_leaves_no_one_on_a_silent_line(ko_engine, router, tmp_path):
    """The worker dies with caller, operator seat and hotline bridged: on restart each of the
    three is sent a BYE from the worker's address, the call is recorded as ended with the reason."""
    from tests.sip.peers import PeerProc

    seat = PeerProc("--answer", "200", user="seat")
    hotline = PeerProc("--answer", "200", user="12345")
    got = Collector()
    s = settings_for(1)
    s = replace(s, sip=replace(s.sip, seat_uri=seat.uri))
    sup = Supervisor(s, router, ko_engine, got.bus)
    sup.start()
    caller = None
    try:
        caller = PeerProc("--call", f"sip:110@127.0.0.1:{s.sip.port}", "--play",
                          str(FIXTURES / "ko" / "ko-02-help.wav"), user="caller")
        cid = got.wait(fact("call_answered")).fact.call_id
        sup.transfer(cid, hotline.uri, allow_raw=True)  # a raw address: the policy is not what this tests
        got.wait(lambda it: fact("transfer_bridged")(it) and it.call_id == cid)
        for who in ("caller", "operator", "hotline"):  # every leg's dialog is known
            got.wait(lambda it, w=who: fact("leg_dialog")(it) and it.fact.leg == w)
        marks = {p: p.mark() for p in (caller, seat, hotline)}
        n = got.mark()
        os.kill(sup.workers["w0"].pid, signal.SIGKILL)
        released = got.wait(fact("orphans_released"), since=n, timeout=20).fact
        assert sorted(x.split("/")[1] for x in released.legs) == ["caller=200", "hotline=200", "operator=200"]
        for p in (caller, seat, hotline):  # each peer really got the BYE: its call ended after the kill
            p.wait(lambda e: e["event"] == "ended", since=marks[p])
        ended = got.wait(lambda it: fact("call_ended")(it) and it.call_id == cid, since=n).fact
        assert "crashed" in ended.reason
        got.wait(fact("worker_restarted"), since=n, timeout=20)
    finally:
        sup.stop()
        got.bus.close()
        for p in (caller, seat, hotline):
            if p is not None:
                p.stop()


def test_a_failed_restart_is_retried_and_health_says_the_worker_is_dead(ko_engine, router, tmp_path):
    """Its port held by someone else, the restarted worker cannot start: health reports it dead
    (503), the supervisor keeps trying, and once the port is free it is back."""
    import socket

    got = Collector()
    s = settings_for(1)
    sup = Supervisor(s, router, ko_engine, got.bus)
    sup.start()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        n = got.mark()
        os.kill(sup.workers["w0"].pid, signal.SIGKILL)
        got.wait(fact("worker_lost"), since=n)
        squatter.bind(("127.0.0.1", s.sip.port))  # before the first restart attempt (0.5 s later)
        failed = got.wait(fact("restart_failed"), since=n, timeout=30)
        assert "Address already in use" in failed.fact.message or "in use" in failed.fact.message
        health = sup.health()
        assert not health["ok"] and health["workers"][0]["state"] == "dead"
        got.wait(lambda it: fact("restart_failed")(it) and it.fact.attempt == 2, since=n, timeout=30)  # retried
        squatter.close()
        got.wait(fact("worker_restarted"), since=n, timeout=40)
        assert sup.health()["ok"]
        r = run_sipp(caller_scenario(alaw_file(FIXTURES / "ko" / "ko-01-greeting.wav", tmp_path), talk_ms=1500),
                     s.sip.port, tmp_path)
        assert r.returncode == 0, r.stdout[-1500:]
    finally:
        squatter.close()
        sup.stop()
        got.bus.close()


def test_serve_fails_open_to_the_operators_when_its_worker_is_unavailable(ko_engine, router, tmp_path):
    """fenliu serve with its front and a fallback seat: a worker that stops answering (SIGSTOP,
    so it is not restarted) is taken out by the front's probes, and the next call goes straight to
    the seat; the front's events reach the bus and /metrics."""
    from fenliu.service.metrics import Metrics
    from tests.sip.sipp_seat import SippSeat

    seat = SippSeat(tmp_path)
    got = Collector()
    s = settings_for(1)
    s = replace(s, sip=replace(s.sip, front_port=free_port(2), fallback_uri=seat.uri))
    sup = Supervisor(s, router, ko_engine, got.bus)
    metrics = Metrics(sup)
    got.bus.subscribe(metrics)
    sup.start()
    pid = sup.workers["w0"].pid
    try:
        got.wait(fact("front_ready"))
        n = got.mark()
        os.kill(pid, signal.SIGSTOP)
        got.wait(lambda it: fact("front_event")(it) and it.fact.line.startswith(("worker-down", "worker-silent")),
                 since=n, timeout=20)
        audio = alaw_file(FIXTURES / "ko" / "ko-01-greeting.wav", tmp_path)
        r = run_sipp(caller_scenario(audio, talk_ms=1000), s.sip.front_port, tmp_path, timeout=30)
        assert r.returncode == 0, r.stdout[-1500:]  # answered — by the seat
        got.wait(lambda it: fact("front_event")(it) and it.fact.line.startswith("failopen"), since=n)
        assert not [it for it in got.items[n:] if fact("call_started")(it)]  # fenliu was out of the path
        got.bus.drain()
        assert b"fenliu_front_failopen_total 1.0" in metrics.render()
    finally:
        os.kill(pid, signal.SIGCONT)
        sup.stop()
        got.bus.close()
        seat.stop()
