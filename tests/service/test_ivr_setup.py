"""Setting up the IVR: `fenliu flow check|graph` as a user runs them, a bad flow or a missing prompt
stopping `fenliu serve` before any call, the [ivr] settings, and what the workers are told."""

from dataclasses import replace

import pytest

from fenliu.errors import ConfigError
from fenliu.ivr_flows.flow import FlowError
from fenliu.ivr_flows.prompts import PromptError
from fenliu.service.ivr import flow_path
from fenliu.service.ivr import load as load_ivr
from fenliu.service.supervisor import Supervisor
from fenliu.settings import load_settings
from tests.commands.test_cli import run

BAD_REF = """[flow]
name = "x"
start = "a"

[prompts]
hi = "您好"

[states.a]
do = "play"
prompt = "hi"
next = "queu"

[states.queue]
do = "queue"
"""

MISSING_WAV = """[flow]
name = "x"
start = "a"

[prompts]
hi = { wav = "recordings/hi.wav" }

[states.a]
do = "play"
prompt = "hi"
next = "queue"

[states.queue]
do = "queue"
"""


def config(tmp_path, flow: str, extra: str = "") -> str:
    c = tmp_path / "fenliu.toml"
    c.write_text(f'[ivr]\nflow = "{flow}"\nqueue_uri = "sip:acd@127.0.0.1:5999"\ncache_dir = "{tmp_path / "p"}"\n'
                 f'[store]\nurl = "sqlite:///{tmp_path / "f.db"}"\n{extra}', encoding="utf-8")
    return str(c)


def test_flow_check_makes_the_prompts_and_graph_draws_the_shipped_flow(tmp_path):
    r = run("--config", config(tmp_path, "front_desk"), "flow", "check")
    assert r.returncode == 0, r.stderr
    assert "front_desk" in r.stdout and "7 states" in r.stdout
    assert len(list((tmp_path / "p").glob("*.wav"))) >= 20  # welcome, offers per hotline and key, …
    again = run("--config", config(tmp_path, "front_desk"), "flow", "check")
    assert "'generated': 0" in again.stdout  # cached: nothing is spoken again
    out = tmp_path / "fd.svg"
    r = run("flow", "graph", "-o", str(out))
    assert r.returncode == 0, r.stderr
    svg = out.read_text(encoding="utf-8")
    assert svg.startswith("<?xml") and "urgent_queue" in svg and "offer" in svg


def test_flow_check_names_the_line_and_the_fix(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_REF, encoding="utf-8")
    r = run("flow", "check", str(bad))
    assert r.returncode == 2
    assert f"{bad}:11:" in r.stderr and "'queu'" in r.stderr and "queue" in r.stderr.split("—")[-1]


def test_serve_refuses_a_bad_flow_before_taking_any_call(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_REF, encoding="utf-8")
    r = run("--config", config(tmp_path, str(bad)), "serve", "--port", "5998")
    assert r.returncode == 2 and f"{bad}:11:" in r.stderr
    assert "fenliu serve:" not in r.stderr  # it never said it was up


def test_a_missing_recording_is_an_error_at_load_naming_the_prompt(tmp_path):
    flow = tmp_path / "f.toml"
    flow.write_text(MISSING_WAV, encoding="utf-8")
    s = load_settings(config(tmp_path, str(flow)), env={})
    with pytest.raises((FlowError, PromptError)) as e:
        load_ivr(s)
    assert f"{flow}:6" in str(e.value) and "hi.wav" in str(e.value)
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "hi.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises((FlowError, PromptError)) as e:
        load_ivr(s)
    assert "hi.wav" in str(e.value)


def test_ivr_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="ivr.when"):
        load_settings(env={"FENLIU_IVR__WHEN": "sometimes"})
    with pytest.raises(ConfigError, match="ivr.queue_uri"):
        load_settings(env={"FENLIU_IVR__FLOW": "front_desk"})  # nowhere to hand callers to
    with pytest.raises(ConfigError, match="no flow of that name"):
        flow_path("front_dsk")



