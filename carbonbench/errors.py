"""The project's own exceptions.

Anything derived from ``UserError`` is the user's to fix (bad file, bad flag): the CLI
prints its message on one line and exits with status 2, never with a traceback.
"""


class CarbonbenchError(Exception):
    """Base class for every error carbonbench raises on purpose."""


class UserError(CarbonbenchError):
    """Bad input: a file, key, value or flag the user can fix. Exit status 2."""


class ConfigError(UserError):
    """A scenario, model card or other configuration file is invalid."""


class CheckpointError(UserError):
    """A checkpoint directory is missing tensors, has extra ones, or has wrong shapes."""


class ResultsError(UserError):
    """A result file is unreadable, truncated or of an unknown schema."""


class ModelTooLargeError(CarbonbenchError):
    """The model does not fit in the target device's memory."""


class MeterError(CarbonbenchError):
    """A meter failed while measuring (vendor errors are mapped to subclasses)."""
