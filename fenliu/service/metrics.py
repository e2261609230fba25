"""Prometheus metrics (``GET /metrics``), counted by a bus subscriber.

Everything is derived from the events every other consumer sees, so the numbers cannot
disagree with the record. Gauges that are states rather than events (live calls by state,
worker health, ASR lag) are read from the supervisor when scraped.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from fenliu.bus import CallEvent, WorkerFact
from fenliu.events import Decision, FinalTranscript
from fenliu.sip import protocol as P

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    def __init__(self, supervisor: Any = None, store: Any = None) -> None:
        self.supervisor = supervisor
        self.store = store  # the outbox and alerts are read from the store when scraped
        r = self.registry = CollectorRegistry()
        self.calls = Counter("fenliu_calls", "Calls by outcome (started, rejected, ended)", ["outcome"], registry=r)
        self.rejected = Counter("fenliu_calls_rejected", "Refused callers by SIP status", ["status"], registry=r)
        self.live = Gauge("fenliu_calls_live", "Live calls by state", ["state"], registry=r)
        self.frames = Counter("fenliu_frames_recognised", "20 ms frames that reached recognition", registry=r)
        self.dropped = Counter("fenliu_frames_dropped", "20 ms frames lost before recognition", registry=r)
        self.degraded = Counter("fenliu_calls_degraded", "Legs with live recognition delayed/unavailable",
                                registry=r)
        self.asr_streams = Gauge("fenliu_asr_streams", "Legs being recognised, per ASR process", ["process"],
                                 registry=r)
        self.asr_lag = Gauge("fenliu_asr_lag_seconds", "Worst recognition lag behind the call in the last "
                                                       "report, per ASR process", ["process"], registry=r)
        self.asr_busy = Gauge("fenliu_asr_busy_seconds", "Time spent recognising, per ASR process (cumulative)",
                              ["process"], registry=r)
        self.rtf = Gauge("fenliu_asr_real_time_factor", "Recognition time per second of audio (all processes)",
                         registry=r)
        self.finals = Counter("fenliu_final_transcripts", "Final transcripts", ["leg"], registry=r)
        self.decisions = Counter("fenliu_decisions", "Routing decisions by target", ["target"], registry=r)
        self.transfers = Counter("fenliu_transfers", "Transfer steps and outcomes", ["step"], registry=r)
        self.failopen = Counter("fenliu_front_failopen", "Calls the front sent straight to the operators "
                                "(no worker could take them)", registry=r)
        self.ivr = Counter("fenliu_ivr_calls", "Voice front desk calls by how they ended (transferred, queued, "
                           "hung_up, caller_left, error) and urgency", ["flow", "outcome", "urgent"], registry=r)
        self.overflowed = Counter("fenliu_calls_overflowed", "Calls the operator seat turned away that the voice "
                                  "front desk answered", registry=r)
        self.restarts = Counter("fenliu_worker_restarts", "SIP worker restarts", registry=r)
        self.restart_failures = Counter("fenliu_worker_restart_failures", "Failed SIP worker restart attempts",
                                        registry=r)
        self.workers = Gauge("fenliu_workers", "SIP workers by state", ["state"], registry=r)
        self.utterance_delay = Histogram("fenliu_final_delay_seconds", "End of utterance (VAD stop) to final "
                                         "transcript, measured on the supervisor's clock", registry=r,
                                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))
        self.outbox = Gauge("fenliu_outbox_items", "Work orders and SMS in the outbox by state (shared store: all "
                            "instances)", ["kind", "state"], registry=r)
        self.open_alerts = Gauge("fenliu_alerts_open", "Alerts not yet acknowledged, by kind", ["kind"], registry=r)
        self.store_up = Gauge("fenliu_store_up", "1 while the store answers (0: records wait in memory and the "
                                                 "journal, the gauges read from it are as of the last answer)",
                              registry=r)
        self.store_waiting = Gauge("fenliu_store_waiting_records", "Call records and audit rows waiting for the "
                                                                   "store", registry=r)
        self.store_age = Gauge("fenliu_store_gauges_age_seconds", "Age of the gauges read from the store",
                               registry=r)
        self._store_read_at = 0.0
        self._busy: dict[str, float] = {}
        self._audio_s = 0.0

    def __call__(self, item: CallEvent | WorkerFact) -> None:
        if isinstance(item, CallEvent):
            ev = item.event
            if isinstance(ev, FinalTranscript):
                self.finals.labels(item.leg).inc()
            elif isinstance(ev, Decision):
                self.decisions.labels(ev.target).inc()
            return
        f = item.fact
        if isinstance(f, P.CallStarted):
            self.calls.labels("started").inc()
        elif isinstance(f, P.CallEnded):
            self.calls.labels("ended").inc()
        elif isinstance(f, P.CallRejected):
            self.calls.labels("rejected").inc()
            self.rejected.labels(str(f.status)).inc()
        elif isinstance(f, P.TransferUpdate):
            self.transfers.labels(f.step.value).inc()
        elif isinstance(f, P.CallDegraded):
            self.degraded.inc()
        elif isinstance(f, P.AsrDone):
            self.dropped.inc(f.dropped_frames)
            self.frames.inc(max(0, round(f.audio_s / 0.02) - f.dropped_frames))
            self._audio_s += f.audio_s
        elif isinstance(f, P.Stopped):
            self.dropped.inc(f.dropped_frames)
        elif isinstance(f, P.FrontEvent) and f.line.startswith("failopen"):
            self.failopen.inc()
        elif isinstance(f, P.IvrStep) and f.outcome:
            self.ivr.labels(f.flow, f.outcome, "true" if f.urgent else "false").inc()
        elif isinstance(f, P.Overflowed):
            self.overflowed.inc()
        elif isinstance(f, P.WorkerRestarted):
            self.restarts.inc()
        elif isinstance(f, P.RestartFailed):
            self.restart_failures.inc()
        elif isinstance(f, P.AsrStats):
            self.asr_streams.labels(f.process).set(f.streams)
            self.asr_lag.labels(f.process).set(f.lag_max_s)
            self.asr_busy.labels(f.process).set(f.busy_s)
            self._busy[f.process] = f.busy_s
            if self._audio_s:
                self.rtf.set(sum(self._busy.values()) / self._audio_s)

    def render(self) -> bytes:
        sup = self.supervisor
        if sup is not None:
            self.live.clear()
            for c in sup.calls():
                self.live.labels(c["state"]).inc()
            self.workers.clear()
            for w in sup.health()["workers"]:
                self.workers.labels(w["state"]).inc()
        if self.store is not None:
            self._from_store()
        return generate_latest(self.registry)

    def _from_store(self) -> None:
        """The store's gauges; a store that does not answer never fails the scrape: its gauges stay
        as last read (with their age), and fenliu_store_up says 0."""
        store = self.store
        self.store_waiting.set(store.waiting)
        try:
            counts = store.outbox_counts()
            alerts = store.alerts(open_only=True, limit=1000)
        except Exception as e:  # noqa: BLE001 - the database is down or locked
            if not store.db.unavailable(e):
                raise
            self.store_up.set(0)
        else:
            self.outbox.clear()
            for key, n in counts.items():
                kind, _, state = key.partition("_")
                self.outbox.labels(kind, state).set(n)
            self.open_alerts.clear()
            for a in alerts:
                self.open_alerts.labels(a["kind"]).inc()
            self._store_read_at = time.time()
            self.store_up.set(1 if store.up else 0)
        self.store_age.set(time.time() - self._store_read_at if self._store_read_at else 0)
