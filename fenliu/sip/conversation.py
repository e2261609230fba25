"""One 110 conversation as a pure state machine (no pjsua2): the caller's leg, the operator
seat's leg (B2BUA mode) and, during a transfer, the hotline's leg.

The SIP worker feeds it what happened on the wire (a leg answered, its audio came up, it
ended, a REFER NOTIFY arrived, time passed, the operator pressed a key) and carries out the
actions it returns (answer, dial, refer, bridge, hang up, report a fact). Every rule about
what a hang-up or a failure means for the caller lives here, and is unit-tested like the VAD.

The one rule above the others: **the caller is never dropped by a failed transfer** — the
conversation goes back to caller + operator and the failure says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fenliu.sip.protocol import (
    CallAnswered,
    ConversationState,
    Fact,
    Leg,
    LegAnswered,
    LegEnded,
    LegHeld,
    MediaProbe,
    MediaTimeout,
    Overflowed,
    QueueStep,
    QueueUpdate,
    TransferMode,
    TransferStep,
    TransferUpdate,
    WorkerError,
)

S = ConversationState
PROBE_TIMEOUT_S = 5.0  # a UA that is there answers an OPTIONS in milliseconds; UDP resends it 3 times by then


# -- actions the worker carries out ------------------------------------------------------------
@dataclass(frozen=True)
class Emit:
    fact: Fact


@dataclass(frozen=True)
class AnswerCaller:
    pass


@dataclass(frozen=True)
class RejectCaller:
    status: int
    reason: str


@dataclass(frozen=True)
class Dial:
    leg: Leg
    uri: str


@dataclass(frozen=True)
class Refer:
    uri: str


@dataclass(frozen=True)
class ReferReplaces:
    """Attended: ask the caller's side to replace our hotline leg with its own call."""


@dataclass(frozen=True)
class Bridge:
    legs: tuple[Leg, ...]


@dataclass(frozen=True)
class HangupLeg:
    leg: Leg


@dataclass(frozen=True)
class HangupAll:
    pass


@dataclass(frozen=True)
class ProbeCaller:
    """Send an in-dialog OPTIONS to the caller's side (is anybody there?); the answer comes back
    as ``probe_answered``."""


@dataclass(frozen=True)
class Finish:
    """The caller's leg is gone: the conversation is over (the worker reports CallEnded)."""

    status: int
    reason: str


Action = (Emit | AnswerCaller | RejectCaller | Dial | Refer | ReferReplaces | Bridge | HangupLeg | HangupAll | Finish
          | ProbeCaller)


@dataclass
class TransferPlan:
    target: str
    mode: TransferMode
    deadline: float  # no answer / no final NOTIFY by then: give up, keep the caller
    drop_operator_after: float = 0.0  # three-way: the operator leaves automatically (0 = on command)
    bridged_at: float = 0.0
    min_talk: float = 0.0  # a hotline that hangs up sooner after answering has not taken the caller
    early_media: bool = False  # the hotline sent 183 with SDP (ringback, an announcement) before answering


@dataclass
class QueuePlan:
    """The IVR is handing the caller to the operators' queue: its leg rings."""

    uri: str
    deadline: float
    timed_out: bool = False


