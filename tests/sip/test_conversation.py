"""The conversation state machine driven the way the SIP worker drives it (no pjsua2): what the
wire reported goes in, the actions come out and are "carried out" (a Dial makes the leg exist),
and each step's actions and state are checked against a table.

The rule above the others: a failed transfer never drops the caller."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from fenliu.sip import protocol as P
from fenliu.sip.conversation import (
    Action,
    AnswerCaller,
    Bridge,
    Conversation,
    Dial,
    Emit,
    Finish,
    HangupAll,
    HangupLeg,
    ProbeCaller,
    Refer,
    ReferReplaces,
    RejectCaller,
)
from fenliu.sip.protocol import ConversationState as S
from fenliu.sip.protocol import Leg, TransferStep

T0 = 1000.0  # monotonic seconds when the INVITE came in
SEAT = "sip:seat@127.0.0.1:5070"
HOTLINE = "sip:12345@127.0.0.1:5080"
CALLER, OPERATOR, HOT = Leg.CALLER, Leg.OPERATOR, Leg.HOTLINE


@dataclass
class Call:
    """One conversation and the worker's side of it: a clock and the actions carried out."""

    seat: bool = False
    now: float = T0
    conv: Conversation = field(init=False)
    steps: list[tuple[list[Action], bool]] = field(default_factory=list)  # actions, caller leg still there

    def __post_init__(self) -> None:
        self.conv = Conversation("c1", 7, T0, seat_mode=self.seat)
        if self.seat:  # the worker rings the caller and dials the seat at once
            self.carry_out([Dial(OPERATOR, SEAT)])

    def carry_out(self, actions: list[Action]) -> list[Action]:
        for a in actions:
            if isinstance(a, Dial):
                self.conv.dialled(a.leg)
        self.steps.append((actions, CALLER in self.conv.legs))
        return actions

    def at(self, dt: float) -> Call:
        self.now = T0 + dt
        return self


Step = Callable[[Call], list[Action]]


def confirmed(leg: Leg) -> Step:
    return lambda c: c.conv.leg_confirmed(leg, c.now)


def media(leg: Leg) -> Step:
    return lambda c: c.conv.media_up(leg, c.now)


def early_media(leg: Leg) -> Step:
    """Audio with a provisional response (183 + SDP): the leg still rings."""
    return lambda c: c.conv.media_up(leg, c.now, early=True)


def gone(leg: Leg, status: int = 200, reason: str = "Normal call clearing") -> Step:
    return lambda c: c.conv.leg_gone(leg, status, reason, c.now)


def transfer(mode: str = "three-way", target: str = HOTLINE, timeout: float = 20.0, drop_after: float = 0.0,
             free_legs: int = 2, min_talk: float = 0.0) -> Step:
    return lambda c: c.conv.start_transfer(target, mode, timeout, drop_after, c.now, free_legs, min_talk)


def notify(status: int, reason: str, final: bool) -> Step:
    return lambda c: c.conv.refer_status(status, reason, final)


def tick(at: float) -> Step:
    return lambda c: c.at(at).conv.tick(c.now)


def release() -> Step:
    return lambda c: c.conv.release_operator()


def dial_failed(leg: Leg, message: str = "pjsua refused") -> Step:
    return lambda c: c.conv.dial_failed(leg, message)


def describe(a: Action) -> str:
    if isinstance(a, Emit):
        return a.fact.kind
    if isinstance(a, Dial | HangupLeg):
        return f"{type(a).__name__} {a.leg.label}"
    if isinstance(a, Bridge):
        return "Bridge " + "+".join(x.label for x in a.legs)
    if isinstance(a, RejectCaller | Finish):
        return f"{type(a).__name__} {a.status}"
    return type(a).__name__


def run(c: Call, step: Step) -> list[Action]:
    return c.carry_out(step(c))


def facts(actions: list[Action], cls: type | None = None) -> list[P.Fact]:
    return [a.fact for a in actions if isinstance(a, Emit) and (cls is None or isinstance(a.fact, cls))]


def answered(seat: bool = False) -> Call:
    """A conversation in TALKING with the caller's audio up (and the operator's, in seat mode)."""
    c = Call(seat)
    if seat:
        run(c, confirmed(OPERATOR))
        run(c, media(OPERATOR))
    run(c, confirmed(CALLER))
    run(c, media(CALLER))
    assert c.conv.state == S.TALKING
    return c


ANSWER = [
    (confirmed(CALLER), ["leg_answered", "call_answered"], S.TALKING),
    (media(CALLER), ["Bridge caller"], S.TALKING),
]
SEAT_ANSWER = [
    (confirmed(OPERATOR), ["leg_answered", "AnswerCaller"], S.RINGING),
    (media(OPERATOR), ["Bridge operator"], S.RINGING),
    (confirmed(CALLER), ["leg_answered", "call_answered"], S.TALKING),
    (media(CALLER), ["Bridge caller+operator"], S.TALKING),
]

