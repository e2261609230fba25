"""The order a seat list (sip.seats) is rung in: the supervisor follows which seat each call rang
and when each was freed, and every new call rings the free seats first — the one idle longest, or
the next in turn — then the taken ones (a taken seat answers busy and the next one rings)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from fenliu.bus import EventBus
from fenliu.service.supervisor import Supervisor
from fenliu.settings import Settings
from fenliu.sip import protocol as P

S1, S2, S3 = "sip:s1@pbx", "sip:s2@pbx", "sip:s3@pbx"


def supervisor(router, strategy: str) -> Supervisor:
    s = Settings()
    s = replace(s, sip=replace(s.sip, seats=f"{S1}, {S2}, {S3}", seat_strategy=strategy))
    return Supervisor(s, router, None, EventBus(asyncio.new_event_loop()))


def rang(sup: Supervisor, call_id: str, seat: str) -> None:
    sup._on_fact("w0", P.LegDialing(call_id, "operator", seat))


def left(sup: Supervisor, call_id: str) -> None:
    sup._on_fact("w0", P.LegEnded(call_id, "operator", 200, "BYE"))


def test_longest_idle_rings_the_seat_free_longest_first(rules_router):
    sup = supervisor(rules_router, "longest-idle")
    assert sup.seat_order() == (S1, S2, S3)  # none has had a call yet: the configured order
    rang(sup, "c1", S1)
    rang(sup, "c2", S2)
    assert sup.seat_order() == (S3, S1, S2)  # the free seat first, then the taken ones
    left(sup, "c2")  # s2 is free again (just now); s3 has been idle since the start
    assert sup.seat_order() == (S3, S2, S1)
    rang(sup, "c3", S3)
    left(sup, "c1")
    left(sup, "c3")  # freed in the order s2, s1, s3
    assert sup.seat_order() == (S2, S1, S3)
    assert sup.worker_settings("w0", 0).seats == (S2, S1, S3)  # a (re)started worker gets the current order


def test_round_robin_rings_the_next_seat_in_turn(rules_router):
    sup = supervisor(rules_router, "round-robin")
    rang(sup, "c1", S1)
    left(sup, "c1")
    assert sup.seat_order() == (S2, S3, S1)
    rang(sup, "c2", S2)
    assert sup.seat_order() == (S3, S1, S2)  # s2 is taken: last
    left(sup, "c2")
    assert sup.seat_order() == (S3, S1, S2)