@dataclass
class Conversation:
    call_id: str
    slot: int
    started: float  # monotonic
    seat_mode: bool = False
    state: ConversationState = S.RINGING
    legs: set[Leg] = field(default_factory=lambda: {Leg.CALLER})
    media: set[Leg] = field(default_factory=set)
    answered_at: float = 0.0  # monotonic, when the caller's leg was confirmed
    transfer: TransferPlan | None = None
    rx_packets: int = -1
    rx_changed: float = 0.0
    overflow: bool = False  # seat mode: a seat that turns the caller away hands it to the IVR instead
    seat_timeout: float = 0.0  # … or that does not answer within this many seconds
    queue: QueuePlan | None = None
    operator_uri: str = ""  # where a failed transfer re-dials the operator ("" = the configured seat)
    # a seat list (sip.seats): the seat ringing now, since when, and the seats still to try after it
    seat_now: str = ""
    seat_rung_at: float = 0.0
    seats_left: list[str] = field(default_factory=list)
    seat_ring: float = 0.0  # each seat rings this long before the next (0: until it answers or refuses)
    seat_skipped: bool = False  # the ringing seat's leg was cancelled to try the next
    overflowed: bool = False
    seat_cancelled: bool = False  # the seat did not answer within seat_timeout: its leg was cancelled
    confirmed: set[Leg] = field(default_factory=set)  # legs whose dialog is confirmed (a 200, not a 183)
    held_since: float = 0.0  # the caller's leg is on hold (sendonly/inactive) since then; 0 = not held
    probe_sent: float = 0.0  # an OPTIONS asks whether the silent caller is there (sent then; 0 = none out)
    end_reason: str = ""  # why fenliu itself ended the call (recorded instead of the BYE's "Normal call clearing")

    # -- the wire ---------------------------------------------------------------------------
    def dialled(self, leg: Leg) -> None:
        self.legs.add(leg)

    def ring_seats(self, seats: tuple[str, ...], now: float) -> list[Action]:
        """Seat mode: ring the first seat; the others in turn when it refuses or rings too long."""
        self.seats_left = list(seats[1:])
        return self._ring(seats[0], now)

    def _ring(self, uri: str, now: float) -> list[Action]:
        self.seat_now, self.seat_rung_at, self.seat_skipped = uri, now, False
        return [Dial(Leg.OPERATOR, uri)]

    def _next_seat(self, now: float) -> list[Action] | None:
        """The seat did not take the caller: ring the next one, if any is left (None: none)."""
        if self.state != S.RINGING or Leg.CALLER not in self.legs or not self.seats_left or self.seat_cancelled:
            return None
        return self._ring(self.seats_left.pop(0), now)

    def leg_confirmed(self, leg: Leg, now: float) -> list[Action]:
        self.confirmed.add(leg)
        out: list[Action] = [Emit(LegAnswered(self.call_id, leg.label))]
        if leg == Leg.HOTLINE and leg in self.media and self.state == S.TRANSFERRING:
            return out + self._hotline_answered(now)  # its audio came up before the 200 (early media)
        if leg == Leg.CALLER and self.state == S.RINGING:
            self.state = S.TALKING
            self.answered_at = now
            self.rx_changed = now
            out.append(Emit(CallAnswered(self.call_id)))
        elif leg == Leg.OPERATOR and self.state == S.RINGING and Leg.CALLER in self.legs:
            if self.seat_now:  # the seat that took the caller is the one a failed transfer returns it to
                self.operator_uri, self.seats_left = self.seat_now, []
            out.append(AnswerCaller())
        elif leg == Leg.OPERATOR and self.queue is not None:
            q, self.queue = self.queue, None
            self.seat_mode, self.operator_uri = True, q.uri  # from now on an ordinary seat call
            out.append(Emit(QueueUpdate(self.call_id, QueueStep.ANSWERED, q.uri)))
        return out

    def media_up(self, leg: Leg, now: float, early: bool = False) -> list[Action]:
        """A leg's audio is up (or moved). ``early``: it came with a provisional response — a 183
        with SDP brings ringback or an announcement while the hotline still rings, and a 486 may
        follow — so it is no answer and nothing is bridged. Audio that came with the 200 (pjsua
        reports it just before the dialog is confirmed) is the answer."""
        self.media.add(leg)
        if not early:
            self.confirmed.add(leg)
        t = self.transfer
        if leg == Leg.HOTLINE and t is not None and self.state == S.TRANSFERRING:
            if Leg.HOTLINE not in self.confirmed:
                if t.early_media:
                    return []
                t.early_media = True
                return [Emit(TransferUpdate(self.call_id, TransferStep.PROGRESS, t.target, t.mode, 183,
                                            "early media: the hotline is ringing or playing an announcement"))]
            return self._hotline_answered(now)
        return [Bridge(tuple(sorted(self.media - self._unbridged())))]

    def _unbridged(self) -> set[Leg]:
        """A hotline still ringing (early media) is not bridged to the caller."""
        return {Leg.HOTLINE} if self.state == S.TRANSFERRING and Leg.HOTLINE not in self.confirmed else set()

    def _hotline_answered(self, now: float) -> list[Action]:
        t = self.transfer
        assert t is not None
        if t.mode == TransferMode.ATTENDED:
            self.state = S.CONSULTED
            return [Emit(TransferUpdate(self.call_id, TransferStep.CONSULTED, t.target, t.mode)), ReferReplaces()]
        self.state = S.THREE_WAY
        t.bridged_at = now
        out: list[Action] = [Emit(TransferUpdate(self.call_id, TransferStep.BRIDGED, t.target, t.mode,
                                                 legs=tuple(x.label for x in sorted(self.media))))]
        if Leg.OPERATOR not in self.legs:  # no seat leg (answer mode): the handover is done
            out += self._handed_over()
        return out + [Bridge(tuple(sorted(self.media)))]

    def leg_gone(self, leg: Leg, status: int, reason: str, now: float = 0.0) -> list[Action]:
        self.legs.discard(leg)
        self.media.discard(leg)
        self.confirmed.discard(leg)
        out: list[Action] = [Emit(LegEnded(self.call_id, leg.label, status, reason))]
        st = self.state
        if leg == Leg.CALLER:
            if self.transfer is not None and st in (S.TRANSFERRING, S.THREE_WAY, S.CONSULTED):
                out += self._failed(0, "caller hung up during the transfer")
            self.state = S.ENDED
            return out + [HangupAll(), Finish(status, self.end_reason or reason)]
        if leg == Leg.OPERATOR:
            if self.queue is not None:  # the queue did not take the caller: the IVR keeps it
                q, self.queue = self.queue, None
                why = "no answer (timeout)" if q.timed_out else (reason or "rejected")
                out.append(Emit(QueueUpdate(self.call_id, QueueStep.FAILED, q.uri, status, why)))
            elif (nxt := self._next_seat(now)) is not None:  # a seat list: the next seat rings
                out += nxt
            elif st == S.RINGING and self.overflow and Leg.CALLER in self.legs:
                # the seat is busy or did not answer: the IVR front desk takes the caller (and the
                # IVR, not the seat rule, decides who gets it after a failed transfer)
                self.overflowed, self.seat_mode = True, False
                why = f"no answer within {self.seat_timeout:.0f} s" if self.seat_cancelled else (reason or "no answer")
                out += [Emit(Overflowed(self.call_id, status, why)), AnswerCaller()]
            elif st == S.RINGING:  # the seat did not take it: tell the PBX why, so it can re-route
                out.append(RejectCaller(status if 400 <= status < 700 else 480, f"operator seat: {reason}"))
            elif st == S.THREE_WAY:
                out += self._handed_over()
            elif st == S.HANDED_OVER:
                pass  # expected: the operator left, caller and hotline talk on
            elif Leg.HOTLINE not in self.legs:
                out.append(HangupAll())  # operator hung up on an ordinary call: end it
            return out
        # the hotline's leg
        t = self.transfer
        if st == S.TRANSFERRING:
            early = " after early media (183)" if t is not None and t.early_media else ""
            out += self._failed(status, (reason or "rejected") + early)
        elif st == S.THREE_WAY:
            out += self._failed(status, "hotline hung up before the operator left")
        elif st == S.HANDED_OVER and t is not None and t.bridged_at and now - t.bridged_at < t.min_talk:
            # answered and gone at once (an ACD that drops, a wrong number): nobody took the caller
            out += self._failed(status, f"hotline hung up {now - t.bridged_at:.1f} s after answering "
                                        f"(less than transfer.min_talk {t.min_talk:g} s): the caller stays")
        elif st == S.HANDED_OVER:
            out.append(HangupAll())  # the hotline finished with the caller
        # CONSULTED: replaced by the caller's own call to the hotline; the NOTIFY reports it
        return out

    def refer_status(self, status: int, reason: str, final: bool) -> list[Action]:
        t = self.transfer
        if t is None or t.mode not in (TransferMode.REFER, TransferMode.ATTENDED):
            return []
        out: list[Action] = [Emit(TransferUpdate(self.call_id, TransferStep.PROGRESS, t.target, t.mode, status,
                                                 reason, final))]
        if not final:
            return out
        if 200 <= status < 300:
            return out + self._handed_over() + [HangupAll()]  # pjsua2 does not hang up the transferring leg
        return out + self._failed(status, reason or "REFER failed")

    # -- the operator's keys -------------------------------------------------------------------
    def start_transfer(self, target: str, mode: str, timeout: float, drop_after: float, now: float,
                       free_legs: int, min_talk: float = 0.0) -> list[Action]:
        def refuse(status: int, why: str) -> list[Action]:
            return [Emit(TransferUpdate(self.call_id, TransferStep.FAILED, target, str(mode), status, why, True))]

        if self.state != S.TALKING:
            return refuse(0, f"call is {self.state.value}, not talking: nothing changed")
        if self.queue is not None:
            return refuse(0, "the call is being handed to the operators' queue: nothing changed")
        if not target.startswith("sip:"):
            return refuse(0, "target must be a sip: URI")
        try:
            m = TransferMode(mode)
        except ValueError:
            return refuse(0, f"unknown transfer mode {mode!r}: use three-way, refer or attended")
        if m != TransferMode.REFER and free_legs < 1:
            return refuse(503, "no free SIP leg on this worker for the hotline (all 4 in use); "
                               "the caller stays with the operator — try refer, or reserve transfer legs")
        self.transfer = TransferPlan(target, m, now + timeout, drop_after, min_talk=min_talk)
        self.state = S.TRANSFERRING
        out: list[Action] = [Emit(TransferUpdate(self.call_id, TransferStep.STARTED, target, m))]
        if m == TransferMode.REFER:
            return out + [Refer(target)]
        return out + [Dial(Leg.HOTLINE, target)]  # attended: a consultation leg first

    def dial_failed(self, leg: Leg, message: str, now: float = 0.0) -> list[Action]:
        """The leg could not even be placed (pjsua refused makeCall)."""
        self.legs.discard(leg)
        if leg == Leg.OPERATOR and self.queue is None and (nxt := self._next_seat(now)) is not None:
            return nxt
        if leg == Leg.HOTLINE:
            return self._failed(503, f"cannot dial the hotline: {message}")
        if leg == Leg.OPERATOR and self.queue is not None:
            q, self.queue = self.queue, None
            return [Emit(QueueUpdate(self.call_id, QueueStep.FAILED, q.uri, 503, f"cannot dial the queue: {message}"))]
        if leg == Leg.OPERATOR and self.state == S.RINGING and self.overflow:
            self.overflowed, self.seat_mode = True, False
            return [Emit(Overflowed(self.call_id, 503, f"operator seat cannot be dialled: {message}")), AnswerCaller()]
        if leg == Leg.OPERATOR and self.state == S.RINGING:
            return [RejectCaller(503, f"operator seat cannot be dialled: {message}")]
        return []

    def release_operator(self) -> list[Action]:
        if self.state != S.THREE_WAY:
            return [Emit(WorkerError(f"no three-way call to leave (state {self.state.value})", self.call_id))]
        out: list[Action] = [HangupLeg(Leg.OPERATOR)] if Leg.OPERATOR in self.legs else []
        return out + self._handed_over()

    def cancel_transfer(self) -> list[Action]:
        """The operator stops a transfer before the hotline is bridged. A REFER cannot be taken
        back once the caller's side accepted it; a dialled hotline leg can."""
        t = self.transfer
        if t is None or self.state not in (S.TRANSFERRING, S.CONSULTED):
            return [Emit(WorkerError(f"no transfer to cancel (state {self.state.value})", self.call_id))]
        if t.mode == TransferMode.REFER:
            return [Emit(WorkerError("a REFER cannot be cancelled once sent; wait for its outcome", self.call_id))]
        return self._failed(487, "cancelled by the operator")

    def to_queue(self, uri: str, timeout: float, now: float, free_legs: int) -> list[Action]:
        """The IVR hands the caller to the operators' queue: dial it as the operator leg; the
        bridge follows when it answers (``media_up``). A queue that is busy or does not answer
        leaves the caller on the line with the IVR (``QueueUpdate`` failed says why)."""
        def refuse(why: str) -> list[Action]:
            return [Emit(QueueUpdate(self.call_id, QueueStep.FAILED, uri, 0, why))]

        if self.state != S.TALKING:
            return refuse(f"call is {self.state.value}, not talking")
        if Leg.OPERATOR in self.legs or self.queue is not None:
            return refuse("an operator leg is already there")
        if self.transfer is not None:
            return refuse("a transfer is in progress")
        if not uri.startswith("sip:"):
            return refuse("the queue must be a sip: URI (ivr.queue_uri)")
        if free_legs < 1:
            return refuse("no free SIP leg on this worker for the queue")
        self.queue = QueuePlan(uri, now + timeout)
        return [Emit(QueueUpdate(self.call_id, QueueStep.DIALING, uri)), Dial(Leg.OPERATOR, uri)]

    # -- time ---------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Action]:
        q = self.queue
        if q is not None and not q.timed_out and now > q.deadline:
            q.timed_out = True
            return [HangupLeg(Leg.OPERATOR)]  # CANCEL; leg_gone reports the failure
        if (self.state == S.RINGING and self.overflow and self.seat_timeout and Leg.OPERATOR in self.legs
                and now > self.started + self.seat_timeout and not self.seat_cancelled):
            self.seat_cancelled = True
            return [HangupLeg(Leg.OPERATOR)]  # CANCEL; leg_gone overflows the caller to the IVR
        if (self.state == S.RINGING and self.seat_ring and self.seats_left and Leg.OPERATOR in self.legs
                and now > self.seat_rung_at + self.seat_ring and not self.seat_skipped):
            self.seat_skipped = True
            return [HangupLeg(Leg.OPERATOR)]  # CANCEL; leg_gone rings the next seat
        t = self.transfer
        if t is None:
            return []
        if self.state in (S.TRANSFERRING, S.CONSULTED) and now > t.deadline:
            why = "no answer (timeout)" if t.mode == TransferMode.THREE_WAY else "no final NOTIFY (timeout)"
            return self._failed(408, why)
        if self.state == S.THREE_WAY and t.drop_operator_after and now > t.bridged_at + t.drop_operator_after:
            return self.release_operator()
        return []

    def media_check(self, now: float, rx_packets: int | None, media_timeout: float,
                    max_duration: float, held: bool = False, max_hold: float = 0.0) -> list[Action]:
        """Whether the call is provably dead (ARCHITECTURE.md, "When fenliu may end a call"). A
        caller who whispers, hides, is put on hold or goes quiet is still there: silence alone
        never ends a call. When the caller's RTP has stopped for ``media_timeout`` s and the leg
        is not on hold, an in-dialog OPTIONS asks (``ProbeCaller``); an answer keeps the call and
        the question is asked again after another ``media_timeout`` of silence; no answer within
        ``PROBE_TIMEOUT_S`` (or 408/481) means nobody is there, and only then is the call ended.
        Bounds a centre may set: ``max_duration``, and ``max_hold`` for a leg on hold (0 = none).
        ``rx_packets`` is None while the caller has no media."""
        if self.state in (S.RINGING, S.ENDED):
            return []
        if max_duration and now - self.started > max_duration:
            seconds = round(now - self.started, 1)
            self.started = now  # report once per period while the hang-up goes through
            return self._end(MediaTimeout(self.call_id, seconds, max(rx_packets or 0, 0),
                                          why=f"longer than sip.max_duration ({max_duration:.0f} s)"))
        out: list[Action] = []
        if held != bool(self.held_since):
            self.held_since = now if held else 0.0
            self.rx_changed, self.probe_sent = now, 0.0  # silence after an unhold counts from the unhold
            out.append(Emit(LegHeld(self.call_id, Leg.CALLER.label, held)))
        if held:
            self.rx_changed, self.probe_sent = now, 0.0  # silence on hold is expected
            if max_hold and now - self.held_since > max_hold:
                seconds = round(now - self.held_since, 1)
                self.held_since = now
                return out + self._end(MediaTimeout(self.call_id, seconds, max(rx_packets or 0, 0),
                                                    why=f"on hold longer than sip.max_hold ({max_hold:.0f} s)"))
            return out
        if not media_timeout:
            return out
        if rx_packets is None:
            if Leg.CALLER not in self.media and now - self.answered_at > media_timeout:
                self.answered_at = now  # report once per period while the hang-up goes through
                return out + self._end(MediaTimeout(self.call_id, round(media_timeout, 1), 0,
                                                    why="no audio stream was ever negotiated (no SDP)"))
            return out
        if rx_packets != self.rx_packets:
            self.rx_packets, self.rx_changed, self.probe_sent = rx_packets, now, 0.0
            return out
        silent = now - self.rx_changed
        if self.probe_sent and now - self.probe_sent > PROBE_TIMEOUT_S:
            return out + self.probe_answered(0, now)
        if silent > media_timeout and not self.probe_sent:
            self.probe_sent = now
            return out + [ProbeCaller()]
        return out

    def probe_answered(self, status: int, now: float) -> list[Action]:
        """The caller's side answered the OPTIONS (any final answer but 408/481: a UA is there),
        or did not (``status`` 0: no answer in time)."""
        if not self.probe_sent or self.state == S.ENDED:
            return []
        silent = round(now - self.rx_changed, 1)
        self.probe_sent = 0.0
        alive = status >= 200 and status not in (408, 481)
        probe = Emit(MediaProbe(self.call_id, silent, status, alive))
        if alive:
            self.rx_changed = now  # ask again after another media_timeout of silence
            return [probe]
        answer = f"OPTIONS answered {status}" if status else "no answer to OPTIONS"
        return [probe, *self._end(MediaTimeout(self.call_id, silent, max(self.rx_packets, 0),
                                               why=f"no RTP for {silent:.0f} s and {answer}: nobody is on the line"))]

    def _end(self, timeout: MediaTimeout) -> list[Action]:
        """fenliu ends the call itself: say why, and record that reason as the call's end."""
        self.end_reason = f"fenliu: {timeout.why}"
        return [Emit(timeout), HangupAll()]

    # -- internals ----------------------------------------------------------------------------
    def _handed_over(self) -> list[Action]:
        self.state = S.HANDED_OVER
        t = self.transfer
        return [Emit(TransferUpdate(self.call_id, TransferStep.COMPLETED, t.target if t else "",
                                    t.mode if t else "", final=True))]

    def _failed(self, status: int, reason: str) -> list[Action]:
        """Back to caller + operator, and say why (the caller is never dropped)."""
        t = self.transfer
        if t is None:
            return []  # already reported
        self.transfer = None
        self.media.discard(Leg.HOTLINE)
        self.confirmed.discard(Leg.HOTLINE)
        if self.state != S.ENDED and Leg.CALLER in self.legs:
            self.state = S.TALKING
        out: list[Action] = [Emit(TransferUpdate(self.call_id, TransferStep.FAILED, t.target, t.mode, status,
                                                 reason, True))]
        if Leg.HOTLINE in self.legs:
            out.append(HangupLeg(Leg.HOTLINE))
        if self.seat_mode and self.state == S.TALKING and Leg.OPERATOR not in self.legs:
            # the operator had already left: the caller must not stay on a line with nobody on it
            out.append(Dial(Leg.OPERATOR, self.operator_uri))  # "" = the configured seat
        return out
