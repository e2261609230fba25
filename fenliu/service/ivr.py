"""The IVR front desk in the service: runs a flow (``fenliu.ivr_flows``) on the calls that need it.

A bus subscriber on the supervisor's loop. It starts a ``FlowRun`` when a call needs the voice
front — the operator seat turned the caller away (``Overflowed``), the call came in on one of
``ivr.numbers``, or ``ivr.when = "always"`` — as soon as the caller's audio is up; feeds the run
the call's facts (prompts, keys, transfer and queue steps) and its chain events (speech,
transcripts, the router's decisions); and carries out what the run asks through the supervisor
(play, stop, transfer, hand to the queue, hang up) and the store (the flow's SMS). Every step is
published as ``IvrStep`` for the console, the store and the log.

The flow and every prompt are loaded and checked when the service starts (``IvrDesk.load``): a
bad flow or a missing prompt stops the start with file:line, never a live call.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fenliu.bus import CallEvent, EventBus, Item, WorkerFact
from fenliu.errors import ConfigError
from fenliu.events import Decision, FinalTranscript, PartialTranscript, SpeechStarted, SpeechStopped
from fenliu.hotlines.linkage import uri_user
from fenliu.ivr_flows.flow import DEFAULT_FLOW, Flow, load_flow
from fenliu.ivr_flows.prompts import PromptCache, PromptSource
from fenliu.ivr_flows.runner import (
    Act,
    CancelTransfer,
    FlowRun,
    HangUp,
    PlayPrompts,
    QueueCall,
    SendSms,
    Step,
    StopPrompts,
    TransferTo,
)
from fenliu.service.supervisor import Supervisor
from fenliu.settings import Settings, target_label
from fenliu.sip import protocol as P
from fenliu.store.record import Store

log = logging.getLogger("fenliu.ivr")

TICK_S = 0.1


def flow_path(name_or_path: str) -> Path:
    """``front_desk`` (a flow shipped with fenliu, beside ``DEFAULT_FLOW``) or a path to a flow file."""
    if "/" not in name_or_path and not name_or_path.endswith(".toml"):
        shipped = DEFAULT_FLOW.with_name(f"{name_or_path}.toml")
        if not shipped.is_file():
            raise ConfigError(f"配置错误 / ivr.flow = {name_or_path!r}: no flow of that name ships with fenliu "
                              f"(shipped: {DEFAULT_FLOW.stem}); give a path to a flow file")
        return shipped
    return Path(name_or_path)


def all_targets(settings: Settings) -> dict[str, str]:
    """Every target id a call can be transferred to, on any site, with the name said for it
    ([transfer.names], "12345政务服务便民热线"; a flow's own [names] may override it)."""
    ids = set(settings.transfer.targets)
    for site in settings.sites.values():
        ids |= set(site.targets)
    return {tid: "".join(target_label(settings.transfer, tid)) for tid in sorted(ids)}


@dataclass
class LoadedFlow:
    flow: Flow
    prompts: dict[str, Path]  # prompt name -> bridge-format WAV
    cache: PromptCache


def load(settings: Settings, path: str | None = None) -> LoadedFlow:
    """Load and check the flow, and make every prompt (errors name the file and line)."""
    p = flow_path(path or settings.ivr.flow)
    flow = load_flow(p, all_targets(settings))
    cache = PromptCache(settings.ivr.cache_dir, voice=flow.voice)
    sources = [PromptSource(pr.name, pr.text, pr.wav, pr.line, str(flow.path)) for pr in flow.prompts.values()]
    return LoadedFlow(flow, cache.build_all(sources), cache)


@dataclass
class CallInfo:
    call_id: str
    called: str
    why: str = ""  # why the flow runs on this call ("" = it does not)
    run: FlowRun | None = None


class IvrDesk:
    def __init__(self, settings: Settings, supervisor: Any, loaded: LoadedFlow,
                 publish: Callable[[P.Fact], None], store: Any = None) -> None:
        self.settings = settings
        self.sup = supervisor
        self.flow = loaded.flow
        self.prompts = loaded.prompts
        self.cache = loaded.cache
        self.publish = publish
        self.store = store
        self.numbers = {x.strip() for x in settings.ivr.numbers.split(",") if x.strip()}
        self.calls: dict[str, CallInfo] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- on the bus loop ---------------------------------------------------------------------------
    def attach(self, bus: Any) -> None:
        bus.subscribe(self)
        self._loop = bus.loop
        bus.loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(TICK_S, self._tick)

    def _tick(self) -> None:
        now = time.monotonic()
        for info in list(self.calls.values()):
            if info.run is not None and not info.run.done:
                self._guard(info, partial(info.run.tick, now))
        self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def __call__(self, item: Item) -> None:
        if isinstance(item, WorkerFact):
            self._fact(item.fact)
        elif isinstance(item, CallEvent) and item.leg == "caller":
            info = self.calls.get(item.call_id)
            if info is None or info.run is None:
                return
            run, ev, now = info.run, item.event, time.monotonic()
            if isinstance(ev, SpeechStarted):
                self._guard(info, lambda: run.speech_started(now))
            elif isinstance(ev, SpeechStopped):
                run.speech_stopped(now)
            elif isinstance(ev, PartialTranscript):
                run.transcript_partial(now)
            elif isinstance(ev, FinalTranscript):
                run.transcript_final(ev.text, now)
            elif isinstance(ev, Decision):
                self._guard(info, lambda: run.decided(ev, now))

    def _fact(self, f: P.Fact) -> None:
        now = time.monotonic()
        if isinstance(f, P.CallStarted):
            called = uri_user(f.local)
            new = CallInfo(f.call_id, called)
            if self.settings.ivr.when == "always":
                new.why = "ivr.when = always"
            elif called in self.numbers:
                new.why = f"called number {called} (ivr.numbers)"
            self.calls[f.call_id] = new
            return
        call_id = str(getattr(f, "call_id", "") or "")
        info = self.calls.get(call_id)
        if info is None:
            return
        if isinstance(f, P.CallEnded):
            if info.run is not None:
                self._do(info, info.run.caller_gone())
            del self.calls[call_id]
            return
        if isinstance(f, P.LegEnded) and f.leg == "caller" and info.run is not None:
            # first, before the facts it causes (a transfer failing "caller hung up"): no branch is taken for
            # a caller who is gone
            self._do(info, info.run.caller_gone())
            return
        if isinstance(f, P.Overflowed):
            info.why = f"overflow: operator seat {f.status} {f.reason}".strip()
            return
        run = info.run
        if isinstance(f, P.MediaActive) and f.leg == "caller" and info.why and run is None:
            try:  # the hotlines of the call's site, as the supervisor worked it out at call start
                targets = frozenset(self.sup.targets_of(call_id))
            except LookupError:  # the call ended meanwhile (its CallEnded follows)
                return
            info.run = FlowRun(self.flow, call_id, targets)
            log.info("IVR %s for %s (%s)", self.flow.name, call_id[:12], info.why)
            self._guard(info, lambda: info.run.start(now))  # type: ignore[union-attr]
            return
        if run is None:
            return
        if isinstance(f, P.PromptDone):
            self._guard(info, lambda: run.prompt_done(f.token, f.interrupted, now))
        elif isinstance(f, P.Dtmf) and f.leg == "caller":
            self._guard(info, lambda: run.dtmf(f.digit, now))
        elif isinstance(f, P.TransferUpdate):
            self._guard(info, lambda: run.transfer_update(f.step.value, f.reason, now))
        elif isinstance(f, P.QueueUpdate):
            self._guard(info, lambda: run.queue_update(f.step.value, f.reason, now))

    # -- carrying out --------------------------------------------------------------------------------
    def _guard(self, info: CallInfo, step: Callable[[], list[Act] | None]) -> None:
        """Run one step of a call's flow. A failure in it must not leave the caller with nobody:
        the caller is handed to the operators' queue and the error is reported."""
        try:
            if info.run is not None:  # the centre-wide switch as it is now, whichever step enters a decide
                info.run.offers_paused = self.sup.controls.ivr_offers_paused
            acts = step()
            if acts:
                self._do(info, acts)
        except Exception as e:  # noqa: BLE001 - one call's flow must not stop the others
            log.exception("IVR failed on call %s", info.call_id)
            self.publish(P.WorkerError(f"IVR flow error, caller handed to the operators: {e}", info.call_id))
            if info.run is not None and not info.run.done:
                info.run.outcome = "error"
                self._safe(info, lambda: self.sup.to_queue(info.call_id))

    def _do(self, info: CallInfo, acts: list[Act]) -> None:
        run = info.run
        assert run is not None
        now = time.monotonic()
        for a in acts:
            if isinstance(a, Step):
                self.publish(P.IvrStep(info.call_id, self.flow.name, a.state, a.kind, a.detail, a.urgent, a.outcome))
            elif isinstance(a, PlayPrompts):
                wav = self._wav(a.prompts)
                self._safe(info, partial(self.sup.play, info.call_id, str(wav), "caller", a.token))
            elif isinstance(a, StopPrompts):
                self._safe(info, lambda: self.sup.stop_prompt(info.call_id))
            elif isinstance(a, TransferTo):
                err = self._safe(info, partial(self.sup.transfer, info.call_id, a.target, a.mode))
                if err is not None:
                    self._do(info, run.transfer_update("failed", err, now))
            elif isinstance(a, CancelTransfer):
                self._safe(info, partial(self.sup.cancel_transfer, info.call_id))
            elif isinstance(a, QueueCall):
                err = self._safe(info, partial(self.sup.to_queue, info.call_id, a.uri))
                if err is not None:
                    self._do(info, run.queue_update("failed", err, now))
            elif isinstance(a, SendSms):
                if self.store is not None:
                    self._safe(info, partial(self.store.ivr_sms, info.call_id, f"ivr:{a.state}", a.text))
            elif isinstance(a, HangUp):
                self._safe(info, lambda: self.sup.hangup(info.call_id))

    def _wav(self, names: tuple[str, ...]) -> Path:
        paths = [self.prompts[n] for n in names]
        return paths[0] if len(paths) == 1 else self.cache.concat(paths)

    def _safe(self, info: CallInfo, fn: Callable[[], Any]) -> str | None:
        """A command to the call's worker; the call may have ended meanwhile (its CallEnded follows)."""
        try:
            fn()
            return None
        except (LookupError, ValueError, OSError) as e:
            log.info("IVR on %s: %s", info.call_id[:12], e)
            return str(e)


def attach_desk(settings: Settings, sup: Supervisor, bus: EventBus, store: Store | None,
                loaded: LoadedFlow | None = None) -> IvrDesk | None:
    """The IVR front desk (``[ivr] flow``): the flow and its prompts are loaded and checked before
    any call (``loaded``, or now) — a bad flow stops the start with file:line, never a live call."""
    if not settings.ivr.flow:
        return None
    desk = IvrDesk(settings, sup, loaded or load(settings), lambda f: bus.publish(WorkerFact("ivr", f)), store)
    desk.attach(bus)
    print(f"IVR: flow {desk.flow.name} ({len(desk.flow.states)} states, {len(desk.prompts)} prompts) "
          f"when {settings.ivr.when}; operators' queue {settings.ivr.queue_uri or settings.sip.seat_uri}",
          file=sys.stderr, flush=True)
    return desk
