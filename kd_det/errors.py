"""User-facing errors: each message is one sentence naming the file, key or value at fault.

``tools/*.py`` print these as one line (``--debug`` shows the traceback); any other
exception is a bug and keeps its traceback.
"""

__all__ = ["UserError", "ConfigError", "DatasetError", "NonFiniteLossError"]


class UserError(ValueError):
    """Bad input from the user (config, data, weights, command line).

    Raised in a DataLoader worker (e.g. an image that cannot be decoded), it reaches the training process
    re-raised by torch with the message "Caught DatasetError in DataLoader worker process 0." followed by
    the worker's traceback, whose last line is "kd_det.errors.DatasetError: <sentence>": the sentence alone
    is kept, so the tools still print one line.
    """

    def __init__(self, *args):
        text = args[0] if len(args) == 1 and isinstance(args[0], str) else ""
        if text.startswith("Caught ") and " in DataLoader worker process " in text.split("\n", 1)[0]:
            args = (text.rstrip("\n").rsplit("\n", 1)[-1].split(": ", 1)[-1],)
        super().__init__(*args)


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