# name: (seat mode, [(step, what it does, state after)])
SCENARIOS: dict[str, tuple[bool, list[tuple[Step, list[str], S]]]] = {
    "answer mode: a plain call the caller ends": (False, ANSWER + [
        (gone(CALLER), ["leg_ended", "HangupAll", "Finish 200"], S.ENDED),
    ]),
    "answer mode: three-way hands the caller to the hotline": (False, ANSWER + [
        (transfer(), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (confirmed(HOT), ["leg_answered"], S.TRANSFERRING),
        (media(HOT), ["transfer_bridged", "transfer_completed", "Bridge caller+hotline"], S.HANDED_OVER),
        (gone(HOT), ["leg_ended", "HangupAll"], S.HANDED_OVER),
        (gone(CALLER), ["leg_ended", "HangupAll", "Finish 200"], S.ENDED),
    ]),
    "answer mode: the hotline is busy, the caller stays": (False, ANSWER + [
        (transfer(), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (gone(HOT, 486, "Busy Here"), ["leg_ended", "transfer_failed"], S.TALKING),
        (gone(CALLER), ["leg_ended", "HangupAll", "Finish 200"], S.ENDED),
    ]),
    "answer mode: the hotline never answers": (False, ANSWER + [
        (transfer(timeout=20), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (tick(19.0), [], S.TRANSFERRING),
        (tick(21.0), ["transfer_failed", "HangupLeg hotline"], S.TALKING),
        (gone(HOT, 487, "Request Terminated"), ["leg_ended"], S.TALKING),
    ]),
    "answer mode: the hotline cannot even be dialled": (False, ANSWER + [
        (transfer(), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (dial_failed(HOT), ["transfer_failed"], S.TALKING),
    ]),
    "answer mode: the caller hangs up while the hotline rings": (False, ANSWER + [
        (transfer(), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (gone(CALLER), ["leg_ended", "transfer_failed", "HangupLeg hotline", "HangupAll", "Finish 200"], S.ENDED),
        (gone(HOT, 487), ["leg_ended"], S.ENDED),
    ]),
    "refer: accepted, then a final 200": (False, ANSWER + [
        (transfer("refer", free_legs=0), ["transfer_started", "Refer"], S.TRANSFERRING),
        (notify(202, "Accepted", False), ["transfer_progress"], S.TRANSFERRING),
        (notify(200, "OK", True), ["transfer_progress", "transfer_completed", "HangupAll"], S.HANDED_OVER),
        (gone(CALLER), ["leg_ended", "HangupAll", "Finish 200"], S.ENDED),
    ]),
    "refer: declined": (False, ANSWER + [
        (transfer("refer"), ["transfer_started", "Refer"], S.TRANSFERRING),
        (notify(603, "Decline", True), ["transfer_progress", "transfer_failed"], S.TALKING),
    ]),
    "refer: no final NOTIFY, a late one is ignored": (False, ANSWER + [
        (transfer("refer", timeout=5), ["transfer_started", "Refer"], S.TRANSFERRING),
        (tick(6.0), ["transfer_failed"], S.TALKING),
        (notify(200, "OK", True), [], S.TALKING),
    ]),
    "attended: consulted, then the caller's side replaces our leg": (False, ANSWER + [
        (transfer("attended"), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (confirmed(HOT), ["leg_answered"], S.TRANSFERRING),
        (media(HOT), ["transfer_consulted", "ReferReplaces"], S.CONSULTED),
        (notify(100, "Trying", False), ["transfer_progress"], S.CONSULTED),
        (notify(200, "OK", True), ["transfer_progress", "transfer_completed", "HangupAll"], S.HANDED_OVER),
        (gone(HOT), ["leg_ended", "HangupAll"], S.HANDED_OVER),
        (gone(CALLER), ["leg_ended", "HangupAll", "Finish 200"], S.ENDED),
    ]),
    "attended: the REFER fails after the consultation": (False, ANSWER + [
        (transfer("attended"), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (confirmed(HOT), ["leg_answered"], S.TRANSFERRING),
        (media(HOT), ["transfer_consulted", "ReferReplaces"], S.CONSULTED),
        (notify(488, "Not Acceptable Here", True), ["transfer_progress", "transfer_failed", "HangupLeg hotline"],
         S.TALKING),
    ]),
    "attended: the caller hangs up during the consultation": (False, ANSWER + [
        (transfer("attended"), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (confirmed(HOT), ["leg_answered"], S.TRANSFERRING),
        (media(HOT), ["transfer_consulted", "ReferReplaces"], S.CONSULTED),
        (gone(CALLER), ["leg_ended", "transfer_failed", "HangupLeg hotline", "HangupAll", "Finish 200"], S.ENDED),
    ]),
    "answer mode: early media (183) is not an answer; a 486 after it keeps the caller": (False, ANSWER + [
        (transfer(), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (early_media(HOT), ["transfer_progress"], S.TRANSFERRING),  # 183 with SDP: ringback, nothing bridged
        (early_media(HOT), [], S.TRANSFERRING),  # said once
        (media(CALLER), ["Bridge caller"], S.TRANSFERRING),  # the caller's audio moved: the ringing hotline stays out
        (gone(HOT, 486, "Busy Here"), ["leg_ended", "transfer_failed"], S.TALKING),
        (gone(CALLER), ["leg_ended", "HangupAll", "Finish 200"], S.ENDED),
    ]),
    "answer mode: the 200's audio is the answer (pjsua reports it before the dialog is confirmed)": (False, ANSWER + [
        (transfer(), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (media(HOT), ["transfer_bridged", "transfer_completed", "Bridge caller+hotline"], S.HANDED_OVER),
        (confirmed(HOT), ["leg_answered"], S.HANDED_OVER),
    ]),
    "answer mode: early media, then the 200 bridges": (False, ANSWER + [
        (transfer(), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (early_media(HOT), ["transfer_progress"], S.TRANSFERRING),
        (confirmed(HOT), ["leg_answered", "transfer_bridged", "transfer_completed", "Bridge caller+hotline"],
         S.HANDED_OVER),
    ]),
    "answer mode: a hotline that hangs up at once after answering is a failed transfer": (False, ANSWER + [
        (transfer(min_talk=3.0), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (tick(1.0), [], S.TRANSFERRING),
        (confirmed(HOT), ["leg_answered"], S.TRANSFERRING),
        (media(HOT), ["transfer_bridged", "transfer_completed", "Bridge caller+hotline"], S.HANDED_OVER),
        (tick(1.2), [], S.HANDED_OVER),
        (gone(HOT), ["leg_ended", "transfer_failed"], S.TALKING),  # 0.2 s after its answer: the caller stays
        (gone(CALLER), ["leg_ended", "HangupAll", "Finish 200"], S.ENDED),
    ]),
    "answer mode: a hotline that talked longer than min_talk ends the call": (False, ANSWER + [
        (transfer(min_talk=3.0), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (confirmed(HOT), ["leg_answered"], S.TRANSFERRING),
        (media(HOT), ["transfer_bridged", "transfer_completed", "Bridge caller+hotline"], S.HANDED_OVER),
        (tick(60.0), [], S.HANDED_OVER),
        (gone(HOT), ["leg_ended", "HangupAll"], S.HANDED_OVER),
    ]),
    "seat mode: the operator left, the hotline drops at once: the operator is dialled back": (True, SEAT_ANSWER + [
        (transfer(min_talk=3.0), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (confirmed(HOT), ["leg_answered"], S.TRANSFERRING),
        (media(HOT), ["transfer_bridged", "Bridge caller+operator+hotline"], S.THREE_WAY),
        (release(), ["HangupLeg operator", "transfer_completed"], S.HANDED_OVER),
        (gone(OPERATOR), ["leg_ended"], S.HANDED_OVER),
        (tick(1.0), [], S.HANDED_OVER),
        (gone(HOT), ["leg_ended", "transfer_failed", "Dial operator"], S.TALKING),
    ]),
    "seat mode: early media while the operator talks, then busy": (True, SEAT_ANSWER + [
        (transfer(), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (early_media(HOT), ["transfer_progress"], S.TRANSFERRING),
        (gone(HOT, 486, "Busy Here"), ["leg_ended", "transfer_failed"], S.TALKING),
        (gone(OPERATOR), ["leg_ended", "HangupAll"], S.TALKING),
    ]),
    "seat mode: a plain call the operator ends": (True, SEAT_ANSWER + [
        (gone(OPERATOR), ["leg_ended", "HangupAll"], S.TALKING),
        (gone(CALLER, 200), ["leg_ended", "HangupAll", "Finish 200"], S.ENDED),
    ]),
    "seat mode: the seat is busy, the PBX is told why": (True, [
        (gone(OPERATOR, 486, "Busy Here"), ["leg_ended", "RejectCaller 486"], S.RINGING),
        (gone(CALLER, 486, "Busy Here"), ["leg_ended", "HangupAll", "Finish 486"], S.ENDED),
    ]),
    "seat mode: the seat cannot be dialled": (True, [
        (dial_failed(OPERATOR), ["RejectCaller 503"], S.RINGING),
        (gone(CALLER, 503), ["leg_ended", "HangupAll", "Finish 503"], S.ENDED),
    ]),
    "seat mode: three-way, the operator leaves on command": (True, SEAT_ANSWER + [
        (transfer(), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (confirmed(HOT), ["leg_answered"], S.TRANSFERRING),
        (media(HOT), ["transfer_bridged", "Bridge caller+operator+hotline"], S.THREE_WAY),
        (release(), ["HangupLeg operator", "transfer_completed"], S.HANDED_OVER),
        (gone(OPERATOR), ["leg_ended"], S.HANDED_OVER),
        (gone(HOT), ["leg_ended", "HangupAll"], S.HANDED_OVER),
        (gone(CALLER), ["leg_ended", "HangupAll", "Finish 200"], S.ENDED),
    ]),
    "seat mode: three-way, the operator leaves after a delay": (True, SEAT_ANSWER + [
        (transfer(drop_after=5.0), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (tick(2.0), [], S.TRANSFERRING),
        (confirmed(HOT), ["leg_answered"], S.TRANSFERRING),
        (media(HOT), ["transfer_bridged", "Bridge caller+operator+hotline"], S.THREE_WAY),
        (tick(6.0), [], S.THREE_WAY),  # bridged at 2 s: leaves after 7 s
        (tick(7.5), ["HangupLeg operator", "transfer_completed"], S.HANDED_OVER),
        (tick(30.0), [], S.HANDED_OVER),
    ]),
    "seat mode: the operator hangs up in the three-way": (True, SEAT_ANSWER + [
        (transfer(), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (confirmed(HOT), ["leg_answered"], S.TRANSFERRING),
        (media(HOT), ["transfer_bridged", "Bridge caller+operator+hotline"], S.THREE_WAY),
        (gone(OPERATOR), ["leg_ended", "transfer_completed"], S.HANDED_OVER),
    ]),
    "seat mode: the hotline hangs up before the operator left": (True, SEAT_ANSWER + [
        (transfer(), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (confirmed(HOT), ["leg_answered"], S.TRANSFERRING),
        (media(HOT), ["transfer_bridged", "Bridge caller+operator+hotline"], S.THREE_WAY),
        (gone(HOT), ["leg_ended", "transfer_failed"], S.TALKING),
        (gone(OPERATOR), ["leg_ended", "HangupAll"], S.TALKING),
    ]),
    "seat mode: the operator hangs up while the hotline rings, the hotline takes over": (True, SEAT_ANSWER + [
        (transfer(), ["transfer_started", "Dial hotline"], S.TRANSFERRING),
        (gone(OPERATOR), ["leg_ended"], S.TRANSFERRING),
        (confirmed(HOT), ["leg_answered"], S.TRANSFERRING),
        (media(HOT), ["transfer_bridged", "transfer_completed", "Bridge caller+hotline"], S.HANDED_OVER),
    ]),
}


def play(seat: bool, table: list[tuple[Step, list[str], S]]) -> Call:
    c = Call(seat)
    for i, (step, expected, state) in enumerate(table):
        actions = run(c, step)
        assert [describe(a) for a in actions] == expected, f"step {i}"
        assert c.conv.state == state, f"step {i}: {[describe(a) for a in actions]}"
    return c


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(name):
    play(*SCENARIOS[name])


@pytest.mark.parametrize("name", SCENARIOS)
def test_finish_only_once_the_caller_leg_is_gone(name):
    c = play(*SCENARIOS[name])
    for actions, caller_there in c.steps:
        if any(isinstance(a, Finish) for a in actions):
            assert not caller_there
            assert isinstance(actions[-1], Finish)  # nothing is done to a conversation after its end
    assert sum(isinstance(a, Finish) for actions, _ in c.steps for a in actions) <= 1


def test_no_failure_ever_drops_the_caller():
    """Across every scenario: a step that reports a failed transfer while the caller is still
    there never hangs up everything or ends the conversation."""
    for name, (seat, table) in SCENARIOS.items():
        c = play(seat, table)
        for actions, caller_there in c.steps:
            if caller_there and facts(actions, P.TransferUpdate) and any(
                    f.step == TransferStep.FAILED for f in facts(actions, P.TransferUpdate)):
                assert not [a for a in actions if isinstance(a, HangupAll | Finish)], name
                assert not [a for a in actions if isinstance(a, HangupLeg) and a.leg != HOT], name


# -- the details of single steps ------------------------------------------------------------------


def test_answer_mode_caller_confirmed_emits_call_answered_and_starts_the_clock():
    c = Call().at(1.5)
    actions = run(c, confirmed(CALLER))
    assert facts(actions) == [P.LegAnswered("c1", "caller"), P.CallAnswered("c1")]
    assert c.conv.state == S.TALKING and c.conv.answered_at == T0 + 1.5


def test_three_way_dials_the_target_and_bridges_with_the_legs_named():
    c = answered()
    actions = run(c, transfer(target=HOTLINE))
    assert Dial(HOT, HOTLINE) in actions
    assert facts(actions) == [P.TransferUpdate("c1", TransferStep.STARTED, HOTLINE, "three-way")]
    run(c, confirmed(HOT))  # the hotline's 200
    actions = run(c, media(HOT))
    bridged, completed = facts(actions, P.TransferUpdate)
    assert bridged.step == TransferStep.BRIDGED and bridged.legs == ("caller", "hotline")
    assert completed.step == TransferStep.COMPLETED and completed.final and completed.target == HOTLINE
    assert actions[-1] == Bridge((CALLER, HOT))


def test_seat_answers_the_caller_only_when_the_operator_picks_up():
    c = Call(seat=True)
    assert not [a for a in run(c, confirmed(HOT)) if isinstance(a, AnswerCaller)]  # not any leg
    actions = run(c, confirmed(OPERATOR))
    assert AnswerCaller() in actions and c.conv.state == S.RINGING


@pytest.mark.parametrize("seat_status, to_caller", [(486, 486), (404, 404), (603, 603), (0, 480), (200, 480),
                                                   (302, 480)])
def test_seat_refusal_is_passed_to_the_caller_as_a_failure_status(seat_status, to_caller):
    c = Call(seat=True)
    actions = run(c, gone(OPERATOR, seat_status, "Busy Here"))
    (reject,) = [a for a in actions if isinstance(a, RejectCaller)]
    assert reject.status == to_caller and "operator seat: Busy Here" in reject.reason
    assert not [a for a in actions if isinstance(a, HangupAll | Finish)]


def test_a_busy_hotline_fails_with_its_status_and_keeps_the_caller():
    c = answered(seat=True)
    run(c, transfer())
    actions = run(c, gone(HOT, 486, "Busy Here"))
    (failed,) = facts(actions, P.TransferUpdate)
    assert failed.step == TransferStep.FAILED and failed.status == 486 and failed.reason == "Busy Here"
    assert failed.final and failed.target == HOTLINE
    assert c.conv.state == S.TALKING and c.conv.transfer is None
    assert c.conv.legs == {CALLER, OPERATOR}
    assert not [a for a in actions if isinstance(a, HangupAll | Finish | HangupLeg)]
    # and the operator can try again at once
    assert Dial(HOT, HOTLINE) in run(c, transfer())


def test_a_rejection_without_a_reason_still_says_rejected():
    c = answered()
    run(c, transfer())
    (failed,) = facts(run(c, gone(HOT, 480, "")), P.TransferUpdate)
    assert failed.reason == "rejected" and failed.status == 480


def test_no_answer_before_the_deadline_is_a_408_timeout_and_hangs_up_the_hotline():
    c = answered()
    run(c, tick(0.0))
    run(c, transfer(timeout=15.0))
    assert run(c, tick(15.0)) == []  # not yet: "past" the deadline
    actions = run(c, tick(15.1))
    (failed,) = facts(actions)
    assert (failed.step, failed.status, failed.reason) == (TransferStep.FAILED, 408, "no answer (timeout)")
    assert actions[-1] == HangupLeg(HOT)
    assert c.conv.state == S.TALKING
    assert run(c, tick(60.0)) == []  # reported once


def test_refer_progress_then_final():
    c = answered()
    assert Refer(HOTLINE) in run(c, transfer("refer"))
    actions = run(c, notify(202, "Accepted", False))
    (progress,) = facts(actions)
    assert progress.step == TransferStep.PROGRESS and progress.status == 202 and not progress.final
    assert len(actions) == 1
    actions = run(c, notify(200, "OK", True))
    assert [f.step for f in facts(actions)] == [TransferStep.PROGRESS, TransferStep.COMPLETED]
    assert HangupAll() in actions and c.conv.state == S.HANDED_OVER


def test_refer_declined_fails_with_the_notify_status():
    c = answered()
    run(c, transfer("refer"))
    failed = facts(run(c, notify(603, "Decline", True)))[-1]
    assert (failed.step, failed.status, failed.reason, failed.final) == (TransferStep.FAILED, 603, "Decline", True)
    assert c.conv.state == S.TALKING


def test_refer_status_without_a_refer_is_ignored():
    c = answered()
    assert run(c, notify(200, "OK", True)) == []
    run(c, transfer("three-way"))
    assert run(c, notify(200, "OK", True)) == []  # a three-way transfer does not listen to NOTIFYs
    assert c.conv.state == S.TRANSFERRING


def test_attended_consults_then_asks_for_replaces():
    c = answered()
    run(c, transfer("attended"))
    run(c, confirmed(HOT))  # the hotline's 200
    actions = run(c, media(HOT))
    assert [f.step for f in facts(actions)] == [TransferStep.CONSULTED]
    assert actions[-1] == ReferReplaces() and not [a for a in actions if isinstance(a, Bridge)]  # not bridged
    assert c.conv.state == S.CONSULTED


def test_the_caller_hanging_up_mid_transfer_fails_it_and_ends_the_call():
    c = answered()
    run(c, transfer())
    actions = run(c, gone(CALLER, 200, "Normal call clearing"))
    (failed,) = facts(actions, P.TransferUpdate)
    assert failed.step == TransferStep.FAILED and failed.reason == "caller hung up during the transfer"
    assert actions[-2:] == [HangupAll(), Finish(200, "Normal call clearing")]
    assert c.conv.state == S.ENDED


def test_no_free_leg_refuses_three_way_at_once_and_changes_nothing():
    c = answered()
    actions = run(c, transfer("three-way", free_legs=0))
    (failed,) = facts(actions)
    assert failed.step == TransferStep.FAILED and failed.status == 503 and "no free SIP leg" in failed.reason
    assert failed.final and len(actions) == 1
    assert c.conv.state == S.TALKING and c.conv.transfer is None
    assert facts(run(c, transfer("attended", free_legs=0)))[0].status == 503  # a consultation needs a leg too
    # a REFER needs no leg of ours
    actions = run(c, transfer("refer", free_legs=0))
    assert Refer(HOTLINE) in actions and c.conv.state == S.TRANSFERRING


@pytest.mark.parametrize("setup", ["ringing", "transferring", "ended"])
def test_a_transfer_outside_talking_fails_and_nothing_changes(setup):
    c = Call() if setup == "ringing" else answered()
    if setup == "transferring":
        run(c, transfer(target="sip:first@pbx"))
    if setup == "ended":
        run(c, gone(CALLER))
    state, plan, legs = c.conv.state, c.conv.transfer, set(c.conv.legs)
    actions = run(c, transfer(target=HOTLINE))
    (failed,) = facts(actions)
    assert failed.step == TransferStep.FAILED and f"call is {state.value}" in failed.reason
    assert len(actions) == 1
    assert (c.conv.state, c.conv.transfer, c.conv.legs) == (state, plan, legs)


@pytest.mark.parametrize("target, mode, why", [
    ("12345", "three-way", "sip: URI"),
    ("tel:12345", "refer", "sip: URI"),
    ("sips-not:x", "three-way", "sip: URI"),
    (HOTLINE, "blind", "unknown transfer mode"),
])
def test_a_bad_target_or_mode_fails_and_changes_nothing(target, mode, why):
    c = answered()
    actions = run(c, transfer(mode, target=target))
    (failed,) = facts(actions)
    assert failed.step == TransferStep.FAILED and why in failed.reason and len(actions) == 1
    assert c.conv.state == S.TALKING and c.conv.transfer is None


@pytest.mark.parametrize("setup", ["talking", "transferring", "handed-over"])
def test_release_operator_outside_a_three_way_is_an_error(setup):
    c = answered(seat=True)
    if setup != "talking":
        run(c, transfer())
    if setup == "handed-over":
        run(c, confirmed(HOT))  # the hotline's 200
        run(c, media(HOT))
        run(c, release())
    state = c.conv.state
    actions = run(c, release())
    (err,) = facts(actions)
    assert isinstance(err, P.WorkerError) and err.call_id == "c1" and "no three-way call" in err.message
    assert len(actions) == 1 and c.conv.state == state


def test_drop_operator_after_releases_on_the_first_tick_past_it():
    c = answered(seat=True)
    run(c, transfer(drop_after=3.0))
    c.at(10.0)
    run(c, confirmed(HOT))  # the hotline's 200
    run(c, media(HOT))
    assert run(c, tick(13.0)) == []
    actions = run(c, tick(13.2))
    assert actions[0] == HangupLeg(OPERATOR)
    assert facts(actions)[0].step == TransferStep.COMPLETED and c.conv.state == S.HANDED_OVER
    assert run(c, tick(14.0)) == []


# -- calls must not live for ever ------------------------------------------------------------------


def check(c: Call, at: float, rx: int | None, media_timeout: float = 10.0, max_duration: float = 0.0,
          held: bool = False, max_hold: float = 0.0):
    c.at(at)
    return c.carry_out(c.conv.media_check(c.now, rx, media_timeout, max_duration, held, max_hold))


def probed(status: int) -> Step:
    return lambda c: c.conv.probe_answered(status, c.now)


def test_no_media_ever_after_the_answer_times_out_naming_sdp():
    c = Call()
    run(c, tick(1.0))
    run(c, confirmed(CALLER))  # answered at 1 s, never a media_up
    assert check(c, 6.0, None) == []
    assert check(c, 11.0, None) == []
    actions = check(c, 11.5, None)
    (timeout,) = facts(actions)
    assert isinstance(timeout, P.MediaTimeout) and "SDP" in timeout.why and timeout.packets == 0
    assert actions[-1] == HangupAll()
    assert check(c, 12.5, None) == []  # once per period while the hang-up goes through


def test_flowing_rtp_keeps_the_call_and_silence_only_asks_whether_anybody_is_there():
    c = answered()
    for i in range(1, 30):  # 29 s of RTP flowing: never questioned
        assert check(c, float(i), 50 * i) == []
    assert check(c, 39.0, 50 * 29) == []  # frozen since 29 s: 10 s is not yet "more than"
    assert check(c, 39.5, 50 * 29) == [ProbeCaller()]  # silence is not a hang-up: an OPTIONS asks
    assert check(c, 40.5, 50 * 29) == []  # asked once
    c.at(40.6)
    (probe,) = facts(run(c, probed(200)))  # a phone that suppresses silence, a whisperer: answered
    assert isinstance(probe, P.MediaProbe) and probe.alive and probe.status == 200 and probe.silent_s == 11.6
    assert check(c, 50.0, 50 * 29) == []
    assert check(c, 50.7, 50 * 29) == [ProbeCaller()]  # another 10 s of silence: asked again
    assert c.conv.state == S.TALKING


def test_a_caller_that_answers_nothing_is_provably_dead_and_the_reason_is_recorded():
    c = answered()
    assert check(c, 5.0, 250) == []
    assert check(c, 15.5, 250) == [ProbeCaller()]
    assert check(c, 20.0, 250) == []  # 4.5 s: the answer may still come
    actions = check(c, 20.6, 250)  # 5.1 s without an answer to the OPTIONS
    probe, timeout = facts(actions)
    assert isinstance(probe, P.MediaProbe) and not probe.alive and probe.status == 0
    assert isinstance(timeout, P.MediaTimeout) and timeout.packets == 250
    assert "no RTP for 16 s and no answer to OPTIONS" in timeout.why
    assert actions[-1] == HangupAll()
    (finish,) = [a for a in run(c, gone(CALLER, 200, "Normal call clearing")) if isinstance(a, Finish)]
    assert finish.reason == "fenliu: " + timeout.why  # the record says why, not "Normal call clearing"


@pytest.mark.parametrize("status", [408, 481])
def test_an_options_answered_with_408_or_481_means_nobody_is_there(status):
    c = answered()
    assert check(c, 1.0, 0) == []
    assert check(c, 11.5, 0) == [ProbeCaller()]
    c.at(11.7)
    actions = run(c, probed(status))
    assert not facts(actions)[0].alive and f"OPTIONS answered {status}" in facts(actions)[1].why
    assert actions[-1] == HangupAll()


def test_a_caller_on_hold_is_never_timed_out_unless_the_centre_bounds_it():
    c = answered()
    assert check(c, 1.0, 50) == []
    (held,) = facts(check(c, 2.0, 50, held=True))  # a=inactive: RTP stops, as it should
    assert isinstance(held, P.LegHeld) and held.held
    for s in range(3, 600, 7):
        assert check(c, float(s), 50, held=True) == []  # ten minutes of silence on hold: nothing asked
    (unheld,) = facts(check(c, 600.0, 50))
    assert not unheld.held
    assert check(c, 609.0, 50) == []  # silence after the unhold counts from the unhold
    assert check(c, 610.5, 50) == [ProbeCaller()]


def test_max_hold_bounds_a_hold_when_a_centre_wants_it():
    c = answered()
    check(c, 1.0, 50, held=True)
    assert check(c, 60.0, 50, held=True, max_hold=120.0) == []
    actions = check(c, 121.5, 50, held=True, max_hold=120.0)
    (timeout,) = facts(actions)
    assert isinstance(timeout, P.MediaTimeout) and "sip.max_hold (120 s)" in timeout.why
    assert actions[-1] == HangupAll()


def test_a_late_probe_answer_after_the_call_ended_changes_nothing():
    c = answered()
    check(c, 1.0, 0)
    assert check(c, 11.5, 0) == [ProbeCaller()]
    run(c, gone(CALLER))
    assert run(c, probed(200)) == []


def test_a_call_older_than_max_duration_is_ended():
    c = answered()
    assert check(c, 100.0, 5000, max_duration=120.0) == []
    actions = check(c, 121.0, 5050, max_duration=120.0)
    (timeout,) = facts(actions)
    assert isinstance(timeout, P.MediaTimeout) and "sip.max_duration" in timeout.why
    assert timeout.seconds == 121.0 and timeout.packets == 5050
    assert actions[-1] == HangupAll()


def test_max_duration_is_reported_once_while_the_hang_up_goes_through():
    c = answered()
    assert facts(check(c, 121.0, 5050, max_duration=120.0))
    assert check(c, 122.0, 5100, max_duration=120.0) == []


def test_media_timeout_zero_disables_the_rtp_check():
    c = answered()
    assert check(c, 5.0, 10, media_timeout=0) == []
    assert check(c, 500.0, 10, media_timeout=0) == []


def test_ringing_calls_are_not_timed_out_by_the_media_check():
    c = Call(seat=True)
    assert check(c, 60.0, None) == []
    assert check(c, 600.0, None, max_duration=120.0) == []
    assert c.conv.state == S.RINGING


def test_operator_left_during_the_transfer_and_it_failed_the_seat_is_dialled_again():
    """Seat mode: the operator hung up while the hotline was ringing, then the hotline refused.
    The caller must not stay on a line with nobody on it: the seat is rung again."""
    c = answered(seat=True)
    run(c, transfer())
    assert not [a for a in run(c, gone(OPERATOR)) if isinstance(a, HangupAll | Finish)]
    actions = run(c, gone(HOT, 486, "Busy Here"))
    assert facts(actions, P.TransferUpdate)[0].step == TransferStep.FAILED
    assert Dial(OPERATOR, "") in actions and c.conv.state == S.TALKING


def test_a_failed_transfer_with_the_operator_still_there_does_not_ring_the_seat():
    c = answered(seat=True)
    run(c, transfer())
    assert not [a for a in run(c, gone(HOT, 486, "Busy Here")) if isinstance(a, Dial)]


def test_cancel_while_ringing_hangs_up_the_hotline_and_keeps_the_caller():
    c = answered(seat=True)
    run(c, transfer())
    actions = run(c, lambda c: c.conv.cancel_transfer())
    (failed,) = facts(actions, P.TransferUpdate)
    assert failed.step == TransferStep.FAILED and failed.status == 487 and "cancelled" in failed.reason
    assert "HangupLeg hotline" in [describe(a) for a in actions]
    assert c.conv.state == S.TALKING


@pytest.mark.parametrize("mode", ["refer", None])
def test_cancel_without_a_cancellable_transfer_is_an_error_and_changes_nothing(mode):
    c = answered(seat=True)
    if mode:
        run(c, transfer(mode))
    state = c.conv.state
    (err,) = facts(run(c, lambda c: c.conv.cancel_transfer()))
    assert isinstance(err, P.WorkerError) and ("REFER" in err.message or "no transfer" in err.message)
    assert c.conv.state == state


# -- the IVR: handing the caller to the operators' queue; a seat's refusal overflowing to the IVR --
QUEUE = "sip:acd@127.0.0.1:5090"


def to_queue(timeout: float = 30.0, free_legs: int = 2) -> Step:
    return lambda c: c.conv.to_queue(QUEUE, timeout, c.now, free_legs)


def test_queue_answers_and_the_call_becomes_an_ordinary_seat_call():
    c = answered()
    out = run(c, to_queue())
    assert [describe(a) for a in out] == ["queue_dialing", "Dial operator"]
    assert facts(run(c, transfer()), P.TransferUpdate)[0].step == TransferStep.FAILED  # not while it rings
    out = run(c, confirmed(OPERATOR))
    assert [describe(a) for a in out] == ["leg_answered", "queue_answered"]
    assert [describe(a) for a in run(c, media(OPERATOR))] == ["Bridge caller+operator"]
    # now a failed transfer gives the caller back to that operator, as for a seat call
    run(c, transfer())
    out = run(c, gone(HOT, 486, "Busy Here"))
    assert facts(out, P.TransferUpdate)[0].step == TransferStep.FAILED
    assert c.conv.state == S.TALKING and OPERATOR in c.conv.legs


def test_a_busy_or_silent_queue_leaves_the_caller_on_the_line():
    c = answered()
    run(c, to_queue(timeout=10))
    out = run(c, gone(OPERATOR, 486, "Busy Here"))
    f = facts(out, P.QueueUpdate)
    assert f[0].step == P.QueueStep.FAILED and f[0].status == 486
    assert not [a for a in out if isinstance(a, HangupAll | Finish)]  # the caller stays
    assert c.conv.state == S.TALKING
    run(c, to_queue(timeout=10))  # dialled again
    assert run(c, tick(c.now - T0 + 5)) == []
    out = run(c, tick(c.now - T0 + 6))  # past the deadline: cancel the ringing leg once
    assert [describe(a) for a in out] == ["HangupLeg operator"]
    assert run(c, tick(c.now - T0 + 1)) == []
    out = run(c, gone(OPERATOR, 487, "Request Terminated"))
    assert facts(out, P.QueueUpdate)[0].reason == "no answer (timeout)"
    assert CALLER in c.conv.legs and c.conv.state == S.TALKING


def test_queue_refusals_name_the_reason():
    c = answered()
    assert facts(run(c, to_queue(free_legs=0)), P.QueueUpdate)[0].reason.startswith("no free SIP leg")
    ringing = Call(seat=True)
    assert "ringing" in facts(run(ringing, to_queue()), P.QueueUpdate)[0].reason


def test_a_busy_seat_overflows_to_the_ivr_instead_of_rejecting_the_caller():
    c = Call(seat=True)
    c.conv.overflow = True
    out = run(c, gone(OPERATOR, 486, "Busy Here"))
    assert [describe(a) for a in out] == ["leg_ended", "overflowed", "AnswerCaller"]
    assert facts(out, P.Overflowed)[0].status == 486
    run(c, confirmed(CALLER))
    assert c.conv.state == S.TALKING and not c.conv.seat_mode  # the IVR, not the seat rule, decides next
    plain = Call(seat=True)
    assert [describe(a) for a in run(plain, gone(OPERATOR, 486, "Busy Here"))] == ["leg_ended", "RejectCaller 486"]


def test_a_seat_that_does_not_answer_in_time_overflows():
    c = Call(seat=True)
    c.conv.overflow, c.conv.seat_timeout = True, 15.0
    assert run(c, tick(10)) == []
    assert [describe(a) for a in run(c, tick(16))] == ["HangupLeg operator"]
    assert run(c, tick(17)) == []  # cancelled once
    out = run(c, gone(OPERATOR, 487, "Request Terminated"))
    assert facts(out, P.Overflowed)[0].reason == "no answer within 15 s"


# -- a seat list (sip.seats): fenliu rings the seats itself ---------------------------------------
SEATS = ("sip:s1@pbx", "sip:s2@pbx", "sip:s3@pbx")


def hunting(seat_ring: float = 10.0) -> tuple[Call, list[Action]]:
    c = Call()
    c.conv = Conversation("c1", 7, T0, seat_mode=True, seat_ring=seat_ring)
    return c, c.carry_out(c.conv.ring_seats(SEATS, T0))


def test_a_seat_list_rings_the_next_seat_when_one_is_busy_or_rings_too_long():
    c, first = hunting(seat_ring=10.0)
    assert first == [Dial(OPERATOR, "sip:s1@pbx")]
    after_busy = run(c, gone(OPERATOR, 486, "Busy Here"))  # s1 is busy: s2 rings, the caller still rings
    assert [describe(a) for a in after_busy] == ["leg_ended", "Dial operator"]
    assert after_busy[-1] == Dial(OPERATOR, "sip:s2@pbx") and c.conv.state == S.RINGING
    assert run(c, tick(5.0)) == []  # s2 rang at T0: within its 10 s
    assert [describe(a) for a in run(c, tick(10.5))] == ["HangupLeg operator"]  # too long: CANCEL it
    assert run(c, tick(11.0)) == []  # once
    assert run(c, gone(OPERATOR, 487, "Request Terminated"))[-1] == Dial(OPERATOR, "sip:s3@pbx")
    assert run(c, tick(30.0)) == []  # the last seat rings on (no other to try)
    out = run(c, gone(OPERATOR, 486, "Busy Here"))  # nobody took the caller: the PBX hears why
    assert [describe(a) for a in out] == ["leg_ended", "RejectCaller 486"]


def test_the_seat_that_answers_gets_the_caller_back_after_a_failed_transfer():
    c, _ = hunting()
    run(c, gone(OPERATOR, 486, "Busy Here"))
    out = run(c, confirmed(OPERATOR))  # s2 took it
    assert [describe(a) for a in out] == ["leg_answered", "AnswerCaller"]
    assert c.conv.operator_uri == "sip:s2@pbx" and c.conv.seats_left == []
    assert run(c, tick(100.0)) == []  # no seat hunting once a seat has the call


def test_a_seat_that_cannot_be_dialled_is_skipped():
    c, _ = hunting()
    assert run(c, lambda c: c.conv.dial_failed(OPERATOR, "bad address", c.now)) == [Dial(OPERATOR, "sip:s2@pbx")]
