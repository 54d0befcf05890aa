"""User-facing errors: each message is one sentence naming the file, key or value at fault.

``tools/*.py`` print these as one line (``--debug`` shows the traceback); any other
exception is a bug and keeps its traceback.
"""

__all__ = ["UserError", "ConfigError", "DatasetError", "NonFiniteLossError"]


class UserError(ValueError):
    """Bad input from the user (config, data, weights, command line)."""


class ConfigError(UserError):
    """A config file, key or value is wrong."""


class DatasetError(UserError):
    """A dataset is missing or malformed."""


class NonFiniteLossError(UserError):
    """A loss term became NaN/Inf during training; raised before the optimizer step, so nothing is corrupted."""

    @classmethod
    def stop(cls, what, checkpoint, remedy):
        """The one sentence of a NaN stop: ``what`` happened, ``checkpoint`` ("" if none) is intact, ``remedy``."""
        keep = (f"the last checkpoint {checkpoint} predates it and is untouched (restart from it with --resume and"
                if checkpoint else "no checkpoint had been written yet (restart with")
        return cls(f"{what}: training stopped before the optimizer step; {keep} {remedy}).")
