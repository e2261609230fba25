"""Domain errors. Each carries a message that says what was wrong and what to do."""


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
