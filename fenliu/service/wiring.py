"""Building the pipeline's parts from settings (the one place that knows about all of them)."""

from __future__ import annotations

from fenliu.asr.engine import VoskEngine
from fenliu.asr.models import resolve_model, with_decoder
from fenliu.asr.vad import VadConfig
from fenliu.router import CallRouter, Context, Router, load_rules
from fenliu.service.settings import Settings


def build_router(settings: Settings, rules_path: str | None = None) -> Router:
    """The configured negative list and learned layer; raises RuleListError / RouterModelError."""
    return make_router(rules_path or settings.router.rules_path or None, settings.router.model)


def make_router(rules_path: str | None, model: str = "default") -> Router:
    """``model``: "default" (the artefact shipped with fenliu), "none" (the rules alone) or a folder."""
    from fenliu.router.model import load_model

    rules = load_rules(rules_path)
    return Router(rules, model=None if model == "none" else load_model(None if model == "default" else model))


def build_engine(settings: Settings, model: str | None = None) -> VoskEngine:
    """Load the configured model (``model`` overrides asr.model); raises ModelError."""
    path = resolve_model(model or settings.asr.model, settings.asr.model_dir or None)
    path = with_decoder(path, settings.asr.max_active, settings.asr.beam)
    return VoskEngine(path, settings.asr.sample_rate, settings.asr.partial_every_ms)


def vad_config(settings: Settings) -> VadConfig:
    v = settings.vad
    return VadConfig(frame_ms=v.frame_ms, aggressiveness=v.aggressiveness, energy_floor_dbfs=v.energy_floor_dbfs,
                     min_speech_ms=v.min_speech_ms,
                     start_window_ms=v.start_window_ms, stop_ms=v.stop_ms, padding_ms=v.padding_ms,
                     max_utterance_ms=v.max_utterance_ms)


def call_router(router: Router, settings: Settings, call_id: str) -> CallRouter:
    return CallRouter(router, Context(call_id=call_id), switch_margin=settings.router.switch_margin)
