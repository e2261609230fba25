"""Building the router and the ASR engine from settings (each leg's VAD and call router: ``asr.pipeline``)."""

from __future__ import annotations

from fenliu.asr.engine import VoskEngine
from fenliu.asr.models import resolve_model, with_decoder
from fenliu.router import Router, load_rules
from fenliu.settings import Settings


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