def test_what_the_workers_are_told(router, bus):
    base = load_settings(env={})
    seat = replace(base, sip=replace(base.sip, seat_uri="sip:seat@pbx:5060"))
    off = Supervisor(seat, router, None, bus).worker_settings("w0", 0)
    assert not off.overflow and off.seat_uri == "sip:seat@pbx:5060"
    over = replace(seat, ivr=replace(seat.ivr, flow="front_desk", seat_timeout=12))
    ws = Supervisor(over, router, None, bus).worker_settings("w0", 0)
    assert ws.overflow and ws.seat_timeout == 12 and ws.seat_uri == "sip:seat@pbx:5060" and ws.capacity() == 1
    always = replace(over, ivr=replace(over.ivr, when="always"))
    ws = Supervisor(always, router, None, bus).worker_settings("w0", 0)
    assert ws.seat_uri == "" and ws.queue_leg and not ws.overflow  # the worker answers; the flow rings the seat
    assert ws.capacity() == 1  # caller, queue and hotline legs: 3 of the wheel's 4
    answer = replace(base, ivr=replace(base.ivr, flow="front_desk", queue_uri="sip:acd@pbx:5060"))
    assert Supervisor(answer, router, None, bus).worker_settings("w0", 0).capacity() == 1
    assert Supervisor(base, router, None, bus).worker_settings("w0", 0).capacity() == 2


def test_the_live_view_keeps_why_the_front_desk_sent_the_call_after_the_hand_over():
    from fenliu.bus import WorkerFact
    from fenliu.console.feed import EventFeed
    from fenliu.sip import protocol as P

    feed = EventFeed(100)
    cid = "c-1"
    for f in (P.CallStarted(cid, 0, "<sip:13800000000@pbx>", "<sip:110@fenliu>"),
              P.Overflowed(cid, 486, "Busy Here"),
              P.IvrStep(cid, "front_desk", "listen", "heard", "他拿着刀"),
              P.IvrStep(cid, "front_desk", "listen", "danger", "危险信号（持械/凶器）：刀", urgent=True),
              P.IvrStep(cid, "front_desk", "urgent_queue", "queue", "IVR：危险信号，紧急转人工", urgent=True),
              P.QueueUpdate(cid, P.QueueStep.DIALING, "sip:acd@pbx"),
              P.QueueUpdate(cid, P.QueueStep.ANSWERED, "sip:acd@pbx"),
              P.IvrStep(cid, "front_desk", "urgent_queue", "queued", "接警员已接听", outcome="queued")):
        feed(WorkerFact("w0", f))
    ivr = feed.live[cid].ivr
    assert ivr["outcome"] == "queued" and ivr["urgent"]  # urgency never drops once raised
    assert ivr["reason"] == "危险信号（持械/凶器）：刀" and ivr["heard"] == "他拿着刀"
    assert ivr["overflow"] == {"status": 486, "reason": "Busy Here"} and ivr["queue"] == "answered"
    kinds = [e["kind"] for e in feed.ring]
    assert kinds.count("ivr_step") == 4 and "overflowed" in kinds and "queue_answered" in kinds


def test_metrics_count_front_desk_outcomes_and_overflows():
    from fenliu.bus import WorkerFact
    from fenliu.service.metrics import Metrics
    from fenliu.sip import protocol as P

    m = Metrics()
    for f in (P.Overflowed("a", 486, "Busy Here"),
              P.IvrStep("a", "front_desk", "listen", "heard", "停电了"),  # not an ending: not counted
              P.IvrStep("a", "front_desk", "transfer", "transferred", "95598", outcome="transferred"),
              P.IvrStep("b", "front_desk", "urgent_queue", "queued", "接警员已接听", urgent=True, outcome="queued")):
        m(WorkerFact("ivr", f))
    text = m.render().decode()
    assert 'fenliu_ivr_calls_total{flow="front_desk",outcome="transferred",urgent="false"} 1.0' in text
    assert 'fenliu_ivr_calls_total{flow="front_desk",outcome="queued",urgent="true"} 1.0' in text
    assert "fenliu_calls_overflowed_total 1.0" in text


def test_doctor_checks_the_configured_flow(tmp_path):
    from fenliu.commands.doctor import run_checks

    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_REF, encoding="utf-8")
    checks = {c.name: c for c in run_checks(load_settings(config(tmp_path, str(bad)), env={}), load_model=False)}
    c = checks[f"IVR flow ({bad})"]
    assert not c.ok and f"{bad}:11:" in c.detail and "fenliu flow check" in c.fix
    good = {c.name: c for c in run_checks(load_settings(config(tmp_path, "front_desk"), env={}), load_model=False)}
    assert good["IVR flow (front_desk)"].ok and "7 states" in good["IVR flow (front_desk)"].detail
