"""Errors a user can fix. The CLI prints their message as one line (no traceback) and exits with
the error's `exit_code`: 2 for everything except a run stopped by a non-finite loss (3), so a job
scheduler can tell "fix the command" from "the run diverged".

Anything else that escapes is a bug in flaxlm and keeps its traceback.
"""


class FlaxlmError(ValueError):
    """Base class: the message names the problem and the fix."""

    exit_code = 2


class ConfigError(FlaxlmError):
    """A config (or a config/checkpoint/device combination) that cannot run."""


class DataError(FlaxlmError):
    """A corpus that cannot make the requested examples."""


class WorkdirError(FlaxlmError):
    """A workdir (or export path) that cannot be written or read: missing, read-only, full disk."""


class CheckpointError(FlaxlmError):
    """No usable checkpoint where one is needed (all unreadable, or the requested step is absent)."""


class HFError(FlaxlmError):
    """A Hugging Face directory (or a flaxlm model) that flaxlm.hf cannot convert."""


class NonFiniteError(FlaxlmError):
    """Training produced a non-finite loss or gradient (config.train.nonfinite='stop')."""

    exit_code = 3
