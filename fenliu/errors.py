"""Domain errors. Each carries a message that says what was wrong and what to do."""

import json
from typing import Any

ECHO = 64  # an error message quotes at most this many characters of what a client sent


def quoted(value: Any, limit: int = ECHO) -> str:
    """Part of what a client sent, for an error message (never the whole of an unbounded input)."""
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return s if len(s) <= limit else s[:limit] + f"…({len(s)} chars)"


class FenliuError(Exception):
    """Base class: ``str(err)`` is meant for the user and names the fix."""


class ConfigError(FenliuError):
    """A setting is unknown or has a bad value."""


class RuleListError(FenliuError):
    """The negative list (routing rules) is malformed."""


class AudioInputError(FenliuError):
    """An audio file is missing, empty, broken or in a format we cannot read."""


class ModelError(FenliuError):
    """The ASR model is missing, incomplete or cannot be loaded."""


class RouterModelError(FenliuError):
    """The router's learned-layer artefact is missing, corrupt or does not fit the code."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that a command's clean-up runs (exit 143)."""
