"""The supervisor's start-up checks and its one place for worker configuration (no processes)."""

from dataclasses import replace

import pytest

from fenliu.errors import ConfigError
from fenliu.service.supervisor import Supervisor
from fenliu.settings import load_settings


def test_a_hotline_the_rules_can_suggest_must_have_a_uri(router, bus):
    s = load_settings(env={})
    s = replace(s, transfer=replace(s.transfer, targets={"12345": "sip:12345@pbx.example:5060"}))
    with pytest.raises(ConfigError, match="12348") as e:
        Supervisor(s, router, None, bus).check_targets()
    assert "[transfer.targets]" in str(e.value)
    Supervisor(load_settings(env={}), router, None, bus).check_targets()  # the defaults cover every target


def test_worker_settings_come_from_one_place_with_the_services_defaults(router, bus):
    s = load_settings(env={"FENLIU_SIP__USERS": "110, 122", "FENLIU_SIP__REG_USER": "fenliu{i}",
                           "FENLIU_SIP__MEDIA_TIMEOUT": "7"})
    ws = Supervisor(s, router, None, bus).worker_settings("w3", 3)
    assert ws.users == ("110", "122") and ws.reg_user == "fenliu3" and ws.media_timeout == 7.0
    assert ws.sip_port == s.sip.port + 3 and ws.rtp_port == s.sip.rtp_port + 3 * s.sip.rtp_range
    assert ws.capacity() == 2  # answer mode, a leg kept for each conversation's three-way transfer
    refer = replace(s, transfer=replace(s.transfer, mode="refer"))
    assert Supervisor(refer, router, None, bus).worker_settings("w0", 0).capacity() == 4  # REFER needs no leg


def test_threads_mode_says_once_when_a_legs_recognition_falls_behind(router, bus):
    """A leg whose queue is full drops frames (the media path is never held up) and the call is
    reported degraded once, on the bus, for the operator's screen."""
    import queue
    import threading

    from fenliu.bus import WorkerFact
    from fenliu.service.supervisor import CallSession, LegStream
    from fenliu.sip import protocol as P

    got = []
    seen = threading.Event()

    def collect(item):
        if isinstance(item, WorkerFact) and isinstance(item.fact, P.CallDegraded):
            got.append(item.fact)
            seen.set()

    bus.subscribe(collect)
    sup = Supervisor(load_settings(env={}), router, None, bus)
    session = CallSession("call-1", "w0", 3, "<sip:138@pbx>", 0.0)
    leg = LegStream("caller", frames=queue.Queue(2))  # no recognition thread drains it
    session.legs[0] = leg
    sup.sessions[("w0", 3)] = session
    for _ in range(5):
        sup._frame("w0", 3, 0, b"\0" * 640)
    assert seen.wait(5)
    bus.drain()
    assert leg.dropped == 3 and len(got) == 1
    assert got[0].call_id == "call-1" and got[0].leg == "caller" and "behind" in got[0].reason
    assert sup.calls()[0]["degraded"] == got[0].reason
