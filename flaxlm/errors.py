"""Errors a user can fix. The CLI prints their message as one line (no traceback) and exits 2.

Anything else that escapes is a bug in flaxlm and keeps its traceback.
"""


class FlaxlmError(ValueError):
    """Base class: the message names the problem and the fix."""


class ConfigError(FlaxlmError):
    """A config (or a config/checkpoint/device combination) that cannot run."""


class DataError(FlaxlmError):
    """A corpus that cannot make the requested examples."""
