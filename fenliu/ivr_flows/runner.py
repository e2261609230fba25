"""One caller's way through an IVR flow, as a pure state machine (no pjsua2, no asyncio).

The service feeds a ``FlowRun`` what happened on the call — a prompt finished or was stopped, a
key, the caller started or stopped speaking, a transcript, the router's decision, a transfer or
queue step, time passing — and carries out the actions it returns (play prompts, stop them,
transfer, hand to the operators' queue, text the caller, hang up). Every step is also returned
as an ``Step`` so the console and the store can show where the caller is.

Safety rules that hold whatever the flow file says:
- a danger signal heard at any moment of the call makes ``decide`` take its ``danger`` branch
  and marks any later hand-over to the queue urgent;
- a transfer happens only after the caller pressed the key for it (ROUTING.md: the IVR may
  transfer without an operator only on the caller's DTMF confirmation) — a ``transfer`` state
  with a fixed target is reached only through the caller's keys or the flow's author's choice;
- the caller is never dropped: a failed transfer goes to the state's ``failed`` branch, a queue
  that does not answer is dialled again while the hold prompt plays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fenliu.events import Decision
from fenliu.ivr_flows.flow import (
    NEVER_OFFERED,
    Branch,
    Collect,
    Decide,
    Flow,
    Hangup,
    Listen,
    Play,
    Queue,
    Sms,
    State,
    Transfer,
)

QUEUE_RETRY_S = 3.0  # a queue that did not answer is dialled again after this pause
HOLD_REPEAT_S = 4.0  # while a hotline or the queue rings, the hold prompt is said again after this pause


# -- actions -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlayPrompts:
    token: str
    prompts: tuple[str, ...]  # prompt names of the flow, played one after the other


@dataclass(frozen=True)
class StopPrompts:
    pass


@dataclass(frozen=True)
class TransferTo:
    target: str
    mode: str


@dataclass(frozen=True)
class CancelTransfer:
    """Stop a transfer whose hotline is still ringing (a danger signal was heard meanwhile)."""


@dataclass(frozen=True)
class QueueCall:
    uri: str  # "" = the configured operators' queue
    urgent: bool
    reason: str


@dataclass(frozen=True)
class SendSms:
    text: str
    state: str


@dataclass(frozen=True)
class HangUp:
    pass


@dataclass(frozen=True)
class Step:
    """Where the caller is now (for the console, the store and the log)."""

    state: str
    kind: str
    detail: str = ""
    urgent: bool = False
    outcome: str = ""  # set when the flow is over: transferred, queued, hung_up, caller_left


Act = PlayPrompts | StopPrompts | TransferTo | CancelTransfer | QueueCall | SendSms | HangUp | Step


@dataclass
class FlowRun:
    flow: Flow
    call_id: str
    targets: frozenset[str] = frozenset()  # target ids this call's site can transfer to
    state: str = ""
    entered: float = 0.0
    outcome: str = ""
    # the prompt in progress
    token: str = ""
    playing: bool = False
    _tokens: int = 0
    # keys
    digits: str = ""
    typed_ahead: str = ""  # keys pressed during a play's prompt, for the next collect
    waiting_until: float = 0.0  # collect: no key by then = no input / inter-digit end
    tries: int = 0
    offer: dict[str, str] = field(default_factory=dict)  # key -> target id
    choice: str = ""
    # what the caller said
    speaking: bool = False
    heard: bool = False  # speech since the listen state (or its barge-in) began
    finals: int = 0
    last_voice: float = 0.0
    transcript: list[str] = field(default_factory=list)
    decision: Decision | None = None
    danger: Decision | None = None  # the first decision with a danger signal, kept for good
    offers_paused: bool = False  # the centre stopped the IVR's offers: callers go to the operators (police branch)
    queue_retry_at: float = 0.0
    queued_urgent: bool = False
    hold_again_at: float = 0.0

    # -- the call ------------------------------------------------------------------------------
    def start(self, now: float) -> list[Act]:
        return self._enter(self.flow.start, now)

    @property
    def done(self) -> bool:
        return bool(self.outcome)

    def caller_gone(self) -> list[Act]:
        if self.done:
            return []
        self.outcome = "caller_left"
        urgent = self.queued_urgent or self.danger is not None
        return [Step(self.state, "end", "来电人挂机", urgent=urgent, outcome="caller_left")]

    # -- inputs --------------------------------------------------------------------------------
    def prompt_done(self, token: str, interrupted: bool, now: float) -> list[Act]:
        if self.done or token != self.token or not self.playing:
            return []
        self.playing = False
        st = self._st()
        if isinstance(st, Play):
            return self._enter(st.next, now)
        if isinstance(st, Collect):
            self.waiting_until = now + (st.inter_digit if self.digits else st.timeout)
            return []
        if isinstance(st, Transfer | Queue):  # still ringing: say it again after a pause, never leave silence
            self.hold_again_at = now + HOLD_REPEAT_S
            return []
        if isinstance(st, Hangup):
            self.outcome = "hung_up"
            return [Step(st.name, "hangup", outcome="hung_up"), HangUp()]
        return []

    def dtmf(self, digit: str, now: float) -> list[Act]:
        if self.done:
            return []
        st = self._st()
        out: list[Act] = []
        if isinstance(st, Play):
            if not (self.playing and st.barge_in):
                return []
            self.typed_ahead += digit
            return [StopPrompts(), Step(st.name, "barge_in", f"按键 {digit}"), *self._enter(st.next, now)]
        if not isinstance(st, Collect):
            return []
        if self.playing:
            if not st.barge_in:
                return []
            self.playing = False
            out += [StopPrompts(), Step(st.name, "barge_in", f"按键 {digit}")]
        return out + self._key(st, digit, now)

    def speech_started(self, now: float) -> list[Act]:
        self.speaking, self.last_voice = True, now
        if self.done:
            return []
        st = self._st()
        if isinstance(st, Listen):
            self.heard = True
        if isinstance(st, Play) and self.playing and st.barge_in:
            self.heard = True  # what the caller says now belongs to the next listen
            return [StopPrompts(), Step(st.name, "barge_in", "来电人开口说话"), *self._enter(st.next, now, keep_heard=True)]
        return []

    def speech_stopped(self, now: float) -> None:
        self.speaking, self.last_voice = False, now

    def transcript_final(self, text: str, now: float) -> None:
        if text:
            self.transcript.append(text)
            self.finals += 1
            self.last_voice = now
            if isinstance(self._st(), Listen):
                self.heard = True

    def transcript_partial(self, now: float) -> None:
        self.last_voice = now

    def decided(self, d: Decision, now: float) -> list[Act]:
        """The router's latest decision on everything said so far. A danger signal heard while
        the caller is still in a prompt, a menu, listening or waiting for a hotline to answer ends
        that at once (a ringing transfer is cancelled): the flow goes to its ``decide`` state's
        danger branch (the caller is not kept in a menu, nor sent to a hotline, in an emergency)."""
        self.decision = d
        if self.danger is not None or not is_danger(d):
            return []
        self.danger = d
        st = self._st() if self.state else None
        if self.done or not isinstance(st, Play | Collect | Listen | Transfer):
            return []
        decide = next((x for x in self.flow.states.values() if isinstance(x, Decide)), None)
        if decide is None:
            return []
        out: list[Act] = [StopPrompts()] if self.playing else []
        if isinstance(st, Transfer):  # the hotline still rings: it does not get an emergency
            out.append(CancelTransfer())
        self.playing = False
        return out + [Step(st.name, "danger", d.reason, urgent=True)] + self._enter(decide.danger, now)

    def transfer_update(self, step: str, reason: str, now: float) -> list[Act]:
        st = self._st()
        if self.done or not isinstance(st, Transfer):
            return []
        if step in ("bridged", "completed"):
            target = self._transfer_target(st)
            if st.next:
                return [Step(st.name, "transferred", target), *self._enter(st.next, now)]
            self.outcome = "transferred"
            return [StopPrompts(), Step(st.name, "transferred", target, outcome="transferred")]
        if step == "failed":
            return [StopPrompts(), Step(st.name, "transfer_failed", reason), *self._enter(st.failed, now)]
        return []

    def queue_update(self, step: str, reason: str, now: float) -> list[Act]:
        st = self._st()
        if self.done or not isinstance(st, Queue):
            return []
        if step == "answered":
            self.outcome = "queued"
            return [StopPrompts(), Step(st.name, "queued", "接警员已接听", urgent=self.queued_urgent,
                                        outcome="queued")]
        if step == "failed":
            # never drop the caller: keep the hold prompt going and dial the queue again
            self.queue_retry_at = now + QUEUE_RETRY_S
            out: list[Act] = [Step(st.name, "queue_failed", reason, urgent=self.queued_urgent)]
            if not self.playing:
                out += self._play(st.prompt)
            return out
        return []

    def tick(self, now: float) -> list[Act]:
        if self.done:
            return []
        st = self._st()
        if isinstance(st, Collect) and not self.playing and self.waiting_until and now >= self.waiting_until:
            self.waiting_until = 0.0
            if self.digits:
                return self._collected(st, now)
            return self._retry(st, "未按键", st.no_input, now)
        if isinstance(st, Listen) and not self.playing:
            spent = now - self.entered
            if self.heard and not self.speaking and self.finals and now - self.last_voice >= st.silence:
                return [Step(st.name, "heard", self._heard_text()), *self._enter(st.next, now)]
            if spent >= st.max_seconds:
                if self.heard:
                    return [Step(st.name, "heard", self._heard_text()), *self._enter(st.next, now)]
                return [Step(st.name, "no_input", "未听到来电内容"), *self._enter(st.no_input, now)]
            if not self.heard and spent >= st.no_input_seconds:
                return [Step(st.name, "no_input", "未听到来电内容"), *self._enter(st.no_input, now)]
        if isinstance(st, Transfer | Queue) and self.hold_again_at and now >= self.hold_again_at and not self.playing:
            self.hold_again_at = 0.0
            return self._play(st.prompt)
        if isinstance(st, Queue) and self.queue_retry_at and now >= self.queue_retry_at:
            self.queue_retry_at = 0.0
            return [QueueCall(st.uri, self.queued_urgent, self._queue_reason(st))]
        return []

    # -- states --------------------------------------------------------------------------------
    def _st(self) -> State:
        return self.flow.states[self.state]

    def _enter(self, name: str, now: float, keep_heard: bool = False) -> list[Act]:
        st = self.flow.states[name]
        self.state, self.entered = name, now
        self.playing, self.waiting_until, self.hold_again_at = False, 0.0, 0.0
        out: list[Act] = [Step(name, type(st).__name__.lower())]
        if isinstance(st, Play):
            return out + self._play(st.prompt)
        if isinstance(st, Collect):
            self.digits, self.tries = "", 0
            self.offer = self._offer(st) if st.offer else {}
            if self.offer:
                out = [Step(name, "offer", ", ".join(f"{k}={t}" for k, t in self.offer.items()))]
            ahead, self.typed_ahead = self.typed_ahead, ""
            for key in ahead:  # keys pressed during the previous prompt count here: no menu to say then
                out += self._key(st, key, now)
                if self.state != name or self.playing:  # chosen, or a retry prompt plays
                    return out
            if self.digits:  # part of a longer entry typed ahead: wait for the rest
                return out
            out += self._play(self._collect_prompts(st, retry=False))
            if not self.playing:
                self.waiting_until = now + st.timeout
            return out
        if isinstance(st, Listen):
            if not keep_heard:
                self.heard = self.speaking
            self.finals = 0 if not keep_heard else self.finals
            return out
        if isinstance(st, Decide):
            branch, why = self._branch_of_decision()
            return [Step(name, "decide", f"{branch}: {why}", urgent=branch in ("danger", "unsure"))] \
                + self._enter(getattr(st, branch), now)
        if isinstance(st, Branch):
            value = self._value_of(st.on)
            return out + self._enter(st.cases.get(value, st.default), now)
        if isinstance(st, Transfer):
            target = self._transfer_target(st)
            if not target:  # "choice" without a choice: cannot happen in a checked flow, but never guess
                return out + self._enter(st.failed, now)
            return out + self._play(st.prompt) + [TransferTo(target, st.mode)]
        if isinstance(st, Queue):
            self.queued_urgent = st.urgent or self.danger is not None
            return [Step(name, "queue", self._queue_reason(st), urgent=self.queued_urgent)] + self._play(st.prompt) \
                + [QueueCall(st.uri, self.queued_urgent, self._queue_reason(st))]
        if isinstance(st, Sms):
            return out + [SendSms(self._format(st.text), name)] + self._enter(st.next, now)
        if isinstance(st, Hangup):
            if st.prompt:
                return out + self._play(st.prompt)
            self.outcome = "hung_up"
            return out + [Step(name, "hangup", outcome="hung_up"), HangUp()]
        raise AssertionError(f"state kind {type(st).__name__}")  # a checked flow has no other

    def _play(self, prompts: tuple[str, ...]) -> list[Act]:
        if not prompts:
            return []
        self._tokens += 1
        self.token, self.playing = f"{self.call_id[:12]}#{self._tokens}", True
        return [PlayPrompts(self.token, tuple(prompts))]

    # -- collect -------------------------------------------------------------------------------
    def _collect_prompts(self, st: Collect, retry: bool) -> tuple[str, ...]:
        """The menu (offer fragments, then the state's prompt); a retry says ``retry_prompt`` first."""
        first = (st.retry_prompt,) if retry and st.retry_prompt else ()
        parts: list[str] = []
        if self.offer:
            keys = list(self.offer.items())
            parts = [self.flow.offer_fragment(st.name, keys[0][1])]
            parts += [self.flow.offer_fragment(st.name, t, k) for k, t in keys]
        return (*first, *parts, *st.prompt)

    def _key(self, st: Collect, digit: str, now: float) -> list[Act]:
        if digit == st.terminator and st.terminator:
            return self._collected(st, now) if self.digits else []
        self.digits += digit
        if len(self.digits) >= st.digits or self.digits in st.branches or self.digits in self.offer:
            return self._collected(st, now)
        self.waiting_until = now + st.inter_digit
        return []

    def _collected(self, st: Collect, now: float) -> list[Act]:
        got, self.digits = self.digits, ""
        self.waiting_until = 0.0
        if got in st.branches:
            return [Step(st.name, "key", got)] + self._enter(st.branches[got], now)
        if got in self.offer:
            self.choice = self.offer[got]
            return [Step(st.name, "key", f"{got} → {self.choice}")] + self._enter(st.offer_next, now)
        if st.next:
            self.choice = got
            return [Step(st.name, "key", got)] + self._enter(st.next, now)
        return self._retry(st, f"无效按键 {got}", st.invalid or st.no_input, now)

    def _retry(self, st: Collect, why: str, give_up: str, now: float) -> list[Act]:
        if self.tries < st.retries:
            self.tries += 1
            out: list[Act] = [Step(st.name, "retry", f"{why}（第 {self.tries}/{st.retries} 次重播）"),
                              *self._play(self._collect_prompts(st, retry=True))]
            if not self.playing:  # a menu with nothing to say: the wait starts now
                self.waiting_until = now + st.timeout
            return out
        return [Step(st.name, "give_up", why)] + self._enter(give_up, now)

    def _offer(self, st: Collect) -> dict[str, str]:
        """Keys 1, 2, 3 (skipping the state's own branch keys) for the decision's hotline and its
        alternatives — only hotlines this call's site can reach."""
        d = self.decision
        if d is None or self.danger is not None:
            return {}
        wanted = [d.target] if d.target != "police" else []
        wanted += [a.target for a in d.alternatives]
        keys = st.offer_keys()  # the keys the flow made the offer's fragments for
        ok = [t for t in dict.fromkeys(wanted) if t not in NEVER_OFFERED and (not self.targets or t in self.targets)]
        return dict(zip(keys, ok[:len(keys)], strict=False))

    # -- decisions -----------------------------------------------------------------------------
    def _branch_of_decision(self) -> tuple[str, str]:
        d = self.decision
        if self.danger is not None:
            return "danger", self.danger.reason or "danger signal"
        if d is None:
            return "unsure", "没有听清来电内容 / nothing usable was heard"
        if self.offers_paused:  # a duty supervisor's centre-wide switch: an operator decides every call
            return "police", "中心已暂停语音分流，转人工 / the centre has paused the IVR's offers"
        if d.vetoed_by:  # flow-back and the like: a police matter without danger words
            return "police", d.reason
        if d.target == "police" and d.alternatives:
            return "divert", d.reason
        if d.target == "police":
            return "unsure", d.reason or "no category matched"
        if d.matched and all(m.kind == "model" for m in d.matched):
            return "unsure", f"只有模型建议，没有规则证据：{d.reason}"  # in doubt, an operator decides
        return "divert", d.reason

    def _value_of(self, on: str) -> str:
        d = self.decision
        if on == "digits":
            return self.choice
        if on == "target":
            return d.target if d else "police"
        if on == "category":
            return (d.category_id or d.category) if d else ""
        if on == "urgent":
            return "true" if self.danger is not None else "false"
        return ""

    def _transfer_target(self, st: Transfer) -> str:
        return self.choice if st.target == "choice" else st.target

    def _queue_reason(self, st: Queue) -> str:
        if st.reason:
            return st.reason
        if self.danger is not None:
            return f"IVR：危险信号，紧急转人工（{self.danger.reason}）"
        d = self.decision
        return f"IVR 转人工：{d.reason}" if d is not None else "IVR 转人工：未识别到来电内容"

    def _heard_text(self) -> str:
        return "".join(self.transcript)[-200:]

    def _format(self, text: str) -> str:
        d = self.decision
        t = self.choice or (d.target if d else "")
        values: dict[str, Any] = {"hotline": t, "name": self.flow.names.get(t, t),
                                  "category": d.category if d else ""}
        return text.format(**values)


def is_danger(d: Decision) -> bool:
    """A decision that carries a danger signal (the router's veto words, or its model's police
    suspicion), as opposed to a flow-back veto, which keeps the call but is no emergency."""
    if d.urgent:
        return True
    return any(m.kind != "history" for m in d.vetoed_by)
