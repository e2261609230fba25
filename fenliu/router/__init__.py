"""Pure routing logic: normalise -> segment/match -> danger veto -> decision. No I/O imports
(no pjsua2, vosk, aiohttp): may import the ground floor only."""

from fenliu.router.decide import Context, PriorReport, Router
from fenliu.router.rules import RuleSet, load_rules, parse_rules
from fenliu.router.stable import CallRouter

__all__ = ["CallRouter", "Context", "PriorReport", "Router", "RuleSet", "load_rules", "parse_rules"]
